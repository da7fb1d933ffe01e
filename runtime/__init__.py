"""Runtime stage: what runs on the camera.

- ``runners``: the one inference path (``Runner``; ``OnnxRuntimeRunner``), and
  ``trt_runner.TensorRTRunner`` (TensorRT with pycuda buffers and stream);
- ``embedder.Embedder``: files, PIL images or arrays in, embeddings out;
- ``images``: what ``embed`` accepts and the threaded decoding;
- ``model_card`` / ``engine_card``: the model facts from an ONNX file's metadata, and an
  engine's sidecar with the refusal logic run before TensorRT loads;
- ``gallery.Gallery``: embeddings with ids, top-k search (numpy or FAISS), save/load;
- ``perf_figures``: latency and throughput figures;
- ``parity``: parity figures, gates and reports (numpy); ``parity_kit``: the parity kit's
  format, its hash-checked reading, and variants run against it without torch;
- ``tasks``: embed files into a gallery file, search it, draw the matches (the CLI's jobs);
- ``cameras``: the camera stream (frames and tracker boxes in, per-track embeddings out,
  one worker batching across cameras); ``camera_tasks``: ``iaunet cameras``' job (PyAV
  decoding, MOT track files, tracks.npz / stats.json / latency.png);
- ``trt_plugin_v3``: the IAU plugins' run-time side for TensorRT 10.3 to 10.8.

Imports the core only, and with numpy alone (Pillow for images); onnxruntime, tensorrt,
pycuda, faiss and av are imported inside the functions that use them. Never torch, never
onnx. Every other stage may import this one (it sits directly on the core).
"""
import importlib

_PUBLIC = {"Embedder": "iaunet.runtime.embedder", "Gallery": "iaunet.runtime.gallery"}
__all__ = sorted(_PUBLIC)


def __getattr__(name):  # lazily, so `iaunet --help` and doctor start with numpy alone
    if name not in _PUBLIC:
        raise AttributeError(f"module 'iaunet.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
