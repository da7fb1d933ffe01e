"""The model config that travels with the weights (checkpoint, ONNX metadata, engine sidecar)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from iaunet.core.errors import IAUnetError

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it correctly.

    ``mean``/``std`` apply to RGB input in 0..255. ``frames`` is the clip length of the
    video variant (0 for image models). ``resize_filter`` is the PIL filter name of the
    one eval transform that export and the runtime reproduce.
    """
    name: str = "iaunet_r50"
    variant: str = "image"  # "image" or "video"
    backbone: str = "resnet50"
    num_classes: int = 751
    height: int = 256
    width: int = 128
    parts: int = 4
    frames: int = 0
    embedding_dim: int = 2048
    last_stride: int = 1
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    resize_filter: str = "bilinear"
    channel_order: str = "RGB"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise IAUnetError(f"model config has unknown fields {unknown}; expected only {sorted(known)}")
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)
