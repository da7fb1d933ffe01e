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
