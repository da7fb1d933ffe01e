"""Export stage (not built yet): checkpoint -> ONNX with IAU plugin nodes carrying ONNX
local functions as reference bodies, metadata, onnx checker, ONNX Runtime parity and a
TensorRT operator lint."""
