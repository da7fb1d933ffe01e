"""The runtime's inputs equal training's evaluation transform, pixel for pixel, for files,
PIL images and arrays of odd sizes and modes."""
import numpy as np
import pytest
from PIL import Image

from iaunet.core.preprocess import to_rgb
from iaunet.runtime.images import to_sample
from iaunet.runtime.model_card import ModelCard
from iaunet.train.data.transforms import EvalTransform

CARD = ModelCard(name="t", variant="image", height=64, width=32, frames=0, embedding_dim=8,
                 resize_filter="bilinear", model_id="")


def _pixels(seed, h, w, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels) if channels else (h, w), dtype=np.uint8)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    files = {}
    Image.fromarray(_pixels(0, 91, 37)).save(root / "rgb.png"); files["rgb"] = root / "rgb.png"
    Image.fromarray(_pixels(1, 50, 23, 0), "L").save(root / "gray.png"); files["gray"] = root / "gray.png"
    Image.fromarray(_pixels(2, 70, 40, 4), "RGBA").save(root / "rgba.png"); files["rgba"] = root / "rgba.png"
    Image.fromarray(_pixels(3, 130, 61)).save(root / "q.jpg", quality=90); files["jpeg"] = root / "q.jpg"
    Image.fromarray(_pixels(4, 33, 17)).convert("P").save(root / "pal.png"); files["palette"] = root / "pal.png"
    return root, files


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "jpeg", "palette"])
def test_file_pil_and_array_give_trainings_pixels(odd_images, kind):
    path = odd_images[1][kind]
    expected = EvalTransform(CARD.height, CARD.width, CARD.resize_filter)(path)
    assert expected.shape == (3, 64, 32) and expected.dtype == np.float32
    np.testing.assert_array_equal(to_sample(str(path), CARD), expected)
    with Image.open(path) as img:
        np.testing.assert_array_equal(to_sample(img, CARD), expected)
        raw = np.asarray(img)
    if raw.ndim == 3 and raw.shape[2] in (3, 4) or raw.ndim == 2 and kind == "gray":
        np.testing.assert_array_equal(to_sample(raw, CARD), expected)


def test_sixteen_bit_grayscale_keeps_its_top_eight_bits(tmp_path):
    values = np.arange(0, 65536, 257, dtype=np.uint16)[:240].reshape(16, 15)  # 0, 257, ..., spans the range
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # Pillow reads it as wide integers
    card = ModelCard(**{**CARD.__dict__, "height": 16, "width": 15, "props": {}})
    sample = to_sample(path, card)
    expected = np.repeat((values >> 8).astype(np.float32)[None], 3, 0)
    np.testing.assert_array_equal(sample, expected)
    np.testing.assert_array_equal(EvalTransform(16, 15)(path), expected)
    assert sample.max() == 239  # Pillow's own RGB conversion would have clipped nearly all of it to 255


def test_exif_orientation_is_applied(tmp_path):
    """A sensor-oriented 20 x 40 JPEG tagged 'rotate 90 CW' (orientation 6) is upright 40 x 20."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # a white band along the stored image's left edge
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    card = ModelCard(**{**CARD.__dict__, "height": 40, "width": 20, "props": {}})
    sample = to_sample(path, card)
    assert sample.shape == (3, 40, 20)  # no resize needed: the upright image is already 40 x 20
    assert sample[:, :10].mean() > 240 and sample[:, -10:].mean() < 15  # the band is now along the top
    np.testing.assert_array_equal(sample, EvalTransform(40, 20)(path))
    with Image.open(path) as img:
        np.testing.assert_array_equal(to_sample(img, card), sample)
        assert to_rgb(img).size == (20, 40)


def test_video_clips_take_the_evaluation_frames(odd_images):
    from iaunet.core.preprocess import preprocess_clip
    card = ModelCard(**{**CARD.__dict__, "variant": "video", "frames": 3, "props": {}})
    frames = [odd_images[1][k] for k in ("rgb", "gray", "rgba", "jpeg", "palette")]
    np.testing.assert_array_equal(to_sample(frames, card), preprocess_clip(frames, 3, 64, 32))


@pytest.mark.parametrize("item, message", [
    (np.zeros((4, 4, 3), np.float64), "float64"),
    (np.zeros((3, 8, 8), np.float32), "expected uint8"),
    (42, "is a int"),
    ("/nonexistent/x.jpg", "not found"),
])
def test_bad_items_are_refused_by_name(item, message):
    from iaunet.core.errors import IAUnetError
    with pytest.raises(IAUnetError, match=message):
        to_sample(item, CARD, "input 3")
