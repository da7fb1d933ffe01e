"""The text of the deployment configs for an image model, as pure functions (the caller
writes the files): DeepStream's nvinfer secondary-GIE config that attaches the embeddings
as tensor meta, the ``ReID`` section of the NvMultiObjectTracker (NvDCF) config, and a
Triton Inference Server ``config.pbtxt`` with its model-repository layout.

Key names are NVIDIA's: Gst-nvinfer's configuration file properties
(``gstnvinfer_property_parser.h``) and the tracker's ``ReID`` section. The two spell their
precision codes differently (nvinfer network-mode FP32=0, INT8=1, FP16=2; tracker
networkMode FP32=0, FP16=1, INT8=2). DeepStream computes ``y = scale * (x - offset)`` on
8-bit pixels; the graph takes RGB 0..255 and normalises itself, so the pair is derived
from that range (1.0 and 0). Video models are refused: both DeepStream paths feed one crop
per object, and the Triton layout here serves those crops.

Imports the core and runtime only; standard library otherwise (the YAML is written by hand).
"""
from __future__ import annotations

import json
import re

from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
from iaunet.runtime.embedder import ENGINE_SUFFIXES
from iaunet.runtime.model_card import ModelCard

NVINFER_FILE = "config_infer_secondary_reid.txt"
TRACKER_FILE = "config_tracker_NvDCF_reid.yml"
INPUT_RANGE = (0.0, 255.0)           # what the graph takes per channel (graph_io: float32 RGB 0..255)
PIXEL_MAX = 255.0                    # DeepStream's x: 8-bit pixel values
NVINFER_MODE = {"fp32": 0, "int8": 1, "fp16": 2}     # network-mode
TRACKER_MODE = {"fp32": 0, "fp16": 1, "int8": 2}     # ReID networkMode
RGB = 0                              # nvinfer model-color-format and tracker colorFormat
SECONDARY = 2                        # process-mode: operate on objects of an upstream GIE
OTHER_NETWORK = 100                  # network-type: no parsing, output as tensor meta
# our resize filter -> scaling-filter (NvBufSurfTransform_Inter: Nearest=0, Bilinear=1,
# Algo1=GPU cubic, Algo3=GPU Lanczos); the cubic and Lanczos codes mean other filters on
# Jetson's VIC, so the config pins scaling-compute-hw to the GPU
SCALING_FILTERS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "lanczos": 4}
SCALING_COMPUTE_GPU = 1
REID_REASSOC = 2                     # reidType: ReID-based re-association (NvDCF); 1 = NvDeepSORT
NCHW = 0                             # ReID inputOrder
TRACKER_WORKSPACE_MB = 1000
REID_HISTORY = 100                   # features kept per target
PLATFORMS = {"onnxruntime_onnx": ("model.onnx", (".onnx",)), "tensorrt_plan": ("model.plan", ENGINE_SUFFIXES)}
KINDS = ("KIND_GPU", "KIND_CPU", "KIND_AUTO")
QUEUE_DELAY_US = 100
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
STRETCH_NOTE = "# the model's crops are resized to H x W without keeping aspect (as iaunet's preprocessing)"


def label(card: ModelCard) -> str:
    return f"{card.name} ({card.model_id[:12] or 'no checkpoint id'})"


def image_only(card: ModelCard, target: str) -> None:
    if card.variant != "image":
        raise IAUnetError(f"{target} configs support image models only; {card.name} is a {card.variant} model "
                          f"(N x T x 3 x H x W clips), but {target} feeds one crop per object (N x 3 x H x W)")


def scale_and_offset() -> tuple:
    """net-scale-factor and per-channel offset with scale * (x - offset) spanning INPUT_RANGE
    as x spans 0..PIXEL_MAX."""
    low, high = INPUT_RANGE
    scale = (high - low) / PIXEL_MAX
    return scale, 0.0 - low / scale          # 0.0 - keeps the zero offset unsigned


def check_precision(precision: str, calib_name) -> None:
    if precision not in NVINFER_MODE:
        raise IAUnetError(f"unknown precision {precision!r}; expected one of {sorted(NVINFER_MODE)}")
    if calib_name and precision != "int8":
        raise IAUnetError(f"a calibration table ({calib_name}) is read only for int8; the precision is {precision}")


def nvinfer_scaling(card: ModelCard) -> list:
    code = SCALING_FILTERS.get(card.resize_filter)
    if code is None:
        return [f"# resize filter {card.resize_filter!r} has no DeepStream equivalent: DeepStream's default scaling"]
    return [f"# scaling-filter from the model's resize filter ({card.resize_filter}); PIL widens its filter when",
            "# shrinking and the GPU scaler does not, so crops differ slightly from iaunet's own preprocessing",
            f"scaling-filter={code}", f"scaling-compute-hw={SCALING_COMPUTE_GPU}"]


