"""Accuracy parity figures, gates and reports, in numpy: what ``iaunet parity`` measures of a
variant against reference embeddings of the same images, whether those come from the
PyTorch checkpoint (``iaunet.calib.parity``) or from a parity kit (``parity_kit``, no torch).

Per-sample cosine to the reference (mean, min), max abs error, rank-1 and mAP with their
change from the reference's own, judged by ``GATES`` per precision. Writes parity.json,
parity.md and two plots (cosine histograms, CMC; drawn where matplotlib is installed).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_outputs, json_text, report_folder
from iaunet.core.log import get_logger
from iaunet.core.metrics import distance_matrix, rank_metrics

log = get_logger("runtime")

# mAP and rank-1 are compared in points (percent)
GATES = {
    "fp32": {"min_cosine": 0.99999},
    "fp16": {"min_cosine": 0.999, "max_abs_delta_map": 0.3},
    "int8": {"mean_cosine": 0.99, "min_cosine": 0.95, "min_delta_map": -1.0},
}
PARITY_BATCH = 32  # samples per inference call (at most an engine profile's maximum)
PLOTS = ("parity_cosine.png", "parity_cmc.png")
REPORT_FILES = {"parity.json": file_kinds.PARITY, "parity.md": file_kinds.MARKDOWN,  # one report, in this order
                "parity_cosine.png": file_kinds.IMAGE, "parity_cmc.png": file_kinds.IMAGE}


@dataclass
class Parity:
    """Agreement of two sets of embeddings, per sample."""
    min_cosine: float
    mean_cosine: float
    max_abs_error: float
    max_magnitude: float
    samples: int

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(self.max_magnitude, 1e-12)

    def passes(self, cosine: float, rel_error: float) -> bool:
        return self.min_cosine >= cosine and self.relative_error <= rel_error

    def describe(self) -> str:
        return (f"min cosine {self.min_cosine:.7f}, max abs error {self.max_abs_error:.3g} "
                f"({self.relative_error:.2g} of max |embedding| {self.max_magnitude:.3g}), {self.samples} samples")


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-sample cosine of two N x D sets, in float64."""
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if ref.shape != oth.shape:
        raise IAUnetError(f"embedding shapes differ: {ref.shape} vs {oth.shape}")
    return (ref * oth).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1), 1e-30)


def compare(reference: np.ndarray, other: np.ndarray) -> Parity:
    cos = cosines(reference, other)
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return Parity(float(cos.min()), float(cos.mean()), float(np.abs(ref - oth).max()), float(np.abs(ref).max()),
                  len(ref))


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
    plain_session: dict | None = None  # an ONNX file's measures in a plain ONNX Runtime session

    @property
    def is_reference(self) -> bool:
        return self.mode in ("pytorch", "reference")

    def verdict(self) -> str:
        return "reference" if self.is_reference else ("pass" if self.passed else "FAIL: " + ", ".join(self.failures))


def judge(result: VariantResult, gates: dict = GATES) -> None:
    gate = gates.get(result.precision, {})
    result.gate = gate
    checks = {"min_cosine": result.min_cosine >= gate.get("min_cosine", -1),
              "mean_cosine": result.mean_cosine >= gate.get("mean_cosine", -1),
              "max_abs_delta_map": abs(result.delta_map) <= gate.get("max_abs_delta_map", float("inf")),
              "min_delta_map": result.delta_map >= gate.get("min_delta_map", -float("inf"))}
    result.failures = [k for k, ok in checks.items() if not ok and k in gate]
    result.passed = not result.failures


