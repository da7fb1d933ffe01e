"""Training and evaluation loops: ``train_one_epoch``, ``evaluate``, ``main``.

Adam with linear warm-up and step decay; label-smoothed CE + batch-hard triplet
(+ part-mask BCE when the data has masks); AMP on CUDA; a checkpoint every epoch
(``last.pt``, with optimizer state for ``--resume``) and ``model.pt`` at the end;
DistributedDataParallel when started by ``torchrun``.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iaunet.core.errors import IAUnetError
from iaunet.core.files import check_output_folder, check_report_folder
from iaunet.core.log import get_logger
from iaunet.core.progress import Progress
from iaunet.core.validate import require_same_variant
from iaunet.train.checkpoint import read_checkpoint, save_checkpoint
from iaunet.train.data.datasets import open_dataset
from iaunet.train.data.loaders import eval_loader, train_loader
from iaunet.train.losses import BatchHardTriplet, LabelSmoothCrossEntropy, PartMaskLoss
from iaunet.train.metrics import distance_matrix, rank_metrics, re_rank
from iaunet.train.options import TrainOptions
from iaunet.train.registry import create_model, require_model
from iaunet.train.runner import TorchRunner

log = get_logger("train")


def normalize(images: torch.Tensor, config) -> torch.Tensor:
    """0..255 RGB -> mean/std normalised, channel axis -3 (images and clips)."""
    mean = torch.tensor(config.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(config.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def lr_factor(epoch: int, warmup: int, milestones, gamma: float) -> float:
    """Linear warm-up from 1% over ``warmup`` epochs, then x gamma at each milestone."""
    if epoch < warmup:
        return 0.01 + 0.99 * epoch / warmup
    return gamma ** sum(epoch >= m for m in milestones)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_one_epoch(model, loader, criteria, optimizer, scaler, device, config, epoch, opts, bar=None) -> dict:
    """One pass over the P x K loader; returns the mean losses and images/s. ``bar``, the
    run's progress bar, advances one step per epoch and shows the running loss."""
    model.train()
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    ce, triplet, mask_loss = criteria
    use_masks = opts.mask_weight > 0 and loader.dataset.samples[0].masks
    totals, seen, start = {"loss": 0.0, "ce": 0.0, "tri": 0.0, "mask": 0.0}, 0, time.perf_counter()
    bar = bar or Progress(1, enabled=False)
    for images, pids, _, masks in loader:
        images, pids, masks = images.to(device), pids.to(device), masks.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            logits, embedding, part_maps = model(normalize(images, config))
            losses = {"ce": ce(logits, pids), "tri": triplet(embedding, pids)}
            if use_masks:
                losses["mask"] = opts.mask_weight * mask_loss(part_maps, masks)
            loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = images.shape[0]
        seen += n
        totals["loss"] += loss.item() * n
        for k, v in losses.items():
            totals[k] += v.item() * n
        bar.update(0, items=n, epoch=epoch + 1, loss=totals["loss"] / seen)
    bar.update(1, items=0)
    stats = {k: v / max(seen, 1) for k, v in totals.items()}
    stats["images_per_s"] = seen / (time.perf_counter() - start)
    return stats


@torch.no_grad()
def extract_features(runner, loader):
    """Embeddings (N, D) numpy from a ``Runner`` over an eval loader, plus pids and camids."""
    feats, pids, camids = [], [], []
    for images, pid, camid, _ in loader:
        feats.append(runner.infer(images.numpy().astype(np.float32, copy=False)))
        pids.append(pid.numpy())
        camids.append(camid.numpy())
    return np.concatenate(feats), np.concatenate(pids), np.concatenate(camids)


def evaluate(model, data, device, config, metric="cosine", flip=False, rerank=False, workers=0) -> dict:
    """Rank-1/5/10, mAP and mINP on the query/gallery split (Market-1501 / MARS protocol)."""
    require_same_variant(config.variant, data.video, config.name, data.root)
    runner = TorchRunner(model, config, device, flip)
    qf, q_pids, q_cams = extract_features(runner, eval_loader(data.query, config, data.video, workers=workers))
    gf, g_pids, g_cams = extract_features(runner, eval_loader(data.gallery, config, data.video, workers=workers))
    dist = distance_matrix(qf, gf, metric)
    if rerank:
        dist = re_rank(dist, distance_matrix(qf, qf, metric), distance_matrix(gf, gf, metric))
    result = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    cmc = result.pop("cmc")
    return {"rank1": float(cmc[0]), "rank5": float(cmc[min(4, len(cmc) - 1)]),
            "rank10": float(cmc[min(9, len(cmc) - 1)]), **result, "cmc": [float(c) for c in cmc]}