def strongly_typed(card: ModelCard, precision: str, calib_name) -> list:
    """strongly-typed=1 where the graph's own types give the precision asked for (the fp16 or
    Q/DQ int8 variant), as 'iaunet build' does; not with a calibration table (TensorRT's
    calibrator needs a weakly typed network) nor where network-mode's flags must lower it.
    The key is nvinfer's ``CONFIG_GROUP_INFER_STRONGLY_TYPED "strongly-typed"``
    (src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h in NVIDIA/DeepStream, commit
    2afbef04); earlier releases' parsers lack it."""
    if calib_name or precision != card.precision:
        return []
    return [f"# the {precision} graph's own types give the precision, as in 'iaunet build'; DeepStream",
            "# releases without this key ignore it and build with network-mode's flags",
            "strongly-typed=1"]


def nvinfer_preprocess(card: ModelCard) -> list:
    scale, offset = scale_and_offset()
    channels = card.sample_shape[0]
    return [f"# the graph takes RGB {INPUT_RANGE[0]:g}..{INPUT_RANGE[1]:g} and normalises itself: "
            "y = net-scale-factor * (x - offset) must hand it the pixel unchanged",
            f"net-scale-factor={scale!r}", "offsets=" + ";".join([repr(offset)] * channels),
            f"model-color-format={RGB}", STRETCH_NOTE,
            "maintain-aspect-ratio=0", *nvinfer_scaling(card)]


def nvinfer_text(card, onnx_name, engine_name, calib_name, precision, batch, gie_id, operate_on_gie_id,
                 person_class_id) -> str:
    lines = [f"# {label(card)}: DeepStream secondary GIE, embeddings "
             f"({card.embedding_dim}) attached as tensor meta", "[property]", "gpu-id=0",
             f"onnx-file={onnx_name}", f"model-engine-file={engine_name}"]
    lines += [f"int8-calib-file={calib_name}"] if calib_name else []
    lines += [f"batch-size={batch}", f"network-mode={NVINFER_MODE[precision]}",
              *strongly_typed(card, precision, calib_name), f"process-mode={SECONDARY}",
              f"network-type={OTHER_NETWORK}", "output-tensor-meta=1",
              "infer-dims=" + ";".join(str(d) for d in card.sample_shape), f"output-blob-names={OUTPUT_NAME}",
              f"gie-unique-id={gie_id}", f"operate-on-gie-id={operate_on_gie_id}",
              f"operate-on-class-ids={person_class_id}", *nvinfer_preprocess(card)]
    return "\n".join(lines) + "\n"


def tracker_text(card, onnx_name, engine_name, calib_name, precision, batch) -> str:
    scale, offset = scale_and_offset()
    norm = 0 if card.normalized else 1
    lines = [f"# ReID section for NvMultiObjectTracker: {label(card)}, input {INPUT_NAME}, output {OUTPUT_NAME}.",
             "# Replace the ReID section of an NvDCF config (e.g. DeepStream's config_tracker_NvDCF_accuracy.yml)",
             "# with this one; reidType 2 needs TrajectoryManagement.enableReAssoc: 1 there.",
             "ReID:", f"  reidType: {REID_REASSOC}", "  outputReidTensor: 1", f"  batchSize: {batch}",
             f"  workspaceSize: {TRACKER_WORKSPACE_MB}", f"  reidFeatureSize: {card.embedding_dim}",
             f"  reidHistorySize: {REID_HISTORY}", f"  inferDims: {list(card.sample_shape)}",
             f"  networkMode: {TRACKER_MODE[precision]}", f"  inputOrder: {NCHW}", f"  colorFormat: {RGB}",
             f"  # RGB {INPUT_RANGE[0]:g}..{INPUT_RANGE[1]:g} unchanged: the graph normalises itself",
             f"  offsets: {[offset] * card.sample_shape[0]}", f"  netScaleFactor: {scale!r}",
             f"  {STRETCH_NOTE}",
             "  keepAspc: 0", f"  addFeatureNormalization: {norm}",
             f"  onnxFile: {json.dumps(onnx_name)}", f"  modelEngineFile: {json.dumps(engine_name)}"]
    lines += [f"  calibrationTableFile: {json.dumps(calib_name)}"] if calib_name else []
    return "\n".join(lines) + "\n"


