"""``iaunet embed``, ``iaunet search`` and ``iaunet bench``: arguments only; the work is
in ``iaunet.runtime`` (and ``iaunet.train.runner`` for bench's PyTorch column)."""
from __future__ import annotations

import argparse
from pathlib import Path

from iaunet.cli import args as common
from iaunet.core.graph_io import INPUT_NAME, OUTPUT_NAME
from iaunet.core.validate import Bounded

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BACKEND_HELP = ("auto: an engine on TensorRT, an ONNX file on ONNX Runtime CUDA where present, else CPU; "
                "onnxruntime-cpu|-cuda|-tensorrt pick ONNX Runtime's provider")


def _model_options(p) -> None:
    from iaunet.runtime.runners import BACKENDS
    p.add_argument("-m", "--model", required=True, metavar="MODEL",
                   help="an .onnx file from 'iaunet export'/'calib', or a TensorRT engine with its sidecar")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--batch", type=Bounded(int, 1, 4096), help="images per inference call "
                   "(default: 16, at most the engine profile's maximum)")
    p.add_argument("--threads", type=Bounded(int, 1, 1024), help="ONNX Runtime intra-op threads (default: one per core)")


def add_commands(sub):
    p = common.command(sub, "embed", "images -> embeddings (.npz gallery file), on the runtime's backends")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS",
                   help="image files and folders of images; Market-1501-style names give ids and cameras")
    _model_options(p)
    common.output(p, "the .npz gallery file to write (replaced if it exists)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them, instead of stopping")
    p.set_defaults(func=run_embed)

    p = common.command(sub, "search", "rank a gallery for query images: top-k matches with cosine scores")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="query image files or folders")
    p.add_argument("--gallery", required=True, metavar="NPZ", help="gallery file written by 'iaunet embed'")
    _model_options(p)
    p.add_argument("--top-k", type=Bounded(int, 1, 1000), default=10, help="matches per query")
    p.add_argument("--threshold", type=Bounded(float, -1, 1), help="drop matches whose cosine is below this")
    p.add_argument("--grid", metavar="PNG", help="draw each query beside its matches (replaced if it exists)")
    p.add_argument("--json", metavar="PATH", help="also write the matches as JSON (replaced if it exists)")
    p.set_defaults(func=run_search)

    p = common.command(sub, "bench", "latency, throughput and memory of the runtime's backends (and PyTorch eager)")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files or TensorRT engines to time")
    p.add_argument("--checkpoint", metavar="CKPT", help="also time PyTorch eager on this checkpoint (the models' source)")
    p.add_argument("--batch", type=_batches, default=[1, 8], metavar="B,B,...", help="batch sizes")
    p.add_argument("--backend", action="append", metavar="BACKEND",
                   help="backend to time (repeatable; default: every one this machine has for each model)")
    p.add_argument("--repeats", type=Bounded(int, 3, 10000), default=30, help="timed calls per figure")
    p.add_argument("--images", metavar="DIR", help="JPEG files for the end-to-end figures (default: generated crops)")
    p.add_argument("--threads", type=Bounded(int, 1, 1024), help="ONNX Runtime intra-op threads (default: one per core)")
    common.output(p, "report folder (created if missing; bench.json and bench.png in it are replaced)",
                  required=False, default="bench")
    p.set_defaults(func=run_bench)


def _batches(text: str) -> list:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 1 or v > 4096 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must lie in 1..4096, got {text!r}")
    return values


def collect_images(inputs) -> list:
    """Image files from files and folders (folders: their images, sorted, not recursive)."""
    from pathlib import Path
    from iaunet.core.errors import IAUnetError
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise IAUnetError(f"folder {item} holds no images; expected {', '.join(IMAGE_SUFFIXES)} files")
            found += images
        elif item.is_file():
            found.append(item)
        else:
            raise IAUnetError(f"{item} not found; expected an image file or a folder of images")
    return found