def retrieval(emb: np.ndarray, nq: int, pids, cams) -> tuple[float, float, list]:
    """(rank-1 %, mAP %, CMC to rank 20) of the first ``nq`` rows as queries against the rest."""
    pids, cams = np.asarray(pids), np.asarray(cams)
    r = rank_metrics(distance_matrix(emb[:nq], emb[nq:]), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
    return 100 * float(r["cmc"][0]), 100 * r["mAP"], [float(c) for c in r["cmc"][:20]]


def reference_result(name: str, path: str, mode: str, reference: np.ndarray, nq: int, pids, cams) -> VariantResult:
    rank1, mAP, cmc = retrieval(reference, nq, pids, cams)
    return VariantResult(name, path, "fp32", mode, rank1=rank1, mAP=mAP, cmc=cmc)


def measure(name: str, path: str, precision: str, mode: str, normalized: bool, emb: np.ndarray, reference: np.ndarray,
            nq: int, pids, cams, base: VariantResult, gates: dict = GATES) -> VariantResult:
    """A variant's embeddings ``emb`` judged against the reference's (L2-normalised first where
    the variant's graph normalises its output)."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True) if normalized else reference
    p = compare(ref, emb)
    rank1, mAP, cmc = retrieval(emb, nq, pids, cams)
    result = VariantResult(name, path, precision, mode, p.mean_cosine, p.min_cosine, p.max_abs_error, rank1, mAP,
                           rank1 - base.rank1, mAP - base.mAP, cmc=cmc, cosines=cosines(ref, emb))
    judge(result, gates)
    return result


def describe(r: VariantResult) -> str:
    """One line per variant, as the parity command prints it."""
    verdict = "reference" if r.is_reference else ("pass" if r.passed else "FAIL " + ",".join(r.failures))
    return (f"{r.name:28s} {r.precision:5s} {r.mode:8s} cos mean {r.mean_cosine:.6f} min {r.min_cosine:.6f}  "
            f"rank-1 {r.rank1:6.2f} ({r.delta_rank1:+.2f})  mAP {r.mAP:6.2f} ({r.delta_map:+.2f})  {verdict}")


def write_reports(results: list[VariantResult], out: Path, data, against: str = "PyTorch",
                  gates: dict = GATES, extra: dict | None = None) -> list[str]:
    """parity.json, parity.md and the plots in ``out``, as one report (all new, or all as they
    were: never a new table beside an older run's plots); returns the plots drawn."""
    plots = list(PLOTS) if _pyplot() else []
    if not plots:
        log.info("parity plots not drawn: matplotlib is not installed (pip install matplotlib)")
    rows = [{k: v for k, v in asdict(r).items() if k != "cosines"} for r in results]
    page = {"data": str(data), "against": against, **(extra or {}), "variants": rows}
    lines = [f"# Accuracy parity against {against}", "", f"Data: `{data}` (query + gallery)", "",
             "| variant | precision | mode | mean cos | min cos | max abs err | rank-1 | Δ rank-1 | mAP | Δ mAP | gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.precision} | {r.mode} | {r.mean_cosine:.6f} | {r.min_cosine:.6f} | "
                     f"{r.max_abs_error:.3g} | {r.rank1:.2f} | {r.delta_rank1:+.2f} | {r.mAP:.2f} | {r.delta_map:+.2f} | "
                     f"{r.verdict()} |")
    lines += ["", "Gates: " + "; ".join(f"{k}: {v}" for k, v in gates.items()), ""]
    lines += [f"![{p.split('_')[1][:-4]}]({p})\n" for p in plots] or ["(plots not drawn: matplotlib is not installed)", ""]
    files = [Path(out) / name for name in ("parity.json", "parity.md", *plots)]
    with report_folder(out), atomic_outputs(*files) as temps:
        Path(temps[0]).write_text(json_text(page))
        Path(temps[1]).write_text("\n".join(lines))
        if plots:
            _plots(results, against, *temps[2:])
    return plots


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plots(results, against: str, cosine_png, cmc_png) -> None:
    plt = _pyplot()
    variants = [r for r in results if not r.is_reference]
    fig, axes = plt.subplots(1, max(len(variants), 1), figsize=(4 * max(len(variants), 1), 3.2), squeeze=False)
    for ax, r in zip(axes[0], variants):
        ax.hist(1 - np.clip(r.cosines, -1, 1), bins=30, color="tab:blue")
        ax.set_title(f"{r.name}\nmin cos {r.min_cosine:.5f}", fontsize=9)
        ax.set_xlabel(f"1 - cosine to {against}")
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
