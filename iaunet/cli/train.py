"""``iaunet synth | train | eval``: arguments only; the work is in ``iaunet.train``.

The training options come from ``iaunet.train.options.TrainOptions`` (one definition of
each default, help line and range).
"""
from __future__ import annotations

import dataclasses
import json

from iaunet.cli import args as common
from iaunet.core.validate import Bounded

MAX_IDENTITIES = 100_000  # what synth draws in minutes, not hours (about 10 images each)


def add_commands(sub):
    p = common.command(sub, "synth", "write a synthetic re-ID data set (Market-1501 or MARS layout), "
                                     "or camera scenes (videos with MOT tracks) with --scenes")
    common.output(p, "output folder (must not exist, or be empty)")
    p.add_argument("--identities", type=Bounded(int, 4, MAX_IDENTITIES),
                   help="people to draw (default: 100; 12 with --scenes)")
    p.add_argument("--cameras", type=Bounded(int, 2, 64), help="cameras each person is seen by (default: 4; 3 with --scenes)")
    common.seed(p)
    p.add_argument("--video", action="store_true", help="MARS layout (tracklets) instead of Market-1501")
    p.add_argument("--scenes", action="store_true",
                   help="camera videos camK.mp4 with MOT ground truth camK.gt.txt, a tracker's camK.tracks.txt and "
                        "identities.json, instead of crops")
    p.add_argument("--seconds", type=Bounded(float, 0.2, 3600), default=20.0, help="scene length (with --scenes)")
    p.add_argument("--fps", type=Bounded(int, 1, 120), default=25, help="frame rate (with --scenes)")
    p.add_argument("--frame-size", type=_frame_size, default="480x272", metavar="WxH",
                   help="video frame size, even numbers (with --scenes)")
    p.set_defaults(func=run_synth)

    p = common.command(sub, "train", "train IAUnet on a data folder")
    common.data(p)
    common.output(p, "run folder, new or empty (or, with --resume, the folder of the last.pt it continues): "
                     "model.pt, last.pt and history.json are written there")
    _add_training_options(p)
    p.set_defaults(func=run_train)

    p = common.command(sub, "eval", "CMC / mAP / mINP of a checkpoint on a data folder")
    p.add_argument("checkpoint", help="model.pt written by 'iaunet train'")
    common.data(p)
    p.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine", help="distance between embeddings")
    p.add_argument("--flip", action="store_true", help="average embeddings with the mirrored image")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    common.workers(p)
    p.add_argument("--json", metavar="PATH", help="also write the metrics to this JSON file (replaced if it exists)")
    p.set_defaults(func=run_eval)


def _add_training_options(p):
    from iaunet.train.options import cli_fields
    for f in cli_fields():
        meta, name = f.metadata, "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if "flag" in meta:
            p.add_argument(meta["flag"], dest=f.name, action="store_false", help=f"turn off: {meta['help']}")
        elif f.name == "seed":
            common.seed(p, default)
        elif f.name == "workers":
            common.workers(p)
        else:
            p.add_argument(name, type=meta.get("rule") or str, default=default, help=meta["help"],
                           nargs=meta.get("nargs"), metavar=meta.get("metavar"))


def _frame_size(text: str) -> tuple:
    import argparse
    try:
        w, h = (int(v, 10) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, two even integers such as 480x272, got {text!r}") from None
    if not (16 <= w <= 4096 and 16 <= h <= 4096) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"expected WxH with even sizes in 16..4096, got {text!r}")
    return w, h


def run_synth(args):
    from iaunet.core.files import atomic_folder
    if args.scenes and args.video:
        from iaunet.core.errors import IAUnetError
        raise IAUnetError("--scenes and --video are two different outputs; expected one of them")
    if args.scenes:
        from iaunet.train.data.scenes import SceneSpec, generate_scenes
        spec = SceneSpec(cameras=args.cameras or 3, seconds=args.seconds, fps=args.fps,
                         identities=args.identities or 12, seed=args.seed, frame_size=_frame_size(args.frame_size)
                         if isinstance(args.frame_size, str) else args.frame_size)
        with atomic_folder(args.output) as tmp:
            info = generate_scenes(tmp, spec)
        print(json.dumps(info))
        return 0
    from iaunet.train.data.synth import generate_market, generate_mars
    gen = generate_mars if args.video else generate_market
    with atomic_folder(args.output) as tmp:  # an interrupt leaves no half data set
        info = gen(tmp, identities=args.identities or 100, cameras=args.cameras or 4, seed=args.seed)
    print(json.dumps(info))
    return 0


def run_train(args):
    from iaunet.train.options import TrainOptions
    from iaunet.train.trainer import main
    fields = TrainOptions.__dataclass_fields__
    opts = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    print(main(opts))
    return 0


def run_eval(args):
    import torch

    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.trainer import evaluate
    from iaunet.core import file_kinds
    from iaunet.core.files import check_output_path, write_json
    if args.json:
        check_output_path(args.json, inputs=[args.checkpoint, args.data], kind=file_kinds.METRICS)
    model, config = load_checkpoint(args.checkpoint)
    data = open_dataset(args.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate(model.to(device), data, device, config, args.metric, args.flip, args.rerank, args.workers)
    from iaunet.train.metrics import format_metrics
    print(format_metrics(result))
    if args.json:
        write_json(args.json, result)
    return 0