def run_embed(args):
    from iaunet.runtime.tasks import embed_files
    summary = embed_files(args.model, collect_images(args.inputs), args.output, args.backend, args.batch,
                          args.threads, args.skip_bad)
    extra = f", {summary['skipped']} unreadable skipped" if summary["skipped"] else ""
    junk = f", {summary['junk_left_out']} junk left out" if summary["junk_left_out"] else ""
    ids = "ids and cameras from the file names" if summary["labelled"] else "no ids (names are not Market-style)"
    print(f"embedded {summary['images']} images ({summary['dim']}-d, {summary['backend']}{extra}{junk}; {ids}) "
          f"-> {summary['output']}")
    return 0


def run_search(args):
    from iaunet.runtime.tasks import describe, search_files
    results = search_files(args.model, args.gallery, collect_images(args.queries), args.top_k, args.threshold,
                           args.backend, args.batch, args.threads, args.grid, args.json)
    for line in describe(results):
        print(line)
    for path, what in ((args.grid, "grid"), (args.json, "matches")):
        if path:
            print(f"{what}: {path}")
    return 0


def _runners(models, backend=None, threads=None):
    """(model, label, runner, card, bare session call or None) for every model and backend asked."""
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
            runner, card = open_runner(model, name, threads)
            session = getattr(runner, "session", None)
            bare = (lambda x, s=session: s.run([OUTPUT_NAME], {INPUT_NAME: x})[0]) if session else None
            yield model, f"{Path(model).name} {runner.name}", runner, card, bare


def benchmark(models, out, batches, repeats, checkpoint=None, backend=None, threads=None, images=None,
              quiet=False) -> dict:
    """Time every model (and PyTorch eager from ``checkpoint``); write ``out``/bench.json and
    bench.png; return what bench.json holds. ``out`` has been checked by the caller."""
    import tempfile
    from iaunet.core.files import atomic_output, write_json
    from iaunet.export.flops import count_flops
    from iaunet.runtime import bench
    from iaunet.runtime.embedder import is_engine
    card, per_model = None, []
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = (collect_images([images]) if images
                 else bench.generated_jpegs(tmp, max(batches) * bench.E2E_BATCHES_PER_CALL))
        for model, label, runner, card, bare in _runners(models, backend, threads):
            with runner:
                found = bench.bench_runner(runner, label, card, batches, repeats, jpegs, None, bare)
            per_model += [(model, t) for t in found]
        if checkpoint:
            from iaunet.train.runner import TorchRunner
            runner = TorchRunner.from_checkpoint(checkpoint)
            found = bench.bench_runner(runner, f"pytorch eager ({runner.device.type})", card, batches, repeats)
            per_model += [(models[0], t) for t in found]
    # FLOPs are counted after the timings, so onnx's copy of the graph is not in the runtime's memory figures
    flops = {m: count_flops(m) for m in models if not is_engine(m)}
    timings = []
    for model, t in per_model:
        t.gflops_per_s = flops[model] * t.batch / (t.p50_ms / 1e3) / 1e9 if model in flops else None
        timings.append(t)
    peak, how = bench.cpu_peak_gflops()
    if not quiet:
        for line in bench.table(timings, peak, how):
            print(line)
    Path(out).mkdir(exist_ok=True)
    result = {"cpu_peak_gflops": peak, "peak_estimate": how, "timings": [t.as_dict() for t in timings]}
    write_json(Path(out) / "bench.json", result)
    with atomic_output(Path(out) / "bench.png") as png:
        bench.plot(timings, png)
    return result


def run_bench(args):
    from iaunet.core.files import check_report_folder
    out = check_report_folder(args.output)
    benchmark(args.models, out, args.batch, args.repeats, args.checkpoint, args.backend, args.threads, args.images)
    print(f"bench: {out / 'bench.json'}, {out / 'bench.png'}")
    return 0
