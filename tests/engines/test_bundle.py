"""iaunet bundle: a Jetson folder whose manifest hashes what it holds, refusals, and the
DeepStream and Triton variants."""
import hashlib
import json
import shutil

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
    manifest, out = jetson
    assert manifest["plugin_route_on_target"] == "python"  # JetPack 6 ships TensorRT 10.3: no AOT plugins
    assert manifest["plugin_routes"]["10.3"] == "python" and manifest["plugin_routes"]["10.13"] == "aot"
    assert manifest["plugin_routes"]["11.0"] == "aot" and manifest["tensorrt_checked_against"] == ["10.3", "11.4"]
    assert manifest["model_id"] == sha256_file(image_checkpoint) and manifest["preprocess"]["height"] == 64
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
