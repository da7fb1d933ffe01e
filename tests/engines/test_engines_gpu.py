"""Engines through the parity gates on a real GPU: FP32, FP16 and INT8 engines, plugin and
native, built by ``iaunet build``'s code from a briefly trained model, measured by
``iaunet parity`` (the runtime's TensorRT runner) against PyTorch. When a gate fails, the
failure names the first layer where TensorRT parts from ONNX Runtime (``iaunet triage
--backend tensorrt``: Polygraphy's comparator with every layer marked in both).
Skipped without CUDA or without TensorRT's libraries (never run on the CPU machines)."""
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt, pytest.mark.slow]

CASES = [("fp32", "plugin"), ("fp32", "native"), ("fp16", "plugin"), ("fp16", "native"), ("int8", "plugin"),
         ("int8", "native")]


@pytest.fixture(scope="module")
def ptx_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from iaunet.engines.aot import compile_kernels
    major, minor = torch.cuda.get_device_capability()
    out = tmp_path_factory.mktemp("ptx")
    compile_kernels(major * 10 + minor, out, cache_dir=out / "cache")
    return out


@pytest.fixture(scope="module")
def variants(trained_setup, tmp_path_factory):
    """{(precision, mode): ONNX}: the exports and their FP16 and INT8 variants (INT8 with the
    demo's minmax calibration and FP16 fallback to a 0.99 mean cosine)."""
    from iaunet.calib.fp16 import convert_fp16
    from iaunet.calib.int8 import quantize_int8
    out = tmp_path_factory.mktemp("variants")
    found = {}
    for mode in ("plugin", "native"):
        fp32 = trained_setup[mode]
        found["fp32", mode] = fp32
        found["fp16", mode] = out / f"{mode}.fp16.onnx"
        convert_fp16(fp32, found["fp16", mode], trained_setup["data"], 16, 0)
        found["int8", mode] = out / f"{mode}.int8.onnx"
        quantize_int8(fp32, found["int8", mode], trained_setup["data"], "minmax", 64, 99.99, "10.3.0",
                      out / "cache", 0, 0.99, 10)
    return found


@pytest.mark.parametrize("precision,mode", CASES)
def test_engine_passes_the_parity_gates(variants, trained_setup, ptx_dir, tmp_path, precision, mode):
    from iaunet.calib.parity import run_parity
    from iaunet.engines.builder import build_engine
    from iaunet.engines.plan import BuildOptions
    from iaunet.engines.triage import run_triage
    source = variants[precision, mode]
    route = "native" if mode == "native" else "auto"
    options = BuildOptions(plugins=route, batch=(1, 8, 32), ptx_dir=str(ptx_dir))
    record = build_engine(source, tmp_path / "m.engine", options, tmp_path / "cache")
    assert record["precision"].startswith(precision) and not record["cache_hit"]
    again = build_engine(source, tmp_path / "again.engine", options, tmp_path / "cache")
    assert again["cache_hit"] and again["cache_key"] == record["cache_key"]
    import hashlib
    assert record["engine_sha256"] == hashlib.sha256((tmp_path / "m.engine").read_bytes()).hexdigest()
    results, _ = run_parity(trained_setup["checkpoint"], trained_setup["data"], [tmp_path / "m.engine"],
                            tmp_path / "parity")
    engine = results[1]
    if not engine.passed:
        triage, _ = run_triage(trained_setup[mode], source, trained_setup["data"], samples=4, backend="tensorrt",
                               output=tmp_path / "triage.json", options=options)
        where = f"{triage.first.node} ({triage.first.op}), cosine {triage.first.cosine:.6f}" if triage.first \
            else f"no layer below {triage.threshold}"
        pytest.fail(f"{precision} {mode} engine fails {engine.failures}: mean cos {engine.mean_cosine:.6f}, "
                    f"min {engine.min_cosine:.6f}, delta mAP {engine.delta_map:+.2f}; first layer where TensorRT "
                    f"parts from ONNX Runtime: {where}")


def test_triage_on_tensorrt_pairs_the_layers_of_an_int8_engine(variants, trained_setup, ptx_dir, tmp_path):
    """Every layer marked on both sides: most of the FP32 graph's nodes find their TensorRT
    tensor, and the Q/DQ engine stays close to FP32 before the IAU blocks."""
    from iaunet.engines.plan import BuildOptions
    from iaunet.engines.triage import run_triage
    triage, _ = run_triage(trained_setup["native"], variants["int8", "native"], trained_setup["data"], samples=4,
                           backend="tensorrt", output=tmp_path / "t.json", options=BuildOptions(plugins="native"))
    assert len(triage.layers) > 0.5 * triage.paired, (len(triage.layers), triage.paired)
    stem = [layer for layer in triage.layers if "/layer1/" in layer.node]
    assert stem and min(layer.cosine for layer in stem) > 0.98


def test_verify_builds_checks_and_benches_every_variant(variants, trained_setup, ptx_dir, tmp_path):
    """``iaunet verify`` on a bundle of the plugin graphs (FP32, FP16, INT8) for this GPU, kit from
    the checkpoint: a TensorRT row per variant, built (plugin route as ``iaunet build`` chooses),
    passing the kit's gates and benched at batch 1 and 8, beside its ONNX Runtime row; and the
    engines' figures against the kit equal parity against the checkpoint to the digits shown."""
    import json
    import shutil
    import subprocess
    import sys

    import torch
    from iaunet.calib.parity import run_parity
    from iaunet.engines.bundle import TARGETS, build_bundle
    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    target = next((name for name, spec in TARGETS.items() if arch in spec["archs"]), None)
    if target is None:
        pytest.skip(f"no bundle target lists sm_{arch}")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for precision in ("fp32", "fp16", "int8"):
        name = "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"
        shutil.copy(variants[precision, "plugin"], artifacts / name)
    shutil.copytree(ptx_dir, artifacts / "ptx", ignore=shutil.ignore_patterns("cache"))
    bundle = tmp_path / "bundle"
    build_bundle(artifacts, target, "jetson", bundle, checkpoint=trained_setup["checkpoint"],
                 data=trained_setup["data"], kit_size=10_000)  # every query and gallery image: comparable below
    done = subprocess.run([sys.executable, "-m", "iaunet.cli", "verify", ".", "--repeats", "5",
                           "--cache-dir", str(tmp_path / "cache")], cwd=bundle, capture_output=True, text=True,
                          timeout=1800)
    report = json.loads((bundle / "verify.json").read_text())
    trt_rows = [r for r in report["rows"] if r["backend"] == "tensorrt"]
    assert len(trt_rows) == 3 and all(r["built"] and r["plugin_route"] in ("aot", "python") for r in trt_rows), trt_rows
    for row in report["rows"]:
        assert row["status"] == "pass", row
        assert [b["batch"] for b in row["bench"]] == [1, 8] and all(b["samples_per_s"] > 0 for b in row["bench"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    engines = [bundle / r["engine"] for r in trt_rows]
    theirs, _ = run_parity(trained_setup["checkpoint"], trained_setup["data"], engines, tmp_path / "ck")
    for row, result in zip(trt_rows, theirs[1:]):
        p = row["parity"]
        assert (f"{p['mean_cosine']:.6f}", f"{p['min_cosine']:.6f}", f"{p['rank1']:.2f}", f"{p['mAP']:.2f}") == (
            f"{result.mean_cosine:.6f}", f"{result.min_cosine:.6f}", f"{result.rank1:.2f}", f"{result.mAP:.2f}")
