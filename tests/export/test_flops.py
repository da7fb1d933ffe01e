"""FLOP counts against hand arithmetic on a one-Conv graph, and plugin == native."""
import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from iaunet.export.flops import count_flops


def test_conv_and_matmul_flops_by_hand(tmp_path):
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((8 * 16 * 16, 5), np.float32), "m")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "m"], ["embeddings"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 5])], [w, m, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "g.onnx")
    conv = 2 * (8 * 16 * 16) * (3 * 3 * 3)
    matmul = 2 * 5 * (8 * 16 * 16)
    assert count_flops(tmp_path / "g.onnx") == conv + matmul


def test_plugin_and_native_exports_count_the_same(exported):
    counts = [count_flops(exported[m].path) for m in ("plugin", "native")]
    assert counts[0] == counts[1] > 1e8
