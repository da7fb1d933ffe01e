"""Calibration (and triage) inputs: the training split of a data set or any folder of crops, read
with exactly the runtime's preprocessing (``iaunet.core.preprocess``), never query or gallery."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.preprocess import load_inputs  # noqa: F401 (the calibration inputs' reader, for calib and triage)
from iaunet.core.validate import require_same_variant

EVAL_SPLITS = {"query", "bounding_box_test", "bbox_test", "gallery", "test"}
LAYOUT_MARKERS = ("bounding_box_train", "bbox_train", "list_train.txt")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def calibration_sources(data, video: bool) -> list:
    """Training samples of a data set folder, or the images of a plain folder of crops.
    Returns paths (image models) or tuples of frame paths (video models)."""
    root = Path(data)
    if not root.is_dir():
        raise IAUnetError(f"image folder {root} not found; expected a data set root (its training split is read) or a folder of crops")
    if root.name in EVAL_SPLITS:
        raise IAUnetError(f"{root} is an evaluation split; expected training images "
                          "(a data set root, whose training split is used, or a folder of crops)")
    if any((root / m).exists() for m in LAYOUT_MARKERS):
        from iaunet.train.data.datasets import open_dataset
        ds = open_dataset(root)
        require_same_variant("video" if video else "image", ds.video, "the model", root)
        return [s.paths if video else s.paths[0] for s in ds.train]
    if video:
        raise IAUnetError(f"{root} is a plain folder; a video model reads clips from a MARS-layout folder (bbox_train/)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "masks" not in p.parts)
    if not files:
        raise IAUnetError(f"{root} holds no images (.jpg/.png)")
    return files


def pick(sources: list, count: int, seed: int = 0) -> list:
    """A deterministic subset of ``count`` sources (all of them when fewer)."""
    if count >= len(sources):
        return list(sources)
    idx = np.sort(np.random.default_rng(seed).choice(len(sources), count, replace=False))
    return [sources[i] for i in idx]
