"""``iaunet synth | train | eval``: argument parsing only; the work is in the stage."""
from __future__ import annotations

import json
from pathlib import Path


def add_commands(sub):
    p = sub.add_parser("synth", help="write a synthetic re-ID data set (Market-1501 or MARS layout)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video", action="store_true", help="MARS layout (tracklets) instead of Market-1501")
    p.set_defaults(func=run_synth)

    p = sub.add_parser("train", help="train IAUnet on a data folder")
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="iaunet_r50")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=4, help="clip length for video models")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-instances", type=int, default=4, help="K images per identity in a batch")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--milestones", type=int, nargs="+", default=[40, 70])
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--margin", type=float, default=0.3)
    p.add_argument("--mask-weight", type=float, default=0.5, help="weight of the part-mask loss (0 disables)")
    p.add_argument("--pretrained", help="local torchvision ResNet state dict for the backbone")
    p.add_argument("--resume", help="last.pt of an interrupted run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs (0: never)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="CMC / mAP / mINP of a checkpoint on a data folder")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    p.add_argument("--flip", action="store_true", help="average embeddings with the mirrored image")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", help="write the metrics here")
    p.set_defaults(func=run_eval)


def run_synth(args):
    from iaunet.errors import IAUnetError
    from train.data.synth import generate_market, generate_mars
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise IAUnetError(f"output folder {out} is not empty; expected a new or empty folder")
    if args.identities < 4 or args.cameras < 2:
        raise IAUnetError(f"need at least 4 identities and 2 cameras, got {args.identities} and {args.cameras}")
    gen = generate_mars if args.video else generate_market
    info = gen(out, identities=args.identities, cameras=args.cameras, seed=args.seed)
    print(json.dumps(info))
    return 0


def run_train(args):
    from train.trainer import TrainOptions, main
    fields = TrainOptions.__dataclass_fields__
    opts = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    print(main(opts))
    return 0


def run_eval(args):
    from train.checkpoint import load_checkpoint
    from train.data.datasets import open_dataset
    from train.trainer import evaluate
    import torch
    model, config = load_checkpoint(args.checkpoint)
    data = open_dataset(args.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate(model.to(device), data, device, config, args.metric, args.flip, args.rerank, args.workers)
    print(format_metrics(result))
    if args.json:
        write_json(args.json, result)
    return 0


def format_metrics(result: dict) -> str:
    return (f"rank-1 {result['rank1']:.4f}  rank-5 {result['rank5']:.4f}  rank-10 {result['rank10']:.4f}  "
            f"mAP {result['mAP']:.4f}  mINP {result['mINP']:.4f}  ({result['num_valid_queries']} queries)")


def write_json(path, payload):
    from iaunet.errors import IAUnetError
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))
    except OSError as exc:
        raise IAUnetError(f"cannot write {path}: {exc.strerror}") from None
