"""The pycuda names the TensorRT runner calls exist in pycuda's source (its sdist: the
Boost.Python wrapper and the Python package), since pycuda cannot build or run here.

The sdist is fetched with pip once and cached in $IAUNET_TRT_WHEELS or
~/.cache/iaunet/trt-wheels, beside the TensorRT binding wheels.
"""
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.engines.test_trt_names import _cache

ROOT = Path(__file__).parents[2]
RUNNER = (ROOT / "runtime" / "trt_runner.py").read_text()
# methods and properties called on pycuda objects (Device, Context, Stream, DeviceAllocation)
METHODS = ("name", "compute_capability", "retain_primary_context", "push", "pop", "synchronize", "handle", "free")
# the runner's pycuda objects, whose every member used must be listed above
OBJECTS = ("self._context", "self._stream", "self._device_in", "self._device_out", "gpu", r"cuda\.Device\([^)]*\)")


def _sdist() -> Path:
    found = sorted(_cache().glob("pycuda-*.tar.gz"))
    if not found:
        _cache().mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            "--no-build-isolation", "pycuda", "-d", str(_cache())],
                           capture_output=True, text=True, timeout=300)
        found = sorted(_cache().glob("pycuda-*.tar.gz"))
        if not found:
            pytest.skip(f"could not download pycuda's sdist: {r.stderr.strip()[-200:]}")
    return found[-1]


@pytest.fixture(scope="module")
def bound_names():
    """Names ``pycuda.driver`` has: what the wrappers compiled into its ``_driver``
    extension bind (src/wrapper/wrap_cudadrv.cpp and mempool.cpp, as pycuda's setup.py
    lists them) plus what pycuda/driver.py defines. Not the other wrappers and modules
    (gpuarray, curand, ...): a name of theirs is not ``pycuda.driver``'s."""
    with tarfile.open(_sdist()) as sdist:
        read = {m.name.split("/", 1)[1]: sdist.extractfile(m).read().decode(errors="replace")
                for m in sdist.getmembers() if m.isfile()}
    assert '"src/wrapper/wrap_cudadrv.cpp"' in read["setup.py"] and '"src/wrapper/mempool.cpp"' in read["setup.py"]
    wrapper = read["src/wrapper/wrap_cudadrv.cpp"] + read["src/wrapper/mempool.cpp"]
    driver = read["pycuda/driver.py"]
    names = set(re.findall(r'(?:def|add_property)\s*\(\s*"(\w+)"', wrapper))
    names |= set(re.findall(r'py::class_<[^;]*?\(\s*"(\w+)"', wrapper, re.S))  # class names
    names |= set(re.findall(r"DEF_SIMPLE_(?:METHOD|FUNCTION)\((\w+)\)", wrapper))
    names |= set(re.findall(r"^\s*def (\w+)\(", driver, re.M)) | set(re.findall(r"^(\w+) = ", driver, re.M))
    return names


def test_module_functions_exist(bound_names):
    used = set(re.findall(r"\bcuda\.(\w+)", RUNNER))
    assert {"init", "Device", "pagelocked_empty", "mem_alloc", "memcpy_htod_async", "memcpy_dtoh_async",
            "Stream"} <= used
    missing = sorted(used - bound_names)
    assert not missing, f"pycuda.driver has no {missing}"


def test_every_member_used_is_listed():
    used = {m for obj in OBJECTS for m in re.findall(rf"\b{obj}\.(\w+)", RUNNER)}
    assert used and not used - set(METHODS), f"trt_runner.py uses unlisted pycuda members: {used - set(METHODS)}"


def test_object_methods_exist(bound_names):
    for method in METHODS:
        assert re.search(rf"\.{method}\b", RUNNER), f"{method} is listed but trt_runner.py does not use it"
    missing = [m for m in METHODS if m not in bound_names]
    assert not missing, f"pycuda's objects have no {missing}"
