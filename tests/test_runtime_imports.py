"""``iaunet.runtime``, the core and the CLI import with numpy and Pillow alone; calib and the
export checks import without torch.

Each check runs in a fresh interpreter (cwd outside the repository, so no stage folder is
importable by its bare name) whose import system refuses the packages it must not need.
"""
import json
import subprocess
import sys

PRELUDE = '''
import contextlib, importlib, importlib.abc, io, json, pkgutil, runpy, sys
def blocked(top):
    return {rule}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if blocked(name.partition(".")[0]):
            raise ModuleNotFoundError("blocked import: " + name, name=name)
sys.meta_path.insert(0, Block())
def walk(*packages):
    names = list(packages)
    for package in packages:
        names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
    return [name for name in names if not name.endswith(".__main__")]
def import_all(names):
    result = {{"imported": [], "failed": {{}}}}
    for name in names:
        try:
            importlib.import_module(name)
            result["imported"].append(name)
        except ImportError as err:
            result["failed"][name] = str(err)
    return result
'''

NUMPY_ONLY = PRELUDE.format(rule='top not in set(sys.stdlib_module_names) | {"numpy", "PIL", "iaunet"}') + '''
result = import_all(["iaunet"] + walk("iaunet.core", "iaunet.runtime", "iaunet.cli"))
sys.argv = ["iaunet", "--help"]
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        runpy.run_module("iaunet.cli", run_name="__main__", alter_sys=True)  # what `python -m iaunet.cli --help` runs
    except SystemExit as exit:
        result["help_exit"] = exit.code
result["help"] = out.getvalue()
try:
    import torch
except ImportError as err:
    result["torch"] = str(err)
print(json.dumps(result))
'''


def run_script(script, tmp_path):
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runtime_core_and_cli_import_with_numpy_and_pillow_alone(tmp_path):
    result = run_script(NUMPY_ONLY, tmp_path)
    assert result["torch"] == "blocked import: torch", "the blocker does not work"
    assert not result["failed"], f"need more than the standard library, numpy and Pillow: {result['failed']}"
    imported = set(result["imported"])
    assert {"iaunet", "iaunet.runtime", "iaunet.runtime.trt_plugin_v3", "iaunet.core.preprocess",
            "iaunet.core.cuda_driver", "iaunet.core.plugin_contract", "iaunet.cli", "iaunet.cli.args",
            "iaunet.cli.doctor", "iaunet.cli.train"} <= imported
    assert result["help_exit"] in (0, None) and "usage: iaunet" in result["help"], result


# these import torch at import time, by design (they trace the PyTorch model)
TORCH_AT_IMPORT = {"iaunet.export.exporter", "iaunet.export.plugin_nodes"}

CALIB_WITHOUT_TORCH = PRELUDE.format(rule='top in ("torch", "torchvision", "triton", "tensorrt", "pycuda")') + '''
print(json.dumps(import_all(walk("iaunet.calib", "iaunet.export") + [
    "iaunet.cli.calib", "iaunet.cli.export", "iaunet.core.plugin_contract", "iaunet.engines.aot",
    "iaunet.engines.aot_plugins", "iaunet.engines.kernel_bench"])))
'''


def test_calib_and_checks_import_without_torch(tmp_path):
    # ARCHITECTURE: calib may not import torch at import time (torch only inside run_parity)
    result = run_script(CALIB_WITHOUT_TORCH, tmp_path)
    failed = result["failed"]
    assert set(failed) == TORCH_AT_IMPORT, (
        f"import torch (or triton, tensorrt, pycuda) at import time: {sorted(set(failed) - TORCH_AT_IMPORT)}; "
        f"import without it now, drop them from TORCH_AT_IMPORT: {sorted(TORCH_AT_IMPORT - set(failed))}\n{failed}")
    assert all(error == "blocked import: torch" for error in failed.values()), failed
    assert {"iaunet.calib.graph", "iaunet.calib.fp16", "iaunet.calib.int8", "iaunet.calib.parity", "iaunet.calib.data",
            "iaunet.export.checks", "iaunet.export.metadata", "iaunet.export.trt_support"} <= set(result["imported"])
