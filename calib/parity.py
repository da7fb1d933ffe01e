"""Accuracy parity of every variant against the PyTorch model, on the same images.

For each variant (ONNX FP32 plugin/native, FP16, INT8 on ONNX Runtime; TensorRT engines
on the TensorRT runner, gated by the precision their sidecar names): per-sample cosine to PyTorch
(mean, min), max abs error, rank-1 and mAP with their change against PyTorch, judged by
default gates. Writes parity.json, parity.md, and two plots (cosine histograms, CMC).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iaunet.calib.graph import get_prop
from iaunet.core import file_kinds
from iaunet.core.files import atomic_outputs, check_report_folder, json_text, report_folder, sha256_file
from iaunet.export.checks import compare
from iaunet.runtime.runners import OnnxRuntimeRunner
from iaunet.calib.data import load_inputs
from iaunet.export.metadata import load_onnx, metadata_of, preprocess_spec
from iaunet.core.errors import IAUnetError
from iaunet.core.log import get_logger
from iaunet.core.validate import require_same_variant
from iaunet.train.metrics import distance_matrix, rank_metrics

log = get_logger("calib")

# mAP and rank-1 are compared in points (percent)
REPORT_FILES = {"parity.json": file_kinds.PARITY, "parity.md": file_kinds.MARKDOWN,  # one report, in this order
                "parity_cosine.png": file_kinds.IMAGE, "parity_cmc.png": file_kinds.IMAGE}
GATES = {
    "fp32": {"min_cosine": 0.99999},
    "fp16": {"min_cosine": 0.999, "max_abs_delta_map": 0.3},
    "int8": {"mean_cosine": 0.99, "min_cosine": 0.95, "min_delta_map": -1.0},
}


@dataclass
class VariantResult:
    name: str
    path: str
    precision: str
    mode: str
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    max_abs_error: float = 0.0
    rank1: float = 0.0
    mAP: float = 0.0
    delta_rank1: float = 0.0
    delta_map: float = 0.0
    gate: dict = field(default_factory=dict)
    passed: bool = True
    failures: list = field(default_factory=list)
    cmc: list = field(default_factory=list)
    cosines: np.ndarray | None = field(default=None, repr=False)  # per sample, for the histogram


def judge(result: VariantResult) -> None:
    gate = GATES.get(result.precision, {})
    result.gate = gate
    checks = {"min_cosine": result.min_cosine >= gate.get("min_cosine", -1),
              "mean_cosine": result.mean_cosine >= gate.get("mean_cosine", -1),
              "max_abs_delta_map": abs(result.delta_map) <= gate.get("max_abs_delta_map", float("inf")),
              "min_delta_map": result.delta_map >= gate.get("min_delta_map", -float("inf"))}
    result.failures = [k for k, ok in checks.items() if not ok and k in gate]
    result.passed = not result.failures


def find_variants(checkpoint: Path) -> list[Path]:
    """ONNX files beside the checkpoint (or one folder up) exported from it."""
    digest = sha256_file(checkpoint)
    found = []
    for folder in dict.fromkeys([checkpoint.parent, checkpoint.parent.parent]):
        for path in sorted(folder.glob("*.onnx")):
            model = load_onnx(path)
            if get_prop(model, "checkpoint_sha256") == digest:
                found.append(path)
    return found


def _retrieval(emb, nq, pids, cams):
    r = rank_metrics(distance_matrix(emb[:nq], emb[nq:]), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
    return 100 * float(r["cmc"][0]), 100 * r["mAP"], [float(c) for c in r["cmc"][:20]]


def run_parity(checkpoint, data, variants=(), out_dir=None) -> tuple[list[VariantResult], Path]:
    """Measure the variants; returns the results (PyTorch first) and the report folder."""
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.runner import TorchRunner
    checkpoint = Path(checkpoint)
    paths = [Path(v) for v in variants]
    out = check_report_folder(out_dir if out_dir else checkpoint.parent / "parity", inputs=[checkpoint, data, *paths],
                              files=REPORT_FILES)
    model, config = load_checkpoint(checkpoint)
    paths = paths or find_variants(checkpoint)
    if not paths:
        raise IAUnetError(f"no variants given and no ONNX exported from {checkpoint} beside it; "
                          "pass VARIANT files or run 'iaunet export' first")
    digest = sha256_file(checkpoint)
    opened = []
    try:
        for path in paths:  # every variant is opened and matched to the checkpoint before the data is read
            opened.append((path, _variant(path)))
            model_id = opened[-1][1][0]
            if model_id != digest:
                raise IAUnetError(f"{path} was exported from another checkpoint (sha256 {model_id[:12]}..., "
                                  f"expected {digest[:12]}...)")
        ds = open_dataset(data)
        require_same_variant(config.variant, ds.video, checkpoint, data)
        samples = ds.query + ds.gallery
        pids = np.array([s.pid for s in samples])
        cams = np.array([s.camid for s in samples])
        sources = [s.paths if ds.video else s.paths[0] for s in samples]
        inputs = load_inputs(sources, preprocess_spec(config), "reading query+gallery")
        reference = TorchRunner(model, config).infer_batches(inputs, 32)
        rank1, mAP, cmc = _retrieval(reference, len(ds.query), pids, cams)
        results = [VariantResult("pytorch", str(checkpoint), "fp32", "pytorch", rank1=rank1, mAP=mAP, cmc=cmc)]
        for path, variant in opened:
            results.append(_measure(path, variant, reference, inputs, len(ds.query), pids, cams, results[0]))
    finally:
        for _, variant in opened:
            variant[-1].close()
    write_reports(results, out, data)
    return results, out


def _variant(path: Path):
    """(checkpoint sha256, precision, mode, normalized embeddings, runner) of an ONNX variant
    (ONNX Runtime) or a TensorRT engine (read from its sidecar, run by the TensorRT runner)."""
    from iaunet.runtime.embedder import is_engine
    if is_engine(path):
        from iaunet.runtime.trt_runner import TensorRTRunner
        runner = TensorRTRunner(path)
        card = runner.card
        precision = runner.sidecar["precision"].split()[0]  # "int8 (legacy calibrator)" is gated as int8
        return card.model_id, precision, f"engine ({runner.sidecar['plugin_route']})", card.normalized, runner
    onnx_model = load_onnx(path)
    meta = metadata_of(onnx_model, path)
    return (meta.checkpoint_sha256, get_prop(onnx_model, "precision", "fp32"), meta.mode, meta.normalized_embeddings,
            OnnxRuntimeRunner(path))


def _measure(path, variant, reference, inputs, nq, pids, cams, base) -> VariantResult:
    """Run one variant (the tuple ``_variant`` returned) on the inputs and judge it."""
    _, precision, mode, normalized, runner = variant
    log.info("parity: %s (%s, %s)", path.name, precision, mode)
    with runner:
        emb = runner.infer_batches(inputs, min(32, runner.max_batch or 32))
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True) if normalized else reference
    p = compare(ref, emb)
    rank1, mAP, cmc = _retrieval(emb, nq, pids, cams)
    cosines = (ref * emb).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(emb, axis=1))
    result = VariantResult(path.name, str(path), precision, mode, p.mean_cosine, p.min_cosine, p.max_abs_error,
                           rank1, mAP, rank1 - base.rank1, mAP - base.mAP, cmc=cmc, cosines=cosines)
    judge(result)
    return result


def write_reports(results: list[VariantResult], out: Path, data) -> None:
    rows = [{k: v for k, v in asdict(r).items() if k != "cosines"} for r in results]
    page = {"data": str(data), "variants": rows}
    lines = ["# Accuracy parity against PyTorch", "", f"Data: `{data}` (query + gallery)", "",
             "| variant | precision | mode | mean cos | min cos | max abs err | rank-1 | Δ rank-1 | mAP | Δ mAP | gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        verdict = "reference" if r.mode == "pytorch" else ("pass" if r.passed else "FAIL: " + ", ".join(r.failures))
        lines.append(f"| {r.name} | {r.precision} | {r.mode} | {r.mean_cosine:.6f} | {r.min_cosine:.6f} | "
                     f"{r.max_abs_error:.3g} | {r.rank1:.2f} | {r.delta_rank1:+.2f} | {r.mAP:.2f} | {r.delta_map:+.2f} | {verdict} |")
    lines += ["", "Gates: " + "; ".join(f"{k}: {v}" for k, v in GATES.items()), "",
              "![cosine](parity_cosine.png)", "", "![cmc](parity_cmc.png)", ""]
    files = [out / name for name in REPORT_FILES]  # one report: all four new, or all as they were
    with report_folder(out), atomic_outputs(*files) as (json_tmp, md_tmp, cosine_png, cmc_png):
        Path(json_tmp).write_text(json_text(page))
        Path(md_tmp).write_text("\n".join(lines))
        _plots(results, cosine_png, cmc_png)


def _plots(results, cosine_png, cmc_png) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = [r for r in results if r.mode != "pytorch"]
    fig, axes = plt.subplots(1, max(len(variants), 1), figsize=(4 * max(len(variants), 1), 3.2), squeeze=False)
    for ax, r in zip(axes[0], variants):
        ax.hist(1 - np.clip(r.cosines, -1, 1), bins=30, color="tab:blue")
        ax.set_title(f"{r.name}\nmin cos {r.min_cosine:.5f}", fontsize=9)
        ax.set_xlabel("1 - cosine to PyTorch")
    fig.tight_layout()
    fig.savefig(cosine_png, dpi=110, format="png")
    plt.close(fig)
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.2), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], results):
        ax.plot(range(1, len(r.cmc) + 1), r.cmc, marker=".")
        ax.set_title(f"{r.name}\nR1 {r.rank1:.1f} mAP {r.mAP:.1f}", fontsize=9)
        ax.set_xlabel("rank")
    axes[0][0].set_ylabel("CMC")
    fig.tight_layout()
    fig.savefig(cmc_png, dpi=110, format="png")
    plt.close(fig)
