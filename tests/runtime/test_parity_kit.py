"""The parity kit: written from a checkpoint (or the FP32 ONNX) and read back with every hash
checked; variants checked against it give the figures parity against the checkpoint gives;
a tampered kit and a kit of another model are refused in one line."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.core.files import sha256_file
from iaunet.runtime.parity_kit import read_kit, kit_parity
from iaunet.train.checkpoint import checkpoint_model_id


@pytest.fixture(scope="module")
def kit(trained_setup, tmp_path_factory):
    from iaunet.calib.parity import write_kit
    out = tmp_path_factory.mktemp("kit") / "kit"
    write_kit(trained_setup["checkpoint"], trained_setup["data"], out)
    return out


@pytest.fixture(scope="module")
def fp16(trained_setup, tmp_path_factory):
    from iaunet.calib.fp16 import convert_fp16
    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    convert_fp16(trained_setup["plugin"], path)
    return path


def test_kit_holds_the_images_ids_and_pytorch_references(kit, trained_setup):
    from iaunet.core.preprocess import load_inputs
    from iaunet.export.metadata import preprocess_spec
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.runner import TorchRunner
    info = json.loads((kit / "kit.json").read_text())
    ds = open_dataset(trained_setup["data"])
    assert info["model_id"] == checkpoint_model_id(trained_setup["checkpoint"]) and info["reference"]["source"] == "pytorch"
    assert info["num_query"] == len(ds.query) and info["size"] == len(ds.query) + len(ds.gallery)  # all fit in 256
    assert set(info["sha256"]) == {p.relative_to(kit).as_posix() for p in kit.rglob("*") if p.is_file() and p.name != "kit.json"}
    with np.load(kit / "reference.npz") as npz:  # any tool reads it: plain arrays, no pickles
        emb, files, ids, cams = (npz[k] for k in ("embeddings", "files", "ids", "cameras"))
    samples = ds.query + ds.gallery
    assert emb.dtype == np.float32 and emb.shape[0] == len(files) == len(samples)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # not normalised
    assert list(ids) == [s.pid for s in samples] and list(cams) == [s.camid for s in samples]
    for f, s in zip(files, samples):  # the data set's files, byte for byte
        assert (kit / f).read_bytes() == open(s.paths[0], "rb").read()
    model, config = load_checkpoint(trained_setup["checkpoint"])
    again = TorchRunner(model, config).infer(load_inputs([s.paths[0] for s in samples[:5]], preprocess_spec(config)))
    np.testing.assert_allclose(emb[:5], again, rtol=1e-4, atol=1e-4 * np.abs(again).max())


def test_kit_size_picks_whole_identities(trained_setup, tmp_path):
    from iaunet.calib.parity import write_kit
    info = write_kit(trained_setup["checkpoint"], trained_setup["data"], tmp_path / "k", size=30)
    kit = read_kit(tmp_path / "k")
    assert len(kit.files) <= 30 and info["size"] == len(kit.files)
    queries = set(kit.ids[:kit.num_query].tolist())
    assert queries <= set(kit.ids[kit.num_query:].tolist())  # every query's identity has gallery images in the kit


def _figures(r):
    return (f"{r.mean_cosine:.6f}", f"{r.min_cosine:.6f}", f"{r.max_abs_error:.3g}", f"{r.rank1:.2f}",
            f"{r.delta_rank1:+.2f}", f"{r.mAP:.2f}", f"{r.delta_map:+.2f}", r.passed, r.precision, r.mode)


def test_parity_against_the_kit_equals_parity_against_the_checkpoint(kit, trained_setup, fp16, tmp_path):
    from iaunet.calib.parity import run_parity
    variants = [trained_setup["plugin"], fp16]
    theirs, _ = run_parity(trained_setup["checkpoint"], trained_setup["data"], variants, tmp_path / "ck")
    ours, out = kit_parity(kit, variants, tmp_path / "kit-report", backend="onnxruntime-cpu")
    assert [r.name for r in ours[1:]] == [r.name for r in theirs[1:]]
    assert (f"{ours[0].rank1:.2f}", f"{ours[0].mAP:.2f}") == (f"{theirs[0].rank1:.2f}", f"{theirs[0].mAP:.2f}")
    for a, b in zip(ours[1:], theirs[1:]):
        assert _figures(a) == _figures(b), a.name
    report = json.loads((out / "parity.json").read_text())
    assert report["reference"]["source"] == "pytorch" and len(report["variants"]) == 3
    assert (out / "parity_cosine.png").is_file() and "| model.fp16.onnx | fp16 |" in (out / "parity.md").read_text()


def test_tampered_reference_is_refused_in_one_line(kit, trained_setup, tmp_path):
    bad = shutil.copytree(kit, tmp_path / "bad")
    with np.load(bad / "reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["embeddings"][3, 0] += 0.01
    np.savez(bad / "reference.npz", **arrays)
    with pytest.raises(IAUnetError, match="reference.npz does not match its SHA-256"):
        read_kit(bad)
    done = subprocess.run([sys.executable, "-m", "iaunet.cli", "parity", "--kit", str(bad),
                           str(trained_setup["plugin"]), "-o", str(tmp_path / "rep")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "reference.npz does not match its SHA-256" in done.stderr and not (tmp_path / "rep").exists()


def test_kit_of_another_model_is_refused(kit, image_onnx, tmp_path):
    with pytest.raises(IAUnetError, match="was made for model"):
        kit_parity(kit, [image_onnx], tmp_path / "rep")
    with pytest.raises(IAUnetError, match="was made for model"):
        read_kit(kit, model_id="ab" * 32)


def test_kit_from_the_fp32_onnx_says_so_and_cli_exits_2_on_a_failed_gate(trained_setup, fp16, tmp_path):
    kit = tmp_path / "onnx-kit"
    done = subprocess.run([sys.executable, "-m", "iaunet.cli", "parity", str(trained_setup["plugin"]), "--data",
                           str(trained_setup["data"]), "--kit-out", str(kit), "--kit-size", "40"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = read_kit(kit).info
    assert info["reference"] == {"source": "onnxruntime", "file": "model.onnx",
                                 "sha256": sha256_file(trained_setup["plugin"])} and info["size"] <= 40
    # the same kit with a gate no FP16 graph meets: the command says FAIL and exits 2
    info["gates"]["fp16"]["min_cosine"] = 0.9999999999
    (kit / "kit.json").write_text(json.dumps(info))
    done = subprocess.run([sys.executable, "-m", "iaunet.cli", "parity", "--kit", str(kit), str(fp16),
                           str(trained_setup["plugin"]), "-o", str(tmp_path / "rep")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("model.")}
    assert "FAIL min_cosine" in lines["model.fp16.onnx"] and lines["model.onnx"].endswith("pass")
