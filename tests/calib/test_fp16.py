"""FP16 variants: affinity ops stay FP32, functions intact, IO float32, parity."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from iaunet.calib.fp16 import convert_fp16
from iaunet.calib.graph import fp16_overflow_nodes, native_affinity_nodes
from iaunet.core.plugin_contract import DOMAIN


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def test_plugin_graph_keeps_affinity_ops_fp32(trained_setup, tmp_path):
    record = convert_fp16(trained_setup["plugin"], tmp_path / "m.fp16.onnx", trained_setup["data"])
    src, fp16 = onnx.load(str(trained_setup["plugin"])), onnx.load(str(tmp_path / "m.fp16.onnx"))
    types = _types(fp16)
    plugins = [n for n in fp16.graph.node if n.domain == DOMAIN]
    assert len(plugins) == 4
    for node in plugins:
        assert types[node.input[0]] == TensorProto.FLOAT and types[node.output[0]] == TensorProto.FLOAT
    assert [f.SerializeToString() for f in fp16.functions] == [f.SerializeToString() for f in src.functions]
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_weights = [types[n.input[1]] for n in fp16.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(t == TensorProto.FLOAT16 for t in conv_weights)
    assert record["parity_vs_fp32_onnx"]["min_cosine"] >= 0.999
    from iaunet.calib.mixed import float32_tensors_outside_islands
    assert float32_tensors_outside_islands(fp16) == []
    props = {p.key: p.value for p in fp16.metadata_props}
    assert props["iaunet.precision"] == "fp16" and "iaunet.config" in props


def test_native_graph_finds_the_affinity_subgraphs(trained_setup, tmp_path):
    model = onnx.load(str(trained_setup["native"]))
    found = native_affinity_nodes(model)
    by_op = sorted(n.op_type for n in model.graph.node if n.name in found)
    # per block: Transpose, MatMul (X.X^T), ReduceMax, Sub, Softmax, MatMul (P.X); and ReduceMin, Where,
    # ReduceMax (the unmasked row max), Sub, Where (the mask), Softmax, MatMul (W.nodes)
    assert by_op == sorted(["Transpose", "MatMul", "ReduceMax", "Sub", "Softmax", "MatMul",
                            "ReduceMin", "Where", "ReduceMax", "Sub", "Where", "Softmax", "MatMul"] * 2)
    record = convert_fp16(trained_setup["native"], tmp_path / "n.fp16.onnx", trained_setup["data"])
    types = _types(onnx.load(str(tmp_path / "n.fp16.onnx")))
    fp16 = onnx.load(str(tmp_path / "n.fp16.onnx"))
    for node in fp16.graph.node:
        if node.name in found:
            assert all(types.get(o) == TensorProto.FLOAT for o in node.output), node.name
    assert record["parity_vs_fp32_onnx"]["min_cosine"] >= 0.999
    from iaunet.calib.mixed import float32_tensors_outside_islands
    assert float32_tensors_outside_islands(fp16) == []


def test_overflow_probe_flags_nodes_beyond_fp16_range():
    big = numpy_helper.from_array(np.full((4, 4), 1000.0, np.float32), "W")
    nodes = [helper.make_node("MatMul", ["images", "W"], ["h"], name="mm_big"),
             helper.make_node("Div", ["h", "k"], ["embeddings"], name="scale_down")]
    k = numpy_helper.from_array(np.array(1e4, np.float32), "k")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["n", 4])], [big, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inputs = np.full((2, 4), 20.0, np.float32)  # 4 * 20 * 1000 = 80000 > 65504
    # the MatMul produces it; the Div reads it (an FP16 Div would be fed inf), though its output is small
    assert set(fp16_overflow_nodes(model, inputs)) == {"mm_big", "scale_down"}
    assert fp16_overflow_nodes(model, inputs / 10) == {}


def test_an_fp16_variant_is_not_converted_again(trained_setup, tmp_path):
    from iaunet.core.errors import IAUnetError
    convert_fp16(trained_setup["plugin"], tmp_path / "a.onnx")
    with pytest.raises(IAUnetError, match="already a fp16 variant"):
        convert_fp16(tmp_path / "a.onnx", tmp_path / "b.onnx")


def test_a_variant_carries_the_model_id_and_its_own_weights_digest(image_onnx, tmp_path):
    """calib rewrites every weight: the variant's digest is of its own weights (so the
    runtime opens it), its model id the source's; a source with rotten weights is refused."""
    from iaunet.core import onnx_wire
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.embedder import Embedder, read_card
    from tests.runtime.test_embedder import _zero_weights
    convert_fp16(image_onnx, tmp_path / "m.fp16.onnx")
    src, fp16 = (onnx.load(str(p)) for p in (image_onnx, tmp_path / "m.fp16.onnx"))
    props = [{p.key: p.value for p in m.metadata_props} for m in (src, fp16)]
    assert props[1]["iaunet.weights_sha256"] == onnx_wire.weights_sha256((tmp_path / "m.fp16.onnx").read_bytes(), "v")
    assert props[1]["iaunet.weights_sha256"] != props[0]["iaunet.weights_sha256"]
    assert read_card(tmp_path / "m.fp16.onnx").model_id == read_card(image_onnx).model_id != ""
    with Embedder.open(tmp_path / "m.fp16.onnx", backend="onnxruntime-cpu") as e:
        assert e.card.precision == "fp16"
    with pytest.raises(IAUnetError, match="is corrupted"):
        convert_fp16(_zero_weights(image_onnx, tmp_path / "rotten.onnx"), tmp_path / "r.fp16.onnx")
    assert not (tmp_path / "r.fp16.onnx").exists()
