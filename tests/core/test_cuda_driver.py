"""iaunet.core.cuda_driver against the CUDA driver API header (the cuda.h Triton bundles):
the enum values it hard-codes and the entry points it calls by name through ctypes.
The calls themselves need a GPU (test_cuda_driver_gpu.py)."""
import re
from pathlib import Path

import pytest

from iaunet.core import cuda_driver

ENUMS = {
    "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES": cuda_driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
    "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": cuda_driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
    "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": cuda_driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
    "CU_JIT_ERROR_LOG_BUFFER": cuda_driver.CU_JIT_ERROR_LOG_BUFFER,
    "CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES": cuda_driver.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
}
HINTED_ERRORS = {209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX",
                 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 201: "CUDA_ERROR_INVALID_CONTEXT"}


@pytest.fixture(scope="module")
def cuda_h() -> str:
    pytest.importorskip("triton", reason="triton is not installed (it bundles cuda.h)")
    import triton
    header = Path(triton.__file__).parent / "backends" / "nvidia" / "include" / "cuda.h"
    if not header.is_file():
        pytest.skip(f"this Triton bundles no cuda.h at {header}")
    return header.read_text(errors="replace")


def _value(cuda_h: str, name: str) -> int:
    found = re.search(rf"^\s*{name}\s*=\s*(0x[0-9a-fA-F]+|\d+)", cuda_h, re.M)
    assert found, f"cuda.h declares no {name}"
    return int(found.group(1), 0)


def test_hard_coded_enum_values_are_the_headers(cuda_h):
    assert {name: _value(cuda_h, name) for name in ENUMS} == ENUMS
    assert set(cuda_driver._HINTS) == set(HINTED_ERRORS)
    assert {code: _value(cuda_h, name) for code, name in HINTED_ERRORS.items()} == {c: c for c in HINTED_ERRORS}


def test_called_entry_points_are_exported_under_their_own_names(cuda_h):
    """ctypes finds a symbol by its name; cuda.h maps some APIs to versioned symbols
    (cuCtxCreate -> cuCtxCreate_v2), which would then be the old ABI or missing."""
    called = set(re.findall(r"\blib\.(cu[A-Za-z]+)\(", Path(cuda_driver.__file__).read_text()))
    assert {"cuInit", "cuModuleLoadDataEx", "cuLaunchKernel"} <= called
    # the symbol an API name resolves to: `#define cuGraphInstantiate cuGraphInstantiateWithFlags`
    # (__CUDA_API_PTSZ(x) is x itself unless per-thread default streams are asked for)
    exported_as = {api: target for api, target in re.findall(
        r"^\s*#define\s+(cu\w+)\s+(?:__CUDA_API_PTSZ\()?(cu\w+)\)?\s*$", cuda_h, re.M)}
    for name in sorted(called):
        apis = [api for api, target in exported_as.items() if target == name and api != name]
        if apis:  # a versioned symbol: what the current API name is compiled to
            assert any(re.search(rf"CUresult CUDAAPI {api}\(", cuda_h) for api in apis), f"cuda.h declares no {apis}"
            continue
        assert re.search(rf"CUresult CUDAAPI {name}\(", cuda_h), f"cuda.h declares no {name}"
        remap = exported_as.get(name, name)
        assert remap == name, f"{name} is compiled as {remap}: call that symbol"
