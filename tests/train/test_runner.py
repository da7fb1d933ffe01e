"""The PyTorch runner's FP16 mode, the GPU baseline of ``iaunet bench``, on the CPU."""
import numpy as np
import torch

from iaunet.train import create_model
from iaunet.train.checkpoint import save_checkpoint
from iaunet.train.runner import TorchRunner


def test_half_runs_the_model_in_fp16_and_returns_float32(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", create_model("iaunet_r18", num_classes=10, height=64, width=32).eval())
    images = (np.random.default_rng(0).random((3, 3, 64, 32)) * 255).astype(np.float32)
    full = TorchRunner.from_checkpoint(path).infer(images)
    half = TorchRunner.from_checkpoint(path, half=True)
    assert half.precision == "fp16" and {p.dtype for p in half.model.parameters()} == {torch.float16}
    out = half.infer(images)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    cosine = (out * full).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(full, axis=1)
    assert cosine.min() > 0.999
    assert np.abs(out - full).max() > 1e-6  # computed in FP16, not a float32 copy
