"""The TensorRT runner: a serialized engine through TensorRT's Python API, with pycuda
for the buffers and the stream (the design card's choice).

Before TensorRT is imported, the engine's sidecar is checked against this machine
(``engine_card.refusal``): another GPU architecture, another TensorRT release or
another model is refused with the sidecar's reason. Then: the device's primary context
is retained and pushed (shared with every other CUDA user in the process, as the CUDA
runtime and PyTorch do, instead of a private context); the plugins the engine needs are
registered (the Python ``IPluginV3`` route; AOT plugins travel inside the engine); the
engine is deserialized; page-locked host buffers and device buffers are sized from the
optimisation profile's maximum; every call is ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3`` on one stream. With ``cuda_graph=True``
the first call at each batch size is captured as a CUDA graph and replayed after.

Checked against the TensorRT binding wheels and pycuda's source
(tests/engines/test_trt_names.py, tests/runtime/test_pycuda_names.py); it runs only
where TensorRT's libraries and a GPU are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iaunet.core import cuda_driver
from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
from iaunet.core.plugin_contract import TRT_MIN_VERSION, tensorrt_version
from iaunet.runtime.engine_card import Machine, read_sidecar, refusal
from iaunet.runtime.model_card import ModelCard
from iaunet.runtime.runners import Runner


def import_tensorrt():
    """tensorrt, or one line saying it is not installed (the bindings may be present without
    the libraries: that, too, is 'not installed') or older than the toolkit supports."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise IAUnetError(f"TensorRT is not installed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                          "on Jetson it comes with JetPack, elsewhere from NVIDIA's tensorrt wheels") from None
    if tensorrt_version(tensorrt) < TRT_MIN_VERSION:
        raise IAUnetError(f"TensorRT {tensorrt.__version__} is older than the toolkit supports "
                          f"({'.'.join(map(str, TRT_MIN_VERSION))} and later)")
    return tensorrt


def machine_facts(device: int = 0) -> Machine:
    """This machine's GPU (through pycuda) and TensorRT release (the module's version)."""
    trt = import_tensorrt()
    import pycuda.driver as cuda
    cuda.init()
    gpu = cuda.Device(device)
    major, minor = gpu.compute_capability()
    return Machine(gpu.name(), major * 10 + minor, trt.__version__)


def _register_plugins(card: dict) -> None:
    if card["plugin_route"] == "python":
        from iaunet.runtime.trt_plugin_v3 import register_plugins
        register_plugins()


class TensorRTRunner(Runner):
    """A TensorRT engine with its sidecar. ``expect_model``: the checkpoint SHA-256 the
    caller needs (a gallery's), refused before loading when the engine has another.
    ``machine``: this machine's facts when already known (else read through pycuda)."""

    def __init__(self, engine, device: int = 0, cuda_graph: bool = False, expect_model: str | None = None,
                 machine: Machine | None = None):
        self.sidecar = read_sidecar(engine)
        reason = refusal(self.sidecar, machine or machine_facts(device), expect_model)
        if reason:
            raise IAUnetError(f"{engine}: {reason}")
        import pycuda.driver as cuda
        trt = import_tensorrt()
        self.card = ModelCard.from_props(self.sidecar["metadata"], engine)
        self.name, self._cuda, self._graphs = "tensorrt", cuda, {}
        self._context = cuda.Device(device).retain_primary_context()
        self._context.push()
        try:
            _register_plugins(self.sidecar)
            self._logger = trt.Logger(trt.Logger.ERROR)
            self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(Path(engine).read_bytes())
            if self._engine is None:
                raise IAUnetError(f"TensorRT could not deserialize {engine}; rebuild it with 'iaunet build'")
            self._execution = self._engine.create_execution_context()
            max_shape = tuple(self._engine.get_tensor_profile_shape(INPUT_NAME, 0)[2])
            super().__init__(max_shape[1:], self.card.embedding_dim, max_batch=max_shape[0])
            self._allocate(trt, max_shape)
        except BaseException:
            self._context.pop()
            raise
        self.cuda_graph = cuda_graph

    def _allocate(self, trt, max_shape: tuple) -> None:
        cuda = self._cuda
        out_shape = (max_shape[0], self.embedding_dim)
        self._host_in = cuda.pagelocked_empty(max_shape, trt.nptype(self._engine.get_tensor_dtype(INPUT_NAME)))
        self._host_out = cuda.pagelocked_empty(out_shape, trt.nptype(self._engine.get_tensor_dtype(OUTPUT_NAME)))
        self._device_in = cuda.mem_alloc(self._host_in.nbytes)
        self._device_out = cuda.mem_alloc(self._host_out.nbytes)
        self._stream = cuda.Stream()
        self._execution.set_tensor_address(INPUT_NAME, int(self._device_in))
        self._execution.set_tensor_address(OUTPUT_NAME, int(self._device_out))

    def _enqueue(self) -> None:
        if not self._execution.execute_async_v3(self._stream.handle):
            raise IAUnetError("TensorRT's execute_async_v3 failed (see TensorRT's log above)")

    def _run(self, n: int) -> None:
        if not self.cuda_graph:
            return self._enqueue()
        if n not in self._graphs:
            self._enqueue()  # a plain run first: TensorRT finishes its shape-dependent set-up outside the capture
            self._stream.synchronize()
            self._graphs[n] = cuda_driver.capture_graph(self._stream.handle, self._enqueue)
        cuda_driver.launch_graph(self._graphs[n], self._stream.handle)

    def _infer(self, images: np.ndarray) -> np.ndarray:
        cuda, n = self._cuda, len(images)
        self._host_in[:n] = images
        self._execution.set_input_shape(INPUT_NAME, images.shape)
        cuda.memcpy_htod_async(self._device_in, self._host_in[:n], self._stream)
        self._run(n)
        cuda.memcpy_dtoh_async(self._host_out[:n], self._device_out, self._stream)
        self._stream.synchronize()
        return np.array(self._host_out[:n], dtype=np.float32)

    def close(self) -> None:
        if getattr(self, "_execution", None) is None:
            return
        for executable in self._graphs.values():
            cuda_driver.destroy_graph(executable)
        self._device_in.free()
        self._device_out.free()
        self._execution = self._engine = None
        self._context.pop()
