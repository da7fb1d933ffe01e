"""Calibration stage: FP16 graphs with FP32 islands for the IAU affinity ops, INT8
explicit Q/DQ graphs in two layouts (FP32 outside the Q/DQ for ONNX Runtime and any other
consumer, FP16 outside them for TensorRT), per-layer sensitivity and the fallback
to FP16, a TensorRT calibration cache, accuracy parity of every variant against
PyTorch, measured on ONNX Runtime, and parity kits (held-out images with their PyTorch references).

This package module imports nothing (the CLI reads the stage's defaults here); onnx and
onnxruntime are imported where used, torch only inside ``iaunet.calib.parity``'s ``run_parity`` and ``write_kit``.
"""

METHODS = ("entropy", "percentile", "minmax")  # INT8 activation calibration, ONNX Runtime's names
METHOD_CHOICES = ("auto", *METHODS)  # auto: every method scored on held-out images, the best kept
DEFAULT_METHOD = "auto"
CALIBRATION_SAMPLES = 128  # training images INT8's activation ranges come from, by default
PROBE_SAMPLES = 16  # images the FP16 overflow probe reads (and INT8's judge when none can be held out)
