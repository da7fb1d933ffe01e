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


class _CaptureDriver:
    """The four driver calls capture_graph makes, recorded; cuStreamEndCapture returns
    ``end_result`` and hands back a graph handle when ``hands_graph``. (The capture's
    control flow, which no GPU is needed to check; its GPU run is in test_cuda_driver_gpu.)"""

    def __init__(self, end_result: int, hands_graph: bool):
        self.end_result, self.hands_graph, self.calls = end_result, hands_graph, []

    def cuStreamBeginCapture_v2(self, stream, mode):
        self.calls.append("begin")
        return 0

    def cuStreamEndCapture(self, stream, graph_ref):
        self.calls.append("end")
        if self.hands_graph:
            graph_ref._obj.value = 0x1234
        return self.end_result

    def cuGraphDestroy(self, graph):
        self.calls.append("destroy")
        return 0

    def cuGraphInstantiateWithFlags(self, executable_ref, graph, flags):
        self.calls.append("instantiate")
        return 0

    def cuGetErrorName(self, result, name_ref):
        return 0


CAPTURE_INVALIDATED = 901  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, what ending a failed capture returns


@pytest.mark.parametrize("end_result, hands_graph", [(CAPTURE_INVALIDATED, False), (0, True)])
def test_a_failed_capture_raises_its_own_error_and_frees_the_graph(monkeypatch, end_result, hands_graph):
    """What ``work()`` raised reaches the caller, not the end-capture error it causes, and a
    graph the end of the capture returned is destroyed."""
    from iaunet.core import cuda_driver
    fake = _CaptureDriver(end_result, hands_graph)
    monkeypatch.setattr(cuda_driver, "driver", lambda: fake)

    def work():
        raise ValueError("execute_async_v3 failed inside the capture")
    with pytest.raises(ValueError, match="inside the capture"):
        cuda_driver.capture_graph(7, work)
    assert fake.calls == ["begin", "end"] + (["destroy"] if hands_graph else [])


def test_an_end_capture_failure_after_good_work_is_reported_and_leaks_nothing(monkeypatch):
    from iaunet.core import cuda_driver
    from iaunet.core.errors import IAUnetError
    fake = _CaptureDriver(CAPTURE_INVALIDATED, True)
    monkeypatch.setattr(cuda_driver, "driver", lambda: fake)
    with pytest.raises(IAUnetError, match="cuStreamEndCapture"):
        cuda_driver.capture_graph(7, lambda: None)
    assert fake.calls == ["begin", "end", "destroy"]
