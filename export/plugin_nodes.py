"""The IAU plugin ops: how they trace to custom-domain nodes, and their reference bodies.

Two ops, in domain ``iaunet`` (see docs/ops/ for the exact contract a kernel follows):

* ``IAUChannelAffinity(X[B,K,L]) -> Y[B,K,L]``: ``Y = softmax(X X^T - rowmax) X``, FP32.
* ``IAUPartAffinity(S[B,N,N]; frames, parts) -> W[B,N,N]``: row softmax of the relation
  logits with the (frames, parts) mask excluded.

Each node carries string attributes ``plugin_namespace`` and ``plugin_version`` (what
the TensorRT ONNX parser binds a plugin by), and the model carries an ONNX local
function of the same name holding the reference maths, so ONNX Runtime and the ONNX
reference evaluator run the file as it is.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from iaunet.core.errors import IAUnetError
from iaunet.train.iau import MASK_LOGIT, channel_affinity, part_affinity, part_relation_mask

from iaunet.core.plugin_contract import (CHANNEL_OP, DOMAIN, DOMAIN_VERSION, PART_OP, PLUGIN_NAMESPACE,  # noqa: F401
                           PLUGIN_OPS, PLUGIN_VERSION)


class _ChannelAffinityNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens):
        return channel_affinity(tokens)

    @staticmethod
    def symbolic(g, tokens):
        out = g.op(f"{DOMAIN}::{CHANNEL_OP}", tokens, plugin_namespace_s=PLUGIN_NAMESPACE,
                   plugin_version_s=PLUGIN_VERSION)
        out.setType(tokens.type())
        return out


class _PartAffinityNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, frames, parts):
        return part_affinity(logits, frames, parts)

    @staticmethod
    def symbolic(g, logits, frames, parts):
        out = g.op(f"{DOMAIN}::{PART_OP}", logits, frames_i=frames, parts_i=parts,
                   plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION)
        out.setType(logits.type())
        return out


def traced_channel_affinity(tokens):
    return _ChannelAffinityNode.apply(tokens)


def traced_part_affinity(logits, frames, parts):
    return _PartAffinityNode.apply(logits, frames, parts)


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
    mask = part_relation_mask(frames, parts).numpy()
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
