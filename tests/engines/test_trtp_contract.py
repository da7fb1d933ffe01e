"""Contract tests with ``tensorrt.plugin``: NVIDIA's pure-Python plugin layer, taken from
the binding wheel of each version that has AOT plugins (10.9, 10.13, 10.16, 11.4), runs for
real over the smallest stand-in for the compiled module (trtp_contract/standin_tensorrt.py,
each behaviour citing the bindings' C++ source), under NumPy before and after 2.4 (where a
1-element array stopped converting to a Python int).

What runs: importing ``tensorrt.plugin``, registering the toolkit's AOT plugins through its
decorators (which validate the signatures), and creating each plugin from its registered
creator with the fields TensorRT's ONNX parser hands over. These are not TensorRT tests:
nothing here builds an engine or runs a kernel.

The wheels (binding wheels about 1 MB each; NumPy's about 16 MB) are fetched with pip once
and kept in $IAUNET_TRT_WHEELS or ~/.cache/iaunet/trt-wheels, unpacked there once; each case
is one subprocess of about a second.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.engines.test_trt_names import _cache, _wheel

HERE = Path(__file__).parent / "trtp_contract"
TRTP_WHEELS = {"10.9": "tensorrt-cu12-bindings==10.9.0.34", "10.13": "tensorrt-cu12-bindings==10.13.3.9",
               "10.16": "tensorrt-cu13-bindings==10.16.0.72", "11.4": "tensorrt-cu13-bindings==11.4.0.106"}
NUMPYS = {"numpy<2.4": "numpy==2.3.5", "numpy>=2.4": "numpy==2.4.6"}


def _numpy_wheel(requirement: str) -> Path:
    name, version = requirement.split("==")
    found = sorted(_cache().glob(f"{name}-{version}-*.whl"))
    if not found:
        _cache().mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                            requirement, "-d", str(_cache())], capture_output=True, text=True, timeout=300)
        found = sorted(_cache().glob(f"{name}-{version}-*.whl"))
        if not found:
            pytest.skip(f"could not download {requirement}: {r.stderr.strip()[-200:]}")
    return found[0]


def _unpacked(wheel: Path) -> Path:
    """The wheel unpacked once beside the cache (renamed into place when complete)."""
    target = _cache() / "unpacked" / wheel.stem
    if not target.is_dir():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another session got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stand_in_package(version: str, root: Path) -> Path:
    """A folder holding ``tensorrt/``: the stand-in as its __init__, the wheel's plugin/ beside it."""
    bindings = _unpacked(_wheel(TRTP_WHEELS[version]))
    plugin = next(bindings.glob("tensorrt*/plugin"))
    package = root / version / "tensorrt"
    if not package.is_dir():
        package.mkdir(parents=True)
        shutil.copy(HERE / "standin_tensorrt.py", package / "__init__.py")
        shutil.copytree(plugin, package / "plugin")
    return package.parent


@pytest.fixture(scope="session")
def trtp_packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("trtp")
    return {v: _stand_in_package(v, root) for v in TRTP_WHEELS}


@pytest.fixture(scope="session")
def numpy_dirs():
    return {label: _unpacked(_numpy_wheel(req)) for label, req in NUMPYS.items()}


def run_contract(package: Path, numpy_dir: Path, version: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(numpy_dir)]),
           "IAUNET_STANDIN_TRT_VERSION": version, "PYTHONWARNINGS": "error::DeprecationWarning:__main__"}
    r = subprocess.run([sys.executable, str(HERE / "driver.py"), *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("numpy_label", sorted(NUMPYS))
@pytest.mark.parametrize("version", sorted(TRTP_WHEELS, key=lambda v: tuple(map(int, v.split(".")))))
def test_the_parsers_int_attributes_create_the_aot_part_plugin(version, numpy_label, trtp_packages, numpy_dirs):
    """TensorRT's ONNX parser hands IAUPartAffinity's ``frames`` and ``parts`` as INT32
    fields of one element; tensorrt.plugin 10.9 to 10.16 turned a field annotated ``int``
    into ``int(field.data)``, which NumPy 2.4 refuses. Every version must create the
    plugin, with the values the node carries, whatever NumPy is installed."""
    result = run_contract(trtp_packages[version], numpy_dirs[numpy_label], TRTP_WHEELS[version].split("==")[1], 2, 4)
    assert result["numpy"] == NUMPYS[numpy_label].split("==")[1]  # the NumPy asked for is the one that ran
    assert result["plugin_module"].startswith(str(trtp_packages[version]))
    part = result["IAUPartAffinity"]
    assert part["registered"] and "error" not in part, part.get("traceback")
    assert part["plugin_class"] == "_TemplateAOTPlugin" and part["attrs"] == {"frames": 2, "parts": 4}
    assert part["creator_fields"] == [["frames", "INT32"], ["parts", "INT32"]]  # what the parser's fields match
    channel = result["IAUChannelAffinity"]
    assert channel["registered"] and channel.get("plugin_class") == "_TemplateAOTPlugin", channel


def test_the_stand_in_field_data_is_what_the_bindings_return(trtp_packages, numpy_dirs):
    """The one stand-in behaviour the defect hangs on (pyPlugin.cpp, PluginField ``data``:
    ``py::array(self.length, static_cast<int32_t const*>(self.data))``): a 1-D int32 array of
    ``length`` elements, even for one value; and ``int()`` of it fails under NumPy 2.4."""
    code = ("import numpy as np, tensorrt as trt\n"
            "f = trt.PluginField('parts', np.array([4], np.int32), trt.PluginFieldType.INT32)\n"
            "d = f.data\nprint(type(d).__name__, d.dtype, d.shape, f.size)\n"
            "try:\n    int(d); print('int ok')\nexcept TypeError: print('int refused')\n")
    for label, expect in (("numpy<2.4", "int ok"), ("numpy>=2.4", "int refused")):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(trtp_packages["10.9"]), str(numpy_dirs[label])]),
               "IAUNET_STANDIN_TRT_VERSION": "10.9.0.34", "PYTHONWARNINGS": "ignore"}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert r.stdout.split("\n")[:2] == ["ndarray int32 (1,) 1", expect], r.stderr[-500:]


@pytest.fixture
def ptx_folder(tmp_path):
    """A PTX folder as far as registration reads it (its manifest; kernels are read at build time)."""
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "iaunet-ptx-v1", "arch": 87,
                                                         "triton_version": "3.6.0", "kernels": []}))
    return tmp_path


@pytest.mark.parametrize("v3_first", [True, False], ids=["ipluginv3-first", "aot-first"])
def test_both_plugin_routes_in_one_process_leave_the_last_asked_for_registered(v3_first, trtp_packages, numpy_dirs,
                                                                               ptx_folder):
    """A process that registers one route and then the other (a run, then a build; the GPU
    tests in one session) must hold the creators of the route asked for last, each time;
    and an AOT registration without a PTX folder is one IAUnetError asking for --ptx."""
    result = run_contract(trtp_packages["10.16"], numpy_dirs["numpy>=2.4"], "10.16.0.72", "routes", ptx_folder,
                          "v3-first" if v3_first else "aot-first")
    steps = result["steps"]
    assert steps[0][0] == "aot without ptx" and steps[0][1].startswith("IAUnetError") and "--ptx" in steps[0][1]
    expected = {"v3": "IAUPluginCreator", "aot": "_TemplatePluginCreator"}
    assert [holder for _, holder in steps[1:]] == [expected[name] for name, _ in steps[1:]], steps
