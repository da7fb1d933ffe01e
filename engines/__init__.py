"""Engines stage (not built yet): TensorRT builder (strongly typed, profiles, timing
cache), engine metadata sidecar, IAU plugin kernels and registration, Jetson bundle."""
