"""Embedder and runners on ONNX Runtime (CPU), checked against PyTorch and against the
batch-by-batch result; evaluation on the runtime's embeddings equals training's."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaunet.core.errors import IAUnetError
from iaunet.runtime import Embedder
from iaunet.runtime.runners import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def embedder(image_onnx):
    with Embedder.open(image_onnx, backend="onnxruntime-cpu", batch=3) as e:
        yield e


def test_card_comes_from_the_files_metadata(embedder, image_checkpoint):
    from iaunet.core.files import sha256_file
    from iaunet.train.checkpoint import checkpoint_model_id
    assert embedder.card.sample_shape == (3, 64, 32) and embedder.card.name == "iaunet_r18"
    assert embedder.model_id == checkpoint_model_id(image_checkpoint) and embedder.backend == "onnxruntime-cpu"
    assert embedder.card.checkpoint_sha256 == sha256_file(image_checkpoint) != embedder.model_id


def test_embeddings_match_pytorch_for_paths_pil_and_arrays(embedder, image_checkpoint, market_synth):
    from iaunet.train.data.transforms import EvalTransform
    from iaunet.train.runner import TorchRunner
    paths = sorted((market_synth / "query").glob("*.jpg"))[:7]
    ready = np.stack([EvalTransform(64, 32)(p) for p in paths])
    reference = TorchRunner.from_checkpoint(image_checkpoint).infer(ready)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    from_paths = embedder.embed(paths)
    assert from_paths.shape == (7, embedder.card.embedding_dim) and from_paths.dtype == np.float32
    assert np.allclose(np.linalg.norm(from_paths, axis=1), 1, atol=1e-5)
    assert (from_paths * reference).sum(1).min() > 0.99999
    pil = [Image.open(p) for p in paths]
    np.testing.assert_allclose(embedder.embed(pil), from_paths, atol=1e-6)
    np.testing.assert_allclose(embedder.embed([np.asarray(im.convert("RGB")) for im in pil]), from_paths, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(ready), from_paths, atol=1e-6)
    one_by_one = np.concatenate([embedder.embed(ready[i:i + 1]) for i in range(7)])
    np.testing.assert_allclose(one_by_one, from_paths, atol=1e-5)  # 7 = 3 + 3 + 1: the short batch trims right
    raw = embedder.embed(ready, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1, atol=1e-3)


def test_runner_refuses_wrong_input(image_onnx):
    runner = OnnxRuntimeRunner(image_onnx)
    with pytest.raises(IAUnetError, match="float32 array, got float64"):
        runner.infer(np.zeros((1, 3, 64, 32)))
    with pytest.raises(IAUnetError, match=r"takes \(N, 3, 64, 32\)"):
        runner.infer(np.zeros((1, 3, 32, 64), np.float32))
    with pytest.raises(IAUnetError, match="N >= 1"):
        runner.infer(np.zeros((0, 3, 64, 32), np.float32))


class ProfileBound(OnnxRuntimeRunner):
    """ONNX Runtime posing as an engine whose profile takes at most 4 samples, recording
    the batch sizes it is given."""

    def __init__(self, path):
        super().__init__(path)
        self.max_batch, self.seen = 4, []

    def _infer(self, images):
        self.seen.append(len(images))
        return super()._infer(images)


def test_a_profile_bound_runner_gets_full_batches_and_the_result_is_trimmed(image_onnx):
    from iaunet.runtime.embedder import read_card
    x = (np.random.default_rng(1).random((10, 3, 64, 32), dtype=np.float32) * 255).astype(np.float32)
    expected = OnnxRuntimeRunner(image_onnx).infer(x)
    runner, card = ProfileBound(image_onnx), read_card(image_onnx)
    embedder = Embedder(runner, card)
    assert embedder.batch == 4  # the default batch, capped at the profile's maximum
    got = embedder.embed(x, normalize=False)
    assert runner.seen == [4, 4, 4]  # 10 = 4 + 4 + 2, the last padded to 4
    assert got.shape == (10, card.embedding_dim)
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # the same samples, other batch shapes
    with pytest.raises(IAUnetError, match=r"batch 5 is outside 1\.\.4"):
        Embedder(runner, card, batch=5)
    with pytest.raises(IAUnetError, match="at most 4 samples at once"):
        runner.infer(x[:5])


def test_video_clips_embed_through_onnxruntime_as_pytorch_does(video_checkpoint, tmp_path):
    """Clips as lists of frames (5, 3 and 7 frames: the evaluation's 3 are taken) and as
    ready arrays, through a real session, against PyTorch on the same clips."""
    from iaunet.core.preprocess import clip_frame_indices, to_model_array
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.runner import TorchRunner
    onnx_path = export_checkpoint(video_checkpoint, tmp_path / "v.onnx", "plugin", parity_batches=(1,)).path
    rng = np.random.default_rng(2)
    clips = [[rng.integers(0, 256, (90, 41, 3), dtype=np.uint8) for _ in range(n)] for n in (5, 3, 7)]
    ready = np.stack([np.stack([to_model_array(Image.fromarray(clip[k]), 64, 32, "bilinear")
                                for k in clip_frame_indices(len(clip), 3)]) for clip in clips])
    reference = TorchRunner.from_checkpoint(video_checkpoint).infer(ready)
    with Embedder.open(onnx_path, backend="onnxruntime-cpu", batch=2) as embedder:
        assert embedder.card.sample_shape == (3, 3, 64, 32)
        from_frames = embedder.embed(clips, normalize=False)
        from_arrays = embedder.embed(ready, normalize=False)
    np.testing.assert_array_equal(from_frames, from_arrays)
    cos = (from_frames * reference).sum(1) / np.linalg.norm(from_frames, axis=1) / np.linalg.norm(reference, axis=1)
    assert from_frames.shape == (3, reference.shape[1]) and cos.min() > 0.99999


def test_open_refuses_what_it_cannot_run(image_onnx, tmp_path):
    with pytest.raises(IAUnetError, match="unknown backend"):
        Embedder.open(image_onnx, backend="tensorflow")
    with pytest.raises(IAUnetError, match="build an engine"):
        Embedder.open(image_onnx, backend="tensorrt")
    with pytest.raises(IAUnetError, match="not found"):
        Embedder.open(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(IAUnetError, match="junk.onnx is not an ONNX file"):
        Embedder.open(junk)
    with pytest.raises(IAUnetError, match="was expected"):
        Embedder.open(image_onnx, expect_model="0" * 64)


def test_runtime_map_equals_training_evaluation(image_checkpoint, image_onnx, market_synth):
    """The same data set through `iaunet eval`'s code and through the runtime's embeddings."""
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.metrics import distance_matrix, rank_metrics
    from iaunet.train.trainer import evaluate
    model, config = load_checkpoint(image_checkpoint)
    data = open_dataset(market_synth)
    trained = evaluate(model, data, "cpu", config)
    with Embedder.open(image_onnx) as embedder:
        q = embedder.embed([s.paths[0] for s in data.query])
        g = embedder.embed([s.paths[0] for s in data.gallery])
    pid = lambda split: np.array([s.pid for s in split])  # noqa: E731
    cam = lambda split: np.array([s.camid for s in split])  # noqa: E731
    ours = rank_metrics(distance_matrix(q, g), pid(data.query), pid(data.gallery), cam(data.query), cam(data.gallery))
    assert abs(100 * ours["mAP"] - 100 * trained["mAP"]) < 0.1
    assert abs(float(ours["cmc"][0]) - trained["rank1"]) < 1e-9


def _int8_conv_with_fp16_scales(path):
    """images (N,2,6,6) -> Q/DQ with FP16 scales -> Conv with an FP16 bias -> embeddings (N,18):
    the pattern of every INT8 Conv in our variants (opset 19)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, size=(2, 2, 3, 3)).astype(np.int8)
    w_scale = np.array([2e-4, 3e-4], np.float16)  # x_scale * w_scale = 2e-6: bias / it overflows FP16
    bias = np.array([0.5, -0.25], np.float16)
    inits = [numpy_helper.from_array(w_q, "wq"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(bias, "b"), numpy_helper.from_array(np.array(1e-2, np.float16), "xs"),
             numpy_helper.from_array(np.array(2e-2, np.float16), "cs"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(np.array([-1, 18], np.int64), "shape")]
    nodes = [helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("QuantizeLinear", ["x16", "xs", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["c16"]),
             helper.make_node("QuantizeLinear", ["c16", "cs", "zp"], ["cq"]),  # as before a residual Add
             helper.make_node("DequantizeLinear", ["cq", "cs", "zp"], ["y16"]),
             helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["y", "shape"], ["embeddings"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 2, 5, 5])],
                              [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 18])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))
    x_scale, c_scale = 1e-2, float(np.float16(2e-2))
    def reference(images):
        xd = np.clip(np.round(images / x_scale), -128, 127) * x_scale
        w = w_q.astype(np.float64) * w_scale.astype(np.float64)[:, None, None, None]
        out = np.zeros((len(images), 2, 3, 3))
        for i in range(3):
            for j in range(3):
                out[:, :, i, j] = np.einsum("nchw,ochw->no", xd[:, :, i:i + 3, j:j + 3], w)
        out = out + bias.astype(np.float64)[None, :, None, None]
        return (np.clip(np.round(out / c_scale), -128, 127) * c_scale).reshape(len(images), 18)
    return reference


