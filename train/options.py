"""Every training option in one place: its default, its help line and its allowed range.

``iaunet train`` builds its arguments from these fields (``iaunet.cli.train``), and
``TrainOptions`` checks the same ranges when built from Python, so a default or a range
is written once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from iaunet.core.errors import IAUnetError
from iaunet.core.validate import (COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, SEED, WORKERS, Bounded,
                                  check, require_memory)

# A ResNet keeps at least this many times its input's floats for the backward pass (the stem
# alone: 64 channels at half resolution = 16 x H x W per image, before and after BatchNorm).
ACTIVATION_FACTOR = 16


def option(default, help: str, rule: Bounded | None = None, **extra):
    """A dataclass field that is also a command-line option."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "rule": rule, **extra})
    return field(default=default, metadata={"help": help, "rule": rule, **extra})


@dataclass
class TrainOptions:
    data: str = field(metadata={"cli": False})
    output: str = field(metadata={"cli": False})
    model: str = option("iaunet_r50", "registered model name (iaunet_r50, iaunet_r34, iaunet_r18, iaunet_video_r50, "
                                      "iaunet_video_r18)")
    epochs: int = option(60, "training epochs", COUNT)
    height: int = option(256, "input height in pixels (a multiple of 16)", Bounded(int, 16))
    width: int = option(128, "input width in pixels (a multiple of 16)", Bounded(int, 16))
    frames: int = option(4, "clip length of video models", COUNT)
    batch_size: int = option(32, "images (clips) per batch: P identities x K instances", COUNT)
    num_instances: int = option(4, "K: images per identity in a batch (divides --batch-size)", Bounded(int, 2))
    lr: float = option(3.5e-4, "peak learning rate of Adam", POSITIVE)
    weight_decay: float = option(5e-4, "Adam weight decay", NON_NEGATIVE_FLOAT)
    warmup_epochs: int = option(10, "epochs of linear warm-up from 1%% of --lr (0: none)", NON_NEGATIVE)
    milestones: list = option([40, 70], "epochs at which the learning rate is multiplied by --gamma", COUNT,
                              nargs="+")
    gamma: float = option(0.1, "learning-rate factor at each milestone", FRACTION)
    margin: float = option(0.3, "batch-hard triplet margin", NON_NEGATIVE_FLOAT)
    mask_weight: float = option(0.5, "weight of the part-mask loss (0 disables it)", NON_NEGATIVE_FLOAT)
    label_smooth: float = option(0.1, "label smoothing of the cross entropy", Bounded(float, 0, 1, high_open=True))
    pretrained: str | None = option(None, "local torchvision ResNet state dict for the backbone (never downloaded)",
                                    metavar="PTH")
    resume: str | None = option(None, "last.pt of an interrupted run, to continue it", metavar="PT")
    seed: int = option(0, "random seed", SEED)
    workers: int = option(0, "data-loading worker processes (0: load in the main process)", WORKERS)
    eval_every: int = option(0, "evaluate on query/gallery every N epochs (0: never)", NON_NEGATIVE)
    amp: bool = option(True, "mixed precision on CUDA", flag="--no-amp")
    progress: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self):
        for f in dataclasses.fields(self):
            rule = f.metadata.get("rule")
            value = getattr(self, f.name)
            if rule is None or value is None:
                continue
            name = "--" + f.name.replace("_", "-")
            if isinstance(value, list):
                setattr(self, f.name, [check(name, v, rule) for v in value])
            else:
                setattr(self, f.name, check(name, value, rule))
        for name in ("height", "width"):
            if getattr(self, name) % 16:
                raise IAUnetError(f"--{name} {getattr(self, name)} is not a multiple of 16; ResNet's five "
                                  "stride-2 stages (last stride 1) need it")
        if self.batch_size % self.num_instances:
            raise IAUnetError(f"--batch-size {self.batch_size} is not divisible by --num-instances "
                              f"{self.num_instances}; a P x K batch needs it")
        self.require_memory()

    def require_memory(self, frames: int = 1) -> None:
        """Refuse sizes whose training batch cannot fit in this machine's memory (``frames``
        per sample for video data), before anything is read or built."""
        clips = f" x {frames} frames" if frames > 1 else ""
        require_memory(f"training batches of {self.batch_size}{clips} x 3 x {self.height} x {self.width} "
                       f"(--batch-size{' x --frames' if clips else ''} x 3 x --height x --width)",
                       self.batch_size * frames * 3 * self.height * self.width * 4 * ACTIVATION_FACTOR)


def cli_fields() -> list:
    """The fields ``iaunet train`` exposes as options, in declaration order."""
    return [f for f in dataclasses.fields(TrainOptions) if f.metadata.get("cli", True)]
