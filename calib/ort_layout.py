"""The layout of an INT8 variant that ONNX Runtime computes right in any session: the Q/DQ
graph with FP32 scales and FP32 outside the Q/DQ (``X.int8.onnx``), beside the TensorRT
layout with FP16 outside them (``X.int8.trt.onnx``, ``iaunet.calib.mixed``).

Why one file cannot serve both. Every ONNX Runtime session at ``ORT_ENABLE_BASIC`` or above
(the default, Triton's onnxruntime backend, ``polygraphy run --onnxrt``) runs the Level-1
transformer ``WeightBiasQuantization`` (onnxruntime/core/optimizer/qdq_transformer/
weight_bias_quantization.cc). For each ``DQ -> Conv/Gemm -> [Relu|Clip] -> Q`` unit with a
float bias initializer ``b`` it inserts ``DQ(Cast<int32>(Round(b / (x_scale * w_scale))),
x_scale * w_scale)`` as the new bias, computed in the scales' type with no range check:

* FP16 scales (the TensorRT layout): the quotient passes 65504 in ordinary layers
  (``x_scale`` 1e-2, ``w_scale`` 1e-3, ``b`` 1: about 1e5) and is inf; ``Cast(inf)`` to
  int32 gives INT32_MIN, and the layer's output saturates. The embeddings of the whole
  model come out unrelated to FP32's (cosine about 0 on iaunet_r18);
* FP32 scales: the same where the quotient passes 2^31 (scales of 1e-5 and 1e-5 with
  ``b`` 1).

``tests/calib/test_ort_layout.py`` keeps the smallest graph that shows both (one 1x1 Conv).
TensorRT's strongly typed builder needs the FP16 scales (a DequantizeLinear then outputs
FP16 and feeds its Conv without a Cast), so the TensorRT file keeps them and carries
``iaunet.consumer = tensorrt``; the toolkit never hands it to ONNX Runtime.

This file: the graph ``quantize_static`` wrote (FP32, the source's opset), on the same INT8
grid as the TensorRT file (scales below FP16's smallest normal number raised to it, as
there), and, where a channel's ``|b| / (x_scale * w_scale)`` would pass ``INT32_HEADROOM``,
that channel's weight scale raised until it fits, its weights requantised: each weight
moves by at most half the new step, ``|b| / (x_scale * 2^31)``, so an output moves by at most
``K * 128 * |b| / 2^31`` for K inputs per output (2.7e-4 |b| for K = 4608), far inside the
INT8 noise. ONNX Runtime then fuses
these units into QLinearConv, its fast INT8 kernels on CPU.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from iaunet.calib import graph
from iaunet.calib.mixed import fp16_safe_scales, requantise

INT32_HEADROOM = 2.0 ** 30   # |b / (x_scale * w_scale)| kept below this: half of int32's range


def _scale(inits: dict, node) -> np.ndarray | None:
    tensor = inits.get(node.input[1]) if node is not None and node.op_type == "DequantizeLinear" else None
    return None if tensor is None else numpy_helper.to_array(tensor).astype(np.float32)


def int32_bias_units(model: onnx.ModelProto):
    """(node, weight DequantizeLinear, x_scale, w_scale, bias) of every Conv/Gemm whose input and
    weights are dequantised and whose bias is a float initializer: the units whose bias ONNX
    Runtime requantises to int32."""
    inits = {t.name: t for t in model.graph.initializer}
    producer_of = graph.producers(model.graph)
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        x_dq, w_dq = producer_of.get(node.input[0]), producer_of.get(node.input[1])
        x_scale, w_scale = _scale(inits, x_dq), _scale(inits, w_dq)
        if x_scale is None or w_scale is None or x_scale.size != 1:
            continue
        yield node, w_dq, float(x_scale.reshape(-1)[0]), w_scale, numpy_helper.to_array(inits[node.input[2]])


def fit_int32_bias(model: onnx.ModelProto) -> list[str]:
    """Raise the weight scale of every channel whose ``|b| / (x_scale * w_scale)``, computed in
    float32 as ONNX Runtime does, would reach INT32_HEADROOM, in place (weights requantised).
    Returns the names of the nodes changed."""
    changed = []
    for node, w_dq, x_scale, w_scale, bias in int32_bias_units(model):
        bias = np.abs(bias.astype(np.float32))
        quotient = bias / (np.float32(x_scale) * w_scale)
        if np.all(quotient < INT32_HEADROOM):
            continue
        needed = bias / (np.float32(x_scale) * np.float32(INT32_HEADROOM)) * np.float32(1.001)
        new_scale = np.maximum(w_scale, needed if w_scale.size > 1 else needed.max()).astype(np.float32)
        requantise(model, w_dq, new_scale.reshape(w_scale.shape))
        changed.append(node.name)
    return changed


def onnxruntime_layout(qdq: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """The ONNX Runtime file of the Q/DQ graph ``qdq`` (not changed) and a record of what was done."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    raised = fp16_safe_scales(model)
    fitted = fit_int32_bias(model)
    return model, {"scales": "float32", "outside_qdq": "float32",
                   "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                   "scales_raised_to_fp16_min_normal": raised, "weight_scales_raised_for_int32_bias": fitted}