def test_the_runner_refuses_the_tensorrt_layout_and_runs_it_as_written_on_request(tmp_path):
    """The runner keeps ONNX Runtime's default optimisations, whose WeightBiasQuantization
    wrecks INT8 Convs with FP16 scales (iaunet.calib.ort_layout): a file marked as the
    TensorRT layout is refused, naming the file to run; as written it computes right."""
    import onnx
    from iaunet.core.errors import IAUnetError
    reference = _int8_conv_with_fp16_scales(tmp_path / "q.trt.onnx")
    model = onnx.load(str(tmp_path / "q.trt.onnx"))
    onnx.helper.set_model_props(model, {"iaunet.consumer": "tensorrt"})
    onnx.save(model, str(tmp_path / "q.trt.onnx"))
    images = np.random.default_rng(1).uniform(-1, 1, size=(4, 2, 5, 5)).astype(np.float32)
    with pytest.raises(IAUnetError, match=r"TensorRT layout.*run q\.onnx"):
        OnnxRuntimeRunner(tmp_path / "q.trt.onnx")
    with OnnxRuntimeRunner(tmp_path / "q.trt.onnx", as_written=True) as runner:
        out = runner.infer(images)
    np.testing.assert_allclose(out, reference(images), atol=2.5e-2)  # one output step (c_scale) at most


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads resident memory from /proc")
def test_opening_a_session_keeps_one_copy_of_the_weights(image_onnx):
    """Opening parses the protobuf and copies and reorders the weights; the freed heap goes
    back to the system (``_return_freed_heap``), so the process grows by about the file's
    size, not three times it (iaunet_r18: 1.08x with, 3.2x without). A fresh process: the
    heap's history is part of the figure."""
    probe = ("import sys, onnxruntime\n"
             "from iaunet.runtime.runners import OnnxRuntimeRunner\n"
             "def anon():\n"
             "    return int(next(l for l in open('/proc/self/status') if l.startswith('RssAnon')).split()[1]) * 1024\n"
             "before = anon()\n"
             "runner = OnnxRuntimeRunner(sys.argv[1])\n"
             "print(anon() - before)\n")
    grown = int(subprocess.run([sys.executable, "-c", probe, str(image_onnx)], capture_output=True, text=True,
                               check=True).stdout)
    assert grown < 1.6 * image_onnx.stat().st_size, f"grew {grown / image_onnx.stat().st_size:.2f}x the file"


