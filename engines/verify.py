"""``iaunet verify BUNDLE``: acceptance of a bundle on the machine it will run on.

For every variant the bundle carries, two rows: ONNX Runtime (the file as it is) and
TensorRT (an engine built here, plugin route as ``iaunet build`` chooses). Each row builds
(TensorRT), checks parity against the bundle's kit (``iaunet.runtime.parity_kit``, no
torch) and benches at batch 1 and the profile's opt batch. A step that fails is recorded in
its row with a one-line reason; a failed gate adds the first layer where the variant parts
from the FP32 ONNX (``iaunet.engines.triage``) where triage can run. Where TensorRT does not
load (or onnxruntime is not installed), its rows say "not run" and why. Writes verify.json, verify.md, parity/ (the kit
parity report of every row) and engines/ in the report folder (the bundle by default).

TensorRT, pycuda, onnxruntime and polygraphy are imported by the steps that need them.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output, check_report_folder, sha256_file, write_json
from iaunet.core.graph_io import TENSORRT_SUFFIX, tensorrt_layout_path
from iaunet.core.log import get_logger
from iaunet.engines.plan import DEFAULT_BATCH, BuildOptions
from iaunet.runtime import parity_kit

log = get_logger("engines")

BENCH_REPEATS = 20
REPORTS = ("verify.json", "verify.md")
PASS, FAIL, NOT_RUN = "pass", "FAIL", "not run"
BACKENDS = ("onnxruntime", "tensorrt")


@dataclass
class Row:
    variant: str                      # path in the bundle
    precision: str
    backend: str                      # "onnxruntime" or "tensorrt" (the runner's name once one ran)
    status: str = PASS
    reason: str | None = None         # the first step that failed, or why the row was not run
    built: bool | None = None         # TensorRT rows: whether the engine was built
    engine: str | None = None
    plugin_route: str | None = None
    build_seconds: float | None = None
    parity: dict | None = None
    bench: list = field(default_factory=list)   # {batch, p50_ms, p99_ms, samples_per_s}
    triage: str | None = None         # on a failed gate: the first layer where it parts from FP32

    def fail(self, step: str, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.status, self.reason = FAIL, self.reason or f"{step}: {text if isinstance(exc, IAUnetError) else f'{type(exc).__name__}: {text}'}"[:400]


def read_manifest(bundle: Path) -> dict:
    """The bundle's manifest, with every variant and kit file checked against its SHA-256."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        variants, hashes = manifest["variants"], manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IAUnetError(f"{bundle} is not a bundle (manifest.json unreadable: {type(exc).__name__}); expected a "
                          "folder written by 'iaunet bundle'") from None
    for rel in [*variants, *(r for r in hashes if r.startswith("kit/"))]:
        if not (bundle / rel).is_file() or sha256_file(bundle / rel) != hashes.get(rel):
            raise IAUnetError(f"bundle {bundle}: {rel} is missing or does not match its SHA-256 in manifest.json")
    return manifest


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot run here, or None."""
    from iaunet.runtime.trt_runner import import_tensorrt
    try:
        import_tensorrt()
    except IAUnetError as exc:
        return str(exc)
    return None


def onnxruntime_missing() -> str | None:
    """Why ONNX Runtime cannot run here, or None."""
    import importlib.util
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (install the bundle's wheel with the [ort] extra)"
    return None


def _consumed_by(backend: str, variants: list) -> list:
    """The variants a backend runs: an INT8 variant's two layouts are one variant, run by ONNX
    Runtime as X.int8.onnx and built by TensorRT from X.int8.trt.onnx (each backend would swap
    the other file for its own: one row each, not two of the same model)."""
    names = {rel for rel, _ in variants}
    if backend == "onnxruntime":
        return [(rel, p) for rel, p in variants if not rel.endswith(TENSORRT_SUFFIX)]
    return [(rel, p) for rel, p in variants if str(tensorrt_layout_path(rel)) not in names or rel.endswith(TENSORRT_SUFFIX)]


def verify_bundle(bundle, output=None, repeats: int = BENCH_REPEATS, cache_dir=None) -> dict:
    """Build, check and bench every variant of ``bundle``; writes the reports and returns verify.json's content."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    out = check_report_folder(output if output else bundle)
    kit = parity_kit.read_kit(bundle / "kit", manifest["model_id"]) if (bundle / "kit").exists() else None
    inputs = kit.inputs() if kit else None
    base = parity_kit.reference_figures(kit) if kit else None
    missing = {"onnxruntime": onnxruntime_missing(), "tensorrt": tensorrt_missing()}
    out.mkdir(parents=True, exist_ok=True)
    variants = sorted(manifest["variants"].items())
    rows, figures = [], [base] if base else []
    for backend in BACKENDS:
        for rel, precision in _consumed_by(backend, variants):
            row = Row(rel, precision, backend)
            rows.append(row)
            if missing[backend]:
                row.status, row.reason = NOT_RUN, missing[backend]
                continue
            figures += _run_row(row, bundle, out, manifest, kit, inputs, base, repeats, cache_dir)
    if figures:
        parity_kit.write_kit_reports(kit, figures, out / "parity")
    report = {"bundle": str(bundle), "model_id": manifest["model_id"], "target": manifest["target"],
              "machine": _machine(), "kit": kit.describe() if kit else None,
              "reference": base and {"rank1": base.rank1, "mAP": base.mAP},
              "passed": all(r.status != FAIL for r in rows) and any(r.status == PASS for r in rows), "rows": [asdict(r) for r in rows]}
    write_json(out / REPORTS[0], report)
    with atomic_output(out / REPORTS[1]) as tmp:
        Path(tmp).write_text(markdown(report))
    return report


