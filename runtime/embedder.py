"""``Embedder``: images in, embeddings out, on whichever backend the file and the machine allow.

``Embedder.open(path)`` takes an ONNX file (ONNX Runtime) or a TensorRT engine with its
sidecar, told apart by the file's own first bytes (``is_engine``), reads the
preprocessing and model config from the file's metadata (the engine's sidecar), checks the
ONNX file's weights against the digest written with them (``check_onnx_weights``: bit rot
on an SD card is refused, not embedded), and picks the backend: for an engine, TensorRT;
for ONNX, ONNX Runtime on CUDA where this onnxruntime has it, else CPU. ``embed``
batches up to the batch size (at most the engine profile's maximum), pads a short last
batch for TensorRT (so an engine sees one shape: its CUDA graph is for one batch, its
kernels were tuned per shape) and trims the result, and returns N x D float32,
L2-normalised unless asked not to.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import CONSUMER_KEY, METADATA_PREFIX, TENSORRT_ONLY, WEIGHTS_KEY, onnxruntime_layout_path
from iaunet.core.log import get_logger
from iaunet.core.validate import require_readable
from iaunet.runtime.engine_card import sidecar_path
from iaunet.runtime.images import DEFAULT_READ_THREADS, read_batches
from iaunet.runtime.model_card import ModelCard
from iaunet.runtime.runners import BACKENDS, DEFAULT_EMBED_BATCH

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
log = get_logger("runtime")
_NOTED = set()  # files already said to carry no weights digest (once per file and process)


def is_engine(path) -> bool:
    """Whether ``path`` is a TensorRT engine: decided by its first bytes (an ONNX model
    begins with its ``ir_version``), not by its name or a .json beside it. A file that is
    neither is taken for what its name says, so its error names the right kind."""
    from iaunet.core import onnx_wire
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return path.suffix in ENGINE_SUFFIXES
    if onnx_wire.looks_like_onnx(head):
        return False
    return path.suffix in ENGINE_SUFFIXES or sidecar_path(path).is_file()


def model_file(path) -> Path:
    """``path`` as a Path, or an IAUnetError when it is not a readable file."""
    path = Path(path)
    if path.is_dir():
        raise IAUnetError(f"model {path} is a folder; expected an .onnx file or a TensorRT engine")
    if not path.is_file():
        raise IAUnetError(f"model {path} not found; expected an .onnx file or a TensorRT engine")
    return require_readable(path, "model")


def _onnx_props(path: Path, data) -> dict:
    from iaunet.core import onnx_wire
    return onnx_wire.read_model(data, path)[0]


def _mapped(path: Path, use):
    """``use(path, the file's bytes mapped)`` for an ONNX file (its weights are not read
    unless ``use`` reads them)."""
    import mmap
    if not path.stat().st_size:
        raise IAUnetError(f"{path} is empty; expected an ONNX file")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return use(path, data)


def read_card(path) -> ModelCard:
    """The model card of an ONNX file or an engine, read from the file's metadata or the
    engine's sidecar without opening either in a runtime (the ONNX file is mapped, so its
    weights are not read)."""
    from iaunet.runtime.engine_card import read_sidecar
    path = model_file(path)
    if is_engine(path):
        return ModelCard.from_props(read_sidecar(path)["metadata"], path)
    return ModelCard.from_props(_mapped(path, _onnx_props), path)


def _weights_refusal(path: Path, data) -> str | None:
    from iaunet.core import onnx_wire
    saved = _onnx_props(path, data).get(WEIGHTS_KEY)
    if saved is None:
        if str(path) not in _NOTED:
            _NOTED.add(str(path))
            log.info("note: %s carries no weights digest (written before ONNX files had one); its weights cannot "
                     "be verified", path)
        return None
    if onnx_wire.weights_sha256(data, path) != saved:
        return (f"{path} is corrupted: its weights do not match the SHA-256 written with them; "
                "export it again or restore it from a copy")
    return None


def check_onnx_weights(path) -> None:
    """Refuse an ONNX file whose initializers no longer match ``iaunet.weights_sha256``
    (written by every stage that saves one); a file without the digest gets a note."""
    reason = _mapped(model_file(path), _weights_refusal)
    if reason:
        raise IAUnetError(reason)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _onnxruntime_layout(path: Path) -> Path:
    """The file ONNX Runtime runs for ``path``: an INT8 variant's TensorRT layout (X.int8.trt.onnx,
    computed wrongly by ONNX Runtime) is swapped for X.int8.onnx beside it, when that is there
    (otherwise the runner refuses it, naming the file)."""
    beside = onnxruntime_layout_path(path)
    if beside != path and beside.is_file() and read_card(path).props.get(METADATA_PREFIX + CONSUMER_KEY) == TENSORRT_ONLY:
        log.info("%s is the TensorRT layout; ONNX Runtime runs %s, the same INT8 model in its layout", path.name,
                 beside.name)
        return beside
    return path


def check_backend(path, backend: str) -> Path:
    """``path`` (a model file) when ``backend`` can run it; else one IAUnetError. Reads
    nothing but the file's first bytes, so a caller may check every pair before any work."""
    from iaunet.runtime.runners import ORT_PROVIDERS, ort_providers
    if backend not in BACKENDS:
        raise IAUnetError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    path = model_file(path)
    if is_engine(path):
        if backend not in ("auto", "tensorrt"):
            raise IAUnetError(f"{path} is a TensorRT engine; it runs only on the 'tensorrt' backend, not {backend!r}")
    elif backend == "tensorrt":
        raise IAUnetError(f"{path} is an ONNX file; build an engine with 'iaunet build' for the 'tensorrt' backend, "
                          "or use 'onnxruntime-tensorrt'")
    elif backend.partition("-")[2] in ORT_PROVIDERS:
        ort_providers(backend.partition("-")[2])  # refuses a provider this onnxruntime lacks
    return path


