"""The DeepStream and Triton config texts, read back by the parsers their consumers use:
Triton's own ``ModelConfig`` schema (tritonclient), GKeyFile-like ``configparser`` for
nvinfer, PyYAML for the tracker's ReID section. The expected key names and codes below are
written from NVIDIA's documentation, not from the module:

- nvinfer keys and codes: Gst-nvinfer "configuration file properties"
  (https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html) and
  github.com/NVIDIA/DeepStream src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.{h,cpp};
  scaling-filter codes from includes/nvbufsurftransform.h (NvBufSurfTransform_Inter).
- tracker ReID keys and codes: github.com/NVIDIA/DeepStream skills/deepstream-dev/references/
  tracker_config.md ("ReID"), NVIDIA-AI-IOT/deepstream_python_apps tests/integration/tracker_config.yml.
"""
import ast
import configparser
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from iaunet.core.errors import IAUnetError
from iaunet.engines.deployment_configs import deepstream_files, triton_config, triton_repository
from iaunet.runtime.model_card import ModelCard

IMAGE = ModelCard(name="iaunet_r50", variant="image", height=256, width=128, frames=0, embedding_dim=2048,
                  resize_filter="bilinear", model_id="ab" * 32)
OTHER = ModelCard(name="iaunet_small", variant="image", height=384, width=192, frames=0, embedding_dim=512,
                  resize_filter="bicubic", model_id="", precision="fp16", normalized=True)
VIDEO = ModelCard(name="iaunet_video_r50", variant="video", height=256, width=128, frames=4, embedding_dim=2048,
                  resize_filter="bilinear", model_id="")

# the [property] keys Gst-nvinfer documents (gstnvinfer_property_parser.h)
NVINFER_KEYS = {
    "gpu-id", "net-scale-factor", "offsets", "model-color-format", "mean-file", "onnx-file", "model-engine-file",
    "int8-calib-file", "batch-size", "network-mode", "process-mode", "network-type", "output-tensor-meta",
    "infer-dims", "output-blob-names", "gie-unique-id", "operate-on-gie-id", "operate-on-class-ids",
    "maintain-aspect-ratio", "symmetric-padding", "scaling-filter", "scaling-compute-hw", "interval",
    "workspace-size", "strongly-typed", "classifier-threshold", "secondary-reinfer-interval",
    "input-object-min-width", "input-object-min-height", "network-input-order", "custom-lib-path",
}
NVINFER_NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}          # NvDsInferNetworkMode
NVINFER_RGB, NVINFER_SECONDARY, NVINFER_OTHER = 0, 2, 100         # model-color-format, process-mode, network-type
NV_SCALING = {"nearest": 0, "bilinear": 1, "bicubic": 2, "lanczos": 4}  # Nearest, Bilinear, Algo1 cubic, Algo3 Lanczos
# the ReID keys NvMultiObjectTracker documents
REID_KEYS = {
    "reidType", "outputReidTensor", "batchSize", "workspaceSize", "reidFeatureSize", "reidHistorySize", "inferDims",
    "networkMode", "inputOrder", "colorFormat", "offsets", "netScaleFactor", "keepAspc", "useVPICropScaler",
    "addFeatureNormalization", "minVisibility4GalleryUpdate", "tltEncodedModel", "tltModelKey", "onnxFile",
    "modelEngineFile", "calibrationTableFile",
}
TRACKER_NETWORK_MODE = {"fp32": 0, "fp16": 1, "int8": 2}          # FP32=0, FP16=1, INT8=2 (not nvinfer's order)


def nvinfer(card=IMAGE, precision="fp32", calib=None, **kw) -> tuple:
    files = deepstream_files(card, "../models/m.onnx", "m.engine", calib, precision, batch=kw.pop("batch", 16), **kw)
    text = files["config_infer_secondary_reid.txt"]
    parser = configparser.ConfigParser(interpolation=None, strict=True)  # strict: a repeated key fails
    parser.optionxform = str
    parser.read_string(text)
    assert parser.sections() == ["property"]
    return parser["property"], text


def tracker(card=IMAGE, precision="fp32", calib=None, onnx="../models/m.onnx", engine="m.engine", batch=16) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a test-only dependency) is not installed")
    text = deepstream_files(card, onnx, engine, calib, precision, batch)["config_tracker_NvDCF_reid.yml"]
    doc = yaml.safe_load(text)
    assert list(doc) == ["ReID"], "only the ReID section"
    return doc["ReID"]


def schema():
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason="tritonclient[grpc] is not installed (pip install 'tritonclient[grpc]')")


def parse_pbtxt(text: str):
    from google.protobuf import text_format
    pb = schema()
    return text_format.Parse(text, pb.ModelConfig())


def test_deepstream_gives_the_two_files():
    assert set(deepstream_files(IMAGE, "a.onnx", "a.engine", None, "fp32", 8)) == {
        "config_infer_secondary_reid.txt", "config_tracker_NvDCF_reid.yml"}