def _run_row(row: Row, bundle: Path, out: Path, manifest: dict, kit, inputs, base, repeats: int, cache_dir) -> list:
    """Build (TensorRT), parity and bench one row; returns its parity figures (none if parity did not run)."""
    model = bundle / row.variant
    if row.backend == "tensorrt":
        model = _build(row, model, bundle, out, cache_dir)
        if model is None:
            return []
    try:
        opened = parity_kit.open_variant(model, "tensorrt" if row.backend == "tensorrt" else "auto")
    except Exception as exc:  # noqa: BLE001 (recorded in the row)
        row.fail("open", exc)
        return []
    figures = []
    with opened[0] as runner:
        row.backend = runner.name
        if kit is None:
            row.fail("parity", IAUnetError("the bundle has no parity kit (kit/); make it with 'iaunet bundle "
                                           "... --data DIR [--checkpoint model.pt]'"))
        else:
            try:
                name = f"{Path(row.variant).name} ({runner.name})"
                result = parity_kit.variant_figures(kit, inputs, model, opened, base, name)
                figures.append(result)
                row.parity = _parity_cells(result)
                if not result.passed:
                    row.status, row.reason = FAIL, row.reason or "parity gate: " + ", ".join(result.failures)
                    row.triage = _triage(row, bundle, manifest, kit, out)
            except Exception as exc:  # noqa: BLE001
                row.fail("parity", exc)
        _bench(row, runner, opened[1], repeats)
    return figures


def _build(row: Row, onnx: Path, bundle: Path, out: Path, cache_dir) -> Path | None:
    from iaunet.engines.builder import build_engine
    engine = out / "engines" / f"{onnx.stem}.engine"
    engine.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        record = build_engine(onnx, engine, BuildOptions(ptx_dir=_ptx_dir(bundle)), cache_dir)
    except Exception as exc:  # noqa: BLE001
        row.built = False
        row.fail("build", exc)
        return None
    row.built, row.engine, row.plugin_route = True, str(engine.relative_to(out)), record["plugin_route"]
    row.build_seconds = round(time.perf_counter() - start, 1)
    return engine


def _ptx_dir(bundle: Path) -> str | None:
    """The bundle's plugin PTX for this GPU: ptx/, or ptx/smNN where it carries several architectures."""
    folder = bundle / "ptx"
    if (folder / "manifest.json").is_file():
        return str(folder)
    if folder.is_dir():
        from iaunet.runtime.trt_runner import machine_facts
        arch = folder / f"sm{machine_facts().compute_capability}"
        return str(arch) if arch.is_dir() else None
    return None


