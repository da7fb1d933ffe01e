"""INT8 Q/DQ placement, the TensorRT cache, calibration caching and data rules."""
import json
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from iaunet.calib.graph import plugin_node_names
from iaunet.calib.int8 import activation_scales, check_qdq, quantize_int8, read_trt_cache, trt_version_code, write_trt_cache
from iaunet.core.errors import IAUnetError


@pytest.fixture(scope="module")
def int8(int8_variant):
    record, out = int8_variant
    return record, onnx.load(str(out / "m.int8.trt.onnx")), out  # the TensorRT layout


def test_qdq_placement_follows_tensorrt_rules(int8):
    _, model, _ = int8
    assert check_qdq(model) == []
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        weight_dq = producers[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
        scale = inits[weight_dq.input[1]]
        assert axis == 0 and scale.shape == (inits[weight_dq.input[0]].shape[0],)  # per output channel
        assert producers[conv.input[0]].op_type == "DequantizeLinear"  # activation quantized
        if len(conv.input) > 2:
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float16  # bias not quantized: FP16
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not np.any(inits[node.input[2]])  # symmetric
    q_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    plugin_outputs = {o for n in model.graph.node if n.name in plugin_node_names(model) for o in n.output}
    assert not q_inputs & plugin_outputs
    assert model.graph.output[0].name == "embeddings"
    assert producers["embeddings"].op_type not in ("QuantizeLinear", "DequantizeLinear")


def test_residual_adds_have_both_inputs_quantized(int8):
    _, model, _ = int8
    producers = {o: n for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and re.search(r"/layer\d/", n.name)]
    assert adds and all(producers[i].op_type == "DequantizeLinear" for n in adds for i in n.input)


def test_trt_cache_matches_the_graph_scales(int8):
    record, model, out = int8
    cache = out / "m.int8.calib"
    assert cache.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"
    fp32_scales, graph_scales = read_trt_cache(cache), activation_scales(model)
    assert sorted(fp32_scales) == sorted(graph_scales) and record["activation_scales"] == len(fp32_scales) > 10
    # the graph holds each FP32 scale rounded to FP16, or FP16's smallest normal number
    # where the scale is below it (the update branches of a briefly trained model are tiny)
    from iaunet.calib.mixed import FP16_MIN_NORMAL
    expected = {k: np.float16(max(v, FP16_MIN_NORMAL)) for k, v in fp32_scales.items()}
    assert {k: np.float16(v) for k, v in graph_scales.items()} == expected
    raised = sum(v < FP16_MIN_NORMAL for v in fp32_scales.values())
    assert record["fp16_outside_qdq"]["scales_raised_to_fp16_min_normal"] >= raised


def test_trt_cache_encoding_by_hand(tmp_path):
    write_trt_cache({"x": 1.0, "y": 0.5}, tmp_path / "c", "10.16")
    assert (tmp_path / "c").read_text() == "TRT-101600-EntropyCalibration2\nx: 3f800000\ny: 3f000000\n"
    assert trt_version_code("8.6.1") == 8601


def test_calibration_is_cached_and_reused(int8, trained_setup, calib_cache, tmp_path):
    """The session's INT8 variant collected the statistics into the shared cache (the first to
    ask for them); the same calibration again reads them and writes the same graph."""
    record, _, out = int8
    again = quantize_int8(trained_setup["plugin"], tmp_path / "again.int8.onnx", trained_setup["data"], samples=24,
                          cache_dir=calib_cache)
    assert again["calibration"]["from_cache"] and again["calibration"]["cache_key"] == record["calibration"]["cache_key"]
    assert (calib_cache / record["calibration"]["cache_key"] / "histograms.npz").is_file()
    a, b = onnx.load(str(out / "m.int8.onnx")), onnx.load(str(tmp_path / "again.int8.onnx"))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()


def test_changing_one_calibration_image_is_a_cache_miss(trained_setup, tmp_path):
    import shutil

    from PIL import Image
    crops = tmp_path / "crops"
    crops.mkdir()
    for path in sorted((trained_setup["data"] / "bounding_box_train").glob("*.jpg"))[:8]:
        shutil.copy(path, crops / path.name)
    first = quantize_int8(trained_setup["plugin"], tmp_path / "a.onnx", crops, samples=8,
                          method="minmax", cache_dir=tmp_path / "c")  # the key, not the method, is tested
    same = quantize_int8(trained_setup["plugin"], tmp_path / "b.onnx", crops, samples=8,
                          method="minmax", cache_dir=tmp_path / "c")  # the key, not the method, is tested
    victim = sorted(crops.glob("*.jpg"))[3]
    Image.open(victim).transpose(Image.FLIP_TOP_BOTTOM).save(victim)
    changed = quantize_int8(trained_setup["plugin"], tmp_path / "d.onnx", crops, samples=8,
                          method="minmax", cache_dir=tmp_path / "c")  # the key, not the method, is tested
    assert not first["calibration"]["from_cache"] and same["calibration"]["from_cache"]
    assert not changed["calibration"]["from_cache"]
    assert changed["calibration"]["cache_key"] != first["calibration"]["cache_key"]


def test_methods_give_different_scales(trained_setup, calib_cache, tmp_path):
    scales = {}
    for method in ("minmax", "percentile"):
        quantize_int8(trained_setup["plugin"], tmp_path / f"{method}.onnx", trained_setup["data"], method=method,
                      samples=24, cache_dir=calib_cache)
        scales[method] = activation_scales(onnx.load(str(tmp_path / f"{method}.onnx")))
    common = sorted(set(scales["minmax"]) & set(scales["percentile"]))
    assert common and any(scales["minmax"][k] > scales["percentile"][k] for k in common)
    assert all(scales["minmax"][k] >= scales["percentile"][k] * 0.999 for k in common)


def test_calibration_refuses_evaluation_splits(trained_setup, tmp_path):
    with pytest.raises(IAUnetError, match="evaluation split"):
        quantize_int8(trained_setup["plugin"], tmp_path / "q.onnx", trained_setup["data"] / "query")
    with pytest.raises(IAUnetError, match="needs calibration images"):
        quantize_int8(trained_setup["plugin"], tmp_path / "q.onnx", None)
    assert not list(tmp_path.glob("*.onnx"))


def test_an_output_that_is_the_input_or_a_bad_header_version_writes_nothing(trained_setup, tmp_path):
    import shutil

    from iaunet.calib.fp16 import convert_fp16
    src = tmp_path / "m.onnx"
    shutil.copy(trained_setup["plugin"], src)
    before = src.read_bytes()
    with pytest.raises(IAUnetError, match="is the input"):
        quantize_int8(src, src, trained_setup["data"], samples=4, cache_dir=tmp_path / "c")
    with pytest.raises(IAUnetError, match="is the input"):
        convert_fp16(src, tmp_path / "." / "m.onnx")
    with pytest.raises(IAUnetError, match="not MAJOR.MINOR"):
        quantize_int8(src, tmp_path / "q.onnx", trained_setup["data"], samples=4, trt_version="ten",
                      cache_dir=tmp_path / "c")
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def _conv_relu_conv(path):
    from onnx import TensorProto, helper
    from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", [INPUT_NAME, "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], [OUTPUT_NAME], name="conv2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 2, 32, 32])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_entropy_minmax_and_percentile_differ_on_activations_with_outliers(tmp_path):
    """Gaussian activations with rare outliers 40 sigma out: minmax keeps the outlier, entropy
    (TensorRT's KL search) and percentile clip it, each to its own threshold."""
    from iaunet.calib.int8 import _quantize, calibrate_ranges
    from iaunet.core.graph_io import INPUT_NAME
    src = tmp_path / "tiny.onnx"
    _conv_relu_conv(src)
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(16, 1, 32, 32)).astype(np.float32)
    inputs.reshape(-1)[rng.choice(inputs.size, 8, replace=False)] = 40.0
    scales = {}
    ranges = calibrate_ranges(src, inputs, 99.9, tmp_path)  # one pass: every method's ranges
    for method in ("entropy", "minmax", "percentile"):
        out = tmp_path / f"{method}.onnx"
        _quantize(src, out, ranges[method], method, set())
        scales[method] = activation_scales(onnx.load(str(out)))[INPUT_NAME]
    assert scales["minmax"] == pytest.approx(40.0 / 127, rel=1e-5)
    assert 3.0 / 127 < scales["entropy"] < scales["minmax"] / 4  # clipped, but not into the Gaussian's body
    assert 3.0 / 127 < scales["percentile"] < scales["minmax"] / 4
    assert abs(scales["entropy"] - scales["percentile"]) > 1e-3 * scales["minmax"]


