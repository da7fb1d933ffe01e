"""``iaunet demo``: the main job end to end on CPU with no arguments.

synth -> train (small configuration) -> eval -> export (plugin mode, checked against
PyTorch) -> FP16 and INT8 variants -> accuracy parity of every variant, all outputs in
one folder. Top layer: imports every stage.

The folder is built under a temporary name beside the destination and renamed into
place when complete, so an error or Ctrl-C leaves the destination as it was. An existing
destination is replaced only when every file in it is listed in its ``demo.json``
(a previous demo's own files); otherwise the demo refuses, naming the first foreign file.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.files import check_parent_folder, write_json
from iaunet.core.log import get_logger

DEFAULT_OUTPUT = "iaunet-demo"
MANIFEST = "demo.json"
log = get_logger("demo")


def check_replaceable(out: Path) -> None:
    """Refuse a destination that holds anything but a previous demo's own files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise IAUnetError(f"output {out} is a file; expected a folder for the demo")
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    if not present:
        return
    try:
        owned = set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise IAUnetError(f"{out} exists and is not a previous demo folder (no readable {MANIFEST} listing its "
                          "files); pass -o with a new folder") from None
    foreign = [p for p in present if p not in owned and p != MANIFEST]
    if foreign:
        raise IAUnetError(f"{out} holds {foreign[0]}, which the previous demo did not write; refusing to replace "
                          "the folder (move that file, or pass -o with a new folder)")


@contextlib.contextmanager
def _working_dir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_demo(output=DEFAULT_OUTPUT, identities: int = 120, epochs: int = 20, seed: int = 0) -> int:
    out = Path(output).absolute()
    check_replaceable(out)
    check_parent_folder(out)  # the demo is built beside its destination
    build = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        with _working_dir(build):
            code, summary = _pipeline(Path("."), identities, epochs, seed)
        summary["files"] = sorted(str(p.relative_to(build)) for p in build.rglob("*") if not p.is_dir())
        write_json(build / MANIFEST, summary)
        _swap_into_place(build, out)
    finally:
        if build.exists():
            shutil.rmtree(build)
    print(f"outputs in {output}/ (data/, train/model.pt, model*.onnx, model.int8.calib, parity/, {MANIFEST})")
    return code


def _swap_into_place(build: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / "previous")
        os.replace(build, out)
        shutil.rmtree(old)
    else:
        os.replace(build, out)


# INT8 of the demo's small model: FP16 outside the Q/DQ, each layer's sensitivity measured,
# and the most sensitive layers moved to FP16 if held-out training images need it to reach
# the target. Calibration: minmax. Measured on this model (parity on query + gallery, FP16
# outside the Q/DQ, `iaunet calib` then `iaunet parity`): minmax mean cosine 0.9927, min
# 0.9753, mAP -0.25 (held-out mean 0.9929: no layer moved); percentile 99.99 with the
# fallback: min 0.9501, a hair above the gate; entropy (TensorRT's KL threshold): even with
# 14 layers in FP16 (held-out mean 0.9955) the min cosine stays 0.92: its clipping hurts a
# few query images that no mean over held-out images sees.
DEMO_INT8_METHOD = "minmax"
DEMO_INT8_TARGET = 0.99


def _pipeline(out: Path, identities: int, epochs: int, seed: int) -> tuple:
    """Run the stages in ``out``; returns (exit code, the summary for the manifest)."""
    import torch

    from iaunet.calib.fp16 import convert_fp16
    from iaunet.calib.int8 import quantize_int8
    from iaunet.calib.parity import run_parity
    from iaunet.cli.train import format_metrics
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.data.synth import generate_market
    from iaunet.train.options import TrainOptions
    from iaunet.train.trainer import evaluate, main

    data = out / "data"
    log.info("1/6 synth: %d identities -> data/", identities)
    generate_market(data, identities=identities, cameras=4, seed=seed)
    log.info("2/6 train: iaunet_r18 at 64x32 for %d epochs", epochs)
    checkpoint = main(TrainOptions(**demo_train_options(out, epochs, seed)))
    log.info("3/6 eval: untrained baseline and trained model")
    model, config = load_checkpoint(checkpoint)
    dataset = open_dataset(data)
    device = torch.device("cpu")
    torch.manual_seed(seed)
    baseline = evaluate(untrained_copy(config), dataset, device, config)
    trained = evaluate(model, dataset, device, config)
    log.info("4/6 export (plugin mode)")
    report = export_checkpoint(checkpoint, out / "model.onnx", "plugin", data=data)
    log.info("5/6 fp16 and int8 variants (%s calibration on the training split, target mean cosine %s)",
             DEMO_INT8_METHOD, DEMO_INT8_TARGET)
    records = {"fp16": convert_fp16(report.path, out / "model.fp16.onnx", data),
               "int8": quantize_int8(report.path, out / "model.int8.onnx", data, method=DEMO_INT8_METHOD,
                                     cache_dir=out / "calib-cache", target_cosine=DEMO_INT8_TARGET)}
    for name, record in records.items():
        write_json(out / f"model.{name}.json", record)
    log.info("6/6 parity of every variant against PyTorch")
    variants = [report.path, out / "model.fp16.onnx", out / "model.int8.onnx"]
    results, _ = run_parity(checkpoint, data, variants, out / "parity")
    summary = {"checkpoint": str(checkpoint), "untrained": _short(baseline), "trained": _short(trained),
               "onnx": str(report.path), "onnx_parity": {str(b): vars(p) for b, p in report.parity.items()},
               "parity": [{k: getattr(r, k) for k in ("name", "precision", "mean_cosine", "min_cosine", "rank1",
                                                       "mAP", "delta_map", "passed")} for r in results]}
    print(f"untrained: {format_metrics(baseline)}")
    print(f"trained:   {format_metrics(trained)}")
    print(report.summary())
    for r in results[1:]:
        print(f"parity {r.name:18s} cos mean {r.mean_cosine:.6f} min {r.min_cosine:.6f}  rank-1 {r.rank1:.2f} "
              f"({r.delta_rank1:+.2f})  mAP {r.mAP:.2f} ({r.delta_map:+.2f})  {'pass' if r.passed else 'FAIL'}")
    return (0 if all(r.passed for r in results) else 2), summary


def untrained_copy(config):
    """A freshly initialised model of the same config: the baseline training must beat."""
    from iaunet.train.registry import create_model
    return create_model(config.name, **{k: v for k, v in config.to_dict().items() if k != "name"}).eval()


def demo_train_options(out: Path, epochs: int, seed: int) -> dict:
    """The small CPU configuration the demo and the learning test train: ResNet-18 from
    scratch (no download), so a higher learning rate than the pretrained recipe's 3.5e-4."""
    return dict(data=str(out / "data"), output=str(out / "train"), model="iaunet_r18", epochs=epochs,
                height=64, width=32, batch_size=32, num_instances=4, lr=1e-3, warmup_epochs=2,
                milestones=[max(1, int(epochs * 0.75))], seed=seed)


def _short(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "cmc"}
