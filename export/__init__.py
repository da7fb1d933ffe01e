"""Export stage: checkpoint -> ONNX with IAU plugin nodes (carrying ONNX local functions
as reference bodies) or plain ops; graph cleanup with onnx-graphsurgeon; metadata;
checks (onnx checker, ONNX Runtime parity against PyTorch, the ONNX reference evaluator,
a TensorRT 10.3 operator lint).

``iaunet.export.read_metadata`` needs only onnx; ``iaunet.export.export_checkpoint`` needs
torch too.
"""
import importlib

_PUBLIC = {"export_checkpoint": "iaunet.export.exporter", "read_metadata": "iaunet.export.metadata",
           "ExportMetadata": "iaunet.export.metadata", "tensorrt_lint": "iaunet.export.checks"}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
