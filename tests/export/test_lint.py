"""The TensorRT 10.3 lint catches what the parser would reject, naming the node."""
from onnx import TensorProto, helper

from iaunet.export.checks import tensorrt_lint


def _model(nodes, opset=17, in_type=TensorProto.FLOAT, domains=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, [2, 3])],
                              [helper.make_tensor_value_info("y", in_type, [2, 3])])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports)


def test_clean_graph_passes():
    assert tensorrt_lint(_model([helper.make_node("Relu", ["x"], ["y"], name="r")])) == []


def test_unsupported_operator_is_named():
    problems = tensorrt_lint(_model([helper.make_node("Unique", ["x"], ["y"], name="uniq")]))
    assert any("uniq" in p and "Unique" in p and "not supported" in p for p in problems)


def test_unsupported_type_for_an_op():
    problems = tensorrt_lint(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], in_type=TensorProto.DOUBLE))
    assert any("DOUBLE" in p for p in problems)


def test_opset_outside_the_parser_range():
    problems = tensorrt_lint(_model([helper.make_node("Relu", ["x"], ["y"])], opset=21))
    assert any("opset 21" in p for p in problems)


def test_custom_nodes_must_be_our_plugins_with_their_attributes():
    foreign = helper.make_node("Frobnicate", ["x"], ["y"], name="f", domain="acme")
    assert any("acme::Frobnicate" in p for p in tensorrt_lint(_model([foreign], domains=["acme"])))
    bare = helper.make_node("IAUChannelAffinity", ["x"], ["y"], name="ca", domain="iaunet")
    problems = tensorrt_lint(_model([bare], domains=["iaunet"]))
    assert any("ca" in p and "plugin_namespace" in p for p in problems)
    good = helper.make_node("IAUChannelAffinity", ["x"], ["y"], name="ca", domain="iaunet",
                            plugin_namespace="iaunet", plugin_version="1")
    assert tensorrt_lint(_model([good], domains=["iaunet"])) == []
