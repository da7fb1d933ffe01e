"""iaunet parity: measurements, gates, reports."""
import json
import subprocess
import sys

import pytest

from iaunet.calib.parity import VariantResult, judge, run_parity
from iaunet.calib.fp16 import convert_fp16
from iaunet.core.errors import IAUnetError


@pytest.mark.parametrize("precision, values, failures", [
    ("fp32", dict(min_cosine=0.99998), ["min_cosine"]),
    ("fp32", dict(min_cosine=0.999999), []),
    ("fp16", dict(min_cosine=0.9995, delta_map=-0.29), []),
    ("fp16", dict(min_cosine=0.9995, delta_map=0.31), ["max_abs_delta_map"]),
    ("int8", dict(mean_cosine=0.995, min_cosine=0.96, delta_map=-0.9), []),
    ("int8", dict(mean_cosine=0.985, min_cosine=0.94, delta_map=-1.1), ["min_cosine", "mean_cosine", "min_delta_map"]),
])
def test_gates(precision, values, failures):
    result = VariantResult("v", "v.onnx", precision, "plugin", **values)
    judge(result)
    assert sorted(result.failures) == sorted(failures) and result.passed == (not failures)


def test_parity_finds_variants_and_writes_reports(trained_setup, tmp_path):
    convert_fp16(trained_setup["plugin"], trained_setup["dir"] / "model.fp16.onnx")
    results, out = run_parity(trained_setup["checkpoint"], trained_setup["data"], out_dir=tmp_path / "rep")
    names = [r.name for r in results]
    assert names[0] == "pytorch" and {"model.onnx", "model.native.onnx", "model.fp16.onnx"} <= set(names)
    by_name = {r.name: r for r in results}
    assert by_name["model.onnx"].min_cosine >= 0.99999 and by_name["model.onnx"].passed
    assert by_name["model.fp16.onnx"].precision == "fp16" and by_name["model.fp16.onnx"].passed
    assert abs(by_name["model.onnx"].delta_map) < 1e-6
    report = json.loads((out / "parity.json").read_text())
    assert [v["name"] for v in report["variants"]] == names
    assert "| model.fp16.onnx | fp16 |" in (out / "parity.md").read_text()
    for png in ("parity_cosine.png", "parity_cmc.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_variant_of_another_checkpoint_is_refused(trained_setup, image_checkpoint, tmp_path):
    from iaunet.export.exporter import export_checkpoint
    other = export_checkpoint(image_checkpoint, tmp_path / "other.onnx").path
    with pytest.raises(IAUnetError, match="exported from another checkpoint"):
        run_parity(trained_setup["checkpoint"], trained_setup["data"], [other], tmp_path / "rep")


def test_parity_cli_exit_code(trained_setup, tmp_path):
    result = subprocess.run([sys.executable, "-m", "iaunet.cli", "parity", str(trained_setup["checkpoint"]),
                             str(trained_setup["plugin"]), "--data", str(trained_setup["data"]), "-o",
                             str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "model.onnx" in result.stdout and "pass" in result.stdout