def _zero_weights(source, target, size=64 * 1024):
    """A copy of ``source`` with ``size`` bytes of its largest weight zeroed, as bit rot on
    an SD card would: the file still parses and runs."""
    import onnx
    data = bytearray(source.read_bytes())
    largest = max(onnx.load_from_string(bytes(data)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    start = data.find(largest) + len(largest) // 3
    assert len(largest) > 2 * size and data.count(largest[:256]) == 1
    data[start:start + size] = bytes(size)
    target.write_bytes(bytes(data))
    return target


def test_an_onnx_file_with_zeroed_weights_is_refused(image_onnx, tmp_path):
    rotten = _zero_weights(image_onnx, tmp_path / "rotten.onnx")
    with OnnxRuntimeRunner(rotten) as runner:  # it does run: only the digest tells
        assert runner.infer(np.zeros((1, 3, 64, 32), np.float32)).shape[0] == 1
    with pytest.raises(IAUnetError, match=r"rotten\.onnx is corrupted: its weights do not match"):
        Embedder.open(rotten, backend="onnxruntime-cpu")


def test_a_file_without_the_digest_opens_with_a_note(image_onnx, tmp_path, iaunet_notes):
    import onnx
    model = onnx.load(str(image_onnx))
    kept = [p for p in model.metadata_props if p.key != "iaunet.weights_sha256"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with Embedder.open(tmp_path / "old.onnx") as e:
        assert e.card.embedding_dim > 0
    assert any("carries no weights digest" in note for note in iaunet_notes)


def test_metadata_that_says_another_embedding_size_is_refused(image_onnx, tmp_path):
    import json
    import onnx
    model = onnx.load(str(image_onnx))
    entry = next(p for p in model.metadata_props if p.key == "iaunet.config")
    config = json.loads(entry.value)
    real = config["embedding_dim"]
    config["embedding_dim"] = real // 2
    entry.value = json.dumps(config)
    onnx.save(model, str(tmp_path / "lies.onnx"))
    with pytest.raises(IAUnetError, match=f"gives {real}-d embeddings but its metadata says {real // 2}"):
        Embedder.open(tmp_path / "lies.onnx", backend="onnxruntime-cpu")


def test_engine_or_onnx_is_told_from_the_files_bytes(image_onnx, tmp_path):
    import shutil
    from iaunet.runtime.embedder import is_engine
    model = tmp_path / "model.onnx"
    shutil.copyfile(image_onnx, model)
    (tmp_path / "model.onnx.json").write_text('{"labels": ["person"]}')  # another tool's file beside it
    named_engine = tmp_path / "model.engine"
    shutil.copyfile(image_onnx, named_engine)
    assert not is_engine(model) and not is_engine(named_engine)
    for path in (model, named_engine):
        with Embedder.open(path, backend="onnxruntime-cpu") as e:
            assert e.backend == "onnxruntime-cpu"
    engine = tmp_path / "real.plan"
    engine.write_bytes(b"ftrt" + bytes(60))
    assert is_engine(engine)
    with pytest.raises(IAUnetError, match="has no sidecar"):
        Embedder.open(engine)
