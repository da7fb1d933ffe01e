"""The few CUDA driver calls the IAU plugins (IPluginV3 route, kernel benchmark) and the
TensorRT runner's CUDA graphs need, through ``ctypes`` on libcuda:
load PTX into the current context, look up its entry, raise its dynamic shared-memory
limit, and launch it on a stream given as a raw handle; capture a stream's work as a CUDA
graph and replay it (the pycuda release checked here wraps no stream capture).

Why not pycuda for the launch: pycuda launches only on streams it created (its
``Function._launch_kernel`` takes a pycuda ``Stream``) and does not expose the
``CUfunction`` handle, while a TensorRT plugin must launch on the ``cudaStream_t``
TensorRT hands to ``enqueue``. libcuda is the driver pycuda and TensorRT themselves
sit on, present wherever a GPU is, so this adds no dependency. Nothing here runs
without an NVIDIA driver; the module imports everywhere.
"""
from __future__ import annotations

import ctypes
import threading

from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import plan_launch

CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
STATIC_SHARED_LIMIT = 48 * 1024
_HINTS = {
    209: "the PTX targets another GPU architecture; compile with 'iaunet plugins compile --arch' for this GPU",
    218: "the PTX is invalid for this driver",
    222: "the PTX ISA is newer than this driver supports; recompile with a lower --ptx-version (8.5 for JetPack 6)",
    201: "no CUDA context is current on this thread",
}

_lib = None
_lock = threading.Lock()
_functions: dict = {}   # (context handle, PTX sha, entry) -> (module, function)


def load_library():
    """libcuda as ctypes loads it (not initialised), or None where there is no NVIDIA driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def driver():
    """libcuda, loaded and initialised once; an IAUnetError when there is no NVIDIA driver."""
    global _lib
    if _lib is None:
        lib = load_library()
        if lib is None:
            raise IAUnetError("the CUDA driver (libcuda.so.1) was not found; the IAU plugins need an NVIDIA GPU "
                              "and its driver")
        check(lib, lib.cuInit(0), "cuInit")
        _lib = lib
    return _lib


def check(lib, result: int, call: str) -> None:
    if result == 0:
        return
    name = ctypes.c_char_p()
    lib.cuGetErrorName(result, ctypes.byref(name))
    label = name.value.decode() if name.value else f"CUresult {result}"
    hint = _HINTS.get(result)
    raise IAUnetError(f"{call} failed with {label}" + (f": {hint}" if hint else ""))


def current_context() -> int:
    lib = driver()
    ctx = ctypes.c_void_p()
    check(lib, lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
    if not ctx.value:
        raise IAUnetError("no CUDA context is current; create the TensorRT runtime after initialising CUDA")
    return ctx.value


def current_compute_capability() -> int:
    """Of the current context's device (device 0 when no context is current), as 87, 90, ..."""
    lib = driver()
    device = ctypes.c_int(0)
    ctx = ctypes.c_void_p()
    check(lib, lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
    if ctx.value:
        check(lib, lib.cuCtxGetDevice(ctypes.byref(device)), "cuCtxGetDevice")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib, lib.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
          "cuDeviceGetAttribute")
    check(lib, lib.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
          "cuDeviceGetAttribute")
    return major.value * 10 + minor.value


def check_arch(arch: int, what: str) -> None:
    """Refuse code compiled for another GPU than the current one: '<what> for sm_X ...'."""
    found = current_compute_capability()
    if arch != found:
        raise IAUnetError(f"{what} for sm_{arch} but this GPU is sm_{found}; compile with "
                          f"'iaunet plugins compile --arch {found}' (and build the engine on this GPU)")


