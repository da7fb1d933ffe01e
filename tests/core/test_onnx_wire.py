"""The wire-format reader against the onnx package, on a real export."""
import onnx
import pytest

from iaunet.core import onnx_wire
from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import DOMAIN, PLUGIN_OPS


def test_metadata_and_nodes_equal_onnxs(image_onnx):
    data = image_onnx.read_bytes()
    model = onnx.load_from_string(data)
    props, nodes = onnx_wire.read_model(data, image_onnx)
    assert props == {p.key: p.value for p in model.metadata_props} and "iaunet.config" in props
    assert nodes == [(n.domain, n.op_type) for n in model.graph.node]
    assert sum(d == DOMAIN for d, _ in nodes) >= 2


def test_dropping_the_plugin_functions_keeps_everything_else(image_onnx):
    data = image_onnx.read_bytes()
    before = onnx.load_from_string(data)
    assert {f.name for f in before.functions} >= set(PLUGIN_OPS)
    after = onnx.load_from_string(onnx_wire.drop_functions(data, DOMAIN, PLUGIN_OPS))
    assert not [f for f in after.functions if f.domain == DOMAIN and f.name in PLUGIN_OPS]
    del before.functions[:]
    assert after.SerializeToString() == before.SerializeToString()


@pytest.mark.parametrize("data", [b"\x0a\xff\xff", b"\x3a\x05abc", b"\x07"])
def test_broken_bytes_are_one_error(data):
    with pytest.raises(IAUnetError, match="not an ONNX file"):
        onnx_wire.read_model(data, "x.onnx")
