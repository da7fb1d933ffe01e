"""INT8 graphs made FP16 outside their Q/DQ pairs: the precision plan a strongly typed
TensorRT network reads from the ONNX.

ONNX Runtime's quantizer writes Q/DQ pairs into an FP32 graph. ``fp16_outside_qdq`` turns
every float tensor that is not in an FP32 island into FP16, the way ModelOpt's TensorRT
recipe does:

* the graph moves to opset 19 (ONNX's version converter), where QuantizeLinear and
  DequantizeLinear take FP16 scales. A DequantizeLinear with an FP16 scale outputs FP16
  and TensorRT's parser gives the dequantised tensor the scale's type, so an INT8 Conv
  reads ``DQ -> Conv`` with no Cast between them (a Cast there could stop TensorRT fusing
  the pair into an INT8 kernel). TensorRT 10.3's parser takes opsets up to 20; ONNX
  Runtime's CPU kernels for FP16 Q/DQ exist since opset 19;
* scales are made representable in FP16 first: a scale below FP16's smallest normal
  number is raised to it (never lowered, so no value is newly clipped), and the INT8
  weights under a raised scale are requantised to it;
* FP32 islands, behind Casts: the IAU affinity ops, the nodes measured to overflow FP16
  (with the Q/DQ pairs that feed them, so their dequantised inputs are FP32 with no Cast
  after the DequantizeLinear), and the graph's input and output.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from iaunet.calib import graph
from iaunet.core.errors import IAUnetError

FP16_SCALE_OPSET = 19  # QuantizeLinear / DequantizeLinear take FP16 scales from here on
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)
INT8_LIMIT = 127


def raise_opset(model: onnx.ModelProto, opset: int = FP16_SCALE_OPSET) -> onnx.ModelProto:
    """A new model at ``opset`` or above (``model`` is not changed): ONNX's version
    converter for the default domain, then the plugin ops' reference bodies written again
    for the new opset (the converter drops model-local functions). Metadata is kept."""
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current >= opset:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    from onnx import version_converter
    from iaunet.export.functions import attach_local_functions
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises its own C++ error types
        raise IAUnetError(f"ONNX's version converter could not take the graph from opset {current} to {opset}: "
                          f"{str(exc).splitlines()[0]}") from None
    if model.functions:
        attach_local_functions(converted, opset)
    del converted.metadata_props[:]
    converted.metadata_props.extend(model.metadata_props)
    return converted


def _initializers(model) -> dict:
    return {t.name: t for t in model.graph.initializer}


def requantise(model: onnx.ModelProto, node: onnx.NodeProto, new_scale: np.ndarray) -> None:
    """Give the Q/DQ ``node`` the scale ``new_scale`` (same shape and type as its scale), in
    place; a DequantizeLinear of INT8 weights gets its weights rounded again to the new step."""
    inits = _initializers(model)
    scale = numpy_helper.to_array(inits[node.input[1]])
    weights = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
    if weights is not None:
        q = numpy_helper.to_array(weights).astype(np.float32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if scale.ndim else 0
        shape = [-1 if i == axis % q.ndim else 1 for i in range(q.ndim)] if scale.ndim else []
        ratio = scale.astype(np.float32) / new_scale.astype(np.float32)
        ratio = ratio.reshape(shape) if shape else ratio
        requantised = np.clip(np.round(q * ratio), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
        weights.CopyFrom(numpy_helper.from_array(requantised, weights.name))
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(new_scale.astype(scale.dtype), node.input[1]))


def fp16_safe_scales(model: onnx.ModelProto) -> int:
    """Raise every Q/DQ scale below FP16's smallest normal number to it, in place, and
    requantise the INT8 weights dequantised with a raised scale. Returns how many scale
    values were raised."""
    inits = _initializers(model)
    raised = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        low = scale < FP16_MIN_NORMAL
        if low.any():
            requantise(model, node, np.where(low, np.float32(FP16_MIN_NORMAL), scale).astype(np.float32))
            raised += int(low.sum())
    return raised


def qdq_feeding(model: onnx.ModelProto, names: set) -> set:
    """Names of the DequantizeLinear nodes that feed the nodes ``names``, and the
    QuantizeLinear nodes that feed those."""
    producer_of = graph.producers(model.graph)
    dequantizers = graph.input_producers(model.graph, names, "DequantizeLinear", producer_of)
    return dequantizers | graph.input_producers(model.graph, dequantizers, "QuantizeLinear", producer_of)


def fp16_outside_qdq(qdq: onnx.ModelProto, fp32_nodes: set) -> tuple[onnx.ModelProto, dict]:
    """The Q/DQ graph ``qdq`` with FP16 outside its Q/DQ pairs and FP32 islands for the
    affinity ops and ``fp32_nodes`` (see the module docstring); ``qdq`` is not changed.
    Returns the graph and a record of what was done."""
    from iaunet.calib.fp16 import half_precision
    model = raise_opset(qdq)
    raised = fp16_safe_scales(model)
    islands = graph.native_affinity_nodes(model) | set(fp32_nodes)
    # the clamping goes into the INT8 record, not the log: the FP16 variant's line already says it
    converted, clamped, removed = half_precision(model, islands | qdq_feeding(model, islands), say_clamped=False)
    return converted, {"opset": FP16_SCALE_OPSET, "scales_raised_to_fp16_min_normal": raised,
                       "clamped_weights": clamped, "fp16_round_trips_removed": removed}


def float32_tensors_outside_islands(model: onnx.ModelProto) -> list[str]:
    """Float32 tensors that are neither graph I/O nor touch an FP32 island (an IAU affinity
    op, or a node the variant's record lists as overflowing FP16, with the Q/DQ pairs that
    feed it): what should have been FP16. Works on FP16 and INT8 variants."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    record = graph.variant_record(model)
    islands = graph.plugin_node_names(model) | graph.native_affinity_nodes(model)
    islands |= set(record.get("fp32_overflow_nodes", {}))
    islands |= qdq_feeding(model, islands)
    touching = {t for n in g.node if n.name in islands for t in list(n.input) + list(n.output)}
    io = {v.name for v in list(g.input) + list(g.output)}
    used = {t for n in g.node for t in list(n.input) + list(n.output)}
    return sorted(name for name, kind in types.items()
                  if kind == TensorProto.FLOAT and name in used and name not in io and name not in touching)
