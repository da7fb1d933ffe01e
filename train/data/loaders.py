"""torch Datasets over ``ReIDData`` samples, the P x K identity sampler, and loaders."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from iaunet.core.preprocess import clip_frame_indices
from iaunet.train.data.transforms import EvalTransform, TrainTransform


def clip_indices(length: int, frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """Pick ``frames`` indices from a tracklet: one random frame per equal chunk when
    training (restricted random sampling), evenly spaced for evaluation."""
    if rng is None:
        return clip_frame_indices(length, frames)
    edges = np.linspace(0, length, frames + 1)
    lo, hi = edges[:-1].astype(int), np.maximum(edges[1:].astype(int), edges[:-1].astype(int) + 1)
    return np.minimum([rng.integers(a, b) for a, b in zip(lo, hi)], length - 1)


class ReIDDataset(Dataset):
    """Images (3, H, W) or clips (T, 3, H, W) in 0..255, with pid, camid and masks."""

    def __init__(self, samples, height, width, filter_name="bilinear", train=False, frames=0, seed=0):
        self.samples, self.frames, self.train, self.seed = samples, frames, train, seed
        self.epoch = 0
        self.eval_tf = EvalTransform(height, width, filter_name)
        self.train_tf = TrainTransform(height, width, filter_name) if train else None
        self.size = (height, width)

    def __len__(self):
        return len(self.samples)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __getitem__(self, index):
        s = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        picks = clip_indices(len(s.paths), self.frames, rng) if self.frames else [0]
        imgs, masks = [], []
        for k in picks:
            if self.train:
                img, mask = self.train_tf(s.paths[k], s.masks[k] if s.masks else None, rng)
            else:
                img, mask = self.eval_tf(s.paths[k]), None
            imgs.append(img)
            masks.append(mask if mask is not None else np.zeros((4, *self.size), np.float32))
        images = np.stack(imgs) if self.frames else imgs[0]
        masks = np.stack(masks) if self.frames else masks[0]
        return torch.from_numpy(images), s.pid, s.camid, torch.from_numpy(masks)


class IdentitySampler(Sampler):
    """P x K batches: each batch holds ``batch_size // num_instances`` identities with
    ``num_instances`` samples each. Every sample of an identity is used once per epoch
    (identities with fewer than K samples are drawn with replacement). With
    ``num_replicas`` > 1 (DDP) each rank takes its share of whole batches.
    """

    def __init__(self, samples, batch_size, num_instances, seed=0, num_replicas=1, rank=0):
        self.by_pid = defaultdict(list)
        for i, s in enumerate(samples):
            self.by_pid[s.pid].append(i)
        self.pids = sorted(self.by_pid)
        self.k = num_instances
        self.p = max(1, batch_size // num_instances)
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._planned = (None, [])  # (epoch, batches): len() and iter() share one plan

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _batches(self):
        if self._planned[0] != self.epoch:
            self._planned = (self.epoch, self._plan())
        return self._planned[1]

    def _plan(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = defaultdict(list)
        for pid in self.pids:
            idx = np.array(self.by_pid[pid])
            if len(idx) < self.k:
                idx = rng.choice(idx, self.k, replace=True)
            rng.shuffle(idx)
            groups[pid] = [list(idx[i:i + self.k]) for i in range(0, len(idx) - self.k + 1, self.k)]
        batches, active = [], [p for p in self.pids if groups[p]]
        while len(active) >= self.p:
            chosen = rng.choice(active, self.p, replace=False)
            batches.append([i for pid in chosen for i in groups[pid].pop()])
            active = [p for p in active if groups[p]]
        return batches[self.rank::self.num_replicas][: len(batches) // self.num_replicas]

    def __iter__(self):
        return iter([i for batch in self._batches() for i in batch])

    def __len__(self):
        return sum(len(b) for b in self._batches())


def train_loader(data, config, batch_size, num_instances, workers=0, seed=0, num_replicas=1, rank=0):
    dataset = ReIDDataset(data.train, config.height, config.width, config.resize_filter, train=True,
                          frames=config.frames if data.video else 0, seed=seed)
    sampler = IdentitySampler(data.train, batch_size, num_instances, seed, num_replicas, rank)
    per_rank = sampler.p * sampler.k
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers, drop_last=True)


def eval_loader(samples, config, video=False, batch_size=64, workers=0):
    dataset = ReIDDataset(samples, config.height, config.width, config.resize_filter,
                          frames=config.frames if video else 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
