"""``runtime`` (and the shared core it uses) import with numpy alone."""
import subprocess
import sys

BLOCKER = """
import importlib.abc, importlib, pkgutil, sys
HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "pycuda", "triton", "onnx_graphsurgeon", "scipy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError("blocked heavy import: " + name)
sys.meta_path.insert(0, Block())
import iaunet.runtime as runtime, iaunet.core.preprocess, iaunet.cli
for m in pkgutil.walk_packages(runtime.__path__, "runtime."):
    importlib.import_module(m.name)
try:
    import torch
except ImportError as e:
    print("blocker works:", e)
print("ok")
"""


def test_runtime_imports_without_torch_or_onnx():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "blocker works: blocked heavy import: torch" in result.stdout
    assert result.stdout.strip().endswith("ok")


CALIB_WITHOUT_TORCH = """
import importlib.abc, importlib, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "triton", "tensorrt", "pycuda"):
            raise ImportError("blocked heavy import: " + name)
sys.meta_path.insert(0, Block())
for m in ("iaunet.calib.graph", "iaunet.calib.fp16", "iaunet.calib.int8", "iaunet.calib.parity", "iaunet.calib.data",
          "iaunet.cli.calib", "iaunet.export.checks", "iaunet.export.metadata", "iaunet.core.plugin_contract",
          "iaunet.engines.aot_plugins", "iaunet.engines.aot"):
    importlib.import_module(m)
print("ok")
"""


def test_calib_and_checks_import_without_torch():
    # ARCHITECTURE: calib may not import torch at import time (torch only inside run_parity)
    result = subprocess.run([sys.executable, "-c", CALIB_WITHOUT_TORCH], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-800:]
