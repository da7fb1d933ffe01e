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


def test_the_weights_digest_is_the_writers_and_ignores_metadata(image_onnx):
    """The reader's digest of the file equals the one export computed over the graph
    (and wrote), and editing metadata does not change it."""
    from iaunet.core.graph_io import WEIGHTS_KEY
    data = image_onnx.read_bytes()
    model = onnx.load_from_string(data)
    digest = onnx_wire.weights_sha256(data, image_onnx)
    assert digest == onnx_wire.graph_weights_sha256(model.graph.SerializeToString())
    assert {p.key: p.value for p in model.metadata_props}[WEIGHTS_KEY] == digest
    model.metadata_props.add(key="iaunet.note", value="x" * 1000)
    assert onnx_wire.weights_sha256(model.SerializeToString(), "edited") == digest
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    assert onnx_wire.weights_sha256(model.SerializeToString(), "zeroed") != digest


def test_onnx_is_told_from_its_first_bytes(image_onnx):
    assert onnx_wire.looks_like_onnx(image_onnx.read_bytes()[:16])
    for head in (b"ftrt\x00\x00\x00\x00", b'{"format": 1}', b"", b"\x08\x00", b"\x08\xff\xff\xff\x0f", b"\x89PNG\r\n"):
        assert not onnx_wire.looks_like_onnx(head), head
