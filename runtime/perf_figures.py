"""Latency and throughput figures for ``iaunet bench``: per backend and batch, model-only
(ready arrays) and end-to-end (JPEG files through the embedder), p50/p99 latency, samples
per second, peak resident memory, achieved GFLOP/s against the machine's estimated peak,
and each row's ratio to PyTorch on the same device. Standard library and numpy; the
callables timed are whatever runners the caller built. Figures are medians of repeated
calls after warm-up (end-to-end: of every batch of at least two calls), never a single
call; the CPU's peak is the best of a few matmuls.
"""
from __future__ import annotations

import platform
import re
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_REPEATS, DEFAULT_WARMUP = 30, 3
PYTORCH_LABEL = "pytorch eager"  # the rows the others are compared with; model rows begin with a file name
PEAK_MATMUL_SIZE = 2048  # the matrix product that stands for the CPU's peak


@dataclass
class Timing:
    backend: str
    batch: int
    kind: str            # "model" (ready arrays) or "end-to-end" (JPEG files through the embedder)
    p50_ms: float
    p99_ms: float
    samples_per_s: float
    peak_rss_mb: float   # of this process since this backend was opened (see reset_peak_rss)
    gflops_per_s: float | None = None
    device: str = "cpu"  # "cpu" or "cuda": rows are compared with PyTorch on the same device

    def as_dict(self) -> dict:
        return asdict(self)


