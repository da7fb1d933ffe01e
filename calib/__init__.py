"""Calibration stage (not built yet): FP16 graphs with FP32 islands for the IAU affinity
ops, INT8 explicit Q/DQ graphs, TensorRT calibration caches, and accuracy parity on
ONNX Runtime."""
