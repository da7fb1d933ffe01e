"""Train-time augmentation and the eval transform, on numpy arrays (CHW, 0..255).

The eval transform is ``iaunet.core.preprocess`` itself (resize with the config's filter),
so export checks and the runtime feed the model exactly what evaluation fed it. Train
transforms apply the same resize, then flip, pad-and-crop and random erasing; flip and
crop move the part masks with the image.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from iaunet.core.preprocess import load_image, resize_filter, to_model_array
from iaunet.core.errors import IAUnetError

PARTS = 4


def load_masks(path, height: int, width: int) -> np.ndarray:
    """Label-map PNG -> float32 (4, H, W) binary masks (head, upper, lower, shoes)."""
    try:
        with Image.open(path) as img:
            labels = np.asarray(img.convert("L").resize((width, height), Image.NEAREST))
    except (OSError, SyntaxError) as exc:
        raise IAUnetError(f"corrupt mask {path}: {exc}; expected a one-channel PNG label map") from None
    return np.stack([(labels == k + 1) for k in range(PARTS)]).astype(np.float32)


class EvalTransform:
    def __init__(self, height: int, width: int, filter_name: str = "bilinear"):
        resize_filter(filter_name)
        self.height, self.width, self.filter_name = height, width, filter_name

    def __call__(self, path) -> np.ndarray:
        return to_model_array(load_image(path), self.height, self.width, self.filter_name)


class TrainTransform:
    """Resize, random flip, pad 10 + random crop, random erasing (Zhong et al. 2020)."""

    def __init__(self, height, width, filter_name="bilinear", flip=0.5, pad=10, erase=0.5,
                 mean=(124.0, 116.0, 104.0)):
        self.eval = EvalTransform(height, width, filter_name)
        self.flip, self.pad, self.erase = flip, pad, erase
        self.mean = np.asarray(mean, np.float32)[:, None, None]

    def __call__(self, path, mask_path, rng: np.random.Generator):
        img = self.eval(path)
        masks = load_masks(mask_path, self.eval.height, self.eval.width) if mask_path else None
        stack = img if masks is None else np.concatenate([img, masks])
        if rng.random() < self.flip:
            stack = stack[:, :, ::-1]
        stack = self._pad_crop(stack, rng)
        img, masks = stack[:3].copy(), (stack[3:].copy() if masks is not None else None)
        if rng.random() < self.erase:
            self._erase(img, rng)
        return img, masks

    def _pad_crop(self, stack, rng):
        if not self.pad:
            return stack
        c, h, w = stack.shape
        padded = np.pad(stack, ((0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        y, x = rng.integers(0, 2 * self.pad + 1, 2)
        return padded[:, y:y + h, x:x + w]

    def _erase(self, img, rng, area=(0.02, 0.4), ratio=0.3):
        _, h, w = img.shape
        for _ in range(100):
            target = rng.uniform(*area) * h * w
            aspect = rng.uniform(ratio, 1 / ratio)
            eh, ew = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if 0 < eh < h and 0 < ew < w:
                y, x = rng.integers(0, h - eh), rng.integers(0, w - ew)
                img[:, y:y + eh, x:x + ew] = self.mean
                return