@pytest.mark.parametrize("card", [IMAGE, OTHER], ids=["r50", "small"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_nvinfer_keys_follow_the_card_and_the_contract(card, precision):
    prop, _ = nvinfer(card, precision, batch=12, gie_id=5, operate_on_gie_id=3, person_class_id=7)
    assert set(prop) <= NVINFER_KEYS, f"not nvinfer keys: {set(prop) - NVINFER_KEYS}"
    assert prop["infer-dims"] == f"3;{card.height};{card.width}"
    assert float(prop["net-scale-factor"]) == 1.0
    assert [float(v) for v in prop["offsets"].split(";")] == [0.0, 0.0, 0.0]
    assert int(prop["model-color-format"]) == NVINFER_RGB
    assert int(prop["network-mode"]) == NVINFER_NETWORK_MODE[precision]
    assert int(prop["process-mode"]) == NVINFER_SECONDARY and int(prop["network-type"]) == NVINFER_OTHER
    assert int(prop["output-tensor-meta"]) == 1 and prop["output-blob-names"] == "embeddings"
    assert (int(prop["batch-size"]), int(prop["gie-unique-id"]), int(prop["operate-on-gie-id"])) == (12, 5, 3)
    assert prop["operate-on-class-ids"] == "7"
    assert prop["onnx-file"] == "../models/m.onnx" and prop["model-engine-file"] == "m.engine"
    assert int(prop["maintain-aspect-ratio"]) == 0
    assert int(prop["scaling-filter"]) == NV_SCALING[card.resize_filter] and int(prop["scaling-compute-hw"]) == 1
    assert "int8-calib-file" not in prop
    assert all("#" not in value for value in prop.values()), "GKeyFile has no inline comments"


def test_deepstream_preprocessing_hands_the_graph_the_pixel_unchanged():
    """DeepStream feeds y = net-scale-factor * (x - offsets[c]) for 8-bit x; the graph takes
    RGB 0..255 as it is."""
    prop, text = nvinfer()
    scale, offsets = float(prop["net-scale-factor"]), [float(v) for v in prop["offsets"].split(";")]
    for x in (0, 1, 128, 255):
        assert [scale * (x - off) for off in offsets] == [float(x)] * 3
    assert any(line.startswith("#") and "net-scale-factor" in line for line in text.splitlines())


def test_int8_calibration_file_only_for_int8():
    prop, _ = nvinfer(precision="int8", calib="../models/m.calib")
    assert prop["int8-calib-file"] == "../models/m.calib"
    assert "strongly-typed" not in prop, "TensorRT's calibrator needs a weakly typed network"
    assert "int8-calib-file" not in nvinfer(precision="int8")[0]          # Q/DQ graph: no table
    for precision in ("fp32", "fp16"):
        with pytest.raises(IAUnetError, match="only for int8"):
            deepstream_files(IMAGE, "a.onnx", "a.engine", "a.calib", precision, 8)


def test_strongly_typed_only_where_the_graph_carries_the_precision():
    assert nvinfer(OTHER, "fp16")[0]["strongly-typed"] == "1"             # the fp16 variant as fp16
    assert "strongly-typed" not in nvinfer(IMAGE, "fp16")[0]              # fp32 graph lowered by the flag


def test_unmapped_resize_filter_leaves_deepstream_scaling_alone():
    odd = replace(IMAGE, resize_filter="box")
    prop, _ = nvinfer(odd)
    assert "scaling-filter" not in prop and "scaling-compute-hw" not in prop


@pytest.mark.parametrize("card", [IMAGE, OTHER], ids=["r50", "small"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tracker_reid_section_follows_the_card_and_the_contract(card, precision):
    reid = tracker(card, precision, batch=24)
    assert set(reid) <= REID_KEYS, f"not ReID keys: {set(reid) - REID_KEYS}"
    assert reid["inferDims"] == [3, card.height, card.width]
    assert reid["reidFeatureSize"] == card.embedding_dim and reid["batchSize"] == 24
    assert reid["netScaleFactor"] == 1.0 and reid["offsets"] == [0.0, 0.0, 0.0]
    assert reid["networkMode"] == TRACKER_NETWORK_MODE[precision]
    assert reid["inputOrder"] == 0 and reid["colorFormat"] == 0          # NCHW, RGB
    assert reid["outputReidTensor"] == 1, "embeddings go to user meta"
    assert reid["reidType"] in (1, 2, 3) and reid["keepAspc"] == 0
    assert reid["addFeatureNormalization"] == (0 if card.normalized else 1)
    assert reid["onnxFile"] == "../models/m.onnx" and reid["modelEngineFile"] == "m.engine"
    assert "calibrationTableFile" not in reid


def test_tracker_and_nvinfer_spell_precision_differently():
    for precision in ("fp16", "int8"):
        assert tracker(precision=precision)["networkMode"] != int(nvinfer(precision=precision)[0]["network-mode"])


def test_tracker_paths_survive_yaml_quoting_and_the_calibration_table():
    odd = 'models/a b: "x" #1.onnx'
    reid = tracker(precision="int8", calib="../m.calib", onnx=odd, engine="e: #.engine")
    assert reid["onnxFile"] == odd and reid["modelEngineFile"] == "e: #.engine"
    assert reid["calibrationTableFile"] == "../m.calib"


@pytest.mark.parametrize("card", [IMAGE, OTHER], ids=["r50", "small"])
@pytest.mark.parametrize("platform, kind", [("onnxruntime_onnx", "KIND_GPU"), ("onnxruntime_onnx", "KIND_CPU"),
                                            ("tensorrt_plan", "KIND_GPU")])
def test_triton_config_parses_with_the_real_schema(card, platform, kind):
    pb = schema()
    config = parse_pbtxt(triton_config(card, "reid", platform, 48, [16, 4, 48], instances=3, kind=kind))
    assert config.name == "reid" and config.platform == platform and config.max_batch_size == 48
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("images", pb.TYPE_FP32, [3, card.height, card.width])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("embeddings", pb.TYPE_FP32, [card.embedding_dim])]
    assert config.HasField("dynamic_batching")
    assert sorted(config.dynamic_batching.preferred_batch_size) == [4, 16, 48]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, pb.ModelInstanceGroup.Kind.Value(kind))]


@pytest.mark.parametrize("platform, file_name, default", [("onnxruntime_onnx", "model.onnx", True),
                                                          ("tensorrt_plan", "model.plan", True),
                                                          ("onnxruntime_onnx", "iaunet_int8.onnx", False),
                                                          ("tensorrt_plan", "orin.engine", False)])
def test_triton_repository_layout(platform, file_name, default):
    files = triton_repository(IMAGE, "iaunet_fp16", file_name, platform, 32, [8, 16, 32])
    assert set(files) == {"iaunet_fp16/config.pbtxt", f"iaunet_fp16/1/{file_name}"}
    assert files[f"iaunet_fp16/1/{file_name}"] is None, "the caller copies the model"
    config = parse_pbtxt(files["iaunet_fp16/config.pbtxt"])
    assert config.name == "iaunet_fp16" and config.platform == platform and config.max_batch_size == 32
    assert config.default_model_filename == ("" if default else file_name)


@pytest.mark.parametrize("call", [
    lambda: deepstream_files(VIDEO, "a.onnx", "a.engine", None, "fp32", 8),
    lambda: triton_config(VIDEO, "m", "onnxruntime_onnx", 8, [8]),
    lambda: triton_repository(VIDEO, "m", "model.onnx", "onnxruntime_onnx", 8, [8]),
], ids=["deepstream", "triton_config", "triton_repository"])
def test_video_models_are_refused(call):
    with pytest.raises(IAUnetError, match="video"):
        call()


@pytest.mark.parametrize("platform", ["pytorch_libtorch", "tensorflow_savedmodel", "onnx", ""])
def test_unknown_platforms_are_refused(platform):
    with pytest.raises(IAUnetError, match="platform"):
        triton_config(IMAGE, "m", platform, 8, [8])
    with pytest.raises(IAUnetError, match="platform"):
        triton_repository(IMAGE, "m", "model.onnx", platform, 8, [8])


@pytest.mark.parametrize("call, match", [
    (lambda: triton_config(IMAGE, "m", "onnxruntime_onnx", 8, [16]), "preferred"),
    (lambda: triton_config(IMAGE, "m", "onnxruntime_onnx", 8, [0]), "preferred"),
    (lambda: triton_config(IMAGE, "m", "onnxruntime_onnx", 0, []), "max_batch"),
    (lambda: triton_config(IMAGE, "m", "onnxruntime_onnx", 8, [8], instances=0), "instances"),
    (lambda: triton_config(IMAGE, "m", "tensorrt_plan", 8, [8], kind="KIND_CPU"), "GPU"),
    (lambda: triton_config(IMAGE, "m", "onnxruntime_onnx", 8, [8], kind="GPU"), "kind"),
    (lambda: triton_config(IMAGE, "a/b", "onnxruntime_onnx", 8, [8]), "model name"),
    (lambda: triton_repository(IMAGE, "m", "model.plan", "onnxruntime_onnx", 8, [8]), ".onnx"),
    (lambda: triton_repository(IMAGE, "m", "sub/model.onnx", "onnxruntime_onnx", 8, [8]), "plain file name"),
    (lambda: deepstream_files(IMAGE, "a.onnx", "a.engine", None, "bf16", 8), "precision"),
    (lambda: deepstream_files(IMAGE, "a.onnx", "a.engine", None, "fp32", 8, gie_id=1), "gie"),
    (lambda: deepstream_files(IMAGE, "a.onnx", "a.engine", None, "fp32", 0), "batch"),
])
def test_bad_arguments_are_one_line_errors(call, match):
    with pytest.raises(IAUnetError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_module_imports_the_standard_library_and_earlier_stages_only():
    source = Path(__file__).resolve().parents[2] / "engines" / "deployment_configs.py"
    tops = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            tops |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            tops.add(node.module)
    outside = {name for name in tops if name.partition(".")[0] not in sys.stdlib_module_names
               and not name.startswith(("iaunet.core", "iaunet.runtime"))}
    assert not outside, outside
