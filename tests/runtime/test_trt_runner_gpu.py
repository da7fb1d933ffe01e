"""The TensorRT runner on a real GPU: a native-mode export of the small test model is
built into a strongly typed engine with a dynamic-batch profile, given a sidecar, and run
through ``TensorRTRunner`` and ``Embedder`` (padding, CUDA graphs) against ONNX Runtime.
Skipped without CUDA or without TensorRT's libraries (never run on the CPU machines)."""
import json

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, image_checkpoint):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda")
    from iaunet.export.exporter import export_checkpoint
    from iaunet.runtime.engine_card import FORMAT, sidecar_path
    from iaunet.runtime.trt_runner import machine_facts
    root = tmp_path_factory.mktemp("engine")
    onnx_path = export_checkpoint(image_checkpoint, root / "m.native.onnx", "native").path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 64, 32), (4, 3, 64, 32), (8, 3, 64, 32))
    config.add_optimization_profile(profile)
    path = root / "m.engine"
    path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    machine = machine_facts()
    sidecar_path(path).write_text(json.dumps({
        "format": FORMAT, "tensorrt_version": machine.tensorrt_version, "gpu_name": machine.gpu_name,
        "compute_capability": machine.compute_capability, "precision": "fp32",
        "profile": {"min": [1, 3, 64, 32], "opt": [4, 3, 64, 32], "max": [8, 3, 64, 32]},
        "plugin_route": "native", "plugins": [], "onnx_sha256": "", "toolkit_version": "test",
        "metadata": dict(session.get_modelmeta().custom_metadata_map)}))
    return path, onnx_path


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_matches_onnxruntime(engine, cuda_graph):
    from iaunet.runtime import Embedder
    from iaunet.runtime.runners import OnnxRuntimeRunner
    path, onnx_path = engine
    x = (np.random.default_rng(0).random((11, 3, 64, 32), dtype=np.float32) * 255).astype(np.float32)
    expected = OnnxRuntimeRunner(onnx_path).infer_batches(x, 8)
    with Embedder.open(path, cuda_graph=cuda_graph, batch=8) as embedder:
        assert embedder.backend == "tensorrt" and embedder.runner.max_batch == 8
        got = embedder.embed(x, normalize=False)  # 8 + 3, the short batch padded to 8 and trimmed
        again = embedder.embed(x, normalize=False)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == expected.shape and cos.min() > 0.9999
    # the padded graph replay against the first call: one engine, but TensorRT does not promise
    # bitwise-equal runs (a tactic may accumulate with atomics), so equal to float32 rounding
    np.testing.assert_allclose(again, got, rtol=1e-5, atol=1e-6 * np.abs(got).max())


def test_one_cuda_graph_serves_smaller_calls_and_a_larger_one_recaptures(engine):
    """Called directly (the embedder always pads to its batch): 3 rows capture the graph,
    2 rows are padded up to 3 and replay it, 8 rows recapture, 3 rows are padded to 8."""
    from iaunet.runtime.trt_runner import TensorRTRunner
    path, _ = engine
    x = (np.random.default_rng(1).random((8, 3, 64, 32), dtype=np.float32) * 255).astype(np.float32)
    plain = TensorRTRunner(path)
    graph = TensorRTRunner(path, cuda_graph=True)
    try:
        for n, graph_batch in ((3, 3), (2, 3), (8, 8), (3, 8)):
            got = graph.infer(x[:n])
            assert graph._graph[0] == graph_batch
            np.testing.assert_allclose(got, plain.infer(x[:n]), rtol=1e-5, atol=1e-5 * np.abs(got).max())
    finally:
        graph.close()
        plain.close()
