"""Calibration stage: FP16 graphs with FP32 islands for the IAU affinity ops, INT8
explicit Q/DQ graphs with FP16 outside the Q/DQ, per-layer sensitivity and the fallback
to FP16, a TensorRT calibration cache, and accuracy parity of every variant against
PyTorch, measured on ONNX Runtime.

Imports onnx and onnxruntime where used; torch only inside ``iaunet.calib.parity.run_parity``.
"""

METHODS = ("entropy", "percentile", "minmax")  # INT8 activation calibration, ONNX Runtime's names
