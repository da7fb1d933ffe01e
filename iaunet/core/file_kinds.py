"""What an existing file is, read from its bytes (never its name), so that an output path
never replaces a file of another kind: a checkpoint, an ONNX model, an engine, a gallery,
an image or another stage's JSON record. Standard library only.

``kind_of(path)`` names the kind, or returns None for a file the toolkit does not know
(which an output may replace: the user named it). Writers name the kind they write with
the constants below; ``iaunet.core.files.check_output_path`` compares the two.
"""
from __future__ import annotations

import json
import mmap
import os
import zipfile
from pathlib import Path

CHECKPOINT = "PyTorch checkpoint"
ONNX = "ONNX model"
ENGINE = "TensorRT engine (it has a sidecar beside it)"
GALLERY = "gallery (.npz)"
NPZ = "numpy archive (.npz)"
IMAGE = "image"
CALIB_CACHE = "TensorRT calibration cache"
TIMING_CACHE = "TensorRT timing cache"
MARKDOWN = "report page"

# JSON records: every key listed must be present (the first match names it)
CALIB_RECORD = "calibration record (written by 'iaunet calib')"
SIDECAR = "engine sidecar (written by 'iaunet build')"
TRIAGE = "triage report"
METRICS = "evaluation metrics (written by 'iaunet eval --json')"
MATCHES = "search matches (written by 'iaunet search --json')"
DOCTOR = "machine report (written by 'iaunet doctor --json')"
BENCH = "benchmark report (bench.json)"
PARITY = "parity report (parity.json)"
BUNDLE_MANIFEST = "bundle manifest"
PTX_MANIFEST = "PTX manifest"
DEMO_RECORD = "demo record (demo.json)"
DATA_RECORD = "data set record (synth.json)"
JSON_RECORDS = (
    (SIDECAR, ("tensorrt_version", "plugin_route", "onnx_sha256")),
    (CALIB_RECORD, ("precision", "source", "source_sha256")),
    (TRIAGE, ("reference", "candidate", "backend", "paired", "layers")),
    (METRICS, ("rank1", "mAP", "mINP")),
    (MATCHES, ("gallery", "k", "results")),
    (DOCTOR, ("iaunet", "python", "platform", "stages")),
    (BENCH, ("cpu_peak_gflops", "timings")),
    (PARITY, ("data", "variants")),
    (BUNDLE_MANIFEST, ("tensorrt_checked_against", "sha256")),
    (PTX_MANIFEST, ("format", "arch", "triton_version", "kernels")),
    (DEMO_RECORD, ("machine", "files")),
    (DATA_RECORD, ("layout", "identities", "cameras", "seed")),
)
JSON_READ_LIMIT = 64 << 20          # a record is small; a bigger file is not one of ours
ONNX_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25}  # onnx.proto ModelProto field numbers
ONNX_GRAPH_FIELD = 7
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF8")
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's legacy magic number


def article(kind: str) -> str:
    """``kind`` with its indefinite article: "an ONNX model", "a gallery (.npz)"."""
    return f"{'an' if kind[0] in 'AEIOUaeiou' else 'a'} {kind}"


def kind_of(path) -> str | None:
    """The kind of the regular file at ``path``, or None where it is unknown or unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if not head:
                return None
            return (_binary_kind(path, f, head) or _text_kind(path, f, head))
    except OSError:
        return None


def _binary_kind(path: Path, f, head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(f)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return CHECKPOINT
    if head.startswith(IMAGE_MAGIC) or head[8:12] == b"WEBP":
        return IMAGE
    if _engine_sidecar_beside(path):
        return ENGINE
    if head[0] == 0x08 and _is_onnx(f):
        return ONNX
    return None


def _zip_kind(f) -> str | None:
    try:
        names = zipfile.ZipFile(f).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return CHECKPOINT
    if names and all(n.endswith(".npy") for n in names):
        return GALLERY if "embeddings.npy" in names and "model_id.npy" in names else NPZ
    return None


def _engine_sidecar_beside(path: Path) -> bool:
    sidecar = Path(str(path) + ".json")
    return sidecar.is_file() and _record_kind(sidecar) == SIDECAR


def _is_onnx(f) -> bool:
    """Top-level protobuf fields all ModelProto's, the graph among them."""
    from iaunet.core import onnx_wire
    try:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            numbers = set()
            for number, *_ in onnx_wire.fields(data):
                if number not in ONNX_MODEL_FIELDS:
                    return False
                numbers.add(number)
    except (ValueError, OSError, IndexError):
        return False
    return ONNX_GRAPH_FIELD in numbers


def _text_kind(path: Path, f, head: bytes) -> str | None:
    text = head.lstrip()
    if text.startswith(b"TRT-") and b"Calibration" in head:
        return CALIB_CACHE
    if text[:1] in (b"{", b"["):
        return _record_kind(path)
    return None


def _record_kind(path: Path) -> str | None:
    try:
        if os.path.getsize(path) > JSON_READ_LIMIT:
            return None
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    return next((kind for kind, keys in JSON_RECORDS if all(k in payload for k in keys)), None)