def _bench(row: Row, runner, card, repeats: int) -> None:
    from iaunet.runtime.perf_figures import bench_runner
    batches = sorted({1, DEFAULT_BATCH[1]})
    try:
        timings = bench_runner(runner, Path(row.variant).name, card, batches, repeats)
    except Exception as exc:  # noqa: BLE001
        row.fail("bench", exc)
        return
    row.bench = [{"batch": t.batch, "p50_ms": t.p50_ms, "p99_ms": t.p99_ms, "samples_per_s": t.samples_per_s}
                 for t in timings]


def _parity_cells(result) -> dict:
    keys = ("mean_cosine", "min_cosine", "max_abs_error", "rank1", "mAP", "delta_rank1", "delta_map", "gate",
            "passed", "failures")
    return {k: getattr(result, k) for k in keys}


def _triage(row: Row, bundle: Path, manifest: dict, kit, out: Path) -> str:
    """The first layer where a failing variant parts from the bundle's FP32 ONNX, or why triage did not run."""
    if row.precision == "fp32":
        return "not run: the FP32 graph is the reference triage compares with"
    fp32 = [rel for rel, precision in sorted(manifest["variants"].items()) if precision == "fp32"]
    if not fp32:
        return "not run: the bundle carries no FP32 ONNX to compare with"
    try:
        from iaunet.engines.triage import run_triage
        backend = "tensorrt" if row.backend == "tensorrt" else "onnxruntime"
        report = out / "triage" / f"{Path(row.variant).stem}.{backend}.triage.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        result, _ = run_triage(bundle / fp32[0], bundle / row.variant, kit.root, backend=backend, output=report,
                               options=BuildOptions(ptx_dir=_ptx_dir(bundle)))
    except Exception as exc:  # noqa: BLE001 (triage needs onnx and polygraphy, which a device may lack)
        return f"not run: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
    first = result.first
    return (f"first layer below cosine {result.threshold}: {first.describe()}" if first else
            f"no layer below cosine {result.threshold} (the gate failed on the output only)")


def _machine() -> dict:
    import platform
    from iaunet.runtime.runners import usable_cores
    return {"cpu": platform.processor() or platform.machine(), "cores": usable_cores(),
            "python": platform.python_version()}


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    batches = sorted({b["batch"] for r in report["rows"] for b in r["bench"]})
    head = ["variant", "backend", "built", "plugin route", "build s", "mean cos", "min cos", "rank-1", "Δ mAP", "gate"]
    head += [f"{what} b{b}" for b in batches for what in ("p50 ms", "p99 ms", "samples/s")] + ["verdict", "why"]
    lines = [f"# iaunet verify: {report['bundle']}", "",
             f"Model {report['model_id'][:12]}, target {report['target']}; {report['kit'] or 'no parity kit'}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        p = r["parity"] or {}
        bench = {b["batch"]: b for b in r["bench"]}
        cells = [r["variant"], r["backend"], {True: "yes", False: "no", None: "-"}[r["built"]], r["plugin_route"] or "-",
                 _num(r["build_seconds"], 1), _num(p.get("mean_cosine"), 6), _num(p.get("min_cosine"), 6),
                 _num(p.get("rank1"), 2), _num(p.get("delta_map"), 2),
                 ", ".join(f"{k} {v}" for k, v in p.get("gate", {}).items()) or "-"]
        for b in batches:
            t = bench.get(b, {})
            cells += [_num(t.get("p50_ms"), 2), _num(t.get("p99_ms"), 2), _num(t.get("samples_per_s"), 1)]
        why = "; ".join(x for x in (r["reason"], r["triage"] and f"triage: {r['triage']}") if x) or "-"
        cells += [r["status"], why.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    ran = any(r["status"] == PASS for r in report["rows"])
    verdict = ("every variant passes" if report["passed"] else "a variant FAILS" if ran else
               "nothing ran (no backend here)")
    lines += ["", f"Verdict: {verdict}. Parity report of every row: `parity/parity.md`.", ""]
    return "\n".join(lines)
