"""The contract every exported graph and engine keeps with its callers: the input and
output tensor names, the prefix of the toolkit's metadata keys, the keys that identify the
model and check the file's weights, and the names of an INT8 variant's two layouts.
Standard library only."""
from pathlib import Path

INPUT_NAME = "images"          # float32 RGB 0..255, N x 3 x H x W (video N x T x 3 x H x W), batch dynamic
OUTPUT_NAME = "embeddings"     # float32 N x D
METADATA_PREFIX = "iaunet."    # ONNX metadata_props keys written by export and calib
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)         # per-axis Q/DQ needs 13; TensorRT 10.3's parser stops at 20
MODEL_ID_KEY = METADATA_PREFIX + "model_id"              # SHA-256 of the checkpoint's weights and config
WEIGHTS_KEY = METADATA_PREFIX + "weights_sha256"         # SHA-256 of this file's initializers (onnx_wire)
LEGACY_ID_KEY = METADATA_PREFIX + "checkpoint_sha256"    # the checkpoint file's SHA-256 (the model id of older files)

# An INT8 variant is written in two layouts (iaunet.calib.int8): ``X.onnx`` for ONNX Runtime
# and any other consumer, and ``X.trt.onnx`` for TensorRT's strongly typed builder (FP16
# outside the Q/DQ), which a default ONNX Runtime session computes wrongly. The TensorRT file
# says so in its metadata: CONSUMER_KEY = TENSORRT_ONLY.
CONSUMER_KEY = "consumer"
TENSORRT_ONLY = "tensorrt"
TENSORRT_SUFFIX = ".trt.onnx"


def tensorrt_layout_path(path):
    """'m.int8.onnx' -> 'm.int8.trt.onnx' (a pathlib.Path): where the TensorRT layout of a variant goes."""
    path = Path(path)
    return path if path.name.endswith(TENSORRT_SUFFIX) else path.with_suffix(TENSORRT_SUFFIX)


def onnxruntime_layout_path(path):
    """'m.int8.trt.onnx' -> 'm.int8.onnx': the file beside a TensorRT layout that any consumer may load."""
    path = Path(path)
    return path.with_name(path.name[:-len(TENSORRT_SUFFIX)] + ".onnx") if path.name.endswith(TENSORRT_SUFFIX) else path
