"""Benchmark: the fused channel-affinity kernel against PyTorch eager
(matmul -> softmax -> matmul) in FP16 at the IAU blocks' shapes, batch 1 and 32.

Two forms of the fused kernel are timed: Triton's JIT launch, and the ahead-of-time PTX
the TensorRT plugins run (compiled for this GPU into ``<out>/ptx`` and launched by
``iaunet.core.cuda_driver.run_kernel`` as the IPluginV3 plugin's enqueue does, host work
included; its output is checked
against the JIT kernel's first). Prints median times over repeated CUDA-event timings,
achieved TFLOP/s (4·B·K²·L flops: two K×K×L products), the speed-ups, and the fraction of
the GPU's dense FP16 tensor-core peak; writes a PNG beside the JSON. Needs a CUDA GPU.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.files import check_report_folder
from iaunet.core.progress import Progress

SHAPES = [(512, 512), (1024, 128), (2048, 512), (4096, 128)]  # (K, L): image r50 blocks, video T=4
BATCHES = (1, 32)
PEAK_FP16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "Orin": 85.0}


AGREE = 5e-3  # max |difference| / max |output| two correct FP16 kernels stay within


def _tokens(b: int, k: int, l: int):
    """FP16 tokens whose channel softmax is spread (logits of order 1): eager FP16 does not
    overflow, and a wrong kernel cannot hide behind a one-hot or uniform softmax."""
    import torch
    return (torch.randn(b, k, l, device="cuda") * (3.0 / l) ** 0.5).half()


def _relative_error(y, reference) -> float:
    return ((y.float() - reference.float()).abs().max() / reference.float().abs().max()).item()


def _median_ms(fn, repeats: int, warmup: int = 5) -> float:
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_FP16_TFLOPS.items() if k in name), None)


def _plugin_kernel_launcher(manifest, x):
    """A no-argument function launching the plugins' PTX on ``x`` (torch, fp16) and its output."""
    import torch

    from iaunet.core import cuda_driver
    from iaunet.core.plugin_contract import CHANNEL_OP
    y = torch.empty_like(x)
    kernel = manifest.select(CHANNEL_OP, "fp16", x.shape[2])

    def fn():  # the plugin's enqueue path, host work included
        cuda_driver.run_kernel(kernel, tuple(x.shape), {}, x.data_ptr(), y.data_ptr(),
                               torch.cuda.current_stream().cuda_stream)
    return fn, y


def _compile_for_this_gpu(out: Path):
    import torch

    from iaunet.engines.aot import compile_kernels, default_variants
    from iaunet.core.plugin_contract import PtxManifest
    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    variants = [v for v in default_variants(sorted({l for _, l in SHAPES}), (4,), arch) if v.dtype == "fp16"]
    compile_kernels(arch, out, variants)
    return PtxManifest(out)


def run(out_dir, repeats: int = 50, peak: float | None = None) -> list[dict]:
    import torch
    check_report_folder(out_dir)
    if not torch.cuda.is_available():
        raise IAUnetError("the kernel benchmark needs a CUDA GPU; none is visible")
    from iaunet.engines.kernels.channel_affinity import channel_affinity
    device = torch.cuda.get_device_name()
    peak = peak_tflops(device, peak)
    torch.zeros(1, device="cuda")  # make torch's CUDA context current before the driver calls
    manifest = _compile_for_this_gpu(Path(out_dir) / "ptx")
    rows = []
    bar = Progress(len(SHAPES) * len(BATCHES), "benchmark", "case")
    for k, l in SHAPES:
        for b in BATCHES:
            x = _tokens(b, k, l)
            eager = lambda: torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x  # noqa: E731
            fused = lambda: channel_affinity(x)  # noqa: E731
            plugin, y_plugin = _plugin_kernel_launcher(manifest, x)
            plugin()
            torch.cuda.synchronize()
            plugin_error = _relative_error(y_plugin, fused())
            if not plugin_error <= AGREE:
                raise IAUnetError(f"the plugin PTX disagrees with the JIT kernel at K={k} L={l} B={b} "
                                  f"(max |diff| {plugin_error:.3g} of max |y|); not benchmarking a wrong kernel")
            flops = 4 * b * k * k * l
            t_eager, t_fused, t_plugin = (_median_ms(f, repeats) for f in (eager, fused, plugin))
            row = {"K": k, "L": l, "batch": b, "eager_ms": t_eager, "fused_ms": t_fused, "plugin_ms": t_plugin,
                   "eager_tflops": flops / t_eager / 1e9, "fused_tflops": flops / t_fused / 1e9,
                   "plugin_tflops": flops / t_plugin / 1e9, "speedup": t_eager / t_fused,
                   "plugin_speedup": t_eager / t_plugin, "plugin_max_rel_diff": plugin_error}
            row["fused_fraction_of_peak"] = row["fused_tflops"] / peak if peak else None
            rows.append(row)
            bar.update()
    bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_bench.json").write_text(json.dumps({"device": device, "peak_fp16_tflops": peak, "rows": rows},
                                                      indent=2))
    _plot(rows, device, out / "kernel_bench.png")
    return rows