def test_everything_outside_the_qdq_and_the_fp32_islands_is_fp16(int8):
    """Measured from the graph: every float tensor but the graph I/O and those touching an
    affinity op (or an overflow node) is FP16; Q/DQ scales are FP16 (opset 19), and an INT8
    Conv reads its DequantizeLinear outputs directly, with no Cast between them."""
    from iaunet.calib.mixed import FP16_SCALE_OPSET, float32_tensors_outside_islands
    record, model, _ = int8
    assert float32_tensors_outside_islands(model) == []
    assert next(o.version for o in model.opset_import if o.domain == "") == FP16_SCALE_OPSET
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(inits[n.input[1]].data_type == onnx.TensorProto.FLOAT16 for n in qdq)
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(producers[c.input[0]].op_type == "DequantizeLinear" for c in convs)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    plugin_nodes = plugin_node_names(model)
    consumers = {i: n for n in model.graph.node for i in n.input}
    # Casts only at the graph I/O and around the affinity plugin nodes
    for cast in casts:
        consumer, producer = consumers.get(cast.output[0]), producers.get(cast.input[0])
        assert (cast.input[0] == "images" or cast.output[0] == "embeddings"
                or (consumer is not None and consumer.name in plugin_nodes)
                or (producer is not None and producer.name in plugin_nodes)), cast.name
    assert record["fp16_outside_qdq"]["opset"] == FP16_SCALE_OPSET