def _distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0, None
    import torch.distributed as dist
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return world, dist.get_rank(), local


def _build(opts: TrainOptions, data):
    overrides = dict(num_classes=data.num_train_pids, height=opts.height, width=opts.width)
    if data.video:
        overrides["frames"] = opts.frames
    model = create_model(opts.model, pretrained=opts.pretrained, **overrides)
    require_same_variant(model.config.variant, data.video, f"model {opts.model}", data.root)
    return model


def main(opts: TrainOptions) -> Path:
    """Train, checkpoint every epoch, return the final checkpoint's path."""
    world, rank, local = _distributed()
    seed_everything(opts.seed + rank)
    device = torch.device(f"cuda:{local or 0}" if torch.cuda.is_available() else "cpu")
    require_model(opts.model)  # before reading the data
    out = check_run_folder(opts)
    resumed = _read_resume(opts.resume) if opts.resume else None
    data = open_dataset(opts.data)
    if data.video:
        opts.require_memory(opts.frames)
    model = _build(opts, data).to(device)
    config = model.config
    needed = opts.batch_size // opts.num_instances
    if data.num_train_pids < needed * world:
        raise IAUnetError(f"{data.root} has {data.num_train_pids} training identities ({len(data.train)} "
                          f"samples); one P x K batch of --batch-size {opts.batch_size} with --num-instances "
                          f"{opts.num_instances} needs {needed * world} identities"
                          + (f" across {world} processes" if world > 1 else ""))
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=opts.amp and device.type == "cuda")
    start_epoch, history = _resume(opts, resumed, model, optimizer, scaler) if resumed else (0, [])
    if rank == 0:  # the run folder itself is made by the first checkpoint
        log.info("%s; model %s (%s, %d classes)", data.summary(), config.name, config.backbone, config.num_classes)
    loader = train_loader(data, config, opts.batch_size, opts.num_instances, opts.workers, opts.seed, world, rank)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None) \
        if world > 1 else model
    criteria = (LabelSmoothCrossEntropy(opts.label_smooth), BatchHardTriplet(opts.margin), PartMaskLoss())
    bar = Progress(opts.epochs - start_epoch, "training", "img", enabled=opts.progress and rank == 0)
    for epoch in range(start_epoch, opts.epochs):
        for group in optimizer.param_groups:
            group["lr"] = opts.lr * lr_factor(epoch, opts.warmup_epochs, opts.milestones, opts.gamma)
        stats = train_one_epoch(net, loader, criteria, optimizer, scaler, device, config, epoch, opts, bar)
        stats["epoch"], stats["lr"] = epoch + 1, optimizer.param_groups[0]["lr"]
        if rank == 0 and opts.eval_every and (epoch + 1) % opts.eval_every == 0:
            stats["eval"] = {k: v for k, v in evaluate(model, data, device, config).items() if k != "cmc"}
            log.info("epoch %d: rank-1 %.3f mAP %.3f", epoch + 1, stats["eval"]["rank1"], stats["eval"]["mAP"])
        history.append(stats)
        if rank == 0:
            save_checkpoint(out / "last.pt", model, {
                "epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "history": json.dumps(history), "options": json.dumps(vars(opts))})
    bar.close()
    if rank == 0:
        final = save_checkpoint(out / "model.pt", model, {"epoch": opts.epochs, "history": json.dumps(history)})
        (out / "history.json").write_text(json.dumps(history, indent=2))
        log.info("saved %s", final)
    if world > 1:
        torch.distributed.destroy_process_group()
    return out / "model.pt"


def check_run_folder(opts: TrainOptions) -> Path:
    """The run folder must be new or empty, so a finished run's model.pt is never replaced;
    resuming may continue in the folder of the last.pt it resumes from."""
    out = Path(opts.output)
    if opts.resume and out.is_dir() and Path(opts.resume).parent.resolve() == out.resolve():
        return check_report_folder(out, inputs=[opts.data])
    return check_output_folder(out, inputs=[opts.data])


def _read_resume(path) -> dict:
    payload = read_checkpoint(path)
    if "optimizer" not in payload:
        raise IAUnetError(f"{path} has no optimizer state; expected a 'last.pt' written during training")
    return payload


def _resume(opts, payload, model, optimizer, scaler):
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise IAUnetError(f"{opts.resume} does not match model {opts.model} on this data; "
                          "resume with the same --model and --data") from None
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    log.info("resumed from %s at epoch %d", opts.resume, payload["epoch"])
    return int(payload["epoch"]), json.loads(payload["history"])
