"""IAUnet for image and video re-ID, and the names it is registered under.

``forward_features`` returns the pooled backbone feature and the part maps;
the head is BNNeck (BatchNorm1d) and a linear classifier. As in torchreid, eval mode
returns the BNNeck embedding (N x D), the tensor export and the runtime use; train
mode returns ``(logits, feature, part_maps)``: classifier logits over the BNNeck
embedding, the pooled pre-BN feature for the triplet loss (BNNeck, Luo et al. 2019),
and the two IAU blocks' (N*T, parts, h, w) maps for the part-mask loss.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from iaunet.core.errors import IAUnetError
from iaunet.train.backbones import ResNet, load_pretrained
from iaunet.train.config import ModelConfig
from iaunet.train.iau import IAUBlock
from iaunet.train.registry import register_model


class IAUnet(nn.Module):
    """ResNet with an IAU block after layer2 and layer3, BNNeck head.

    Image input: (N, 3, H, W) normalised. Video input: (N, T, 3, H, W); frames share
    the 2D backbone, the blocks relate them, and features are averaged over time.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.backbone, config.last_stride)
        c2, c3, c4 = self.backbone.channels[1:]
        if config.embedding_dim != c4:
            raise IAUnetError(f"embedding_dim {config.embedding_dim} does not match {config.backbone}'s {c4} channels")
        self.iau2 = IAUBlock(c2, config.parts)
        self.iau3 = IAUBlock(c3, config.parts)
        self.bnneck = nn.BatchNorm1d(c4)
        self.classifier = nn.Linear(c4, config.num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    @property
    def is_video(self) -> bool:
        return self.config.variant == "video"

    def forward_features(self, images: torch.Tensor):
        """Pooled features (N, D) and the part maps of both blocks."""
        frames = 1
        if self.is_video:
            n, frames = images.shape[0], int(images.shape[1])  # clip length is static in a graph
            images = images.reshape(n * frames, *images.shape[2:])
        net = self.backbone
        x = net.layer1(net.stem(images))
        x, maps2 = self.iau2(net.layer2(x), frames)
        x, maps3 = self.iau3(net.layer3(x), frames)
        x = net.layer4(x)
        pooled = x.mean(dim=(2, 3))
        if frames != 1 or self.is_video:
            pooled = pooled.reshape(-1, frames, pooled.shape[1]).mean(1)
        return pooled, [maps2, maps3]

    def forward(self, images: torch.Tensor):
        pooled, maps = self.forward_features(images)
        embedding = self.bnneck(pooled)
        if not self.training:
            return embedding
        return self.classifier(embedding), pooled, maps


def _build(defaults: ModelConfig, pretrained: str | None = None, **overrides) -> IAUnet:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise IAUnetError(f"unknown model options {unknown}; expected some of {sorted(fields)}")
    config = dataclasses.replace(defaults, **overrides)
    if config.variant == "video" and config.frames < 1:
        raise IAUnetError(f"video model needs frames >= 1, got {config.frames}")
    model = IAUnet(config)
    if pretrained:
        load_pretrained(model.backbone, pretrained)
    return model


@register_model
def iaunet_r50(**kw) -> IAUnet:
    return _build(ModelConfig(name="iaunet_r50"), **kw)


@register_model
def iaunet_r34(**kw) -> IAUnet:
    return _build(ModelConfig(name="iaunet_r34", backbone="resnet34", embedding_dim=512), **kw)


@register_model
def iaunet_r18(**kw) -> IAUnet:
    return _build(ModelConfig(name="iaunet_r18", backbone="resnet18", embedding_dim=512), **kw)


@register_model
def iaunet_video_r50(**kw) -> IAUnet:
    return _build(ModelConfig(name="iaunet_video_r50", variant="video", frames=4), **kw)


@register_model
def iaunet_video_r18(**kw) -> IAUnet:
    return _build(ModelConfig(name="iaunet_video_r18", variant="video", backbone="resnet18",
                              embedding_dim=512, frames=4), **kw)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm a random affine and running statistics (seeded), in eval mode: a
    fresh model's zero-initialised update BNs make the IAU blocks an identity, so timings and
    numerics checks of an untrained model would skip their work."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model.eval()
