"""What ``Embedder.embed`` accepts, turned into the model's input samples.

An item is a file path, a PIL image, a uint8 H x W x 3 RGB array (or H x W grayscale),
or a ready float32 sample (3 x H x W, 0..255). For video models an item is a clip: a
list of such frames, of which the model's T are taken as in evaluation
(``clip_frame_indices``), or a ready T x 3 x H x W array. Every path goes through the
core's one preprocessing, so a file, the PIL image of it and its pixels as an array give
the same sample as training's evaluation transform.

``list_images`` turns the command line's files and folders into the image files to read.

``read_batches`` decodes on a small thread pool, a batch ahead of the consumer, so JPEG
decoding overlaps inference. (Pillow's reduced-size JPEG decoding, ``draft``, is not
used: its pixels differ from a full decode followed by the resize training does.)
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from iaunet.core.errors import IAUnetError
from iaunet.core.log import get_logger
from iaunet.core.preprocess import clip_frame_indices, load_image, to_model_array, to_rgb
from iaunet.runtime.model_card import ModelCard

DEFAULT_READ_THREADS = 4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
log = get_logger("runtime")


def _leads_nowhere(path: Path) -> bool:
    """A symbolic link that is a loop or whose target is gone."""
    return path.is_symlink() and not path.exists()


def _folder_images(folder: Path) -> list:
    """A folder's image files, sorted, not recursive. A link among them that leads nowhere
    (a loop, a dangling target) is listed too, so that reading it fails as any unreadable
    image does: said, or skipped and counted with --skip-bad, never dropped in silence."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                    and (p.is_file() or _leads_nowhere(p)))
    if not images:
        raise IAUnetError(f"folder {folder} holds no images; expected {', '.join(IMAGE_SUFFIXES)} files")
    return images


def list_images(inputs) -> list:
    """Image files from files and folders, in order; a file named twice (``embed q q``, or a
    folder and a file in it) is listed once, with a note."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += _folder_images(item)
        elif item.is_file():
            found.append(item)
        elif _leads_nowhere(item):
            raise IAUnetError(f"{item} is a symbolic link that leads nowhere (a loop, or its target is gone); "
                              "expected an image file or a folder of images")
        else:
            raise IAUnetError(f"{item} not found; expected an image file or a folder of images")
    unique, again = {}, []
    for path in found:
        key = os.path.realpath(path)
        if key in unique:
            again.append(path)
        else:
            unique[key] = path
    if again:
        log.info("note: %d image(s) named more than once, read once (first: %s)", len(again), again[0])
    return list(unique.values())


def _frame(item, card: ModelCard, what: str) -> np.ndarray:
    size = (card.height, card.width, card.resize_filter)
    if isinstance(item, (str, Path)):
        return to_model_array(load_image(item), *size)
    if isinstance(item, Image.Image):
        return to_model_array(to_rgb(item), *size)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8 and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
            return to_model_array(to_rgb(Image.fromarray(item)), *size)
        if item.dtype == np.float32 and item.shape == (3, card.height, card.width):
            return item
        raise IAUnetError(f"{what} is an array of {item.dtype} {item.shape}; expected uint8 HxWx3 RGB or float32 "
                          f"3x{card.height}x{card.width} in 0..255")
    raise IAUnetError(f"{what} is a {type(item).__name__}; expected a path, a PIL image or a numpy array")


def to_sample(item, card: ModelCard, what: str = "input") -> np.ndarray:
    """One item -> float32 sample of ``card.sample_shape``."""
    if card.variant != "video":
        return _frame(item, card, what)
    if isinstance(item, np.ndarray) and item.dtype == np.float32 and item.shape == card.sample_shape:
        return item
    if not isinstance(item, (list, tuple)) or not item:
        raise IAUnetError(f"{what}: a video model takes clips (a list of frames or a float32 "
                          f"{'x'.join(map(str, card.sample_shape))} array), got {type(item).__name__}")
    return np.stack([_frame(item[k], card, f"{what} frame {k}") for k in clip_frame_indices(len(item), card.frames)])


def read_batches(items, card: ModelCard, batch: int, threads: int = DEFAULT_READ_THREADS, on_error=None):
    """Yield float32 batches of up to ``batch`` samples, in order. The next batch's items
    are decoded on ``threads`` threads while the caller runs the current one. With
    ``on_error``, an item that fails is left out and ``on_error(index, error)`` is called
    (a batch may then come out short, or be skipped when nothing in it was readable)."""
    starts = range(0, len(items), batch)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        def submit(start):
            return [(start + k, pool.submit(to_sample, item, card, f"input {start + k}"))
                    for k, item in enumerate(items[start:start + batch])]
        pending = submit(0) if items else []
        for start in starts:
            current, pending = pending, submit(start + batch) if start + batch < len(items) else []
            samples = []
            for index, future in current:
                try:
                    samples.append(future.result())
                except IAUnetError as error:
                    if on_error is None:
                        raise
                    on_error(index, error)
            if samples:
                yield np.stack(samples)
