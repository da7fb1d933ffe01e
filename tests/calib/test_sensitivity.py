"""Per-layer INT8 sensitivity and the greedy fallback to FP16 (--target-cosine)."""
import json

import onnx
import pytest

from iaunet.calib.int8 import quantize_int8, quantized_layers, sensitivity_plot_path
from iaunet.core.errors import IAUnetError

TARGET = 0.99


@pytest.fixture(scope="module")
def hard_model(tmp_path_factory):
    """The plugin export of a model whose plain INT8 variant misses the target."""
    from tests.conftest import noise_statistics_model
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train import save_checkpoint
    out = tmp_path_factory.mktemp("hard")
    checkpoint = save_checkpoint(out / "hard.pt", noise_statistics_model("iaunet_r18"))
    return export_checkpoint(checkpoint, out / "hard.onnx", "plugin", parity_batches=(2,)).path


@pytest.fixture(scope="module")
def hard_cache(tmp_path_factory):
    """One calibration cache for the hard model's tests (none of them tests a cold cache)."""
    return tmp_path_factory.mktemp("hard_cache")


@pytest.fixture(scope="module")
def lifted(hard_model, market_synth, hard_cache, tmp_path_factory):
    """(record, the TensorRT layout): the fallback's layers are judged in it, as TensorRT runs it."""
    out = tmp_path_factory.mktemp("lifted")
    record = quantize_int8(hard_model, out / "q.int8.onnx", market_synth, method="minmax", samples=24,
                           cache_dir=hard_cache, target_cosine=TARGET, max_fp16_layers=24)
    return record, out / "q.int8.trt.onnx"


