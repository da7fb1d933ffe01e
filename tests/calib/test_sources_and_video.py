"""Calibration sources (data set roots, plain folders) and the video path."""
import numpy as np
import onnx
import pytest
from PIL import Image

from iaunet.calib.data import calibration_sources, load_inputs, pick
from iaunet.calib.fp16 import convert_fp16
from iaunet.calib.int8 import check_qdq, quantize_int8
from iaunet.core.errors import IAUnetError


def test_data_set_root_gives_its_training_split(market_synth):
    sources = calibration_sources(market_synth, video=False)
    assert sources and all("bounding_box_train" in str(p) for p in sources)
    assert pick(sources, 5, seed=1) == pick(sources, 5, seed=1) and len(pick(sources, 5)) == 5


def test_plain_folder_of_crops(tmp_path):
    for i in range(3):
        Image.new("RGB", (20, 40), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    sources = calibration_sources(tmp_path, video=False)
    inputs = load_inputs(sources, {"height": 64, "width": 32, "resize_filter": "bilinear", "frames": 0},
                         progress=False)
    assert inputs.shape == (3, 3, 64, 32) and inputs.dtype == np.float32 and inputs.max() <= 255
    with pytest.raises(IAUnetError, match="video model reads clips from a MARS"):
        calibration_sources(tmp_path, video=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IAUnetError, match="holds no images"):
        calibration_sources(tmp_path / "empty", video=False)


def test_video_variants_on_a_mars_layout(video_checkpoint, tmp_path):
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.data.synth import generate_mars
    generate_mars(tmp_path / "mars", identities=16, cameras=2, seed=4, tracklet_len=(3, 5))  # 16 training clips
    src = export_checkpoint(video_checkpoint, tmp_path / "v.onnx", "plugin").path
    fp16 = convert_fp16(src, tmp_path / "v.fp16.onnx", tmp_path / "mars", samples=4)
    assert fp16["parity_vs_fp32_onnx"]["min_cosine"] >= 0.999
    model = onnx.load(str(tmp_path / "v.fp16.onnx"))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # sensitivity on clips too, with a target the all-INT8 variant meets: still measured and plotted
    int8 = quantize_int8(src, tmp_path / "v.int8.onnx", tmp_path / "mars", samples=6, method="minmax",
                         cache_dir=tmp_path / "c", target_cosine=0.5)
    int8_model = onnx.load(str(tmp_path / "v.int8.trt.onnx"))  # the TensorRT layout: FP16 outside the Q/DQ
    assert check_qdq(int8_model) == []
    from iaunet.calib.mixed import float32_tensors_outside_islands
    assert float32_tensors_outside_islands(model) == [] and float32_tensors_outside_islands(int8_model) == []
    assert any(n.op_type == "DequantizeLinear" for n in int8_model.graph.node)
    from iaunet.train.data.datasets import open_dataset
    train_tracklets = len(open_dataset(tmp_path / "mars").train)
    assert int8["calibration"]["samples"] == min(6, train_tracklets) and train_tracklets > 3
    fallback = int8["fallback"]
    assert fallback["met"] and fallback["steps"] == [] and fallback["fp16_layers"] == []
    assert int8["mean_cosine_vs_fp32"] == fallback["mean_cosine_all_int8"] >= 0.5
    sensitivity = fallback["sensitivity"]
    assert len(sensitivity) == int8["int8_layers"] > 20 and all(e["one_minus_cosine"] > -1e-6 for e in sensitivity)
    assert int8["calibration"]["held_out"] >= 8 and (tmp_path / "v.int8.sensitivity.png").is_file()
