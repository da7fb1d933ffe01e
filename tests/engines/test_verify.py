"""iaunet verify on this CPU machine: ONNX Runtime rows for every variant of a bundle with its
parity kit, TensorRT rows "not run" with the reason; exit 2 and the triage on a failed gate;
a tampered kit refused in one line; and the bundle's README commands in a virtualenv holding
only the bundle's wheel and the extras the README installs (no torch)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from iaunet.core.errors import IAUnetError

REPEATS = "3"


@pytest.fixture(scope="module")
def bundle(trained_setup, orin_ptx, tmp_path_factory):
    """A Jetson Orin bundle of the trained model's FP32 and FP16 graphs, with a kit from the checkpoint."""
    from iaunet.calib.fp16 import convert_fp16
    from iaunet.engines.bundle import build_bundle
    root = tmp_path_factory.mktemp("verify")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    shutil.copy(trained_setup["plugin"], artifacts / "model.onnx")
    convert_fp16(artifacts / "model.onnx", artifacts / "model.fp16.onnx")
    shutil.copytree(orin_ptx[1], artifacts / "ptx")
    manifest = build_bundle(artifacts, "orin", "jetson", root / "bundle", checkpoint=trained_setup["checkpoint"],
                            data=trained_setup["data"], kit_size=64)
    return root / "bundle", manifest


def verify(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "iaunet.cli", "verify", *map(str, args), "--repeats", REPEATS],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_bundle_carries_the_kit_and_the_readme_says_verify(bundle, trained_setup):
    from iaunet.train.checkpoint import checkpoint_model_id
    from iaunet.engines.bundle import VERIFY_COMMAND, install_command
    from iaunet.runtime.parity_kit import read_kit
    out, manifest = bundle
    kit = read_kit(out / "kit", manifest["model_id"])
    assert kit.source == "pytorch" and kit.model_id == checkpoint_model_id(trained_setup["checkpoint"])
    assert len(kit.files) <= 64 and manifest["kit"]["size"] == len(kit.files)
    assert all(f"kit/{f}" in manifest["sha256"] for f in kit.files)
    readme = (out / "README.md").read_text()
    block = readme.split("```bash\n")[2].split("```")[0].splitlines()  # after the system packages
    assert block[0] == "python3 -m venv --system-site-packages .venv"
    assert block[-2:] == [install_command(manifest), VERIFY_COMMAND]
    assert install_command(manifest, "cpu") in readme and "verify.json" in readme


def test_verify_on_cpu_runs_onnxruntime_rows_and_says_why_tensorrt_did_not(bundle, tmp_path):
    from iaunet.engines.verify import tensorrt_missing
    out, manifest = bundle
    if tensorrt_missing() is None:
        pytest.skip("TensorRT loads here: the GPU test covers this machine")
    done = verify(out, "-o", tmp_path / "v")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "v" / "verify.json").read_text())
    rows = report["rows"]
    assert [(r["variant"], r["backend"].split("-")[0]) for r in rows] == [
        ("models/model.fp16.onnx", "onnxruntime"), ("models/model.onnx", "onnxruntime"),
        ("models/model.fp16.onnx", "tensorrt"), ("models/model.onnx", "tensorrt")]
    for row in rows[:2]:
        assert row["status"] == "pass" and row["reason"] is None and row["parity"]["passed"]
        assert row["parity"]["min_cosine"] >= {"fp32": 0.99999, "fp16": 0.999}[row["precision"]]
        assert [b["batch"] for b in row["bench"]] == [1, 8]
        assert all(0 < b["p50_ms"] <= b["p99_ms"] and b["samples_per_s"] > 0 for b in row["bench"])
    for row in rows[2:]:
        assert row["status"] == "not run" and "TensorRT is not installed" in row["reason"]
        assert row["parity"] is None and row["bench"] == [] and row["built"] is None
    md = (tmp_path / "v" / "verify.md").read_text()
    assert md.count("| not run |") == 2 and md.count("| pass |") == 2
    assert f"{rows[0]['parity']['min_cosine']:.6f}" in md and "every variant passes" in md
    parity = json.loads((tmp_path / "v" / "parity" / "parity.json").read_text())
    assert [v["name"] for v in parity["variants"]][1:] == [
        "model.fp16.onnx (onnxruntime-cpu)", "model.onnx (onnxruntime-cpu)"]
    assert not any(p.name.startswith("verify") for p in out.iterdir())  # -o: the bundle is left as it was


def _rehash(bundle_dir, rel):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["sha256"][rel] = hashlib.sha256((bundle_dir / rel).read_bytes()).hexdigest()
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))


def test_a_failed_gate_exits_2_with_the_reason_and_the_triage(bundle, tmp_path):
    """A kit whose FP16 gate no FP16 graph meets (its index and the manifest written to match)."""
    copy = shutil.copytree(bundle[0], tmp_path / "b")
    info = json.loads((copy / "kit" / "kit.json").read_text())
    info["gates"]["fp16"]["min_cosine"] = 0.9999999999
    (copy / "kit" / "kit.json").write_text(json.dumps(info))
    _rehash(copy, "kit/kit.json")
    done = verify(copy, cwd=copy)
    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads((copy / "verify.json").read_text())
    fp16 = report["rows"][0]
    assert fp16["status"] == "FAIL" and fp16["reason"] == "parity gate: min_cosine" and not report["passed"]
    assert fp16["triage"] and ("first layer below cosine 0.999" in fp16["triage"] or "no layer below" in fp16["triage"])
    assert report["rows"][1]["status"] == "pass" and fp16["bench"]  # the other steps still ran
    assert "not every variant passes" in done.stdout and "| FAIL |" in (copy / "verify.md").read_text()


def test_tampered_kit_is_refused_in_one_line(bundle, tmp_path):
    copy = shutil.copytree(bundle[0], tmp_path / "b")
    ref = copy / "kit" / "reference.npz"
    with np.load(ref) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["embeddings"][0, 0] *= 1.5
    np.savez(ref, **arrays)
    _rehash(copy, "kit/reference.npz")  # even with the bundle's manifest made to agree, the kit's own hashes refuse it
    done = verify(copy, cwd=copy)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "reference.npz does not match its SHA-256" in lines[0] and not (copy / "verify.json").exists()
    from iaunet.engines.verify import verify_bundle
    with pytest.raises(IAUnetError, match="kit/reference.npz is missing or does not match"):
        shutil.copy(bundle[0] / "manifest.json", copy / "manifest.json")
        verify_bundle(copy, tmp_path / "v")


def test_bundle_readme_verifies_in_a_venv_without_torch(bundle, tmp_path):
    """The README's commands (its install line for a machine without CUDA), in a fresh virtualenv."""
    from iaunet.engines.bundle import VERIFY_COMMAND, install_command
    out, manifest = bundle
    if manifest["wheel"] is None:
        pytest.skip("the toolkit's wheel could not be built here")
    work = shutil.copytree(out, tmp_path / "bundle")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    for command in (install_command(manifest, "cpu"), VERIFY_COMMAND + f" --repeats {REPEATS}"):
        done = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    check = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import importlib.util as u, iaunet; "
                            "print(u.find_spec('torch') is None, u.find_spec('onnx') is None, iaunet.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.split()[:2] == ["True", "True"] and str(venv) in check.stdout, check.stdout + check.stderr
    report = json.loads((work / "verify.json").read_text())
    assert report["passed"] and [r["status"] for r in report["rows"]] == ["pass", "pass", "not run", "not run"]
