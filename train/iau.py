"""Interaction-Aggregation-Update blocks (Hou et al., TNNLS 2020), image and video.

One block serves both variants. Features arrive frame-flattened, ``(B*T, C, H, W)``
with the clip length ``T`` given (``T = 1`` for images), which is exactly the reference
code's 2D IAU for images and its 3D IAU for videos:

* CIAU: tokens are the ``C*T`` (channel, frame) rows of the flattened map; the
  affinity ``softmax(X X^T)`` aggregates them and a zero-initialised 1x1 conv + BN
  adds the result back.
* SIAU / STIAU: four sigmoid part maps pool part features per frame; with a global
  node (spatial-temporal mean) they are halved by a shared 1x1 conv, related pairwise
  (``|x_i - x_j|`` with the global node, 1x1 conv + BN, masked softmax), aggregated
  and updated, averaged over parts, joined with the global node and added back
  through a zero-initialised 1x1 conv + BN.

The two affinities are plain functions (``channel_affinity``, ``part_affinity``): they
are the ops that export turns into plugin nodes and the kernels implement.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from iaunet.core.plugin_contract import MASK_LOGIT
from iaunet.core.plugin_contract import part_relation_mask as contract_mask


def channel_affinity(tokens: torch.Tensor) -> torch.Tensor:
    """``softmax(X X^T) X`` over the rows of ``tokens`` (B, K, L), computed in FP32.

    The logits are unscaled and reach the thousands, beyond FP16's 65504, so the op
    leaves autocast, accumulates in FP32 and max-subtracts before the softmax. The
    result returns in the input's dtype.
    """
    fp32 = tokens.dtype == torch.float32  # casting only when needed keeps no-op Casts out of exported graphs
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        x = tokens if fp32 else tokens.float()
        logits = torch.matmul(x, x.transpose(1, 2))
        logits = logits - logits.amax(dim=-1, keepdim=True)
        out = torch.matmul(torch.softmax(logits, dim=-1), x)
    return out if fp32 else out.to(tokens.dtype)


def part_relation_mask(frames: int, parts: int, device=None) -> torch.Tensor:
    """The op contract's mask (``iaunet.core.plugin_contract.part_relation_mask``) as a
    boolean tensor: True where a pair of part nodes may NOT interact."""
    return torch.tensor(contract_mask(frames, parts), dtype=torch.bool, device=device)


def part_affinity(logits: torch.Tensor, frames: int, parts: int) -> torch.Tensor:
    """Row softmax of relation ``logits`` (B, N, N), N = frames * parts, with the pairs of
    ``part_relation_mask(frames, parts)`` excluded.

    The logits are first shifted by the row's largest UNMASKED logit (found with the
    masked entries replaced by the row minimum, so no huge constant is needed); masked
    entries then get the finite ``MASK_LOGIT`` below every shifted logit's 0. Their
    weight is exactly 0 in FP16 and FP32 for any finite logits, as in the authors' code.
    """
    mask = part_relation_mask(frames, parts, logits.device)
    unmasked_max = torch.where(mask, logits.amin(dim=-1, keepdim=True), logits).amax(dim=-1, keepdim=True)
    fill = torch.tensor(MASK_LOGIT, dtype=logits.dtype, device=logits.device)
    return torch.softmax(torch.where(mask, fill, logits - unmasked_max), dim=-1)


# The implementations the blocks call. Export swaps in versions that trace to plugin
# nodes (``affinity_ops``); everything else always uses the functions above.
_ACTIVE_OPS = {"channel": channel_affinity, "part": part_affinity}


@contextlib.contextmanager
def affinity_ops(channel=None, part=None):
    """Temporarily replace the channel and/or part affinity the IAU blocks call."""
    saved = dict(_ACTIVE_OPS)
    _ACTIVE_OPS.update({k: v for k, v in (("channel", channel), ("part", part)) if v is not None})
    try:
        yield
    finally:
        _ACTIVE_OPS.update(saved)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=True), nn.BatchNorm2d(cout))


class PartRelation(nn.Module):
    """The relation (``Wcompute``) and update (``Gconv``) over part nodes."""

    def __init__(self, channels: int):
        super().__init__()
        self.relation = _conv_bn(channels * 2, 1)
        self.update = nn.Sequential(nn.Conv2d(channels * 2, channels, 1), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))

    def relation_logits(self, nodes: torch.Tensor, global_node: torch.Tensor, n: int) -> torch.Tensor:
        """(B, N, C) nodes and (B, C) global node -> (B, N, N) relation logits.

        ``n`` is N as a Python int (frames * parts), so that export writes the repeat and
        the reshape with constant shapes instead of reading them from ``nodes`` at run time.
        """
        diff = (nodes.unsqueeze(2) - nodes.unsqueeze(1)).abs()            # B, N, N, C
        diff = diff.permute(0, 3, 1, 2)                                     # B, C, N, N
        glob = global_node[:, :, None, None].repeat(1, 1, n, n)
        return self.relation(torch.cat((diff, glob), 1)).reshape(-1, n, n)

    def forward(self, nodes: torch.Tensor, global_node: torch.Tensor, frames: int, parts: int):
        b, n, c = nodes.shape
        weights = _ACTIVE_OPS["part"](self.relation_logits(nodes, global_node, frames * parts), frames, parts)
        neighbours = torch.matmul(weights, nodes)
        joined = torch.cat((nodes, neighbours), 2).reshape(b * n, 2 * c, 1, 1)
        return self.update(joined).view(b, n, c)


class IAUBlock(nn.Module):
    """CIAU followed by S(T)IAU on frame-flattened features (B*T, C, H, W).

    Returns the updated features and the part maps (B*T, parts, H, W).
    """

    def __init__(self, channels: int, parts: int = 4):
        super().__init__()
        self.channels = channels
        self.parts = parts
        self.attention = _conv_bn(channels, parts)          # part maps (before sigmoid)
        self.reduce = nn.Conv2d(channels, channels // 2, 1)  # shared halving conv ("g")
        self.relate = PartRelation(channels // 2)
        self.channel_update = _conv_bn(channels, channels)   # W1, zero-initialised BN
        self.part_update = _conv_bn(channels, channels)      # W2, zero-initialised BN
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for bn in (self.channel_update[1], self.part_update[1]):
            nn.init.zeros_(bn.weight)
            nn.init.zeros_(bn.bias)

    def ciau(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // frames
        if frames == 1:
            tokens = x.reshape(b, c, h * w)
        else:  # (channel, frame) tokens, channel-major as in the reference
            tokens = x.reshape(b, frames, c, h * w).transpose(1, 2).reshape(b, c * frames, h * w)
        y = _ACTIVE_OPS["channel"](tokens)
        if frames != 1:
            y = y.reshape(b, c, frames, h * w).transpose(1, 2)
        y = y.reshape(bt, c, h, w)
        return x + self.channel_update(y)

    def siau(self, x: torch.Tensor, frames: int):
        bt, c, h, w = x.shape
        b = bt // frames
        maps = torch.sigmoid(self.attention(x))                              # B*T, P, H, W
        flat = x.reshape(bt, c, h * w)
        parts = torch.matmul(maps.reshape(bt, self.parts, h * w), flat.transpose(1, 2))  # B*T, P, C
        global_node = flat.reshape(b, frames, c, h * w).mean(dim=(1, 3))                # B, C
        nodes = torch.cat((parts.reshape(b, frames * self.parts, c), global_node.unsqueeze(1)), 1)
        nodes = self.reduce(nodes.transpose(1, 2).unsqueeze(3)).squeeze(3).transpose(1, 2)
        part_nodes, global_node = nodes[:, :-1], nodes[:, -1]                # B, T*P, C/2 ; B, C/2
        related = self.relate(part_nodes, global_node, frames, self.parts)  # B, T*P, C/2
        per_frame = related.reshape(b, frames, self.parts, c // 2).mean(2)   # B, T, C/2
        joined = torch.cat((per_frame, global_node.unsqueeze(1).repeat(1, frames, 1)), 2)
        update = self.part_update(joined.reshape(bt, c, 1, 1))
        return x + update, maps

    def forward(self, x: torch.Tensor, frames: int = 1):
        return self.siau(self.ciau(x, frames), frames)