def test_fallback_lifts_a_hard_model_to_the_target(lifted):
    record, path = lifted
    fallback = record["fallback"]
    assert fallback["mean_cosine_all_int8"] < TARGET            # the premise: plain INT8 misses
    assert fallback["met"] and record["mean_cosine_vs_fp32"] >= TARGET
    assert record["calibration"]["held_out"] >= 8 and "held-out" in record["judged_on"]
    steps = fallback["steps"]
    assert [s["fp16_layers"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(s["mean_cosine"] < TARGET for s in steps[:-1]) and steps[-1]["mean_cosine"] >= TARGET
    ranked = [entry["layer"] for entry in fallback["sensitivity"]]
    assert fallback["fp16_layers"] == ranked[:len(steps)]       # the most sensitive first
    assert 0 < fallback["fp16_flops_share"] < 0.5


def test_the_layers_moved_out_have_no_qdq_and_run_in_fp16(lifted):
    from iaunet.calib.mixed import float32_tensors_outside_islands
    record, path = lifted
    model = onnx.load(str(path))
    moved = set(record["fallback"]["fp16_layers"])
    int8_layers = set(quantized_layers(model))
    assert not moved & int8_layers and len(int8_layers) == record["int8_layers"]
    assert float32_tensors_outside_islands(model) == []


def test_the_variant_meets_the_target_on_its_own_held_out_images(lifted, hard_model, market_synth):
    """Re-measured here from the files: the held-out images are the training images the
    calibration did not use, and the variant reaches the target on them."""
    from iaunet.calib.data import calibration_sources, load_inputs
    from iaunet.calib.int8 import HELD_OUT, split_sources
    from iaunet.export.checks import compare, run_onnxruntime
    from iaunet.export.metadata import load_onnx, metadata_of
    record, path = lifted
    calibration, held_out = split_sources(calibration_sources(market_synth, False), 24, HELD_OUT, 0)
    assert not set(map(str, calibration)) & set(map(str, held_out))
    assert not any(part in ("query", "bounding_box_test") for p in held_out for part in p.parts)
    images = load_inputs(held_out, metadata_of(load_onnx(hard_model), hard_model).preprocess, progress=False)
    from iaunet.calib.parity import plain_session_embeddings
    from iaunet.runtime.runners import OnnxRuntimeRunner
    reference = run_onnxruntime(str(hard_model), images, 8)
    with OnnxRuntimeRunner(path, as_written=True) as runner:  # the TensorRT layout, as TensorRT is asked to run it
        trt = compare(reference, run_onnxruntime(runner, images, 8))
    ort = compare(reference, plain_session_embeddings(path.parent / "q.int8.onnx", images))  # a user's session
    assert trt.mean_cosine >= TARGET and ort.mean_cosine >= TARGET
    assert min(trt.mean_cosine, ort.mean_cosine) == pytest.approx(record["mean_cosine_vs_fp32"], abs=1e-6)


def test_the_sensitivity_plot_is_written_beside_the_variant(lifted):
    record, path = lifted
    png = sensitivity_plot_path(path.parent / "q.int8.onnx")  # beside the variant's name, not its TensorRT layout
    assert record["sensitivity_plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == "iaunet.variant"))
    assert stored["fallback"]["fp16_layers"] == record["fallback"]["fp16_layers"]


def test_a_target_out_of_reach_within_the_budget_fails_and_writes_nothing(hard_model, market_synth, hard_cache,
                                                                         tmp_path):
    dst = tmp_path / "q.int8.onnx"
    with pytest.raises(IAUnetError, match=r"short of --target-cosine 0\.99999.*no variant written"):
        quantize_int8(hard_model, dst, market_synth, method="minmax", samples=24, cache_dir=hard_cache,
                      target_cosine=0.99999, max_fp16_layers=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, layers, message", [(1.0, 3, "target-cosine"), (0.0, 3, "target-cosine"),
                                                      (0.99, 0, "max-fp16-layers")])
def test_fallback_options_are_checked_before_any_work(hard_model, market_synth, tmp_path, target, layers, message):
    with pytest.raises(IAUnetError, match=message):
        quantize_int8(hard_model, tmp_path / "q.onnx", market_synth, cache_dir=tmp_path / "cache",
                      target_cosine=target, max_fp16_layers=layers)
    assert list(tmp_path.iterdir()) == []


def test_too_few_images_to_hold_out_is_refused(hard_model, tmp_path):
    import shutil
    crops = tmp_path / "crops"
    crops.mkdir()
    from iaunet.train.data.synth import generate_market
    generate_market(tmp_path / "m", identities=4, cameras=2, seed=1, images_per_camera=(1, 1), distractors=0, junk=0)
    for path in sorted((tmp_path / "m" / "bounding_box_train").glob("*.jpg"))[:10]:
        shutil.copy(path, crops / path.name)
    with pytest.raises(IAUnetError, match="at least 8 training images beside"):
        quantize_int8(hard_model, tmp_path / "q.onnx", crops, samples=8, cache_dir=tmp_path / "cache",
                      target_cosine=TARGET)
    assert not (tmp_path / "q.onnx").exists()


def test_a_graph_without_its_weights_runs_as_the_whole_file(hard_model):
    """The sensitivity's one-layer graphs are parsed without their weights, which the session
    is handed once as OrtValues: the embeddings are the file's own, and a graph handed no
    weights is refused rather than run on missing data."""
    import numpy as np
    from iaunet.calib.int8 import _without_weights
    from iaunet.runtime.runners import OnnxRuntimeRunner
    model = onnx.load(str(hard_model))
    (bare,), weights = _without_weights([model])
    assert weights and len(bare.SerializeToString()) < 0.01 * len(model.SerializeToString())
    with OnnxRuntimeRunner(hard_model, as_written=True) as whole, \
            OnnxRuntimeRunner(bare.SerializeToString(), as_written=True, weights=weights) as parts:
        images = np.random.default_rng(0).uniform(0, 255, (3, *whole.sample_shape)).astype(np.float32)
        np.testing.assert_allclose(parts.infer(images), whole.infer(images), rtol=1e-5, atol=1e-6)
    with pytest.raises(IAUnetError, match="not a model ONNX Runtime can load"):
        OnnxRuntimeRunner(bare.SerializeToString(), as_written=True)
