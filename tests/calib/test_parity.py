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


def test_parity_fails_a_variant_right_only_in_our_runner(int8_variant, trained_setup, tmp_path, monkeypatch, capsys):
    """An INT8 file with FP16 scales that is not marked as the TensorRT layout, under a runner
    that turns ONNX Runtime's WeightBiasQuantization off (the runner of old main): right in
    the runner, wrong in onnxruntime.InferenceSession(path). iaunet parity runs the plain
    session too, gives it its own row and fails the variant (on old main it passed)."""
    import onnx
    import onnxruntime as ort
    from iaunet.cli import main
    from iaunet.runtime.runners import OnnxRuntimeRunner
    _, out = int8_variant
    model = onnx.load(str(out / "m.int8.trt.onnx"))
    marks = [p for p in model.metadata_props if p.key == "iaunet.consumer"]
    for prop in marks:
        model.metadata_props.remove(prop)
    bad = tmp_path / "m.unmarked.int8.onnx"
    onnx.save(model, str(bad))

    def old_main_session(self, model, options, device, cache_dir=None):
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=["WeightBiasQuantization"])
    monkeypatch.setattr(OnnxRuntimeRunner, "_session", old_main_session)
    code = main(["parity", str(trained_setup["checkpoint"]), str(bad), "--data", str(trained_setup["data"]), "-o",
                 str(tmp_path / "rep")])
    rows = {r["name"]: r for r in json.loads((tmp_path / "rep" / "parity.json").read_text())["variants"]}
    runner, plain = rows[bad.name], rows.get(f"{bad.name} (plain ORT session)")
    assert runner["mean_cosine"] >= 0.99 and runner["min_cosine"] >= 0.95, "the premise: right in the runner"
    assert plain is not None and plain["failures"] and not plain["passed"]
    assert not runner["passed"] and runner["failures"] == [f"plain_session:{f}" for f in plain["failures"]]
    assert runner["plain_session"]["agrees_with_runner"] is False
    assert code == 2 and "plain ORT session" in capsys.readouterr().out
