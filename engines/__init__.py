"""Engines stage: the IAU plugin kernels (Triton sources in ``kernels/``), their
ahead-of-time PTX compile and manifest (``aot``), the kernel benchmark (``bench``), and
the TensorRT >= 10.9 ahead-of-time plugin registration (``aot_plugins``).

The TensorRT engine builder, its sidecar and cache, and the Jetson, DeepStream and
Triton Inference Server bundles are not built yet (open issue). Imports the core only;
triton and tensorrt are imported inside the functions that use them.
"""
