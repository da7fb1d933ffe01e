"""The TensorRT runner: a serialized engine through TensorRT's Python API, with pycuda
for the buffers and the stream (the design card's choice).

Before the engine is deserialized, its sidecar is checked (``engine_card``): another
model than the caller expects is refused before TensorRT or the GPU is touched; another
GPU architecture or TensorRT release is refused with the sidecar's reason once this
machine's facts are read; another GPU model of the same architecture loads with a
warning, as TensorRT itself does. Then: the device's primary context is retained (shared
with every other CUDA user in the process, as the CUDA runtime and PyTorch do, instead of
a private context) and pushed around every call that touches the GPU, so the runner may
be called from any thread, one call at a time (a lock sees to it); the plugins the engine
needs are registered (the Python ``IPluginV3`` route; AOT plugins travel inside the
engine); the engine is deserialized; page-locked host buffers and device buffers are
sized from the optimisation profile's maximum and their addresses set once
(``set_tensor_address``); a call sets its batch's shape (``set_input_shape``) and runs
``execute_async_v3`` on one stream. With ``cuda_graph=True`` the runner keeps one CUDA
graph for one fixed batch (the first call's): smaller calls are padded up to it and run
the graph without touching the shapes, a larger call recaptures it, so the context's
shapes never change under a captured graph.

Checked against the TensorRT binding wheels and pycuda's source
(tests/engines/test_trt_names.py, tests/runtime/test_pycuda_names.py); it runs only
where TensorRT's libraries and a GPU are.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from iaunet.core import cuda_driver
from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
from iaunet.core.log import get_logger
from iaunet.core.plugin_contract import TRT_MIN_VERSION, tensorrt_version
from iaunet.runtime.engine_card import (ENGINE_DIGEST, Machine, bytes_refusal, machine_refusal, model_refusal,
                                        other_gpu_model, read_sidecar)
from iaunet.runtime.model_card import ModelCard
from iaunet.runtime.runners import Runner

log = get_logger("runtime")


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


def _pycuda():
    """pycuda.driver, initialised (cuInit is idempotent)."""
    import pycuda.driver as cuda
    cuda.init()
    return cuda


def machine_facts(device: int = 0) -> Machine:
    """This machine's GPU (through pycuda) and TensorRT release (the module's version)."""
    trt = import_tensorrt()
    gpu = _pycuda().Device(device)
    major, minor = gpu.compute_capability()
    return Machine(gpu.name(), major * 10 + minor, trt.__version__)


def _register_plugins(card: dict) -> None:
    if card["plugin_route"] == "python":
        from iaunet.runtime.trt_plugin_v3 import register_plugins
        register_plugins()


def dla_core(sidecar: dict):
    """The DLA core the engine was built for (its sidecar's build flags), or None."""
    flags = sidecar.get("build_flags")
    core = flags.get("dla_core") if isinstance(flags, dict) else None
    return core if isinstance(core, int) and core >= 0 else None


def _runtime(trt, logger, sidecar: dict):
    """trt.Runtime set to load onto the DLA core the engine was built for: TensorRT loads a
    DLA engine onto the runtime's core (0 unless set)."""
    runtime = trt.Runtime(logger)
    core = dla_core(sidecar)
    if core is not None:
        runtime.DLA_core = core
    return runtime


def check_engine(engine, sidecar: dict, device: int, expect_model: str | None, machine: Machine | None) -> None:
    """Refuse ``engine`` for another model (checked first: it needs no GPU), then for
    another GPU architecture or TensorRT release; warn for another GPU model."""
    reason = model_refusal(sidecar, expect_model)
    if not reason:
        machine = machine or machine_facts(device)
        reason = machine_refusal(sidecar, machine)
    if reason:
        raise IAUnetError(f"{engine}: {reason}")
    warning = other_gpu_model(sidecar, machine)
    if warning:
        log.warning("%s: %s", engine, warning)


def check_engine_bytes(engine, sidecar: dict) -> bytes:
    """The engine's bytes, refused when they are not the ones its sidecar names."""
    data = Path(engine).read_bytes()
    reason = bytes_refusal(sidecar, data)
    if reason:
        raise IAUnetError(f"{engine}: {reason}")
    if ENGINE_DIGEST not in sidecar:
        log.info("note: the sidecar of %s carries no engine digest (written before sidecars had one); the "
                 "engine's bytes cannot be verified", engine)
    return data


class TensorRTRunner(Runner):
    """A TensorRT engine with its sidecar. ``expect_model``: the checkpoint SHA-256 the
    caller needs (a gallery's), refused before loading when the engine has another.
    ``machine``: this machine's facts when already known (else read through pycuda)."""

    def __init__(self, engine, device: int = 0, cuda_graph: bool = False, expect_model: str | None = None,
                 machine: Machine | None = None):
        self.sidecar = read_sidecar(engine)
        check_engine(engine, self.sidecar, device, expect_model, machine)
        data = check_engine_bytes(engine, self.sidecar)
        cuda, trt = _pycuda(), import_tensorrt()
        self.card = ModelCard.from_props(self.sidecar["metadata"], engine)
        self.name, self._cuda, self._graph = "tensorrt", cuda, None  # _graph: (batch, executable)
        self.cuda_graph, self._lock = cuda_graph, threading.Lock()
        self._context = cuda.Device(device).retain_primary_context()
        with self._current():
            _register_plugins(self.sidecar)
            self._logger = trt.Logger(trt.Logger.ERROR)
            self._engine = _runtime(trt, self._logger, self.sidecar).deserialize_cuda_engine(data)
            if self._engine is None:
                raise IAUnetError(f"TensorRT could not deserialize {engine}; rebuild it with 'iaunet build'")
            dim = tuple(self._engine.get_tensor_shape(OUTPUT_NAME))[-1]
            if dim != self.card.embedding_dim:
                raise IAUnetError(f"{engine} gives {dim}-d embeddings but its sidecar says "
                                  f"{self.card.embedding_dim}; rebuild it with 'iaunet build'")
            self._execution = self._engine.create_execution_context()
            max_shape = tuple(self._engine.get_tensor_profile_shape(INPUT_NAME, 0)[2])
            super().__init__(max_shape[1:], dim, max_batch=max_shape[0])
            self._allocate(trt, max_shape)

    @contextmanager
    def _current(self):
        """The primary context made current on this thread for the duration."""
        self._context.push()
        try:
            yield
        finally:
            self._context.pop()

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

    def _rows(self, n: int) -> int:
        """The batch to run for ``n`` samples: ``n``, or the CUDA graph's fixed batch when it holds them."""
        if self._graph is None or n > self._graph[0]:
            return n
        return self._graph[0]

    def _execute(self) -> None:
        if not self._execution.execute_async_v3(self._stream.handle):
            raise IAUnetError("TensorRT's execute_async_v3 failed (see TensorRT's log above)")

    def _run(self, rows: int) -> None:
        """Replay the CUDA graph when it is for ``rows``; else a plain run, after which (with
        ``cuda_graph``) the graph is captured for ``rows``. The plain run's output stands, and
        TensorRT has finished its shape-dependent set-up outside the capture."""
        if self._graph is not None and self._graph[0] == rows:
            return cuda_driver.launch_graph(self._graph[1], self._stream.handle)
        self._drop_graph()
        self._execution.set_input_shape(INPUT_NAME, (rows, *self.sample_shape))
        self._execute()
        if self.cuda_graph:
            self._stream.synchronize()
            self._graph = (rows, cuda_driver.capture_graph(self._stream.handle, self._execute))

    def _drop_graph(self) -> None:
        if self._graph is not None:
            cuda_driver.destroy_graph(self._graph[1])
            self._graph = None

    def _infer(self, images: np.ndarray) -> np.ndarray:
        cuda, n = self._cuda, len(images)
        with self._lock, self._current():
            rows = self._rows(n)
            self._host_in[:n] = images
            self._host_in[n:rows] = 0
            cuda.memcpy_htod_async(self._device_in, self._host_in[:rows], self._stream)
            self._run(rows)
            cuda.memcpy_dtoh_async(self._host_out[:rows], self._device_out, self._stream)
            self._stream.synchronize()
        return np.array(self._host_out[:n], dtype=np.float32)

    def close(self) -> None:
        """Free the graph, the device and page-locked buffers, the stream and the engine
        while the primary context is current. The runner's hold on the context itself is
        released by pycuda when the runner is collected."""
        if getattr(self, "_execution", None) is None:
            return
        with self._lock, self._current():
            self._drop_graph()
            self._device_in.free()
            self._device_out.free()
            self._host_in = self._host_out = self._stream = None
            self._execution = self._engine = None
