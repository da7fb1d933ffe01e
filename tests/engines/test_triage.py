"""``iaunet triage`` on ONNX Runtime: Polygraphy's comparator over every node output of
the FP32 graph and of a variant, paired by node, names the first node that parts."""
import json

import numpy as np
import pytest

pytest.importorskip("polygraphy", reason="polygraphy is not installed (the 'calib' extra)")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the 'export' extra)")

from iaunet.core.errors import IAUnetError  # noqa: E402
from iaunet.engines.triage import check_pair, paired_tensors, run_triage  # noqa: E402

TARGET = "/model/layer2/layer2.1/conv1/Conv"  # mid-graph: 20-odd nodes before it, the IAU blocks after


def _perturbed(onnx_path, out, node_name=TARGET, scale=0.5, seed=0):
    """A copy of the FP32 graph whose ``node_name`` weights carry noise of ``scale`` x their
    spread: every node before it is untouched."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(onnx_path))
    node = next(n for n in model.graph.node if n.name == node_name)
    weight = next(t for t in model.graph.initializer if t.name == node.input[1])
    w = numpy_helper.to_array(weight)
    noisy = w + scale * w.std() * np.random.default_rng(seed).standard_normal(w.shape).astype(w.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def perturbed(image_onnx, tmp_path_factory):
    return _perturbed(image_onnx, tmp_path_factory.mktemp("triage") / "perturbed.onnx")


def test_the_first_layer_named_is_the_one_changed(image_onnx, perturbed, market_synth, tmp_path):
    result, report = run_triage(image_onnx, perturbed, market_synth, samples=3, output=tmp_path / "t.json")
    names = [layer.node for layer in result.layers]
    assert result.first is not None and result.first.node == TARGET, result.first
    before = result.layers[:names.index(TARGET)]
    assert len(before) >= 10 and min(layer.cosine for layer in before) > 1 - 1e-6
    assert result.first.cosine < 0.99 and result.samples == 3 and result.precision == "fp32"
    written = json.loads(report.read_text())
    assert written["first"]["node"] == TARGET and len(written["layers"]) == len(result.layers)
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_identical_graphs_part_nowhere(image_onnx, market_synth, tmp_path):
    import shutil
    copy = shutil.copyfile(image_onnx, tmp_path / "copy.onnx")
    result, _ = run_triage(image_onnx, copy, market_synth, samples=2, output=tmp_path / "t.json")
    assert result.first is None and len(result.layers) > 100
    assert min(layer.cosine for layer in result.layers) > 1 - 1e-6


def test_fp16_variant_is_compared_through_renamed_island_tensors(image_onnx, market_synth, tmp_path):
    """FP16 conversion renames the outputs of FP32-island nodes; pairing by node still
    compares them, and the probed FP16 variant follows FP32 at every node."""
    from iaunet.calib.fp16 import convert_fp16
    fp16 = tmp_path / "m.fp16.onnx"
    convert_fp16(image_onnx, fp16, market_synth, 8, 0)
    result, _ = run_triage(image_onnx, fp16, market_synth, samples=2, output=tmp_path / "t.json")
    renamed = [layer for layer in result.layers if layer.candidate_tensor != layer.tensor]
    assert renamed, "expected FP32-island tensors renamed by the FP16 conversion"
    assert result.precision == "fp16" and len(result.layers) > 100
    assert result.first is None, result.first


def test_an_fp16_overflow_is_named_where_the_probe_finds_it(image_onnx, market_synth, tmp_path):
    """This randomised model's activations pass 65504 in its last stages. Converted without
    the overflow probe, its FP16 variant turns to inf/NaN there: the first node triage names
    is one the probe (run separately) keeps in FP32 for overflowing."""
    from iaunet.calib.fp16 import convert_fp16
    unprobed, probed = tmp_path / "unprobed.onnx", tmp_path / "probed.onnx"
    convert_fp16(image_onnx, unprobed, None, 1, 0)
    overflowing = convert_fp16(image_onnx, probed, market_synth, 8, 0)["fp32_overflow_nodes"]
    result, report = run_triage(image_onnx, unprobed, market_synth, samples=2, output=tmp_path / "t.json")
    assert result.first is not None and np.isnan(result.first.cosine)
    assert result.first.node in overflowing, (result.first.node, sorted(overflowing))
    assert json.loads(report.read_text())["first"]["cosine"] is None  # valid JSON, not NaN


def test_pairs_follow_node_names_not_tensor_names():
    from onnx import helper
    def graph(out_name):
        node = helper.make_node("Relu", ["x"], [out_name], name="/relu")
        shape = helper.make_node("Shape", ["x"], ["s"], name="/shape")
        return helper.make_model(helper.make_graph([node, shape], "g", [], []))
    assert paired_tensors(graph("y"), graph("y_output_cast_0")) == {"y": ("/relu", "Relu", "y_output_cast_0")}


def test_a_variant_of_another_model_is_refused(image_onnx, tmp_path):
    import onnx
    model = onnx.load(str(image_onnx))
    entry = next(p for p in model.metadata_props if p.key == "iaunet.model_id")
    entry.value = "ab" * 32
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    with pytest.raises(IAUnetError, match="comes from another model"):
        check_pair(image_onnx, other, "onnxruntime")


def test_cli_exit_code_says_whether_a_layer_parts(image_onnx, perturbed, market_synth, tmp_path, capsys):
    from iaunet.cli import main
    args = [str(image_onnx), str(perturbed), "--data", str(market_synth), "--samples", "2"]
    assert main(["triage", *args, "-o", str(tmp_path / "a.json")]) == 2
    assert f"first layer below cosine 0.9999: {TARGET} (Conv)" in capsys.readouterr().out
    assert main(["triage", *args, "--threshold", "0.01", "-o", str(tmp_path / "b.json")]) == 0
    assert "no layer below cosine 0.01" in capsys.readouterr().out


def test_the_tensorrt_layout_is_triaged_as_written(int8_variant, trained_setup, tmp_path):
    """An INT8 variant's TensorRT layout (FP16 outside the Q/DQ, refused by the runner) is
    compared layer by layer as written, graph optimisations off: what TensorRT is asked to
    compute. Its layers pair with the FP32 graph's and the embeddings agree as calibration
    measured (the ONNX Runtime layout beside it gives the same verdict)."""
    _, out = int8_variant
    trt = out / "m.int8.trt.onnx"
    result, report = run_triage(trained_setup["plugin"], trt, trained_setup["data"], samples=2,
                                output=tmp_path / "trt.json")
    assert result.precision == "int8" and result.candidate == str(trt) and len(result.layers) > 100
    last = next(layer for layer in reversed(result.layers) if layer.tensor == "embeddings")
    assert last.finite and last.cosine > 0.95, last.describe()
    ort, _ = run_triage(trained_setup["plugin"], out / "m.int8.onnx", trained_setup["data"], samples=2,
                        output=tmp_path / "ort.json")
    mine = next(layer for layer in reversed(ort.layers) if layer.tensor == "embeddings")
    assert abs(mine.cosine - last.cosine) < 0.02