def format_rows(rows) -> str:
    lines = [f"{'K':>5} {'L':>4} {'B':>3} {'eager ms':>9} {'fused ms':>9} {'PTX ms':>8} {'eager TF/s':>10} "
             f"{'fused TF/s':>10} {'speed-up':>8} {'PTX x':>6} {'of peak':>8}"]
    for r in rows:
        frac = f"{100 * r['fused_fraction_of_peak']:.0f}%" if r["fused_fraction_of_peak"] else "n/a"
        lines.append(f"{r['K']:>5} {r['L']:>4} {r['batch']:>3} {r['eager_ms']:>9.3f} {r['fused_ms']:>9.3f} "
                     f"{r['plugin_ms']:>8.3f} {r['eager_tflops']:>10.1f} {r['fused_tflops']:>10.1f} "
                     f"{r['speedup']:>7.2f}x {r['plugin_speedup']:>5.2f}x {frac:>8}")
    return "\n".join(lines)


def _plot(rows, device, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"K{r['K']} L{r['L']}\nB{r['batch']}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    ax.bar([x - 0.27 for x in xs], [r["eager_tflops"] for r in rows], 0.27, label="PyTorch eager FP16")
    ax.bar(list(xs), [r["fused_tflops"] for r in rows], 0.27, label="fused Triton kernel (JIT)")
    ax.bar([x + 0.27 for x in xs], [r["plugin_tflops"] for r in rows], 0.27, label="plugin PTX (AOT)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"IAUChannelAffinity on {device}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_configs(l: int) -> list[dict]:
    """Launch configurations the sweep tries for H*W = ``l`` (FP16)."""
    from iaunet.core.plugin_contract import pow2_at_least
    block_l = pow2_at_least(l)
    return [{"BLOCK_M": m, "BLOCK_N": n, "BLOCK_C": c, "BLOCK_L": block_l, "IEEE": False,
             "num_warps": w, "num_stages": s}
            for m in (16, 32, 64)
            for n in (32, 64) for c in sorted({32, 64, 128, block_l}) if c <= block_l
            for w in (4, 8) for s in (2, 3)]


def sweep(out_dir, repeats: int = 20, batch: int = 32) -> list[dict]:
    """Time every ``sweep_configs`` candidate of the fused kernel (JIT, FP16) at the
    benchmark shapes and ``batch``; candidates that do not compile for this GPU or disagree
    with the default configuration are dropped. Writes kernel_sweep.json; returns, per
    shape, the default's and the best candidate's time and configuration."""
    import torch
    import triton
    check_report_folder(out_dir)
    if not torch.cuda.is_available():
        raise IAUnetError("the kernel sweep needs a CUDA GPU; none is visible")
    from iaunet.engines.kernels.channel_affinity import channel_affinity, channel_affinity_kernel
    device = torch.cuda.get_device_name()
    total = sum(len(sweep_configs(l)) for _, l in SHAPES)
    bar = Progress(total, "sweep", "config")
    rows = []
    for k, l in SHAPES:
        x = _tokens(batch, k, l)
        reference = channel_affinity(x)
        default_ms = _median_ms(lambda: channel_affinity(x), repeats)
        timed = []
        for cfg in sweep_configs(l):
            y = torch.empty_like(x)
            grid = (triton.cdiv(k, cfg["BLOCK_M"]), batch)
            run = lambda: channel_affinity_kernel[grid](x, k, l, y, **cfg)  # noqa: E731
            try:
                compiled = run()
                torch.cuda.synchronize()
            except Exception as e:  # out of shared memory or registers for this GPU
                timed.append({"config": cfg, "error": str(e).splitlines()[0][:120]})
                bar.update()
                continue
            if _relative_error(y, reference) <= AGREE:
                timed.append({"config": cfg, "ms": _median_ms(run, repeats),
                              "registers": getattr(compiled, "n_regs", None),
                              "spills": getattr(compiled, "n_spills", None)})
            bar.update()
        ok = sorted((t for t in timed if "ms" in t), key=lambda t: t["ms"])
        rows.append({"K": k, "L": l, "batch": batch, "default_ms": default_ms, "best_ms": ok[0]["ms"] if ok else None,
                     "best": ok[0]["config"] if ok else None, "tried": timed})
    bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_sweep.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    return rows


def format_sweep(rows) -> str:
    lines = [f"{'K':>5} {'L':>4} {'B':>3} {'default ms':>10} {'best ms':>8}  best configuration"]
    for r in rows:
        best = " ".join(f"{k}={v}" for k, v in (r["best"] or {}).items() if k != "IEEE") or "none compiled"
        best_ms = f"{r['best_ms']:>8.3f}" if r["best_ms"] is not None else f"{'n/a':>8}"
        lines.append(f"{r['K']:>5} {r['L']:>4} {r['batch']:>3} {r['default_ms']:>10.3f} {best_ms}  {best}")
    return "\n".join(lines)
