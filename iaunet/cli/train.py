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
    p = common.command(sub, "synth", "write a synthetic re-ID data set (Market-1501 or MARS layout)")
    common.output(p, "output folder (must not exist, or be empty)")
    p.add_argument("--identities", type=Bounded(int, 4, MAX_IDENTITIES), default=100, help="people to draw")
    p.add_argument("--cameras", type=Bounded(int, 2, 64), default=4, help="cameras each person is seen by")
    common.seed(p)
    p.add_argument("--video", action="store_true", help="MARS layout (tracklets) instead of Market-1501")
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


def run_synth(args):
    from iaunet.core.files import atomic_folder
    from iaunet.train.data.synth import generate_market, generate_mars
    gen = generate_mars if args.video else generate_market
    with atomic_folder(args.output) as tmp:  # an interrupt leaves no half data set
        info = gen(tmp, identities=args.identities, cameras=args.cameras, seed=args.seed)
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
