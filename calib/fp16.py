"""FP16 graphs with FP32 islands, made with onnxconverter-common.

The IAU affinity ops (plugin nodes by op type; their plain-op form in native graphs by
structure) and every node measured to come near FP16's limit on calibration images stay
FP32 behind explicit Casts. Graph inputs and outputs stay float32. onnxconverter-common
leaves model-local functions untouched, so the plugin nodes keep their FP32 reference
bodies (checked after conversion).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from iaunet.calib import PROBE_SAMPLES, graph
from iaunet.calib.data import calibration_sources, load_inputs, pick
from iaunet.export.checks import compare, run_onnxruntime
from iaunet.export.metadata import load_onnx, metadata_of
from iaunet.core.plugin_contract import PLUGIN_OPS
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import check_output_path, sha256_file
from iaunet.core.log import get_logger

log = get_logger("calib")


def convert_fp16(src, dst, data=None, samples: int = PROBE_SAMPLES, seed: int = 0) -> dict:
    """Write ``dst`` (FP16 with FP32 islands) and return the record of how it was made."""
    src, dst = Path(src), check_output_path(dst, inputs=[src], kind=file_kinds.ONNX)
    model = load_onnx(src, verify=True)
    meta = metadata_of(model, src)
    if graph.get_prop(model, "precision", "fp32") != "fp32":
        raise IAUnetError(f"{src} is already a {graph.get_prop(model, 'precision')} variant; expected an FP32 export")
    video = meta.config.variant == "video"
    inputs = load_inputs(pick(calibration_sources(data, video), samples, seed), meta.preprocess, "fp16 probe") \
        if data else None
    overflow = graph.fp16_overflow_nodes(model, inputs) if inputs is not None else {}
    blocked = graph.native_affinity_nodes(model) | set(overflow)
    log.info("fp16: keeping %d plugin nodes, %d native affinity nodes and %d overflow nodes in FP32",
             len(graph.plugin_node_names(model)), len(graph.native_affinity_nodes(model)), len(overflow))
    converted, clamped, removed = half_precision(model, blocked)
    record = {"precision": "fp16", "source": str(src), "source_sha256": sha256_file(src),
              "converter": "onnxconverter-common float16 (keep_io_types)",
              "fp32_plugin_nodes": sorted(graph.plugin_node_names(model)),
              "fp32_affinity_nodes": sorted(graph.native_affinity_nodes(model)),
              "fp32_overflow_nodes": {k: round(v, 1) for k, v in sorted(overflow.items())},
              "fp16_round_trips_removed": removed, "clamped_weights": clamped,
              "calibration": {"data": str(data) if data else None, "samples": 0 if inputs is None else len(inputs)}}
    graph.set_props(converted, precision="fp16", variant=record)
    graph.save_atomically(converted, dst)
    if inputs is not None:
        parity = compare(run_onnxruntime(src, inputs, 8), run_onnxruntime(dst, inputs, 8))
        record["parity_vs_fp32_onnx"] = vars(parity)
    return record


def half_precision(model, blocked_nodes, say_clamped: bool = True) -> tuple:
    """FP16 everywhere but the plugin ops, ``blocked_nodes`` (names) and the graph I/O,
    with onnxconverter-common. Returns (converted model, clamped weights by target value,
    FP16 round trips removed); ``say_clamped``: log the clamping (else only returned). The
    plugin ops' local functions must come out unchanged."""
    from onnxconverter_common import float16
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(PLUGIN_OPS),
            node_block_list=sorted(blocked_nodes))
    clamped = summarise_clamping(caught, say_clamped)
    removed = drop_fp16_round_trips(converted)
    restore_float32_outputs(converted)
    used = {t for n in converted.graph.node for t in list(n.input) + list(n.output)}
    kept = [v for v in converted.graph.value_info if v.name in used]  # the removed Casts' tensors go
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(kept)
    before = [(f.name, f.SerializeToString()) for f in model.functions]
    if [(f.name, f.SerializeToString()) for f in converted.functions] != before:
        raise IAUnetError("the FP16 converter changed the plugin ops' local functions; refusing to write")
    return converted, clamped, removed


_CLAMP = re.compile(r"the float32 number (\S+) will be truncated to (\S+)")


def summarise_clamping(caught, say: bool = True) -> dict:
    """The converter warns once per weight tensor whose values leave FP16's range
    (magnitudes below its smallest normal value are raised to it, above 65504 cut to
    it). Turn those warnings into one log line and a count per target value; other
    warnings go back to the warnings machinery (shown with -v)."""
    targets = {}
    for w in caught:
        match = _CLAMP.search(str(w.message))
        if match is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        targets[match.group(2)] = targets.get(match.group(2), 0) + 1
    if targets and say:
        log.info("fp16: %d weight tensors had values outside FP16's range, clamped to %s",
                 sum(targets.values()), ", ".join(f"{t} ({n})" for t, n in sorted(targets.items())))
    return targets


def _cast_to(node) -> int | None:
    if node.op_type != "Cast":
        return None
    return next(a.i for a in node.attribute if a.name == "to")


def drop_fp16_round_trips(model) -> int:
    """Remove ``Cast(to fp16) -> Cast(to fp32)`` pairs the converter puts between two FP32
    nodes: the value would pass through FP16 (and overflow) for nothing. Consumers of the
    second Cast read the original FP32 tensor; a first Cast left unused is removed too.
    Returns how many FP32 re-casts were removed."""
    from onnx import TensorProto
    nodes = list(model.graph.node)
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    rename, dropped, removed_for_outputs = {}, set(), 0
    for down in (n for n in nodes if _cast_to(n) == TensorProto.FLOAT16):
        for up in consumers.get(down.output[0], []):
            if _cast_to(up) != TensorProto.FLOAT:
                continue
            if up.output[0] in outputs:  # a graph output keeps its name: cast straight from FP32
                up.input[0] = down.input[0]
                removed_for_outputs += 1
            else:
                rename[up.output[0]] = down.input[0]
                dropped.add(id(up))
        if not consumers.get(down.output[0]):
            continue
        still_reading = [c for c in consumers[down.output[0]] if id(c) not in dropped and down.output[0] in c.input]
        if not still_reading and down.output[0] not in outputs:
            dropped.add(id(down))
    kept = [n for n in nodes if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            while name in rename:  # chains of islands
                name = rename[name]
            node.input[i] = name
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(rename) + removed_for_outputs


def restore_float32_outputs(model) -> None:
    """Make every graph output float32 again. (The converter leaves an output FP16 behind
    a ``Cast(to fp16)`` when the node producing it was kept in FP32, keep_io_types or not.)"""
    from onnx import TensorProto, helper
    producers = graph.producers(model.graph)
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is not None and _cast_to(node) == TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT
        else:
            half = out.name + "_fp16"
            for n in model.graph.node:
                n.output[:] = [half if o == out.name else o for o in n.output]
            model.graph.node.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT,
                                                     name=out.name + "_to_fp32"))
        out.type.tensor_type.elem_type = TensorProto.FLOAT