def open_runner(path, backend: str = "auto", threads: int | None = None, cuda_graph: bool = False,
                expect_model: str | None = None):
    """(runner, ModelCard) for a model file and a backend name from ``BACKENDS``."""
    from iaunet.runtime.runners import OnnxRuntimeRunner, best_ort_device
    path = check_backend(path, backend)
    if is_engine(path):
        from iaunet.runtime.trt_runner import TensorRTRunner
        runner = TensorRTRunner(path, cuda_graph=cuda_graph, expect_model=expect_model)
        return runner, runner.card
    path = _onnxruntime_layout(path)
    device = backend.partition("-")[2] or best_ort_device()
    check_onnx_weights(path)
    runner = OnnxRuntimeRunner(path, device, threads)
    try:
        card = ModelCard.from_props(runner.metadata, path)
        check_embedding_dim(runner, card, path)
    except IAUnetError:
        runner.close()
        raise
    if expect_model and not card.matches(expect_model):
        raise IAUnetError(f"{path} embeds for model {card.model_id[:12] or '(unknown)'} but model "
                          f"{expect_model[:12]} was expected")
    return runner, card


def check_embedding_dim(runner, card: ModelCard, path) -> None:
    """Refuse a graph whose output size is not the metadata's; where the graph leaves it
    symbolic, the runner checks every result against the metadata's instead."""
    if runner.embedding_dim is None:
        runner.embedding_dim = card.embedding_dim
    elif runner.embedding_dim != card.embedding_dim:
        raise IAUnetError(f"{path} gives {runner.embedding_dim}-d embeddings but its metadata says "
                          f"{card.embedding_dim}; export it again")


class Embedder:
    """A runner with its model card and batch size."""

    def __init__(self, runner, card: ModelCard, batch: int | None = None,
                 read_threads: int = DEFAULT_READ_THREADS):
        limit = runner.max_batch
        batch = batch or min(DEFAULT_EMBED_BATCH, limit or DEFAULT_EMBED_BATCH)
        if batch < 1 or (limit and batch > limit):
            raise IAUnetError(f"batch {batch} is outside 1..{limit or 'any'} (the engine's profile)")
        if not runner.accepts(card.sample_shape):
            raise IAUnetError(f"the model takes {runner.sample_shape} but its metadata says {card.sample_shape}")
        self.runner, self.card, self.batch, self.read_threads = runner, card, batch, read_threads

    @classmethod
    def open(cls, path, backend: str = "auto", batch: int | None = None, threads: int | None = None,
             cuda_graph: bool = False, expect_model: str | None = None) -> "Embedder":
        runner, card = open_runner(path, backend, threads, cuda_graph, expect_model)
        try:
            return cls(runner, card, batch)
        except IAUnetError:
            runner.close()
            raise

    @property
    def backend(self) -> str:
        return self.runner.name

    @property
    def model_id(self) -> str:
        return self.card.model_id

    def _batches(self, items, on_error=None):
        if isinstance(items, np.ndarray) and items.dtype == np.float32 and items.ndim == len(self.card.sample_shape) + 1:
            if items.shape[1:] != self.card.sample_shape:
                raise IAUnetError(f"the array is {items.shape}; expected (N, {', '.join(map(str, self.card.sample_shape))})")
            return (items[i:i + self.batch] for i in range(0, len(items), self.batch))
        return read_batches(items, self.card, self.batch, self.read_threads, on_error)

    def embed(self, items, normalize: bool = True, progress=None, on_error=None) -> np.ndarray:
        """N items (see ``iaunet.runtime.images``) -> float32 (N, D); ``progress``: a
        callable given the number of samples done after each batch. With ``on_error``,
        unreadable items are left out of the result and reported to it (index, error)."""
        items = items if isinstance(items, np.ndarray) else list(items)
        outs = []
        for batch in self._batches(items, on_error):
            n = len(batch)
            if self.runner.max_batch and n < self.batch:  # a profile-bound engine: keep its shapes
                batch = np.concatenate([batch, np.zeros((self.batch - n, *batch.shape[1:]), np.float32)])
            outs.append(self.runner.infer(batch)[:n])
            if progress:
                progress(n)
        if not outs:
            raise IAUnetError(f"nothing to embed: all {len(items)} images were unreadable and skipped" if len(items)
                              else "nothing to embed: no images were given")
        out = np.concatenate(outs)
        return l2_normalize(out).astype(np.float32) if normalize and not self.card.normalized else out

    def close(self) -> None:
        self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