def test_fp16_safe_scales_raise_tiny_scales_and_requantise_their_weights():
    from onnx import TensorProto, helper
    from iaunet.calib.mixed import FP16_MIN_NORMAL, fp16_safe_scales
    weights = np.array([[100, -3], [127, 50]], np.int8)        # two output channels
    scale = np.array([1e-6, 1e-2], np.float32)                  # the first is far below FP16's normal range
    node = helper.make_node("DequantizeLinear", ["w", "s"], ["y"], axis=0)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                              [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scale, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    before = weights * scale[:, None]
    assert fp16_safe_scales(model) == 1
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits["s"].tolist() == pytest.approx([FP16_MIN_NORMAL, 1e-2])
    after = inits["w"].astype(np.float32) * inits["s"][:, None]
    assert np.abs(after - before).max() <= FP16_MIN_NORMAL / 2 + 1e-12   # within half the new step
    assert inits["w"][1].tolist() == [127, 50]                               # a normal scale leaves its weights
    assert np.all(np.isfinite(inits["s"].astype(np.float16))) and np.all(inits["s"].astype(np.float16) > 0)


def test_int8_calibration_needs_no_torch(trained_setup, tmp_path):
    """A plugin export calibrates where torch is absent (the local functions are rewritten
    for opset 19 by iaunet.export.functions, which needs onnx only)."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "from iaunet.calib.int8 import quantize_int8\n"
            f"quantize_int8({str(trained_setup['plugin'])!r}, {str(tmp_path / 'q.onnx')!r}, "
            f"{str(trained_setup['data'])!r}, method='minmax', samples=8, cache_dir={str(tmp_path / 'c')!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    assert onnx.load(str(tmp_path / "q.onnx")).functions


def _fp32_embeddings(path, images):
    from iaunet.export.checks import run_onnxruntime
    return run_onnxruntime(path, images, 8)


def _held_out_images(trained_setup, count=8):
    from iaunet.calib.data import load_inputs
    from iaunet.export.metadata import load_onnx, metadata_of
    meta = metadata_of(load_onnx(trained_setup["plugin"]), trained_setup["plugin"])
    files = sorted((trained_setup["data"] / "bounding_box_test").glob("*.jpg"))[:count]
    return load_inputs(files, meta.preprocess, "test images", progress=False)


def test_the_int8_file_a_user_opens_is_right_in_a_plain_onnxruntime_session(int8, trained_setup):
    """m.int8.onnx in onnxruntime.InferenceSession(path), no options, agrees with FP32 (on old
    main: mean cosine about 0, the TensorRT layout's FP16 scales broken by WeightBiasQuantization);
    the TensorRT layout beside it is marked, and the runner refuses it."""
    import onnxruntime as ort
    from iaunet.export.checks import compare
    from iaunet.runtime.runners import OnnxRuntimeRunner
    record, _, out = int8
    images = _held_out_images(trained_setup)
    plain = ort.InferenceSession(str(out / "m.int8.onnx")).run(["embeddings"], {"images": images})[0]
    parity = compare(_fp32_embeddings(trained_setup["plugin"], images), plain)
    assert parity.mean_cosine >= 0.99 and parity.min_cosine >= 0.95, parity.describe()
    assert record["layouts"]["onnxruntime"]["file"] == str(out / "m.int8.onnx")
    assert record["layouts"]["tensorrt"]["file"] == str(out / "m.int8.trt.onnx")
    trt = onnx.load(str(out / "m.int8.trt.onnx"))
    assert {p.key: p.value for p in trt.metadata_props}["iaunet.consumer"] == "tensorrt"
    with pytest.raises(IAUnetError, match="TensorRT layout"):
        OnnxRuntimeRunner(out / "m.int8.trt.onnx")


def test_the_default_method_is_chosen_by_measurement(int8):
    """No --method: every method's all-INT8 variant is scored on held-out images and the best
    kept; the record says which won and by how much (on old main the default was entropy,
    unmeasured)."""
    record, _, _ = int8
    choice = record["method_choice"]
    assert choice["asked"] == "auto" and set(choice["scores"]) == {"entropy", "percentile", "minmax"}
    best = max(choice["scores"].values(), key=lambda s: (s["min_cosine"], s["mean_cosine"]))
    assert record["method"] == choice["won"] and choice["scores"][choice["won"]] == best
    runner_up = choice["scores"][choice["runner_up"]]
    assert choice["won_by"]["min_cosine"] == pytest.approx(best["min_cosine"] - runner_up["min_cosine"])
    assert choice["won_by"]["min_cosine"] >= 0


def test_a_named_method_is_used_as_it_is(trained_setup, calib_cache, tmp_path):
    record = quantize_int8(trained_setup["plugin"], tmp_path / "m.onnx", trained_setup["data"], method="minmax",
                           samples=24, cache_dir=calib_cache)
    assert record["method"] == "minmax" and record["method_choice"] == {"asked": "minmax", "scores": None}


def test_an_output_named_like_the_tensorrt_layout_is_refused(trained_setup, tmp_path):
    with pytest.raises(IAUnetError, match=r"ends in \.trt\.onnx"):
        quantize_int8(trained_setup["plugin"], tmp_path / "m.int8.trt.onnx", trained_setup["data"])
    assert not list(tmp_path.iterdir())


def test_every_onnx_file_declares_the_embedding_size_its_metadata_states(int8, trained_setup, tmp_path):
    """Exports (plugin, native), FP16, and both INT8 layouts: output (batch, D) with D the
    metadata's embedding_dim (on old main the plugin export said 'BatchNormalizationembeddings_dim_1')."""
    import json
    from iaunet.calib.fp16 import convert_fp16
    _, _, out = int8
    convert_fp16(trained_setup["plugin"], tmp_path / "m.fp16.onnx")
    files = [trained_setup["plugin"], trained_setup["native"], tmp_path / "m.fp16.onnx", out / "m.int8.onnx",
             out / "m.int8.trt.onnx"]
    for path in files:
        model = onnx.load(str(path), load_external_data=False)
        dim = json.loads({p.key: p.value for p in model.metadata_props}["iaunet.config"])["embedding_dim"]
        (output,) = model.graph.output
        dims = [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim]
        assert dims == ["batch", dim], f"{path.name}: {dims}"


def test_a_corrupted_cache_entry_is_recomputed_and_said(int8, trained_setup, calib_cache, iaunet_notes, tmp_path):
    import shutil
    record, _, _ = int8
    cache = shutil.copytree(calib_cache, tmp_path / "cache")  # the session's cache stays whole
    method = record["method"]
    entry = next((cache / record["calibration"]["cache_key"]).glob(f"{method}*.ranges.json"))
    good = entry.read_text()
    entry.write_text(good[: len(good) // 2])  # truncated
    quantize_int8(trained_setup["plugin"], tmp_path / "again.int8.onnx", trained_setup["data"], method=method,
                  samples=24, cache_dir=cache)
    assert any("cannot be read" in note and "computing them again" in note for note in iaunet_notes), iaunet_notes
    assert json.loads(entry.read_text()) == json.loads(good)  # the same images and settings give the same ranges
    from iaunet.calib.int8 import _unreadable_ranges
    assert _unreadable_ranges(entry) is None
    for damage in ("", "{}", '{"CLS": "TensorsData"'):  # emptied, no ranges, truncated
        entry.write_text(damage)
        assert _unreadable_ranges(entry), damage


def test_a_layer_kept_out_is_the_graph_onnx_runtime_writes_without_it(tmp_path):
    """kept_in_float (the fallback's graphs, without quantizing again) against quantize_static
    given the layer to exclude: the same nodes and initializers, the same outputs as written;
    the kept-out layer reads float, the others keep their Q/DQ."""
    from iaunet.calib.int8 import _quantize, calibrate_ranges, kept_in_float, quantized_layers
    from iaunet.core.graph_io import INPUT_NAME
    from iaunet.runtime.runners import OnnxRuntimeRunner
    src = tmp_path / "tiny.onnx"
    _conv_relu_conv(src)
    inputs = np.random.default_rng(1).normal(size=(8, 1, 32, 32)).astype(np.float32)
    ranges = calibrate_ranges(src, inputs, 99.9, tmp_path)["minmax"]
    _quantize(src, tmp_path / "full.onnx", ranges, "minmax", set())
    _quantize(src, tmp_path / "ex.onnx", ranges, "minmax", {"conv1"})
    full, excluded, source = (onnx.load(str(tmp_path / n)) for n in ("full.onnx", "ex.onnx", "tiny.onnx"))
    assert quantized_layers(full) == ["conv1", "conv2"]
    mine = kept_in_float(full, source, {"conv1"})
    assert quantized_layers(mine) == quantized_layers(excluded) == ["conv2"]
    assert sorted(n.op_type for n in mine.graph.node) == sorted(n.op_type for n in excluded.graph.node)
    assert ({t.name: numpy_helper.to_array(t).tobytes() for t in mine.graph.initializer}
            == {t.name: numpy_helper.to_array(t).tobytes() for t in excluded.graph.initializer})
    assert next(n for n in mine.graph.node if n.name == "conv1").input[:2] == [INPUT_NAME, "w1"]
    outputs = []
    for model in (mine, excluded):
        with OnnxRuntimeRunner(model.SerializeToString(), as_written=True) as runner:
            outputs.append(runner.session.run(None, {INPUT_NAME: inputs[:1]})[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    assert len(full.graph.node) == len(onnx.load(str(tmp_path / "full.onnx")).graph.node)  # not changed


def test_the_entropy_threshold_is_onnx_runtimes(tmp_path):
    """entropy_threshold (NumPy) against ONNX Runtime's own get_entropy_threshold on histograms
    of Gaussian activations with outliers and of ReLU outputs: the same thresholds."""
    from onnxruntime.quantization.calibrate import HistogramCollector
    from iaunet.calib.int8 import ENTROPY_BINS, ENTROPY_QUANTIZED_BINS, entropy_threshold
    rng = np.random.default_rng(2)
    gauss = rng.normal(size=20000).astype(np.float32)
    gauss[:5] = 30.0
    relu = np.maximum(rng.normal(1.0, 2.0, size=20000), 0).astype(np.float32)
    collector = HistogramCollector("entropy", True, ENTROPY_BINS, ENTROPY_QUANTIZED_BINS, 99.99, None)
    for values in (gauss, relu):
        top = np.abs(values).max()
        hist, edges = np.histogram(values, ENTROPY_BINS, range=(-top, top))
        histogram = (hist, edges.astype(np.float32), values.min(), values.max(), top)
        ours, theirs = entropy_threshold(histogram, ENTROPY_QUANTIZED_BINS), collector.get_entropy_threshold(
            histogram, ENTROPY_QUANTIZED_BINS)
        assert (float(ours[0]), float(ours[1])) == (float(theirs[0]), float(theirs[1]))
        assert 0 < float(ours[1]) < top  # clipped: a real search, not the full range
