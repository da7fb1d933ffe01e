"""Engines stage: TensorRT engines and what a device needs to build them.

- ``plan``: the build's decisions in plain Python (profile, plugin route per TensorRT
  version, function stripping, legacy INT8, cache key, sidecar);
- ``builder``: ``iaunet build`` on Polygraphy's loaders, with the engine cache;
- ``bundle`` and ``deployment_configs``: Jetson, DeepStream and Triton Inference Server bundles;
- ``kernels/``, ``aot``, ``bench``, ``aot_plugins``: the IAU plugin kernels (Triton), their
  ahead-of-time PTX and manifest, the kernel benchmark, and the TensorRT >= 10.9 AOT plugins.

Imports the core, runtime and earlier stages; tensorrt, polygraphy and triton are imported
inside the functions that use them, so a device imports this with numpy and Pillow alone.
"""
