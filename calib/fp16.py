"""FP16 graphs with FP32 islands, made with onnxconverter-common.

The IAU affinity ops (plugin nodes by op type; their plain-op form in native graphs by
structure) and every node measured to come near FP16's limit on calibration images stay
FP32 behind explicit Casts. Graph inputs and outputs stay float32. onnxconverter-common
leaves model-local functions untouched, so the plugin nodes keep their FP32 reference
bodies (checked after conversion).
"""
from __future__ import annotations

from pathlib import Path

from calib import graph
from calib.data import calibration_sources, load_inputs, pick
from export.checks import compare, run_onnxruntime
from export.metadata import ExportMetadata
from export.plugins import PLUGIN_OPS
from iaunet.errors import IAUnetError
from iaunet.log import get_logger

log = get_logger("calib")


def convert_fp16(src, dst, data=None, samples: int = 16, seed: int = 0) -> dict:
    """Write ``dst`` (FP16 with FP32 islands) and return the record of how it was made."""
    from onnxconverter_common import float16

    src, dst = Path(src), graph.check_output_path(dst)
    model = graph.load_model(src)
    meta = ExportMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(src))
    if graph.get_prop(model, "precision", "fp32") != "fp32":
        raise IAUnetError(f"{src} is already a {graph.get_prop(model, 'precision')} variant; expected an FP32 export")
    video = meta.config.variant == "video"
    inputs = load_inputs(pick(calibration_sources(data, video), samples, seed), meta.preprocess, "fp16 probe") \
        if data else None
    overflow = graph.fp16_overflow_nodes(model, inputs) if inputs is not None else {}
    blocked = graph.native_affinity_nodes(model) | set(overflow)
    log.info("fp16: keeping %d plugin nodes, %d native affinity nodes and %d overflow nodes in FP32",
             len(graph.plugin_node_names(model)), len(graph.native_affinity_nodes(model)), len(overflow))
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(PLUGIN_OPS),
        node_block_list=sorted(blocked))
    before = [(f.name, f.SerializeToString()) for f in model.functions]
    if [(f.name, f.SerializeToString()) for f in converted.functions] != before:
        raise IAUnetError("the FP16 converter changed the plugin ops' local functions; refusing to write")
    record = {"precision": "fp16", "source": str(src), "source_sha256": graph.sha256_file(src),
              "converter": "onnxconverter-common float16 (keep_io_types)",
              "fp32_plugin_nodes": sorted(graph.plugin_node_names(model)),
              "fp32_affinity_nodes": sorted(graph.native_affinity_nodes(model)),
              "fp32_overflow_nodes": {k: round(v, 1) for k, v in sorted(overflow.items())},
              "calibration": {"data": str(data) if data else None, "samples": 0 if inputs is None else len(inputs)}}
    graph.set_props(converted, precision="fp16", variant=record)
    graph.save_atomically(converted, dst)
    if inputs is not None:
        parity = compare(run_onnxruntime(src, inputs, 8), run_onnxruntime(dst, inputs, 8))
        record["parity_vs_fp32_onnx"] = vars(parity)
    return record
