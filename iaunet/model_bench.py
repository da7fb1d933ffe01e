"""Timing models the way ``iaunet bench`` and the demo do: every model on every backend
asked (and PyTorch eager from a checkpoint), written as ``bench.json`` and ``bench.png``.
Top layer: it puts the runtime's runners beside the training stage's PyTorch runner.
"""
from __future__ import annotations

from pathlib import Path

from iaunet.core import file_kinds
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME

REPORT_FILES = {"bench.json": file_kinds.BENCH, "bench.png": file_kinds.IMAGE}  # written together, in this order


def _runners(models, backend=None, threads=None):
    """(model, label, runner, card, bare session call or None) for every model and backend asked."""
    from iaunet.runtime.perf_figures import reset_peak_rss
    from iaunet.runtime.embedder import is_engine, open_runner
    from iaunet.runtime.runners import ORT_PROVIDERS
    for model in models:
        if backend:
            backends = backend
        elif is_engine(model):
            backends = ["tensorrt"]
        else:
            import onnxruntime as ort
            backends = [f"onnxruntime-{d}" for d in ("cpu", "cuda") if ORT_PROVIDERS[d] in ort.get_available_providers()]
        for name in backends:
            reset_peak_rss()  # each backend's memory figure counts from its opening
            runner, card = open_runner(model, name, threads)
            session = getattr(runner, "session", None)
            bare = (lambda x, s=session: s.run([OUTPUT_NAME], {INPUT_NAME: x})[0]) if session else None
            yield model, f"{Path(model).name} {runner.name}", runner, card, bare


def _torch_runners(checkpoint, devices):
    """PyTorch eager on the CPU in FP32, and in FP16 on the GPU when GPU backends were timed
    and torch sees a GPU: the baselines the rows of the same device are compared with."""
    import torch
    from iaunet.runtime.perf_figures import reset_peak_rss
    from iaunet.train.runner import TorchRunner
    reset_peak_rss()
    yield TorchRunner.from_checkpoint(checkpoint)
    if "cuda" in devices and torch.cuda.is_available():
        reset_peak_rss()
        yield TorchRunner.from_checkpoint(checkpoint, device="cuda", half=True)


def _no_tensorrt_rows(timings) -> str | None:
    """Why no TensorRT engine was timed, said rather than left out silently; None when one was."""
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.trt_runner import import_tensorrt
    if any(t.backend.endswith(" tensorrt") for t in timings):
        return None
    try:
        import_tensorrt()
    except IAUnetError as exc:
        return f"no TensorRT rows: {exc}"
    return "no TensorRT rows: give an engine from 'iaunet build' to time TensorRT"


def _check_sources(models, checkpoint, backend) -> None:
    """Before anything is timed: every model exists, carries a model card, runs on every
    backend asked and (an ONNX file) has the weights written with it, and ``checkpoint``
    (when given) holds the weights they were exported (or their engines built) from."""
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import sha256_file
    from iaunet.runtime.embedder import check_backend, check_onnx_weights, is_engine, read_card
    cards = {model: read_card(model) for model in models}
    for model in models:
        for name in backend or ():
            check_backend(model, name)
        if not is_engine(model):
            check_onnx_weights(model)
    if not checkpoint:
        return
    if not Path(checkpoint).is_file():
        raise IAUnetError(f"checkpoint {checkpoint} not found; expected the .pt the models were exported from")
    from iaunet.train.checkpoint import checkpoint_model_id
    digest = checkpoint_model_id(checkpoint)
    for model, card in cards.items():
        if not card.matches(digest) and not card.matches(sha256_file(checkpoint)):
            raise IAUnetError(f"{model} was not exported from {checkpoint} (it names model "
                              f"{card.model_id[:12] or '(none)'}, the checkpoint's weights are {digest[:12]}); "
                              "give the model's own checkpoint")


def benchmark(models, out, batches, repeats, checkpoint=None, backend=None, threads=None, jpegs=None,
              quiet=False) -> dict:
    """Time every model (and PyTorch eager from ``checkpoint``); write ``out``/bench.json and
    bench.png; return what bench.json holds. ``out`` has been checked by the caller; ``jpegs``
    are the end-to-end images (generated when None)."""
    import tempfile
    from iaunet.core.files import atomic_outputs, json_text, report_folder
    from iaunet.export.flops import count_flops
    from iaunet.runtime import perf_figures
    from iaunet.runtime.embedder import is_engine
    _check_sources(models, checkpoint, backend)
    card, per_model = None, []
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = jpegs or perf_figures.generated_jpegs(tmp, max(batches) * perf_figures.E2E_BATCHES_PER_CALL)
        for model, label, runner, card, bare in _runners(models, backend, threads):
            with runner:
                found = perf_figures.bench_runner(runner, label, card, batches, repeats, jpegs, None, bare)
            per_model += [(model, t) for t in found]
        if checkpoint:
            for runner in _torch_runners(checkpoint, {t.device for _, t in per_model}):
                found = perf_figures.bench_runner(runner, perf_figures.pytorch_label(runner.precision, runner.device.type),
                                           card, batches, repeats)
                per_model += [(models[0], t) for t in found]
                del runner  # before the next one's memory peak begins
    # FLOPs are counted after the timings, so onnx's copy of the graph is not in the runtime's memory figures
    flops = {m: count_flops(m) for m in models if not is_engine(m)}
    timings = []
    for model, t in per_model:
        t.gflops_per_s = flops[model] * t.batch / (t.p50_ms / 1e3) / 1e9 if model in flops else None
        timings.append(t)
    peak, how = perf_figures.cpu_peak_gflops()
    no_tensorrt = _no_tensorrt_rows(timings)
    if not quiet:
        for line in perf_figures.table(timings, peak, how) + ([no_tensorrt] if no_tensorrt else []):
            print(line)
    result = {"cpu_peak_gflops": peak, "peak_estimate": how, "no_tensorrt_rows": no_tensorrt,
              "timings": [{**t.as_dict(), "vs_pytorch": vs} for t, vs in zip(timings, perf_figures.vs_pytorch(timings))]}
    with report_folder(out), atomic_outputs(*(Path(out) / name for name in REPORT_FILES)) as (json_tmp, png):
        Path(json_tmp).write_text(json_text(result))
        perf_figures.plot(timings, png)
    return result
