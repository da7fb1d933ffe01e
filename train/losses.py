"""Losses: label-smoothed cross entropy, batch-hard triplet, and the part-mask loss."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LabelSmoothCrossEntropy(nn.Module):
    """Cross entropy against ``(1 - eps) * onehot + eps / K`` (Szegedy et al. 2016)."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits, targets):
        log_probs = F.log_softmax(logits.float(), dim=1)
        onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1.0)
        smooth = (1 - self.epsilon) * onehot + self.epsilon / logits.shape[1]
        return -(smooth * log_probs).sum(1).mean()


class BatchHardTriplet(nn.Module):
    """Triplet loss with the hardest positive and negative in the batch (Hermans et al. 2017)."""

    def __init__(self, margin: float = 0.3):
        super().__init__()
        self.ranking = nn.MarginRankingLoss(margin=margin)

    def forward(self, features, targets):
        features = features.float()
        dist = torch.cdist(features, features).clamp_min(1e-12)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
        hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
        return self.ranking(hardest_neg, hardest_pos, torch.ones_like(hardest_pos))


class PartMaskLoss(nn.Module):
    """Binary cross entropy between part maps (N, 4, h, w) and masks resized to (h, w),
    averaged over parts and over the IAU blocks (the paper's parsing supervision)."""

    def forward(self, part_maps, masks):
        if masks.dim() == 5:  # video: (N, T, 4, H, W) -> (N*T, 4, H, W)
            masks = masks.flatten(0, 1)
        losses = []
        with torch.autocast(device_type=masks.device.type, enabled=False):
            for maps in part_maps:
                target = F.interpolate(masks.float(), size=maps.shape[-2:], mode="bilinear", align_corners=True)
                losses.append(F.binary_cross_entropy(maps.float().clamp(1e-6, 1 - 1e-6), target))
        return torch.stack(losses).mean()
