"""Both TensorRT plugin routes on a real GPU: a one-node ONNX per op goes through
TensorRT's ONNX parser into a strongly typed engine with a dynamic batch, is serialised,
deserialised in a process that registered the plugins, and run against PyTorch.
Skipped without CUDA or without TensorRT's libraries."""
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt]

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _onnx(op: str, dtype: str, size: tuple, attrs: dict) -> bytes:
    from onnx import TensorProto, helper
    from iaunet.core.plugin_contract import DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    node = helper.make_node(op, ["x"], ["y"], domain=DOMAIN, plugin_namespace=PLUGIN_NAMESPACE,
                            plugin_version=PLUGIN_VERSION, **attrs)
    graph = helper.make_graph([node], "one_op", [helper.make_tensor_value_info("x", elem, ["B", *size])],
                              [helper.make_tensor_value_info("y", elem, ["B", *size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    return model.SerializeToString()


def _engine(trt, onnx_bytes: bytes, size: tuple):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_bytes), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, *size), (4, *size), (8, *size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed (see TensorRT's log above)"
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def _run(engine, x):
    context = engine.create_execution_context()
    y = torch.empty_like(x)
    context.set_input_shape("x", tuple(x.shape))
    context.set_tensor_address("x", x.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y


@pytest.fixture(scope="module")
def ptx_dir(tmp_path_factory):
    pytest.importorskip("triton")
    from iaunet.engines.aot import compile_kernels
    major, minor = torch.cuda.get_device_capability()
    out = tmp_path_factory.mktemp("ptx")
    compile_kernels(major * 10 + minor, out, cache_dir=out / "cache")
    return out


def _cases():
    from iaunet.core.plugin_contract import CHANNEL_OP, PART_OP
    return [(CHANNEL_OP, (512, 128), {}), (CHANNEL_OP, (256, 100), {}),       # aligned and general variants
            (PART_OP, (4, 4), {"frames": 1, "parts": 4}), (PART_OP, (16, 16), {"frames": 4, "parts": 4})]


def _reference(op, x, attrs):
    from iaunet.core.plugin_contract import CHANNEL_OP
    from iaunet.train.iau import channel_affinity, part_affinity
    if op == CHANNEL_OP:
        return channel_affinity(x.float())
    return part_affinity(x.float(), attrs["frames"], attrs["parts"])


def _input(op, batch, size, dtype, spread_tokens):
    from iaunet.core.plugin_contract import CHANNEL_OP
    if op == CHANNEL_OP:  # channel softmax far from one-hot, so wrong weights show
        return spread_tokens((batch, *size), batch, "cuda").to(getattr(torch, dtype))
    torch.manual_seed(batch)
    return (torch.randn(batch, *size, device="cuda") * 3).to(getattr(torch, dtype))


def _check_route(register, ptx_dir, op, size, attrs, dtype, spread_tokens, reregister_without_ptx: bool):
    """Build with the PTX folder, then (V3) re-register without it: a deployed engine carries its kernels."""
    import tensorrt as trt
    register(ptx_dir)
    serialized = _engine(trt, _onnx(op, dtype, size, attrs), size).serialize()
    if reregister_without_ptx:
        register(None)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
    assert engine is not None
    for batch in (1, 8):
        x = _input(op, batch, size, dtype, spread_tokens)
        y = _run(engine, x)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y.float(), _reference(op, x, attrs), rtol=2e-3, atol=2e-3)


# AOT first: a process keeps one route, and the V3 creators replace the AOT ones.
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("op,size,attrs", _cases())
def test_aot_route(ptx_dir, op, size, attrs, dtype, spread_tokens):
    import tensorrt as trt
    from iaunet.engines.aot_plugins import register_aot_plugins, supports_aot_plugins
    if not supports_aot_plugins(trt):
        pytest.skip(f"TensorRT {trt.__version__} has no AOT Python plugins (10.9+)")
    _check_route(register_aot_plugins, ptx_dir, op, size, attrs, dtype, spread_tokens, reregister_without_ptx=False)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("op,size,attrs", _cases())
def test_ipluginv3_route(ptx_dir, op, size, attrs, dtype, spread_tokens):
    from iaunet.runtime.trt_plugin_v3 import register_plugins
    _check_route(register_plugins, ptx_dir, op, size, attrs, dtype, spread_tokens, reregister_without_ptx=True)


def test_ipluginv3_refuses_an_int8_input_by_name(ptx_dir, capfd):
    import tensorrt as trt
    from onnx import TensorProto
    from iaunet.core.plugin_contract import CHANNEL_OP
    from iaunet.runtime.trt_plugin_v3 import register_plugins
    register_plugins(ptx_dir)
    model = onnx.load_from_string(_onnx(CHANNEL_OP, "float32", (64, 64), {}))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.elem_type = TensorProto.INT8
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    built = parser.parse(model.SerializeToString()) and builder.build_serialized_network(
        network, builder.create_builder_config())
    assert not built
    out = capfd.readouterr()
    assert "IAUChannelAffinity takes float32 or float16" in out.out + out.err


def test_registering_ptx_for_another_gpu_is_refused(ptx_dir, tmp_path):
    import json
    import shutil

    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.trt_plugin_v3 import register_plugins
    other = tmp_path / "other"
    shutil.copytree(ptx_dir, other, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["arch"] = 80 if manifest["arch"] != 80 else 90
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IAUnetError, match="holds PTX for sm_"):
        register_plugins(other)
