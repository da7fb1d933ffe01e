"""Export: plugin nodes and their local functions, parity, metadata, modes, video."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from iaunet.export import read_metadata
from iaunet.export.checks import COSINE_GATE, REL_ERROR_GATE, compare, run_onnxruntime, run_reference_evaluator
from iaunet.export.exporter import export_checkpoint, parity_inputs
from iaunet.core.plugin_contract import CHANNEL_OP, DOMAIN, PART_OP
from iaunet.export.functions import strip_local_functions
from iaunet.train import load_checkpoint
from iaunet.train.trainer import normalize


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_plugin_nodes_carry_attributes_and_local_functions(exported):
    model = onnx.load(str(exported["plugin"].path))
    plugins = [n for n in model.graph.node if n.domain == DOMAIN]
    assert sorted(n.op_type for n in plugins) == [CHANNEL_OP, CHANNEL_OP, PART_OP, PART_OP]
    for node in plugins:
        attrs = _attrs(node)
        assert attrs["plugin_namespace"] == b"iaunet" and attrs["plugin_version"] == b"1"
    assert {_attrs(n)["frames"] for n in plugins if n.op_type == PART_OP} == {1}
    assert sorted((f.domain, f.name) for f in model.functions) == [(DOMAIN, CHANNEL_OP), (DOMAIN, PART_OP)]
    assert any(o.domain == DOMAIN for o in model.opset_import)
    native = onnx.load(str(exported["native"].path))
    assert not native.functions and all(n.domain in ("", "ai.onnx") for n in native.graph.node)


def test_graph_contract(exported):
    model = onnx.load(str(exported["plugin"].path))
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and dims == ["batch", 3, 64, 32]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.name == "embeddings" and out.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert next(o.version for o in model.opset_import if o.domain == "") == 17


@pytest.mark.parametrize("mode", ["plugin", "native"])
def test_onnxruntime_matches_pytorch_at_batch_1_and_7(exported, image_checkpoint, mode):
    model, config = load_checkpoint(image_checkpoint)
    images = parity_inputs(config, 7, seed=11)  # other crops than the export's own check
    with torch.no_grad():
        expected = model(normalize(torch.from_numpy(images), config)).numpy()
    for batch in (1, 7):
        p = compare(expected, run_onnxruntime(exported[mode].path, images, batch))
        assert p.min_cosine >= 0.99999 and p.relative_error <= 1e-4, p.describe()


def test_plugin_and_native_exports_agree(exported, image_checkpoint):
    _, config = load_checkpoint(image_checkpoint)
    images = parity_inputs(config, 5, seed=12)
    p = compare(run_onnxruntime(exported["native"].path, images, 5), run_onnxruntime(exported["plugin"].path, images, 5))
    assert p.min_cosine >= 0.99999 and p.relative_error <= 1e-4, p.describe()


def test_reference_evaluator_agrees_with_onnxruntime(exported, image_checkpoint):
    _, config = load_checkpoint(image_checkpoint)
    images = parity_inputs(config, 2, seed=13)
    model = onnx.load(str(exported["plugin"].path))
    p = compare(run_onnxruntime(exported["plugin"].path, images, 2), run_reference_evaluator(model, images))
    assert p.min_cosine >= 0.99999 and p.relative_error <= 1e-4, p.describe()


def test_onnxruntime_really_runs_the_local_function(exported, image_checkpoint, tmp_path):
    """Break the channel function's body: the output must change (so parity means something)."""
    _, config = load_checkpoint(image_checkpoint)
    images = parity_inputs(config, 2, seed=14)
    model = onnx.load(str(exported["plugin"].path))
    fn = next(f for f in model.functions if f.name == CHANNEL_OP)
    del fn.node[:]
    fn.node.extend([helper.make_node("Identity", ["X"], ["Y"])])
    onnx.save(model, tmp_path / "broken.onnx")
    p = compare(run_onnxruntime(exported["plugin"].path, images, 2), run_onnxruntime(tmp_path / "broken.onnx", images, 2))
    assert p.min_cosine < 0.9999


def test_metadata_round_trip(exported, image_checkpoint):
    meta = read_metadata(exported["plugin"].path)
    _, config = load_checkpoint(image_checkpoint)
    assert meta.config == config and meta.mode == "plugin" and meta.opset == 17
    assert meta.preprocess["height"] == 64 and meta.preprocess["resize_filter"] == "bilinear"
    assert meta.preprocess["channel_order"] == "RGB" and meta.preprocess["value_range"] == [0, 255]
    import hashlib
    assert meta.checkpoint_sha256 == hashlib.sha256(open(image_checkpoint, "rb").read()).hexdigest()
    assert read_metadata(exported["native"].path).mode == "native"


