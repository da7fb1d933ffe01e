"""Training stage: IAUnet (image and video), IAU blocks, backbones, data readers, the
synthetic generator, sampler, losses, trainer, CMC/mAP evaluation and checkpoints.

The public names below load lazily, so ``train.cli`` and ``train.data.synth`` import
without torch; touching ``train.create_model`` and friends imports it.
"""
import importlib

_PUBLIC = {
    "ModelConfig": "train.config",
    "create_model": "train.registry",
    "list_models": "train.registry",
    "register_model": "train.registry",
    "load_checkpoint": "train.checkpoint",
    "save_checkpoint": "train.checkpoint",
    "evaluate_rank": "train.metrics",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
