"""Training stage: IAUnet (image and video), IAU blocks, backbones, data readers, the
synthetic generator, sampler, losses, trainer, CMC/mAP evaluation and checkpoints.

The public names below load lazily, so ``iaunet.train.options`` and
``iaunet.train.data.synth`` import without torch; touching ``iaunet.train.create_model``
and friends imports it.
"""
import importlib

_PUBLIC = {
    "ModelConfig": "iaunet.train.config",
    "create_model": "iaunet.train.registry",
    "list_models": "iaunet.train.registry",
    "register_model": "iaunet.train.registry",
    "load_checkpoint": "iaunet.train.checkpoint",
    "save_checkpoint": "iaunet.train.checkpoint",
    "evaluate_rank": "iaunet.train.metrics",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
