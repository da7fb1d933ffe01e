"""``iaunet embed``, ``iaunet search`` and ``iaunet bench``: arguments only; the work is
in ``iaunet.runtime`` and, for bench, ``iaunet.model_bench``."""
from __future__ import annotations

import argparse

from iaunet.cli import args as common
from iaunet.core.validate import Bounded

BACKEND_HELP = ("auto: an engine on TensorRT, an ONNX file on ONNX Runtime CUDA where present, else CPU; "
                "onnxruntime-cpu|-cuda|-tensorrt pick ONNX Runtime's provider")


def _model_options(p) -> None:
    from iaunet.runtime.runners import BACKENDS, DEFAULT_EMBED_BATCH
    p.add_argument("-m", "--model", required=True, metavar="MODEL",
                   help="an .onnx file from 'iaunet export'/'calib', or a TensorRT engine with its sidecar")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--batch", type=Bounded(int, 1, 4096), help="images per inference call "
                   f"(default: {DEFAULT_EMBED_BATCH}, at most the engine profile's maximum)")
    p.add_argument("--threads", type=Bounded(int, 1, 1024), help="ONNX Runtime intra-op threads (default: one per core)")


def _skip_bad(p) -> None:
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them, instead of stopping")


def add_commands(sub):
    from iaunet.runtime.perf_figures import DEFAULT_REPEATS
    p = common.command(sub, "embed", "images -> embeddings (.npz gallery file), on the runtime's backends")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS",
                   help="image files and folders of images; Market-1501-style names give ids and cameras")
    _model_options(p)
    common.output(p, "the .npz gallery file to write (replaced if it exists)")
    _skip_bad(p)
    p.set_defaults(func=run_embed)

    p = common.command(sub, "search", "rank a gallery for query images: top-k matches with cosine scores")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="query image files or folders")
    p.add_argument("--gallery", required=True, metavar="NPZ", help="gallery file written by 'iaunet embed'")
    _model_options(p)
    p.add_argument("--top-k", type=Bounded(int, 1, 1000), default=10, help="matches per query")
    p.add_argument("--threshold", type=Bounded(float, -1, 1), help="drop matches whose cosine is below this")
    p.add_argument("--grid", metavar="PNG", help="draw each query beside its matches (replaced if it exists)")
    p.add_argument("--json", metavar="PATH", help="also write the matches as JSON (replaced if it exists)")
    _skip_bad(p)
    p.set_defaults(func=run_search)

    p = common.command(sub, "bench", "latency, throughput and memory of the runtime's backends (and PyTorch eager)")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files or TensorRT engines to time")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="also time PyTorch eager on this checkpoint (the models' source): FP32 on the CPU, "
                        "and FP16 on the GPU when GPU backends are timed and torch sees the GPU; "
                        "refused unless the models were exported from it")
    p.add_argument("--batch", type=_batches, default=[1, 8], metavar="B,B,...", help="batch sizes")
    p.add_argument("--backend", action="append", metavar="BACKEND",
                   help="backend to time (repeatable; default: every one this machine has for each model)")
    p.add_argument("--repeats", type=Bounded(int, 3, 10000), default=DEFAULT_REPEATS, help="timed calls per figure")
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
    """Image files from files and folders (``iaunet.runtime.images.list_images``)."""
    from iaunet.runtime.images import list_images
    return list_images(inputs)


def _folders(inputs) -> list:
    """The folders among the named inputs: no output may go inside one."""
    from pathlib import Path
    return [p for p in inputs if Path(p).is_dir()]


def run_embed(args):
    from iaunet.runtime.tasks import embed_files
    summary = embed_files(args.model, collect_images(args.inputs), args.output, args.backend, args.batch,
                          args.threads, args.skip_bad, folders=_folders(args.inputs))
    extra = f", {summary['skipped']} unreadable skipped" if summary["skipped"] else ""
    junk = f", {summary['junk_left_out']} junk left out" if summary["junk_left_out"] else ""
    ids = "ids and cameras from the file names" if summary["labelled"] else "no ids (names are not Market-style)"
    print(f"embedded {summary['images']} images ({summary['dim']}-d, {summary['backend']}{extra}{junk}; {ids}) "
          f"-> {summary['output']}")
    return 0


def run_search(args):
    from iaunet.runtime.tasks import describe, search_files
    results = search_files(args.model, args.gallery, collect_images(args.queries), args.top_k, args.threshold,
                           args.backend, args.batch, args.threads, args.grid, args.json, args.skip_bad,
                           folders=_folders(args.queries))
    for line in describe(results, args.json):
        print(line)
    for path, what in ((args.grid, "grid"), (args.json, "matches")):
        if path:
            print(f"{what}: {path}")
    return 0


def run_bench(args):
    from iaunet.model_bench import benchmark
    from iaunet.core.files import check_report_folder
    from iaunet.model_bench import REPORT_FILES
    out = check_report_folder(args.output, inputs=[*args.models, args.checkpoint, args.images], files=REPORT_FILES)
    jpegs = collect_images([args.images]) if args.images else None
    benchmark(args.models, out, args.batch, args.repeats, args.checkpoint, args.backend, args.threads, jpegs)
    print(f"bench: {out / 'bench.json'}, {out / 'bench.png'}")
    return 0
