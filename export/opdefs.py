"""Names of the IAU plugin ops as they appear in ONNX and in TensorRT's plugin registry
(no heavy imports: calib, the lint and the runtime read these)."""

DOMAIN = "iaunet"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "iaunet"
PLUGIN_VERSION = "1"
CHANNEL_OP = "IAUChannelAffinity"
PART_OP = "IAUPartAffinity"
PLUGIN_OPS = (CHANNEL_OP, PART_OP)
