"""TensorRT's calibration cache format (the ``.calib`` file): a header naming the TensorRT
version and the calibration algorithm, then ``tensor: hex(float32 scale)`` lines.

TensorRT skips a cache whose header names another version, so the calib stage writes the
header for a version and the build stage re-stamps it for the TensorRT it runs on (the
scales do not depend on the version). Standard library only.
"""
from __future__ import annotations

import re

from iaunet.core.errors import IAUnetError

ALGORITHM = "EntropyCalibration2"
HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def trt_version_code(version: str) -> int:
    """'10.3.0' -> 100300 (TensorRT's NV_TENSORRT_VERSION for 10.x)."""
    try:
        major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        raise IAUnetError(f"TensorRT version {version!r} is not MAJOR.MINOR[.PATCH]") from None
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def header(version: str, algorithm: str = ALGORITHM) -> str:
    return f"TRT-{trt_version_code(version)}-{algorithm}"


def for_version(text: str, version: str, source="the calibration cache") -> str:
    """``text`` (a .calib file's) with its header stamped for TensorRT ``version``."""
    lines = text.splitlines()
    match = HEADER.match(lines[0].strip()) if lines else None
    if match is None:
        raise IAUnetError(f"{source} does not start with a TensorRT calibration header (TRT-<version>-<algorithm>)")
    return "\n".join([header(version, match.group(2))] + lines[1:]) + "\n"
