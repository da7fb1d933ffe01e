"""The INT8 layouts against ONNX Runtime's WeightBiasQuantization: the smallest graph that a
default session computes wrongly, and the ONNX Runtime layout that it computes right."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from iaunet.calib.mixed import FP16_SCALE_OPSET


def one_conv(path, scale_type, x_scale=1e-2, w_scale=1e-3, bias=1.0, opset=FP16_SCALE_OPSET):
    """x -> Q/DQ -> Conv 1x1 (INT8 weight 100 * w_scale, bias) -> Q/DQ -> y, one channel, scales
    and bias in ``scale_type``: the unit ONNX Runtime's WeightBiasQuantization rewrites. Exact
    answer for x = 1: 100 * w_scale + bias, on the output's grid (step 0.02)."""
    f = np.float16 if scale_type == TensorProto.FLOAT16 else np.float32
    inits = [numpy_helper.from_array(np.array(x_scale, f), "xs"), numpy_helper.from_array(np.array([w_scale], f), "ws"),
             numpy_helper.from_array(np.full((1, 1, 1, 1), 100, np.int8), "wq"),
             numpy_helper.from_array(np.array([bias], f), "b"), numpy_helper.from_array(np.array(2e-2, f), "ys"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "ys", "zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "one_conv", [helper.make_tensor_value_info("x", scale_type, [1, 1, 1, 1])],
                              [helper.make_tensor_value_info("y", scale_type, [1, 1, 1, 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def plain(path, x):
    return float(ort.InferenceSession(str(path)).run(None, {"x": x})[0].ravel()[0])


def basic(path, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return float(ort.InferenceSession(str(path), options).run(None, {"x": x})[0].ravel()[0])


def test_a_default_session_breaks_an_int8_conv_with_fp16_scales(tmp_path):
    """The TensorRT layout's unit: ONNX Runtime rewrites the bias as int32 round(b / (x_scale *
    w_scale)), in FP16: 1 / 1e-5 is 1e5 > 65504, inf, INT32_MIN; the output saturates at -2.56.
    Already at ORT_ENABLE_BASIC. Without the rewrite the file computes 1.1. (If a later
    onnxruntime fixes the transformer, this test says so: then the two layouts can merge.)"""
    path = one_conv(tmp_path / "fp16.onnx", TensorProto.FLOAT16)
    x = np.ones((1, 1, 1, 1), np.float16)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    as_written = float(ort.InferenceSession(str(path), options).run(None, {"x": x})[0].ravel()[0])
    assert as_written == pytest.approx(1.1, abs=0.011)
    assert plain(path, x) < 0 and basic(path, x) < 0, f"onnxruntime {ort.__version__} no longer breaks it"


def test_the_onnxruntime_layout_of_the_same_conv_is_right_in_a_default_session(tmp_path):
    path = one_conv(tmp_path / "fp32.onnx", TensorProto.FLOAT, opset=17)
    x = np.ones((1, 1, 1, 1), np.float32)
    assert plain(path, x) == pytest.approx(1.1, abs=0.011) and basic(path, x) == pytest.approx(1.1, abs=0.011)


def test_fp32_scales_break_too_past_int32_and_fit_int32_bias_mends_it(tmp_path):
    """With FP32 scales the rewrite overflows int32 instead: 1 / (1e-5 * 1e-5) = 1e10. The ONNX
    Runtime layout raises such a channel's weight scale until the quotient fits."""
    from iaunet.calib.ort_layout import INT32_HEADROOM, fit_int32_bias, int32_bias_units
    path = one_conv(tmp_path / "tiny.onnx", TensorProto.FLOAT, x_scale=1e-5, w_scale=1e-5, opset=17)
    x = np.full((1, 1, 1, 1), 1e-3, np.float32)  # quantizes to 100 * x_scale
    assert plain(path, x) < 0                           # exact: 1.0 (+1e-8)
    model = onnx.load(str(path))
    assert fit_int32_bias(model) == [model.graph.node[3].name]
    _, _, x_scale, w_scale, bias = next(int32_bias_units(model))
    assert np.all(np.abs(bias) / (np.float32(x_scale) * w_scale) < INT32_HEADROOM)
    onnx.save(model, str(tmp_path / "fitted.onnx"))
    assert plain(tmp_path / "fitted.onnx", x) == pytest.approx(1.0, abs=0.011)
