"""The one eval preprocessing, shared by training, export checks and the runtime.

numpy and Pillow only. An image becomes float32 RGB in 0..255, resized to the model's
(height, width) with the config's filter; mean/std normalisation is the model's job
(inside the ONNX graph, or ``iaunet.train.trainer.normalize`` in PyTorch).

Decoding rules (``to_rgb``), the same for a file, a PIL image and an array: the EXIF
orientation is applied (a phone's portrait JPEG stands upright); 16-bit grayscale keeps
its top 8 bits (value >> 8), where Pillow's own conversion would clip at 255; an alpha
channel is dropped (Pillow's RGBA -> RGB); grayscale and palette images become RGB.
"""
from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iaunet.core.errors import IAUnetError

RESIZE_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # integer grayscale wider than 8 bits


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image upright as its EXIF says, by the rules in the module docstring."""
    img = ImageOps.exif_transpose(img)
    if img.mode in WIDE_MODES:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        img = Image.fromarray((wide >> 8).astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(path) -> Image.Image:
    """Open an image as RGB; a missing, unreadable or corrupt file is an IAUnetError naming
    it. So is one Pillow refuses to decode: a header claiming more than twice
    ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb guard) or an oversized text or ICC
    chunk (its ``ValueError``): whatever the decoder raises is one unreadable image."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise IAUnetError(f"image {path} not found") from None
    except PermissionError:
        raise IAUnetError(f"cannot read image {path} (permission denied)") from None
    except IsADirectoryError:
        raise IAUnetError(f"image {path} is a folder; expected a JPEG or PNG file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IAUnetError(f"cannot read image {path}: a symbolic link loop") from None
        if isinstance(exc, UnidentifiedImageError) or exc.errno is None:
            raise IAUnetError(f"corrupt image {path}: {exc}; expected a readable JPEG or PNG") from None
        raise IAUnetError(f"cannot read image {path} ({exc.strerror or exc})") from None
    except Image.DecompressionBombError as exc:
        raise IAUnetError(f"unreadable image {path}: {exc}") from None
    except SyntaxError as exc:
        raise IAUnetError(f"corrupt image {path}: {exc}; expected a readable JPEG or PNG") from None
    except Exception as exc:  # Pillow's decoders raise ValueError, struct.error, IndexError... on bad data
        raise IAUnetError(f"corrupt image {path}: {type(exc).__name__}: {str(exc)[:200]}; expected a readable "
                          "JPEG or PNG") from None


def resize_filter(name: str):
    if name not in RESIZE_FILTERS:
        raise IAUnetError(f"unknown resize filter {name!r}; expected one of {sorted(RESIZE_FILTERS)}")
    return RESIZE_FILTERS[name]


def to_model_array(img: Image.Image, height: int, width: int, filter_name: str = "bilinear") -> np.ndarray:
    """Resize an RGB image to (height, width) and return float32 CHW in 0..255."""
    if img.size != (width, height):
        img = img.resize((width, height), resize_filter(filter_name))
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()


def preprocess_file(path, height: int, width: int, filter_name: str = "bilinear") -> np.ndarray:
    """Path -> float32 CHW 0..255 array, exactly as the model expects before normalisation."""
    return to_model_array(load_image(path), height, width, filter_name)


def clip_frame_indices(length: int, frames: int) -> np.ndarray:
    """The frames an evaluation clip takes from a tracklet of ``length``: the middle of
    ``frames`` equal chunks (repeats frames when the tracklet is shorter)."""
    edges = np.linspace(0, length, frames + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(int), length - 1)


def preprocess_clip(paths, frames: int, height: int, width: int, filter_name: str = "bilinear") -> np.ndarray:
    """Tracklet frame paths -> float32 (frames, 3, H, W) in 0..255."""
    return np.stack([preprocess_file(paths[k], height, width, filter_name)
                     for k in clip_frame_indices(len(paths), frames)])


def load_inputs(sources: list, preprocess: dict, desc: str = "reading", progress: bool = True) -> np.ndarray:
    """Preprocess sources (paths, or tuples of frame paths for a video model) into the graph's
    input layout, float32 0..255; ``preprocess`` is the model's spec (height, width,
    resize_filter, frames)."""
    from iaunet.core.progress import Progress
    h, w, f = preprocess["height"], preprocess["width"], preprocess["resize_filter"]
    bar = Progress(len(sources), desc, "img", enabled=progress)
    out = []
    for src in sources:
        if isinstance(src, (tuple, list)):
            out.append(preprocess_clip(src, preprocess["frames"], h, w, f))
        else:
            out.append(preprocess_file(src, h, w, f))
        bar.update()
    bar.close()
    return np.stack(out).astype(np.float32)
