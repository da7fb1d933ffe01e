"""Runtime stage: the lightweight inference layer (preprocessing, TensorRT and ONNX
Runtime backends, embedder, gallery search, benchmark).

Imports with numpy alone; backends import tensorrt, pycuda or onnxruntime lazily.
The preprocessing is ``iaunet.core.preprocess``, the same code training evaluates with.
"""
