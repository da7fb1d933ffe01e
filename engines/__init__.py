"""Engines stage: TensorRT engines and what a device needs to build them.

- ``plan``: the build's decisions in plain Python (profile, plugin route per TensorRT
  version, function stripping, legacy INT8, cache key, sidecar);
- ``builder``: ``iaunet build`` on Polygraphy's loaders, with the engine cache;
- ``bundle`` and ``deployment_configs``: Jetson, DeepStream and Triton Inference Server bundles
  (with a parity kit);
- ``verify``: ``iaunet verify``, a bundle built, checked against its kit and benched on the device;
- ``triage``: the first layer where a variant parts from the FP32 ONNX;
- ``kernels/``, ``aot``, ``kernel_bench``, ``aot_plugins``: the IAU plugin kernels (Triton), their
  ahead-of-time PTX and manifest, the kernel benchmark, and the TensorRT >= 10.9 AOT plugins.

Imports the core, runtime and earlier stages; tensorrt, polygraphy and triton are imported
inside the functions that use them, so a device imports this with numpy and Pillow alone.
"""
