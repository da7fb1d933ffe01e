"""``iaunet demo``: the main job end to end on CPU with no arguments.

synth -> train (small configuration) -> eval -> export (plugin mode, checked against
PyTorch) -> FP16 and INT8 variants -> accuracy parity of every variant, all outputs in
one folder. The engines stage extends it.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def add_commands(sub):
    p = sub.add_parser("demo", help="synth -> train -> eval -> export -> fp16/int8 -> parity on CPU, outputs in one folder")
    p.add_argument("--out", default="iaunet-demo", help="output folder (replaced if it holds a previous demo)")
    p.add_argument("--identities", type=int, default=120)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)


def run_demo(args):
    import torch

    from iaunet.errors import IAUnetError
    from iaunet.log import get_logger
    from train.checkpoint import load_checkpoint
    from train.cli import format_metrics, write_json
    from train.data.datasets import open_dataset
    from train.data.synth import generate_market
    from train.trainer import TrainOptions, evaluate, main

    log = get_logger("demo")
    out = Path(args.out)
    if out.exists():
        if not (out / "demo.json").exists() and any(out.iterdir()):
            raise IAUnetError(f"{out} exists and is not a previous demo folder; pass --out with a new folder")
        shutil.rmtree(out)
    log.info("1/6 synth: %d identities -> %s", args.identities, out / "data")
    generate_market(out / "data", identities=args.identities, cameras=4, seed=args.seed)
    log.info("2/6 train: iaunet_r18 at 64x32 for %d epochs", args.epochs)
    opts = TrainOptions(**demo_train_options(out, args.epochs, args.seed))
    checkpoint = main(opts)
    log.info("3/6 eval")
    model, config = load_checkpoint(checkpoint)
    data = open_dataset(out / "data")
    device = torch.device("cpu")
    torch.manual_seed(args.seed)
    baseline = evaluate(untrained_copy(config), data, device, config)
    trained = evaluate(model, data, device, config)
    log.info("4/6 export (plugin mode)")
    from export.exporter import export_checkpoint
    report = export_checkpoint(checkpoint, out / "model.onnx", "plugin", data=out / "data")
    log.info("5/6 fp16 and int8 variants (calibration on the training split)")
    from calib.fp16 import convert_fp16
    from calib.int8 import quantize_int8
    from calib.parity import run_parity
    records = {"fp16": convert_fp16(report.path, out / "model.fp16.onnx", out / "data"),
               "int8": quantize_int8(report.path, out / "model.int8.onnx", out / "data", cache_dir=out / "calib-cache")}
    for name, record in records.items():
        write_json(out / f"model.{name}.json", record)
    log.info("6/6 parity of every variant against PyTorch")
    results, _ = run_parity(checkpoint, out / "data", [report.path, out / "model.fp16.onnx",
                                                                 out / "model.int8.onnx"], out / "parity")
    summary = {"checkpoint": str(checkpoint), "untrained": _short(baseline), "trained": _short(trained),
               "onnx": str(report.path),
               "onnx_parity": {str(b): vars(p) for b, p in report.parity.items()},
               "parity": [{k: getattr(r, k) for k in ("name", "precision", "mean_cosine", "min_cosine", "rank1",
                                                       "mAP", "delta_map", "passed")} for r in results]}
    write_json(out / "demo.json", summary)
    print(f"untrained: {format_metrics(baseline)}")
    print(f"trained:   {format_metrics(trained)}")
    print(report.summary())
    for r in results[1:]:
        print(f"parity {r.name:18s} cos mean {r.mean_cosine:.6f} min {r.min_cosine:.6f}  rank-1 {r.rank1:.2f} "
              f"({r.delta_rank1:+.2f})  mAP {r.mAP:.2f} ({r.delta_map:+.2f})  {'pass' if r.passed else 'FAIL'}")
    print(f"outputs in {out}/ (data/, train/model.pt, model*.onnx, model.int8.calib, parity/, demo.json)")
    return 0 if all(r.passed for r in results) else 2


def untrained_copy(config):
    """A freshly initialised model of the same config: the baseline training must beat."""
    from train.registry import create_model
    return create_model(config.name, **{k: v for k, v in config.to_dict().items() if k != "name"}).eval()


def demo_train_options(out: Path, epochs: int, seed: int) -> dict:
    """The small CPU configuration the demo and the learning test train: ResNet-18 from
    scratch (no download), so a higher learning rate than the pretrained recipe's 3.5e-4."""
    return dict(data=str(out / "data"), out=str(out / "train"), model="iaunet_r18", epochs=epochs,
                height=64, width=32, batch_size=32, num_instances=4, lr=1e-3, warmup_epochs=2,
                milestones=[int(epochs * 0.75)], seed=seed)


def _short(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "cmc"}
