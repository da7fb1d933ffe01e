"""Checks every export runs: the ONNX checker, ONNX Runtime (the runtime's runner) against
PyTorch, the ONNX reference evaluator, and a lint against what TensorRT 10.3's ONNX parser accepts."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from iaunet.core.plugin_contract import DOMAIN, PLUGIN_OPS
from iaunet.export.trt_support import MAX_OPSET, MIN_OPSET, ONNX_TO_TRT_TYPE, SUPPORTED_OPS
from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
from iaunet.runtime.parity import GATES, Parity, compare  # noqa: F401 (Parity, compare: the export checks' API)
from iaunet.runtime.runners import OnnxRuntimeRunner

COSINE_GATE = GATES["fp32"]["min_cosine"]  # ONNX Runtime against PyTorch, as parity gates FP32 ONNX
# ops whose first input is a shape: the parser's type list is about what they produce
TYPED_BY_OUTPUT = {"ConstantOfShape", "Range", "RandomNormal", "RandomUniform", "EyeLike"}
REL_ERROR_GATE = 1e-4


def check_onnx(model: onnx.ModelProto) -> None:
    """``onnx.checker`` with the full check (shape inference included)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise IAUnetError(f"the exported graph fails the ONNX checker: {first}") from None


def run_onnxruntime(model, images: np.ndarray, batch: int) -> np.ndarray:
    """Embeddings from the runtime's ONNX Runtime runner (CPU), ``batch`` samples at a time;
    ``model`` is a path, serialized bytes, or an ``OnnxRuntimeRunner`` to reuse."""
    runner = model if isinstance(model, OnnxRuntimeRunner) else OnnxRuntimeRunner(model)
    return runner.infer_batches(images, batch)


def run_reference_evaluator(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Embeddings from onnx.reference (a second, independent executor of the local functions)."""
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def node_summary(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node)


def _tensor_types(model: onnx.ModelProto) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:  # Constant outputs carry their type in the attribute
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type)


def tensorrt_lint(model: onnx.ModelProto) -> list[str]:
    """Problems that would stop TensorRT 10.3's ONNX parser, one line each naming the node."""
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"model: opset {opset} is outside TensorRT 10.3's range {MIN_OPSET}..{MAX_OPSET}")
    types = _tensor_types(model)
    io = {t.name for t in list(model.graph.input) + list(model.graph.output)}
    for name, elem in types.items():
        trt = ONNX_TO_TRT_TYPE.get(_type_name(elem))
        if trt is None:
            problems.append(f"tensor {name}: type {_type_name(elem)} is not supported by TensorRT")
        elif trt == "UINT8" and name not in io:
            problems.append(f"tensor {name}: UINT8 is only allowed as a network input or output")
    for node in model.graph.node:
        label = f"node {node.name or '(unnamed)'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems += _lint_custom(node, label)
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{label}: operator {node.op_type} is not supported by TensorRT 10.3's ONNX parser")
            continue
        tensors = node.output if node.op_type in TYPED_BY_OUTPUT else node.input
        first = next((i for i in tensors if i), None)
        if first in types:
            trt = ONNX_TO_TRT_TYPE.get(_type_name(types[first]))
            if trt not in SUPPORTED_OPS[node.op_type]:
                problems.append(f"{label}: type {_type_name(types[first])} not supported "
                                f"(accepts {', '.join(sorted(SUPPORTED_OPS[node.op_type]))})")
    return problems


def _lint_custom(node, label) -> list[str]:
    if node.domain != DOMAIN or node.op_type not in PLUGIN_OPS:
        return [f"{label}: custom op {node.domain}::{node.op_type} is not one of our plugins {list(PLUGIN_OPS)}"]
    attrs = {a.name: a for a in node.attribute}
    missing = [k for k in ("plugin_namespace", "plugin_version")
               if k not in attrs or attrs[k].type != onnx.AttributeProto.STRING]
    if missing:
        return [f"{label}: plugin node lacks string attribute(s) {', '.join(missing)} that TensorRT binds plugins by"]
    return []
