"""The PyTorch runner: a model (or checkpoint) behind the runtime's ``Runner`` interface,
so evaluation, export checks and parity feed PyTorch exactly as they feed ONNX Runtime
and TensorRT: float32 0..255 RGB in (normalised here, as the ONNX graph does itself),
float32 embeddings out, eval mode, no autograd. ``half=True`` runs the model in FP16
(``model.half()``, in place; the channel affinity still computes in FP32,
``iau.channel_affinity``): the PyTorch row ``iaunet bench`` compares its GPU rows with.
"""
from __future__ import annotations

import numpy as np
import torch

from iaunet.runtime.runners import Runner


class TorchRunner(Runner):
    """``model`` in eval mode on ``device``; ``flip`` averages with the mirrored input
    (test-time augmentation, an option of ``iaunet eval``); ``half`` converts it to FP16 in place."""

    def __init__(self, model, config, device="cpu", flip: bool = False, half: bool = False):
        from iaunet.train.trainer import normalize
        frames = (config.frames,) if config.variant == "video" else ()
        super().__init__((*frames, 3, config.height, config.width), config.embedding_dim)
        self.model, self.config, self.device, self.flip = model.eval(), config, torch.device(device), flip
        self.dtype = torch.float16 if half else torch.float32
        if half:
            self.model.half()
        self._normalize = normalize
        self.name = f"pytorch-{self.device.type}"

    @property
    def precision(self) -> str:
        return "fp16" if self.dtype == torch.float16 else "fp32"

    @classmethod
    def from_checkpoint(cls, path, device="cpu", flip: bool = False, half: bool = False) -> "TorchRunner":
        from iaunet.train.checkpoint import load_checkpoint
        model, config = load_checkpoint(path)
        return cls(model.to(device), config, device, flip, half)

    @torch.no_grad()
    def _infer(self, images: np.ndarray) -> np.ndarray:
        x = self._normalize(torch.from_numpy(images).to(self.device), self.config).to(self.dtype)
        out = self.model(x)
        if self.flip:
            out = (out + self.model(x.flip(-1))) / 2
        return out.float().cpu().numpy()
