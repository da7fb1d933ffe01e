"""iaunet bundle: a Jetson folder whose manifest hashes what it holds, refusals, and the
DeepStream and Triton variants."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from iaunet.core.errors import IAUnetError
from iaunet.engines.bundle import build_bundle


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, image_onnx, orin_ptx):
    root = tmp_path_factory.mktemp("artifacts")
    shutil.copy(image_onnx, root / "model.onnx")
    shutil.copytree(orin_ptx[1], root / "ptx")
    return root


@pytest.fixture(scope="module")
def jetson(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "orin"
    return build_bundle(artifacts, "orin", "jetson", out), out


def test_manifest_hashes_every_file(jetson):
    manifest, out = jetson
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json", "README.md"}
    assert set(manifest["sha256"]) == files
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert "models/model.onnx" in files and "ptx/manifest.json" in files
    assert json.loads((out / "ptx" / "manifest.json").read_text())["arch"] == 87


def test_manifest_says_routes_versions_and_model(jetson, image_checkpoint):
    from iaunet.core.files import sha256_file
    from iaunet.train.checkpoint import checkpoint_model_id
    manifest, out = jetson
    assert manifest["plugin_route_on_target"] == "python"  # JetPack 6 ships TensorRT 10.3: no AOT plugins
    assert manifest["plugin_routes"]["10.3"] == "python" and manifest["plugin_routes"]["10.13"] == "aot"
    assert manifest["plugin_routes"]["11.0"] == "aot" and manifest["tensorrt_checked_against"] == ["10.3", "11.4"]
    assert manifest["model_id"] == checkpoint_model_id(image_checkpoint) and manifest["preprocess"]["height"] == 64
    readme = (out / "README.md").read_text()
    assert "iaunet build models/model.onnx -o model.engine --ptx ptx" in readme
    assert (manifest["wheel"] is None) or (out / manifest["wheel"]).is_file()


def test_refusals_leave_nothing(artifacts, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    (tmp_path / "nothing").mkdir()
    cases = [((artifacts, "orin", "jetson", tmp_path / "full"), "not empty"),
             ((tmp_path / "nothing", "orin", "jetson", tmp_path / "b1"), "no ONNX file"),
             ((tmp_path / "missing", "orin", "jetson", tmp_path / "b2"), "not found"),
             ((artifacts, "xavier", "jetson", tmp_path / "b3"), "unknown target"),
             ((artifacts, "orin", "deepstream", tmp_path / "b4"), "native graph")]
    for args, words in cases:
        with pytest.raises(IAUnetError, match=words):
            build_bundle(*args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "nothing"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]


def test_triton_bundle_is_a_model_repository_triton_parses(artifacts, tmp_path):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import text_format
    manifest = build_bundle(artifacts, "x86", "triton", tmp_path / "t")
    repo = tmp_path / "t" / "model_repository"
    config = text_format.Parse((repo / "iaunet_fp32" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "iaunet_fp32" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert list(config.input[0].dims) == [3, 64, 32] and config.output[0].name == "embeddings"
    assert (repo / "iaunet_fp32" / "1" / "model.onnx").read_bytes() == (artifacts / "model.onnx").read_bytes()
    assert "model_repository/iaunet_fp32/1/model.onnx" in manifest["sha256"]


def test_deepstream_bundle_uses_the_native_graph_on_orin(image_checkpoint, tmp_path):
    import configparser
    from iaunet.export.exporter import export_checkpoint
    (tmp_path / "art").mkdir()
    export_checkpoint(image_checkpoint, tmp_path / "art" / "model.native.onnx", "native")
    build_bundle(tmp_path / "art", "orin", "deepstream", tmp_path / "ds")
    parser = configparser.ConfigParser()
    parser.read(tmp_path / "ds" / "deepstream" / "config_infer_secondary_reid.txt")
    assert parser["property"]["onnx-file"] == "../models/model.native.onnx"
    assert parser["property"]["infer-dims"] == "3;64;32" and parser["property"]["output-blob-names"] == "embeddings"
    assert not (tmp_path / "ds" / "ptx").exists()  # no plugin nodes, no PTX


def test_the_wheel_is_built_without_touching_the_network(tmp_path, monkeypatch):
    """pip's index and its version check point at a local socket that counts connections
    (a fresh pip cache, so the weekly version check is due): the wheel is built, and
    nothing connects."""
    import socket
    import threading
    from iaunet.engines.bundle import _wheel
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    connections, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                connections.append(1)
                conn.close()
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name, value in {"PIP_INDEX_URL": f"{url}/simple", "HTTP_PROXY": url, "HTTPS_PROXY": url,
                        "http_proxy": url, "https_proxy": url, "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
                        "PIP_DISABLE_PIP_VERSION_CHECK": "0", "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        wheel = _wheel(tmp_path / "out")
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert wheel and (tmp_path / "out" / wheel).is_file()
    assert not connections, f"pip connected {len(connections)} time(s) while building the wheel"


def test_a_second_bundle_copies_the_cached_wheel_and_a_changed_source_builds_anew(tmp_path, monkeypatch):
    import subprocess
    from iaunet.engines import bundle
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = []
    real_run = subprocess.run
    monkeypatch.setattr(bundle.subprocess, "run", lambda *a, **kw: built.append(a) or real_run(*a, **kw))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = bundle._wheel(tmp_path / "a"), bundle._wheel(tmp_path / "b")
    assert first == second and len(built) == 1  # pip ran once
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / second).read_bytes()
    # the cache key: pyproject.toml and every module, by path and bytes
    root = Path(bundle.__file__).resolve().parents[1]
    tree = tmp_path / "tree"
    shutil.copy(root / "pyproject.toml", tree.mkdir() or tree / "pyproject.toml")
    shutil.copytree(root / "runtime", tree / "runtime", ignore=shutil.ignore_patterns("__pycache__"))  # one package
    before = bundle._source_digest(tree)
    assert bundle._source_digest(tree) == before
    (tree / "runtime" / "gallery.py").write_text((tree / "runtime" / "gallery.py").read_text() + "# changed\n")
    assert bundle._source_digest(tree) != before


def test_the_bundle_writes_nothing_into_the_toolkit_source_and_is_readable_by_others(jetson):
    """The wheel is built from a copy in a temporary folder: no build/ or egg-info appears
    in the source tree; the folders have the usual permissions (a container user who is not
    root reads the model repository)."""
    import os
    import stat
    from pathlib import Path

    import iaunet.engines.bundle as bundle
    manifest, out = jetson
    root = Path(bundle.__file__).resolve().parents[1]
    assert not (root / "build").exists(), sorted(os.listdir(root / "build"))[:5]
    umask = os.umask(0)
    os.umask(umask)
    for folder in [out] + [p for p in out.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder


@pytest.fixture(scope="module")
def int8_artifacts(tmp_path_factory, trained_setup, int8_variant, calib_cache, orin_ptx):
    """trained_setup's checkpoint as a user's artifacts folder: the plugin export, its FP16
    variant, its INT8 variant in both layouts (the session's), the native export and its
    INT8 variant (for DeepStream), and the PTX."""
    from iaunet.calib.fp16 import convert_fp16
    from iaunet.calib.int8 import quantize_int8
    root = tmp_path_factory.mktemp("int8_artifacts")
    shutil.copy(trained_setup["plugin"], root / "model.onnx")
    shutil.copy(trained_setup["native"], root / "model.native.onnx")
    convert_fp16(trained_setup["plugin"], root / "model.fp16.onnx")
    for path in int8_variant[1].glob("m.int8.*"):
        shutil.copy(path, root / path.name.replace("m.int8.", "model.int8."))
    quantize_int8(trained_setup["native"], root / "model.native.int8.onnx", trained_setup["data"], method="minmax",
                  samples=24, cache_dir=calib_cache)
    shutil.copytree(orin_ptx[1], root / "ptx")
    return root


def _consumer(path) -> str | None:
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("iaunet.consumer")


def test_each_consumer_is_handed_its_int8_layout(int8_artifacts, tmp_path):
    """Jetson's and DeepStream's TensorRT build the TensorRT layout (X.int8.trt.onnx); Triton's
    ONNX Runtime serves X.int8.onnx, and no file marked for TensorRT is in its repository (on
    old main the one INT8 file, FP16 outside the Q/DQ, went to all three)."""
    import configparser
    import yaml
    jetson = tmp_path / "jetson"
    manifest = build_bundle(int8_artifacts, "orin", "jetson", jetson)
    build = next(line for line in (jetson / "README.md").read_text().splitlines() if line.startswith("iaunet build"))
    model = build.split()[2]
    assert model.endswith(".int8.trt.onnx") and _consumer(jetson / model) == "tensorrt", build
    assert manifest["variants"][model] == "int8"

    deepstream = tmp_path / "deepstream"
    build_bundle(int8_artifacts, "orin", "deepstream", deepstream)
    parser = configparser.ConfigParser()
    parser.read(deepstream / "deepstream" / "config_infer_secondary_reid.txt")
    onnx_file = parser["property"]["onnx-file"]
    assert onnx_file == "../models/model.native.int8.trt.onnx" and int(parser["property"]["network-mode"]) == 1
    assert _consumer(deepstream / "deepstream" / onnx_file) == "tensorrt"
    reid = yaml.safe_load((deepstream / "deepstream" / "config_tracker_NvDCF_reid.yml").read_text())["ReID"]
    assert reid["onnxFile"] == onnx_file
    readme = (deepstream / "README.md").read_text()
    assert "iaunet build models/model.native.int8.trt.onnx -o deepstream/model.native.int8.trt.engine" in readme

    triton = tmp_path / "triton"
    (tmp_path / "plugin_only").mkdir()
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx", "model.int8.calib"):
        shutil.copy(int8_artifacts / name, tmp_path / "plugin_only" / name)
    build_bundle(tmp_path / "plugin_only", "x86", "triton", triton)
    served = sorted((triton / "model_repository").glob("*/1/*.onnx"))
    assert [p.parent.parent.name for p in served] == ["iaunet_fp16", "iaunet_fp32", "iaunet_int8"]
    assert all(_consumer(p) is None for p in served)
    assert (triton / "model_repository" / "iaunet_int8" / "1" / "model.onnx").read_bytes() == (
        int8_artifacts / "model.int8.onnx").read_bytes()
    both = tmp_path / "triton_both"  # plugin and native graphs of each precision: one model each, none lost
    build_bundle(int8_artifacts, "x86", "triton", both)
    served = {p.parent.parent.name: p for p in (both / "model_repository").glob("*/1/model.onnx")}
    assert sorted(served) == ["iaunet_fp16", "iaunet_fp32", "iaunet_fp32_native", "iaunet_int8", "iaunet_int8_native"]
    assert served["iaunet_int8_native"].read_bytes() == (int8_artifacts / "model.native.int8.onnx").read_bytes()
    assert all(_consumer(p) is None for p in served.values())


def test_every_model_triton_serves_passes_parity_in_a_default_onnxruntime_session(int8_artifacts, trained_setup,
                                                                                 tmp_path):
    """Each model of the Triton repository, read as Triton reads it (config.pbtxt through Triton's
    own ModelConfig schema, the file its platform names) and run in ONNX Runtime's default
    session (what the onnxruntime_onnx backend opens with no optimization block), gives
    embeddings that pass the parity gates against PyTorch on the query and gallery images
    (on old main the INT8 model's cosine was about 0)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    import numpy as np
    import onnxruntime as ort
    from google.protobuf import text_format
    from iaunet.calib.data import load_inputs
    from iaunet.runtime.parity import VariantResult, judge, retrieval
    from iaunet.export.checks import compare
    from iaunet.export.metadata import preprocess_spec
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.runner import TorchRunner
    (tmp_path / "art").mkdir()
    for path in int8_artifacts.glob("model.*"):  # the plugin graph's variants
        if "native" not in path.name:
            shutil.copy(path, tmp_path / "art" / path.name)
    build_bundle(tmp_path / "art", "x86", "triton", tmp_path / "t")
    model, config = load_checkpoint(trained_setup["checkpoint"])
    ds = open_dataset(trained_setup["data"])
    samples = ds.query + ds.gallery
    pids, cams = np.array([s.pid for s in samples]), np.array([s.camid for s in samples])
    inputs = load_inputs([s.paths[0] for s in samples], preprocess_spec(config), progress=False)
    reference = TorchRunner(model, config).infer_batches(inputs, 32)
    rank1, mAP, _ = retrieval(reference, len(ds.query), pids, cams)
    configs = sorted((tmp_path / "t" / "model_repository").glob("*/config.pbtxt"))
    assert len(configs) == 3
    for path in configs:
        served = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert served.platform == "onnxruntime_onnx" and not served.HasField("optimization")
        session = ort.InferenceSession(str(path.parent / "1" / (served.default_model_filename or "model.onnx")))
        (expected_in,), (expected_out,) = served.input, served.output
        assert [i.name for i in session.get_inputs()] == [expected_in.name]
        assert session.get_outputs()[0].shape[1:] == list(expected_out.dims)
        emb = np.concatenate([session.run([expected_out.name], {expected_in.name: inputs[i:i + 32]})[0]
                              for i in range(0, len(inputs), 32)])
        p = compare(reference, emb)
        r1, m, _ = retrieval(emb, len(ds.query), pids, cams)
        result = VariantResult(served.name, str(path), served.name.split("_")[-1], "triton", p.mean_cosine,
                               p.min_cosine, p.max_abs_error, r1, m, r1 - rank1, m - mAP)
        judge(result)
        assert result.passed, (served.name, result.failures, p.describe())