def test_video_export_both_modes(video_checkpoint, tmp_path):
    for mode in ("plugin", "native"):
        report = export_checkpoint(video_checkpoint, tmp_path / f"v_{mode}.onnx", mode)
        assert all(p.passes(COSINE_GATE, REL_ERROR_GATE) for p in report.parity.values())
        model = onnx.load(str(report.path))
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, 3, 64, 32]
    plugin = onnx.load(str(tmp_path / "v_plugin.onnx"))
    parts = [n for n in plugin.graph.node if n.op_type == PART_OP]
    assert len(parts) == 2 and {_attrs(n)["frames"] for n in parts} == {3}


def test_video_frames_override_and_normalised_embeddings(video_checkpoint, tmp_path):
    report = export_checkpoint(video_checkpoint, tmp_path / "v2.onnx", "plugin", frames=2, normalize_embeddings=True)
    meta = read_metadata(report.path)
    assert meta.config.frames == 2 and meta.normalized_embeddings
    images = parity_inputs(meta.config, 3, seed=1)
    assert images.shape == (3, 2, 3, 64, 32)
    out = run_onnxruntime(report.path, images, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_opset_20_is_accepted_and_stripping_functions_leaves_plugin_nodes(image_checkpoint, tmp_path):
    report = export_checkpoint(image_checkpoint, tmp_path / "o20.onnx", "plugin", opset=20)
    model = onnx.load(str(report.path))
    assert next(o.version for o in model.opset_import if o.domain == "") == 20
    stripped = strip_local_functions(model)
    assert not stripped.functions and len([n for n in stripped.graph.node if n.domain == DOMAIN]) == 4
    assert len(model.functions) == 2
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "images"


def test_fp32_noise_floor_measures_pytorch_against_float64(image_checkpoint):
    from iaunet.export.exporter import ExportWrapper, fp32_noise_floor
    model, config = load_checkpoint(image_checkpoint)
    wrapper = ExportWrapper(model).eval()
    images = parity_inputs(config, 3, seed=2)
    with torch.no_grad():
        fp32 = wrapper(torch.from_numpy(images)).numpy()
    floor = fp32_noise_floor(wrapper, images, fp32)
    assert 0 < floor.relative_error < 1e-5 and floor.min_cosine > 0.999999
    assert next(wrapper.parameters()).dtype == torch.float32  # left as it was
    noisy = fp32 + 1e-3 * np.abs(fp32).max()
    assert fp32_noise_floor(wrapper, images, noisy).relative_error > 5e-4


@pytest.mark.parametrize("opset", [17, 18])
def test_part_affinity_reference_body_is_exact_far_below_the_mask(opset):
    """The IAUPartAffinity local function, run by ONNX Runtime and by onnx.reference on
    logits around -5e4, gives masked pairs no weight (as the authors' code does)."""
    from onnx import TensorProto

    from iaunet.export.functions import part_affinity_function
    from iaunet.core.plugin_contract import PLUGIN_NAMESPACE, PLUGIN_VERSION
    from iaunet.train.iau import part_relation_mask
    frames, parts = 2, 4
    n = frames * parts
    node = helper.make_node(PART_OP, ["S"], ["W"], domain=DOMAIN, frames=frames, parts=parts,
                            plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)
    graph = helper.make_graph([node], "part", [helper.make_tensor_value_info("S", TensorProto.FLOAT, [None, n, n])],
                              [helper.make_tensor_value_info("W", TensorProto.FLOAT, [None, n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
                              functions=[part_affinity_function(opset, frames, parts)])
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    s = (-5e4 + rng.random((3, n, n)) * 40).astype(np.float32)
    mask = part_relation_mask(frames, parts).numpy()
    expected = torch.softmax(torch.from_numpy(s).double().masked_fill(torch.from_numpy(mask), float("-inf")), -1)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    from onnx.reference import ReferenceEvaluator
    for w in (session.run(["W"], {"S": s})[0], ReferenceEvaluator(model).run(["W"], {"S": s})[0]):
        assert (w[:, mask] == 0).all()
        np.testing.assert_allclose(w, expected.numpy(), rtol=0, atol=1e-6)
