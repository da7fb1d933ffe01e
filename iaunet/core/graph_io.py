"""The contract every exported graph and engine keeps with its callers: the input and
output tensor names, the prefix of the toolkit's metadata keys and the keys that identify
the model and check the file's weights. Standard library only."""

INPUT_NAME = "images"          # float32 RGB 0..255, N x 3 x H x W (video N x T x 3 x H x W), batch dynamic
OUTPUT_NAME = "embeddings"     # float32 N x D
METADATA_PREFIX = "iaunet."    # ONNX metadata_props keys written by export and calib
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)         # per-axis Q/DQ needs 13; TensorRT 10.3's parser stops at 20
MODEL_ID_KEY = METADATA_PREFIX + "model_id"              # SHA-256 of the checkpoint's weights and config
WEIGHTS_KEY = METADATA_PREFIX + "weights_sha256"         # SHA-256 of this file's initializers (onnx_wire)
LEGACY_ID_KEY = METADATA_PREFIX + "checkpoint_sha256"    # the checkpoint file's SHA-256 (the model id of older files)
