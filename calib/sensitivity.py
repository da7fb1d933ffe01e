"""Per-layer INT8 sensitivity and the greedy fallback to FP16.

A layer is a node the quantizer gave Q/DQ inputs (Conv, Gemm, MatMul, residual Add). Its
sensitivity is what quantizing it *alone* costs the embedding: 1 - mean cosine, on
training images held out of calibration, between the FP32 graph and the graph where only that layer
has Q/DQ. The fallback moves the most sensitive layers out of INT8 (into FP16), one at a
time, until the variant's mean cosine to FP32 on the same held-out images reaches the
target, or the budget of FP16 layers is spent. Sensitivity is measured (and plotted)
whenever a target is given, also when the all-INT8 variant already meets it. Query and gallery images are never used:
the parity gates stay an independent check.

The caller supplies the two measurements, which run ONNX Runtime's quantizer and the
graphs: ``alone(layer)``, the mean cosine to FP32 with only that layer quantized, and
``variant(kept_out)``, the full INT8 variant with some layers kept out and its mean cosine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from iaunet.core.log import get_logger
from iaunet.core.progress import Progress

log = get_logger("calib")
DEFAULT_MAX_FP16_LAYERS = 10
PLOTTED_LAYERS = 40


@dataclass
class Fallback:
    target: float
    budget: int
    baseline: float                       # mean cosine with every layer in INT8
    sensitivity: dict                     # layer -> 1 - mean cosine with it alone quantized
    steps: list = field(default_factory=list)  # (layers in FP16, mean cosine) per step
    fp16_layers: list = field(default_factory=list)
    model: object = None                  # the variant that met the target, else None

    @property
    def met(self) -> bool:
        return self.model is not None

    @property
    def reached(self) -> float:
        return max([self.baseline] + [c for _, c in self.steps])

    def record(self, flops: dict) -> dict:
        total = sum(flops.values()) or 1.0
        ranked = sorted(self.sensitivity.items(), key=lambda kv: -kv[1])
        return {"target_mean_cosine": self.target, "max_fp16_layers": self.budget,
                "mean_cosine_all_int8": self.baseline, "met": self.met,
                "sensitivity": [{"layer": k, "one_minus_cosine": v, "flops_share": flops.get(k, 0.0) / total}
                                for k, v in ranked],
                "steps": [{"fp16_layers": k, "mean_cosine": c} for k, c in self.steps],
                "fp16_layers": self.fp16_layers,
                "fp16_flops_share": sum(flops.get(k, 0.0) for k in self.fp16_layers) / total}


def measure_sensitivity(layers: list, alone: Callable[[str], float]) -> dict:
    """{layer: 1 - alone(layer)}, ``alone`` giving the mean cosine to FP32 with only that
    layer quantized."""
    bar = Progress(len(layers), "int8 sensitivity", "layer")
    result = {}
    for layer in layers:
        result[layer] = 1.0 - alone(layer)
        bar.update()
    bar.close()
    return result


def fall_back(layers: list, baseline: tuple, target: float, budget: int, alone: Callable[[str], float],
              variant: Callable[[set], tuple]) -> Fallback:
    """Measure every layer's sensitivity, then, if the all-INT8 ``baseline`` (mean cosine,
    variant) misses ``target``, move the most sensitive layers to FP16 until the variant
    reaches it or ``budget`` layers are out. ``variant(kept_out)`` returns (mean cosine to
    FP32, the variant); the one that met the target is kept."""
    result = Fallback(target, budget, baseline[0], measure_sensitivity(layers, alone))
    if baseline[0] >= target:
        result.model = baseline[1]
        return result
    ranked = sorted(result.sensitivity, key=lambda k: -result.sensitivity[k])
    for count in range(1, min(budget, len(ranked)) + 1):
        kept_out = ranked[:count]
        cosine, model = variant(set(kept_out))
        result.steps.append((count, cosine))
        log.info("int8: %d most sensitive layer%s in FP16 -> mean cosine %.6f", count, "s" * (count > 1), cosine)
        if cosine >= target:
            result.fp16_layers, result.model = kept_out, model
            break
    return result


def plot(fallback: Fallback, flops: dict, path) -> None:
    """Two panels: per-layer sensitivity (the layers moved to FP16 in red, with their FLOPs
    share), and the mean cosine after each fallback step against the target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from iaunet.core.files import atomic_output
    total = sum(flops.values()) or 1.0
    ranked = sorted(fallback.sensitivity.items(), key=lambda kv: -kv[1])[:PLOTTED_LAYERS]
    moved = set(fallback.fp16_layers)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    values = [max(v, 1e-9) for _, v in ranked]
    left.bar(range(len(ranked)), values, color=["tab:red" if k in moved else "tab:blue" for k, _ in ranked])
    left.set_yscale("log")
    left.set_xticks(range(len(ranked)), [_short(k) for k, _ in ranked], rotation=90, fontsize=6)
    left.set_ylabel("1 - mean cosine, layer alone in INT8")
    share = sum(flops.get(k, 0.0) for k in moved) / total
    left.set_title(f"INT8 sensitivity per layer (red: kept in FP16, {len(moved)} layers, {share:.1%} of FLOPs)",
                   fontsize=9)
    counts = [0] + [k for k, _ in fallback.steps]
    cosines = [fallback.baseline] + [c for _, c in fallback.steps]
    right.plot(counts, cosines, marker="o")
    right.axhline(fallback.target, color="tab:green", linestyle="--", label=f"target {fallback.target}")
    right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    right.set_xlabel("most sensitive layers in FP16")
    right.set_ylabel("mean cosine to FP32 (held-out)")
    right.legend(fontsize=8)
    right.set_title("fallback", fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _short(name: str) -> str:
    return name.replace("/model/", "").replace("/", ".")[-32:]

