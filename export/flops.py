"""Floating-point operations of one sample through an exported graph, per node and in
all: achieved GFLOP/s in ``iaunet bench``, and each layer's share in the INT8
sensitivity record: 2 per multiply-accumulate in Conv, Gemm and MatMul, and
4·K²·L per ``IAUChannelAffinity`` (two K×K×L products; the part affinity's few parts are
negligible). Shapes come from ONNX shape inference with the batch set to 1; the rest of
the graph (BatchNorm, ReLU, softmax) is elementwise and left out, as FLOP counts of CNNs
usually do.
"""
from __future__ import annotations

import numpy as np

from iaunet.core.plugin_contract import CHANNEL_OP
from iaunet.export.metadata import load_onnx


def _shapes(model) -> dict:
    import onnx
    model, original = onnx.ModelProto(), model
    model.CopyFrom(original)  # the batch is set to 1 on a copy
    graph_input = model.graph.input[0].type.tensor_type.shape.dim
    graph_input[0].Clear()
    graph_input[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    shapes.update({t.name: tuple(t.dims) for t in inferred.graph.initializer})
    return shapes


def node_flops(model) -> dict:
    """{node name: FLOPs of one sample} for the nodes that do the arithmetic (see the
    module docstring); ``model`` is an ONNX ModelProto. An unnamed node is keyed ``#<index>``."""
    shapes, flops = _shapes(model), {}
    for index, node in enumerate(model.graph.node):
        name = node.name or f"#{index}"
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type == "Conv" and out and node.input[1] in shapes:
            weight = shapes[node.input[1]]
            flops[name] = 2 * np.prod(out) * np.prod(weight[1:])
        elif node.op_type in ("MatMul", "Gemm") and out and node.input[0] in shapes:
            flops[name] = 2 * np.prod(out) * shapes[node.input[0]][-1]
        elif node.op_type == CHANNEL_OP and node.input[0] in shapes:
            b, k, l = shapes[node.input[0]]
            flops[name] = 4 * b * k * k * l
    return {name: float(f) for name, f in flops.items()}


def count_flops(path) -> float:
    """FLOPs of one sample (one clip for video models) through the ONNX file at ``path``."""
    return float(sum(node_flops(load_onnx(path)).values()))
