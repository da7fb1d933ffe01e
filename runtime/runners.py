"""The one inference path: a ``Runner`` per engine kind, each with one public ``infer``
that validates its input and a private ``_infer`` per backend (Polygraphy's pattern).

- ``OnnxRuntimeRunner``: an ONNX file (path or bytes) on ONNX Runtime's CPU, CUDA or
  TensorRT execution provider, with ONNX Runtime's default graph optimisations and session
  options chosen for latency;
- ``TensorRTRunner`` (``iaunet.runtime.trt_runner``): a serialized engine through
  TensorRT's Python API with pycuda buffers and stream;
- the PyTorch runner lives in ``iaunet.train.runner``, since this stage never imports torch.

A runner takes float32 N x 3 x H x W (video N x T x 3 x H x W) RGB in 0..255 and returns
float32 N x D embeddings. onnxruntime is imported inside ``OnnxRuntimeRunner``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import (CONSUMER_KEY, INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, TENSORRT_ONLY,
                                  onnxruntime_layout_path)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
DEFAULT_EMBED_BATCH = 16  # samples per inference call when the caller names none (at most an engine profile's maximum)
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


class Runner:
    """Validates what goes in and what comes out; backends implement ``_infer``."""
    name = "runner"

    def __init__(self, sample_shape: tuple, embedding_dim: int, max_batch: int | None = None):
        """``sample_shape``: one sample's dimensions, None (or a name, or -1) where dynamic."""
        self.sample_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in sample_shape)
        self.embedding_dim = embedding_dim  # None where the graph leaves it symbolic
        self.max_batch = max_batch

    def infer(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, *sample_shape) -> float32 (N, D)."""
        if not isinstance(images, np.ndarray) or images.dtype != np.float32:
            kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise IAUnetError(f"{self.name} takes a float32 array, got {kind}")
        if not self.accepts(images.shape[1:]) or not len(images):
            shape = ", ".join("?" if d is None else str(d) for d in self.sample_shape)
            raise IAUnetError(f"{self.name} takes (N, {shape}) with N >= 1, got {images.shape}")
        if self.max_batch and len(images) > self.max_batch:
            raise IAUnetError(f"{self.name} takes at most {self.max_batch} samples at once (the engine's profile), "
                              f"got {len(images)}")
        out = self._infer(np.ascontiguousarray(images))
        if out.ndim != 2 or len(out) != len(images) or out.shape[1] != (self.embedding_dim or out.shape[1]):
            raise IAUnetError(f"{self.name} returned {out.shape}, expected ({len(images)}, "
                              f"{self.embedding_dim or 'D'})")
        return out

    def accepts(self, sample_shape: tuple) -> bool:
        """Whether one sample of this shape fits (dynamic dimensions, None, fit any size)."""
        return len(sample_shape) == len(self.sample_shape) and all(
            want is None or want == got for want, got in zip(self.sample_shape, sample_shape))

    def infer_batches(self, images: np.ndarray, batch: int) -> np.ndarray:
        """``infer`` over ``images`` ``batch`` samples at a time, concatenated."""
        return np.concatenate([self.infer(images[i:i + batch]) for i in range(0, len(images), batch)])

    def _infer(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (sessions, buffers, contexts)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def usable_cores() -> int:
    """Cores this process may run on: the intra-op pool's size. ONNX Runtime's own default
    pool was slower than one thread on the 2-core VM this was measured on (iaunet_r50,
    256x128, batch 1: default 122 ms, 1 thread 94 ms, 2 threads 55 ms)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tensorrt_ep_options(precision: str, cache_dir=None, model_digest: str = "") -> dict:
    """ONNX Runtime's TensorRT execution provider options for a variant: its engines and
    timing cache kept in the toolkit's cache folder, one subfolder per model content
    (``model_digest``: ORT names a cached engine by the file's name and node names, not its
    weights, so a retrained ``model.onnx`` would load the old engine), else every session
    rebuilds the engine (minutes on Orin); and the precision flags the variant needs (the EP
    builds weakly typed: FP16 for the fp16 variant, INT8 and FP16 for the Q/DQ int8 one; with
    FP16 on, TensorRT may also pick FP16 for the graph's FP32 affinity islands, which the EP
    cannot pin: ``iaunet build``'s strongly typed engines keep them FP32)."""
    from iaunet.core.files import cache_folder
    folder = cache_folder("ort-tensorrt", cache_dir)
    folder = str(folder / model_digest[:16] if model_digest else folder)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": folder,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": folder,
            "trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8"}


