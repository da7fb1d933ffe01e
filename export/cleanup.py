"""Graph cleanup after export, with onnx-graphsurgeon: constant and shape folding, static
Reshape shapes, dead-node removal, topological order.

The TorchScript exporter turns every size a module reads from a tensor (``b, c, h, w =
x.shape``) into ``Shape -> Gather -> Unsqueeze -> Concat`` arithmetic, even though only the
batch is dynamic. ``clean_graph``:

1. infers shapes, then folds constants and shapes with onnx-graphsurgeon (what
   Polygraphy's ``surgeon sanitize --fold-constants`` does): a ``Shape`` of a tensor whose
   dims are static becomes a constant;
2. gives every ``Reshape`` whose target shape is still computed a constant one, with -1
   in the one dimension that is not static (read from ONNX's symbolic shape inference
   with data propagation). A Reshape with two or more non-static dims keeps its chain;
3. bypasses the no-op ``Expand`` to all-ones that ``Tensor.repeat`` exports before its
   ``Tile``;
4. removes the nodes left without consumers and sorts the graph.

The local functions (the plugin ops' reference bodies), the metadata, the opsets and the
graph's inputs and outputs are kept as they were.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import onnx

from iaunet.core.errors import IAUnetError


@contextlib.contextmanager
def _quiet_folding():
    """onnx-graphsurgeon folds through ONNX Runtime, whose optimiser logs to stderr, and
    logs through its own logger: both go quiet unless -v asked for them."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort
    verbose = logging.getLogger("iaunet").isEnabledFor(logging.DEBUG)
    saved = gs.logger.G_LOGGER.severity
    if not verbose:
        ort.set_default_logger_severity(3)
        gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    try:
        yield
    finally:
        gs.logger.G_LOGGER.severity = saved
        ort.set_default_logger_severity(2)


def static_reshape_shapes(graph) -> int:
    """Replace each computed Reshape shape by a constant with -1 in its one non-static
    dim (the shapes come from symbolic inference). Returns how many were replaced."""
    import onnx_graphsurgeon as gs
    replaced = 0
    for index, node in enumerate(graph.nodes):
        if node.op != "Reshape" or isinstance(node.inputs[1], gs.Constant):
            continue
        shape = node.outputs[0].shape
        if shape is None:
            continue
        dynamic = [d for d in shape if not isinstance(d, int)]
        if len(dynamic) != 1:
            continue
        target = np.array([d if isinstance(d, int) else -1 for d in shape], np.int64)
        node.inputs[1] = gs.Constant(f"iaunet_static_shape_{index}", target)  # unique, whatever the node names
        replaced += 1
    return replaced


def drop_noop_expands(graph) -> int:
    """Bypass each Expand whose target shape is constant, all ones and no longer than its
    input's rank (an identity). Returns how many were bypassed."""
    import onnx_graphsurgeon as gs
    dropped = 0
    for node in graph.nodes:
        if node.op != "Expand" or not isinstance(node.inputs[1], gs.Constant):
            continue
        source, target, result = node.inputs[0], node.inputs[1].values, node.outputs[0]
        if source.shape is None or target.size > len(source.shape) or np.any(target != 1) \
                or result in graph.outputs:
            continue
        for consumer in list(result.outputs):
            for i, tensor in enumerate(consumer.inputs):
                if tensor is result:
                    consumer.inputs[i] = source
        dropped += 1
    return dropped


def clean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The cleaned copy of ``model`` (see the module docstring); ``model`` is not changed."""
    import onnx_graphsurgeon as gs
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise IAUnetError(f"shape inference failed on the exported graph: {str(exc).splitlines()[0]}") from None
    try:
        with _quiet_folding():
            graph = gs.import_onnx(inferred)
            graph.fold_constants(fold_shapes=True).cleanup()
            folded = onnx.shape_inference.infer_shapes(gs.export_onnx(graph, do_type_check=True), data_prop=True)
            graph = gs.import_onnx(folded)
            static_reshape_shapes(graph)
            drop_noop_expands(graph)
            graph.cleanup().toposort()
            cleaned = gs.export_onnx(graph)
    except (onnx.shape_inference.InferenceError, gs.OnnxGraphSurgeonException) as exc:
        raise IAUnetError(f"cleaning the exported graph failed: {str(exc).splitlines()[0]}") from None
    return _with_model_fields(cleaned, model)


def _with_model_fields(cleaned: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """Carry over what onnx-graphsurgeon does not: metadata, producer, the exact local
    functions and opsets, the graph's input and output declarations; drop the inferred
    value_info (consumers infer their own)."""
    out = onnx.ModelProto()
    out.CopyFrom(original)
    out.graph.CopyFrom(cleaned.graph)
    del out.graph.value_info[:]
    for field in ("input", "output"):
        del getattr(out.graph, field)[:]
        getattr(out.graph, field).extend(getattr(original.graph, field))
    return out