def deepstream_files(card: ModelCard, onnx_name: str, engine_name: str, calib_name: str | None, precision: str,
                     batch: int, gie_id: int = 2, operate_on_gie_id: int = 1, person_class_id: int = 0) -> dict:
    """{file name: text}: the nvinfer secondary-GIE config and the tracker's ReID section."""
    image_only(card, "DeepStream")
    check_precision(precision, calib_name)
    if batch < 1 or gie_id == operate_on_gie_id or person_class_id < 0:
        raise IAUnetError(f"expected batch >= 1, a gie id other than the one it operates on and a class id >= 0; "
                          f"got batch {batch}, gie {gie_id} on {operate_on_gie_id}, class {person_class_id}")
    args = (card, onnx_name, engine_name, calib_name, precision, batch)
    return {NVINFER_FILE: nvinfer_text(*args, gie_id, operate_on_gie_id, person_class_id),
            TRACKER_FILE: tracker_text(*args)}


def platform_files(platform: str) -> tuple:
    """The platform's default model file name and the suffixes its model file may have."""
    if platform not in PLATFORMS:
        raise IAUnetError(f"unknown Triton platform {platform!r}; expected one of {sorted(PLATFORMS)}")
    return PLATFORMS[platform]


def check_triton(model_name: str, platform: str, max_batch: int, preferred: list, instances: int, kind: str) -> None:
    platform_files(platform)
    if not MODEL_NAME.fullmatch(model_name):
        raise IAUnetError(f"Triton model name {model_name!r} must be letters, digits, '_', '.' or '-'")
    if kind not in KINDS or (kind == "KIND_CPU" and platform == "tensorrt_plan"):
        raise IAUnetError(f"instance kind {kind!r} does not fit {platform}; expected one of {list(KINDS)} "
                          "(TensorRT runs on the GPU only)")
    if max_batch < 1 or instances < 1 or any(not 1 <= b <= max_batch for b in preferred):
        raise IAUnetError(f"expected max_batch >= 1, instances >= 1 and preferred batch sizes in 1..{max_batch}; "
                          f"got max_batch {max_batch}, instances {instances}, preferred {list(preferred)}")


def dims(values) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def triton_config(card: ModelCard, model_name: str, platform: str, max_batch: int, preferred: list,
                  instances: int = 1, kind: str = "KIND_GPU", *, default_model_filename: str | None = None) -> str:
    """Triton's config.pbtxt (protobuf text of inference.ModelConfig); dims omit the batch."""
    image_only(card, "Triton")
    check_triton(model_name, platform, max_batch, preferred, instances, kind)
    file_line = [f"default_model_filename: {json.dumps(default_model_filename)}"] if default_model_filename else []
    lines = [f"# {label(card)}: {INPUT_NAME} float32 RGB 0..255 in, "
             f"{OUTPUT_NAME} float32 out", f"name: {json.dumps(model_name)}", f"platform: {json.dumps(platform)}",
             *file_line, f"max_batch_size: {max_batch}",
             "input [", "  {", f"    name: {json.dumps(INPUT_NAME)}", "    data_type: TYPE_FP32",
             f"    dims: {dims(card.sample_shape)}", "  }", "]",
             "output [", "  {", f"    name: {json.dumps(OUTPUT_NAME)}", "    data_type: TYPE_FP32",
             f"    dims: {dims([card.embedding_dim])}", "  }", "]",
             "dynamic_batching {", f"  preferred_batch_size: {dims(sorted(set(preferred)))}",
             f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}",
             "instance_group [", "  {", f"    count: {instances}", f"    kind: {kind}", "  }", "]"]
    return "\n".join(lines) + "\n"


def triton_repository(card: ModelCard, model_name: str, model_file_name: str, platform: str, max_batch: int,
                      preferred: list) -> dict:
    """{path relative to the repository: text, or None for the model file the caller copies}:
    MODEL/config.pbtxt and MODEL/1/<model_file_name> (named in the config unless it is the
    platform's default, model.onnx or model.plan)."""
    default, suffixes = platform_files(platform)
    if "/" in model_file_name or "\\" in model_file_name or not model_file_name.endswith(suffixes):
        raise IAUnetError(f"model file name {model_file_name!r} for {platform} must be a plain file name ending in "
                          f"{' or '.join(suffixes)}")
    named = None if model_file_name == default else model_file_name
    text = triton_config(card, model_name, platform, max_batch, preferred, default_model_filename=named)
    return {f"{model_name}/config.pbtxt": text, f"{model_name}/1/{model_file_name}": None}