def reset_peak_rss() -> bool:
    """Start a new peak of resident memory at what the process holds now, so a backend's
    figure is not an earlier backend's peak (Linux: ``5 > /proc/self/clear_refs``). False
    where the system cannot, and the peak stays the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory in MB since the last ``reset_peak_rss`` (Linux's VmHWM), else
    since the process began."""
    try:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1]) / 1024
    except (OSError, TypeError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if platform.system() != "Darwin" else peak / 2**20


def time_calls(fn, repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP) -> np.ndarray:
    """Seconds per call of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def measure(fn, backend: str, batch: int, kind: str, flops_per_sample: float | None = None,
            repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP, device: str = "cpu") -> Timing:
    """Time ``fn``, which runs one batch of ``batch``."""
    return timing(time_calls(fn, repeats, warmup), backend, batch, kind, flops_per_sample, device)


def timing(seconds: np.ndarray, backend: str, batch: int, kind: str, flops_per_sample: float | None = None,
           device: str = "cpu") -> Timing:
    """A row from the seconds each batch took: p50/p99, samples/s and GFLOP/s at the p50."""
    p50 = float(np.median(seconds))
    gflops = flops_per_sample * batch / p50 / 1e9 if flops_per_sample else None
    return Timing(backend, batch, kind, 1e3 * p50, 1e3 * float(np.percentile(seconds, 99)), batch / p50,
                  peak_rss_mb(), gflops, device)


def end_to_end_seconds(embedder, files, calls: int) -> np.ndarray:
    """Seconds per batch of ``embedder.embed(files)`` (decoding overlapping inference), each
    batch timed as it completes (the embedder's progress callback), after one untimed call.
    A call's first batch waits for its own decoding (nothing runs beside it yet), as a
    camera's first batch does; its share of the batches is 1 / ``E2E_BATCHES_PER_CALL``."""
    embedder.embed(files)
    seconds = []
    for _ in range(calls):
        last = [time.perf_counter()]

        def tick(_n):
            now = time.perf_counter()
            seconds.append(now - last[0])
            last[0] = now
        embedder.embed(files, progress=tick)
    return np.array(seconds)


def pytorch_label(precision: str, device: str) -> str:
    """The backend label of PyTorch eager rows, e.g. 'pytorch eager fp32 (cpu)'."""
    return f"{PYTORCH_LABEL} {precision} ({device})"


def is_pytorch(label: str) -> bool:
    return label.startswith(PYTORCH_LABEL + " ")


def runner_device(runner) -> str:
    """The device a runner computes on: 'cpu' for ``onnxruntime-cpu`` and ``pytorch-cpu``,
    'cuda' for every GPU backend."""
    return "cpu" if runner.name.endswith("cpu") else "cuda"


def cpu_peak_gflops(size: int = PEAK_MATMUL_SIZE, repeats: int = 5) -> tuple[float, str]:
    """(FP32 GFLOP/s this CPU reaches on a large matrix product, how it was found): the best
    of ``repeats`` numpy float32 matmuls of ``size`` x ``size`` through numpy's BLAS (with its
    own threads, by default one per core). Measured, because cores x nominal clock x vector
    width missed by 1.65x on the AMD EPYC (Zen 4) VM this was written on: its AVX-512 units
    are 256 bits wide and it reports no boost clock (flags and clock: 332 GFLOP/s; numpy's
    matmul 201; ONNX Runtime ran iaunet_r50 at about 205)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    seconds = time_calls(lambda: a @ b, repeats, warmup=1).min()
    return float(2 * size ** 3 / seconds / 1e9), f"numpy float32 matmul {size}x{size}, best of {repeats}"


E2E_BATCHES_PER_CALL = 8   # end-to-end calls embed this many batches of files: decoding overlaps inference


def generated_jpegs(folder, count: int, size=(64, 128), seed: int = 0) -> list:
    """``count`` JPEG crops of smooth random colour (a camera crop's size), for end-to-end figures."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.BILINEAR)
        paths.append(f"{folder}/crop{i:04d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def bench_runner(runner, label: str, card, batches, repeats: int, jpegs=(), flops: float | None = None,
                 bare=None) -> list[Timing]:
    """Model-only figures per batch (and the bare session's, when given, for the embedder's
    overhead), then end-to-end figures from JPEG files through an ``Embedder``."""
    from iaunet.runtime.embedder import Embedder
    out, device = [], runner_device(runner)
    rng = np.random.default_rng(0)
    for batch in batches:
        if runner.max_batch and batch > runner.max_batch:
            continue
        x = (rng.random((batch, *card.sample_shape), dtype=np.float32) * 255).astype(np.float32)
        out.append(measure(lambda: runner.infer(x), label, batch, "model", flops, repeats, device=device))
        if bare is not None:
            out.append(measure(lambda: bare(x), label, batch, "bare session", flops, repeats, device=device))
        if len(jpegs) and card.variant == "image":
            files = list(jpegs[:batch * E2E_BATCHES_PER_CALL])
            embedder = Embedder(runner, card, batch)
            calls = max(2, -(-repeats // E2E_BATCHES_PER_CALL))  # at least as many batches as model-only rows
            out.append(timing(end_to_end_seconds(embedder, files, calls), label, batch, "end-to-end", flops, device))
    return out


def plot(timings: list[Timing], path) -> None:
    """Samples per second per backend and batch, model-only beside end-to-end."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in ("model", "bare session", "end-to-end") if any(t.kind == k for t in timings)]
    groups = list(dict.fromkeys((t.backend, t.batch) for t in timings))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [next((t.samples_per_s for t in timings if (t.backend, t.batch, t.kind) == (*g, kind)), 0)
                  for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=kind)
    ax.set_xticks(np.arange(len(groups)) + width * (len(kinds) - 1) / 2)
    ax.set_xticklabels([f"{b}\nbatch {n}" for b, n in groups], fontsize=8)
    ax.set_ylabel("samples / s (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def vs_pytorch(timings: list[Timing]) -> list[float | None]:
    """Each row's samples/s over PyTorch's model-only row of the same device and batch (CPU
    rows over PyTorch FP32 on the CPU, GPU rows over PyTorch FP16 on the GPU); None for
    end-to-end rows and where PyTorch was not timed."""
    torch_rows = {(t.device, t.batch): t for t in timings if is_pytorch(t.backend) and t.kind == "model"}
    refs = [torch_rows.get((t.device, t.batch)) if t.kind != "end-to-end" else None for t in timings]
    return [t.samples_per_s / ref.samples_per_s if ref else None for t, ref in zip(timings, refs)]


def table(timings: list[Timing], peak: float, how: str) -> list[str]:
    """The figures as aligned lines, with each row's ratio to PyTorch (``vs_pytorch``)."""
    lines = [f"{'backend':38} {'batch':>5} {'kind':12} {'p50 ms':>8} {'p99 ms':>8} {'samples/s':>10} "
             f"{'GFLOP/s':>8} {'RSS MB':>7} {'vs torch':>8}"]
    for t, vs in zip(timings, vs_pytorch(timings)):
        ratio = f"{vs:7.2f}x" if vs else ""
        gf = f"{t.gflops_per_s:8.1f}" if t.gflops_per_s else f"{'':8}"
        lines.append(f"{t.backend[:38]:38} {t.batch:5d} {t.kind:12} {t.p50_ms:8.2f} {t.p99_ms:8.2f} "
                     f"{t.samples_per_s:10.1f} {gf} {t.peak_rss_mb:7.0f} {ratio:>8}")
    lines.append(f"CPU peak: {peak:.0f} GFLOP/s ({how})")
    return lines
