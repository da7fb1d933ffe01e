"""The IAU plugin ops' ONNX local functions (their reference bodies) and the helpers that
attach, find and strip them. Needs onnx and numpy, not torch: ``iaunet calib`` writes the
bodies again when it changes a graph's opset.

* ``IAUChannelAffinity(X[B,K,L]) -> Y[B,K,L]``: ``Y = softmax(X X^T - rowmax) X``, FP32.
* ``IAUPartAffinity(S[B,N,N]; frames, parts) -> W[B,N,N]``: row softmax of the relation
  logits with the (frames, parts) mask excluded.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import (CHANNEL_OP, DOMAIN, DOMAIN_VERSION, MASK_LOGIT, PART_OP, PLUGIN_OPS,
                                         part_relation_mask)


def _reduce_last(op: str, opset: int, name_in: str, name_out: str, axes: str = "axes") -> list:
    """``op`` (ReduceMax, ReduceMin) over the last axis, keeping it."""
    if opset >= 18:  # axes moved from attribute to input
        return [helper.make_node("Constant", [], [axes], value=numpy_helper.from_array(np.array([-1], np.int64))),
                helper.make_node(op, [name_in, axes], [name_out], keepdims=1)]
    return [helper.make_node(op, [name_in], [name_out], axes=[-1], keepdims=1)]


def channel_affinity_function(opset: int) -> onnx.FunctionProto:
    nodes = [helper.make_node("Transpose", ["X"], ["Xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["X", "Xt"], ["S"]),
             *_reduce_last("ReduceMax", opset, "S", "Smax"),
             helper.make_node("Sub", ["S", "Smax"], ["Sc"]),
             helper.make_node("Softmax", ["Sc"], ["P"], axis=-1),
             helper.make_node("MatMul", ["P", "X"], ["Y"])]
    return helper.make_function(DOMAIN, CHANNEL_OP, ["X"], ["Y"], nodes, [helper.make_opsetid("", opset)],
                                attributes=["plugin_namespace", "plugin_version"])


def part_affinity_function(opset: int, frames: int, parts: int) -> onnx.FunctionProto:
    mask = np.array(part_relation_mask(frames, parts), dtype=bool)
    # shift by the largest unmasked logit (masked entries stand in as the row minimum),
    # then give masked entries the finite MASK_LOGIT: exact for any finite logits
    nodes = [helper.make_node("Constant", [], ["mask"], value=numpy_helper.from_array(mask, "mask")),
             helper.make_node("Constant", [], ["fill"],
                              value=helper.make_tensor("fill", TensorProto.FLOAT, [], [MASK_LOGIT])),
             *_reduce_last("ReduceMin", opset, "S", "Smin"),
             helper.make_node("Where", ["mask", "Smin", "S"], ["Su"]),
             *_reduce_last("ReduceMax", opset, "Su", "Smax", axes="axes_max"),
             helper.make_node("Sub", ["S", "Smax"], ["Sc"]),
             helper.make_node("Where", ["mask", "fill", "Sc"], ["Sm"]),
             helper.make_node("Softmax", ["Sm"], ["W"], axis=-1)]
    return helper.make_function(DOMAIN, PART_OP, ["S"], ["W"], nodes, [helper.make_opsetid("", opset)],
                                attributes=["frames", "parts", "plugin_namespace", "plugin_version"])


def _int_attr(node, name):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def plugin_nodes(model: onnx.ModelProto) -> list:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type in PLUGIN_OPS]


def attach_local_functions(model: onnx.ModelProto, opset: int) -> None:
    """Add the reference body of every plugin op the graph uses (one per op type)."""
    nodes = plugin_nodes(model)
    functions = []
    if any(n.op_type == CHANNEL_OP for n in nodes):
        functions.append(channel_affinity_function(opset))
    part_shapes = {(_int_attr(n, "frames"), _int_attr(n, "parts")) for n in nodes if n.op_type == PART_OP}
    if len(part_shapes) > 1:
        raise IAUnetError(f"IAUPartAffinity nodes disagree on (frames, parts): {sorted(part_shapes)}")
    if part_shapes:
        functions.append(part_affinity_function(opset, *part_shapes.pop()))
    del model.functions[:]
    model.functions.extend(functions)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))


def strip_local_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the reference bodies (what TensorRT 10.3 needs to bind the plugins)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.functions[:]
    return copy
