"""Graph facts the precision passes need: which nodes are the IAU affinity ops (plugin
nodes, or their plain-op form in native graphs), which tensors overflow FP16, and the
precision recorded in metadata."""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict

import numpy as np
import onnx

from iaunet.core.plugin_contract import DOMAIN
from iaunet.core.files import atomic_output
from iaunet.core.graph_io import INPUT_NAME, METADATA_PREFIX
from iaunet.export.functions import plugin_nodes
from iaunet.export.metadata import save_onnx

FP16_MAX = 65504.0
OVERFLOW_MARGIN = 0.5  # keep a node in FP32 when its output comes within 2x of FP16's limit
_AFFINITY_EXPAND = {"Sub", "ReduceMax", "ReduceMin", "Where"}


def producers(graph) -> dict:
    """{tensor name: the node that writes it}."""
    return {out: node for node in graph.node for out in node.output}


def input_producers(graph, names: set, op_type: str, producer_of: dict | None = None) -> set:
    """Names of the ``op_type`` nodes that write an input of a node named in ``names``."""
    producer_of = producers(graph) if producer_of is None else producer_of
    return {p.name for node in graph.node if node.name in names for tensor in node.input
            if (p := producer_of.get(tensor)) is not None and p.op_type == op_type}


def consumers(graph) -> dict:
    """{tensor name: the nodes that read it}."""
    table = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            table[name].append(node)
    return table


def plugin_node_names(model) -> set:
    return {n.name for n in plugin_nodes(model)}


def native_affinity_nodes(model) -> set:
    """Names of the plain-op affinity nodes: every Softmax with the logit chain before it
    (Sub, ReduceMax, Where, the X.X^T MatMul and its Transpose) and the MatMul after it."""
    producer_of, consumers_of = producers(model.graph), consumers(model.graph)
    found = set()
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        found.add(softmax.name)
        frontier = [softmax.input[0]]
        while frontier:
            node = producer_of.get(frontier.pop())
            if node is None or node.name in found:
                continue
            if node.op_type in _AFFINITY_EXPAND:
                found.add(node.name)
                frontier += list(node.input)
            elif node.op_type == "MatMul":
                found.add(node.name)
                found.update(p.name for i in node.input if (p := producer_of.get(i)) is not None
                             and p.op_type == "Transpose")
        found.update(c.name for c in consumers_of[softmax.output[0]] if c.op_type == "MatMul")
    return found


def affinity_neighbour_matmuls(model) -> set:
    """MatMul nodes that feed or consume an affinity op: kept out of INT8 ("around" them)."""
    consumers_of = consumers(model.graph)
    core = plugin_node_names(model) | native_affinity_nodes(model)
    near = input_producers(model.graph, core, "MatMul")
    for node in model.graph.node:
        if node.name in core:
            for name in node.output:
                near.update(c.name for c in consumers_of[name] if c.op_type == "MatMul")
    return near - core


def fp16_overflow_nodes(model, inputs: np.ndarray, batch: int = 4) -> dict:
    """Run the FP32 graph with every float intermediate exposed; return {node name: max |x|}
    for nodes with an input or output that comes within OVERFLOW_MARGIN of FP16's 65504.
    (Inputs count too: an FP16 node fed by a huge FP32 tensor would cast it to inf.)"""
    peak = _tensor_peaks(model, inputs, batch)
    limit = FP16_MAX * OVERFLOW_MARGIN
    flagged = {}
    for node in model.graph.node:
        worst = max((peak.get(t, 0.0) for t in list(node.input) + list(node.output)), default=0.0)
        if worst > limit and node.domain not in (DOMAIN,):
            flagged[node.name] = worst
    return flagged


def _tensor_peaks(model, inputs: np.ndarray, batch: int) -> dict:
    """{float tensor name: max |value|} over ``inputs``, from ONNX Runtime without graph
    optimisations (so every tensor of the file is computed as written). Its own session,
    not a runtime ``Runner``: a runner returns the embeddings, this needs every tensor."""
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    floats = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for name in sorted(floats - {o.name for o in probe.graph.output}):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.onnx")
        onnx.save(probe, path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        peak = defaultdict(float)
        for i in range(0, len(inputs), batch):
            for name, value in zip(names, session.run(names, {INPUT_NAME: inputs[i:i + batch]})):
                peak[name] = max(peak[name], float(np.abs(value).max()) if value.size else 0.0)
    return dict(peak)


def set_props(model, **props) -> None:
    """Add or replace ``iaunet.<key>`` metadata entries (JSON for non-strings)."""
    current = {p.key: p.value for p in model.metadata_props}
    for key, value in props.items():
        current[METADATA_PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    del model.metadata_props[:]
    for key, value in current.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def get_prop(model, key: str, default=None):
    return next((p.value for p in model.metadata_props if p.key == METADATA_PREFIX + key), default)


def variant_record(model) -> dict:
    """The record ``iaunet calib`` stored in the variant's metadata ({} for an export)."""
    return json.loads(get_prop(model, "variant", "{}"))


def save_atomically(model, path) -> None:
    """Write ``model`` through a temporary name, with the digest of its weights as they are now."""
    with atomic_output(path) as tmp:
        save_onnx(model, tmp)
