"""The contract every exported graph and engine keeps with its callers: the input and
output tensor names and the prefix of the toolkit's metadata keys. Standard library only."""

INPUT_NAME = "images"          # float32 RGB 0..255, N x 3 x H x W (video N x T x 3 x H x W), batch dynamic
OUTPUT_NAME = "embeddings"     # float32 N x D
METADATA_PREFIX = "iaunet."    # ONNX metadata_props keys written by export and calib
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)         # per-axis Q/DQ needs 13; TensorRT 10.3's parser stops at 20