def ort_providers(device: str, precision: str = "fp32", cache_dir=None, model_digest: str = "") -> list:
    """ONNX Runtime providers for ``device`` ('cpu', 'cuda', 'tensorrt'), with fallbacks
    (the TensorRT EP with its options for ``precision``); a device this onnxruntime build
    lacks is an IAUnetError naming what it has."""
    import onnxruntime as ort
    if device not in ORT_PROVIDERS:
        raise IAUnetError(f"unknown ONNX Runtime device {device!r}; expected one of {sorted(ORT_PROVIDERS)}")
    available = ort.get_available_providers()
    if ORT_PROVIDERS[device] not in available:
        raise IAUnetError(f"this onnxruntime has no {ORT_PROVIDERS[device]} (it has {', '.join(available)}); "
                          "install onnxruntime-gpu for 'cuda' and 'tensorrt'")
    order = {"tensorrt": ["tensorrt", "cuda", "cpu"], "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}[device]
    return [(ORT_PROVIDERS[d], tensorrt_ep_options(precision, cache_dir, model_digest)) if d == "tensorrt" else ORT_PROVIDERS[d]
            for d in order if ORT_PROVIDERS[d] in available]


def _return_freed_heap() -> None:
    """Give the heap that opening a session freed back to the system (glibc's ``malloc_trim``).
    ONNX Runtime parses the whole protobuf and copies, folds and reorders every weight while
    it opens a model; glibc keeps the freed blocks, and the arena's first run then grows on
    top of them. Measured on iaunet_r50 256x128 at batch 8 (104.7 MiB file, 2 cores, ORT 1.32,
    three processes each): resident after opening 339 -> 163 MB, peak 459 -> 355 MB, same
    latency. Nothing happens where the C library has no ``malloc_trim`` (musl, macOS)."""
    import ctypes
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process already has loaded
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


def best_ort_device() -> str:
    """'cuda' when this onnxruntime can use a GPU, else 'cpu'. (ONNX Runtime's TensorRT
    provider builds an engine per session, minutes for a ResNet; it is used only when asked.)"""
    import onnxruntime as ort
    return "cuda" if ORT_PROVIDERS["cuda"] in ort.get_available_providers() else "cpu"


def _metadata_of(model) -> dict:
    """An ONNX file's (path or bytes) metadata, read before any session opens it (a path is
    mapped, so its weights are not read); {} where it cannot be parsed (the session says why)."""
    import mmap
    from iaunet.core import onnx_wire
    try:
        if isinstance(model, (bytes, bytearray)):
            return onnx_wire.read_model(bytes(model), "ONNX model")[0]
        with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return onnx_wire.read_model(data, str(model))[0]
    except (IAUnetError, ValueError, OSError):
        return {}


def _precision_of(model) -> str:
    """The precision variant an ONNX file (path or bytes) says it is, from its metadata."""
    return _metadata_of(model).get(METADATA_PREFIX + "precision", "fp32")


def _digest_of(model) -> str:
    import hashlib
    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    return hashlib.sha256(data).hexdigest()


class OnnxRuntimeRunner(Runner):
    """An ONNX model on ONNX Runtime with its default graph optimisations, as any user's
    session has them (the options set here change speed and memory, not results). ``threads``
    sets the intra-op pool (None: one per core this process may use).

    The TensorRT layout of an INT8 variant (``X.int8.trt.onnx``, metadata ``iaunet.consumer =
    tensorrt``) is refused: ONNX Runtime's graph optimisations compute it wrongly
    (``iaunet.calib.ort_layout``); ``X.int8.onnx`` beside it is the same model for ONNX Runtime.
    ``as_written=True`` turns every graph optimisation off and accepts it: the file computed
    exactly as written, how the toolkit judges a graph meant for TensorRT on a CPU.
    ``weights`` (name -> ``onnxruntime.OrtValue``) supplies the initializers a serialized
    model holds as external references: many graphs over one set of weights, each parsed
    without them (``iaunet.calib.int8``'s one-layer sensitivity graphs)."""

    def __init__(self, model, device: str = "cpu", threads: int | None = None, cache_dir=None,
                 as_written: bool = False, weights: dict | None = None):
        import onnxruntime as ort
        self.source = "ONNX model" if isinstance(model, (bytes, bytearray)) else str(model)
        if not isinstance(model, (bytes, bytearray)):
            if not Path(model).is_file():
                raise IAUnetError(f"ONNX file {model} not found")
            model = str(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if as_written
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # ORT's default
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one request at a time: latency
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = int(threads or usable_cores())
        # The memory pattern pre-plans one block for every intermediate of a shape; measured on
        # iaunet_r50 256x128 at batch 8 (2 cores, ORT 1.32): peak RSS 534 MB with it, 372-460 MB
        # without, same latency (388 vs 387-400 ms).
        options.enable_mem_pattern = False
        if weights:  # name -> OrtValue, for the model's initializers that say their data is external
            options.add_external_initializers(list(weights), list(weights.values()))
        if not as_written and _metadata_of(model).get(METADATA_PREFIX + CONSUMER_KEY) == TENSORRT_ONLY:
            raise IAUnetError(f"{self.source} is the TensorRT layout of an INT8 variant (FP16 outside its Q/DQ), which "
                              "ONNX Runtime's graph optimisations compute wrongly; run "
                              f"{onnxruntime_layout_path(self.source).name}, written beside it, instead")
        self.session = self._session(model, options, device, cache_dir)
        _return_freed_heap()
        self.device = device
        self.name = f"onnxruntime-{device}" + ("-as-written" if as_written else "")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise IAUnetError(f"{self.source} has inputs {[i.name for i in inputs]} and outputs "
                              f"{[o.name for o in outputs]}; expected '{INPUT_NAME}' in and '{OUTPUT_NAME}' out")
        out = next(o for o in outputs if o.name == OUTPUT_NAME).shape
        super().__init__(tuple(inputs[0].shape[1:]), out[-1] if isinstance(out[-1], int) else None)

    def _session(self, model, options, device: str, cache_dir=None):
        import onnxruntime as ort
        try:
            providers = (ort_providers(device, _precision_of(model), cache_dir, _digest_of(model)) if device == "tensorrt"
                         else ort_providers(device))
            return ort.InferenceSession(model, options, providers=providers)
        except IAUnetError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise IAUnetError(f"{self.source} is not a model ONNX Runtime can load: {first}") from None

    @property
    def metadata(self) -> dict:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _infer(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0].astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None
