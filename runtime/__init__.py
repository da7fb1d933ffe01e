"""Runtime stage: what runs on the camera. Today it holds the IAU plugins' run-time side
for TensorRT 10.3 to 10.8 (``trt_plugin_v3``: Python IPluginV3 classes that launch the
PTX through the CUDA driver); the ONNX Runtime and TensorRT backends, the embedder, the
gallery and the benchmark are not built yet (open issue).

Imports the core only, and with numpy alone; tensorrt is imported inside the functions
that use it. Never torch, never onnx.
"""