def _load(ptx: bytes, entry: str, shared_bytes: int) -> tuple:
    lib = driver()
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    log = ctypes.create_string_buffer(8192)
    options = (ctypes.c_int * 2)(CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
    values = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
    image = ctypes.create_string_buffer(ptx)  # NUL-terminated, as cuModuleLoadData wants PTX text
    result = lib.cuModuleLoadDataEx(ctypes.byref(module), image, 2, options, values)
    if result:
        detail = log.value.decode(errors="replace").strip()
        try:
            check(lib, result, f"loading the PTX of {entry}")
        except IAUnetError as e:
            raise IAUnetError(f"{e}{' (' + detail.splitlines()[0] + ')' if detail else ''}") from None
    check(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, entry.encode()), f"cuModuleGetFunction({entry})")
    if shared_bytes > STATIC_SHARED_LIMIT:
        check(lib, lib.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes),
              f"raising {entry}'s shared memory to {shared_bytes} bytes")
    return module, function


def function(kernel) -> int:
    """The CUfunction of a ``iaunet.core.plugin_contract.Kernel`` in the current context, loading its
    PTX on first use there (after checking the GPU is the one it was compiled for)."""
    key = (current_context(), kernel.digest, kernel.entry)
    with _lock:
        if key not in _functions:
            if kernel.arch:
                check_arch(kernel.arch, f"{kernel.op}'s kernel was compiled")
            _functions[key] = _load(kernel.ptx, kernel.entry, kernel.shared_bytes)
        return _functions[key][1].value


def launch(func: int, grid: tuple, block: tuple, shared_bytes: int, stream: int, params) -> None:
    """cuLaunchKernel on ``stream`` (a raw CUstream handle; 0 is the legacy default stream)."""
    lib = driver()
    result = lib.cuLaunchKernel(ctypes.c_void_p(func), *(ctypes.c_uint(int(g)) for g in grid),
                                *(ctypes.c_uint(int(b)) for b in block), ctypes.c_uint(shared_bytes),
                                ctypes.c_void_p(stream or None), params, None)
    check(lib, result, "cuLaunchKernel")


def run_kernel(kernel, shape, attrs: dict, src: int, dst: int, stream: int) -> None:
    """Launch a ``iaunet.core.plugin_contract.Kernel`` on an input of ``shape`` at device address ``src``,
    writing ``dst``, on ``stream``: what the IPluginV3 plugin's ``enqueue`` does."""
    plan = plan_launch(kernel, shape, attrs, src, dst)
    params, keep_alive = plan.packed()
    launch(function(kernel), plan.grid, kernel.block, kernel.shared_bytes, stream, params)
    del keep_alive


CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1


def capture_graph(stream: int, work) -> int:
    """Record what ``work()`` enqueues on ``stream`` as a CUDA graph and return its
    executable handle (cuStreamBeginCapture / cuStreamEndCapture / cuGraphInstantiate)."""
    lib = driver()
    check(lib, lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
          "cuStreamBeginCapture")
    graph = ctypes.c_void_p()
    try:
        work()
    except BaseException:
        # end the capture (the stream is unusable otherwise) but report what work() raised,
        # not the end-capture error a failed capture also gives; free a graph it returns
        lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph))
        if graph.value:
            lib.cuGraphDestroy(graph)
        raise
    ended = lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph))
    if ended and graph.value:
        lib.cuGraphDestroy(graph)
    check(lib, ended, "cuStreamEndCapture")
    executable = ctypes.c_void_p()
    try:
        check(lib, lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0)),
              "cuGraphInstantiate")
    finally:
        lib.cuGraphDestroy(graph)
    return executable.value


def launch_graph(executable: int, stream: int) -> None:
    lib = driver()
    check(lib, lib.cuGraphLaunch(ctypes.c_void_p(executable), ctypes.c_void_p(stream)), "cuGraphLaunch")


def destroy_graph(executable: int) -> None:
    if executable and _lib is not None:
        _lib.cuGraphExecDestroy(ctypes.c_void_p(executable))


def device_name(device: int = 0) -> str:
    """The GPU's name as the driver reports it ('Orin', 'NVIDIA H100 80GB HBM3')."""
    lib = driver()
    name = ctypes.create_string_buffer(256)
    check(lib, lib.cuDeviceGetName(name, 256, ctypes.c_int(device)), "cuDeviceGetName")
    return name.value.decode(errors="replace")
