"""``read_batches``: batches come out in order, the next batch decodes while the caller
works on the current one, and unreadable items stop the run or are reported and left out.
And why the runtime does not decode JPEGs at reduced size (Pillow's ``draft``)."""
import threading
import time

import numpy as np
import pytest
from PIL import Image

from iaunet.core.errors import IAUnetError
from iaunet.core.preprocess import load_image, to_model_array
from iaunet.runtime import images
from iaunet.runtime.model_card import ModelCard

CARD = ModelCard(name="t", variant="image", height=4, width=2, frames=0, embedding_dim=8,
                 resize_filter="bilinear", model_id="")


@pytest.fixture
def slow_decode(monkeypatch):
    """``to_sample`` replaced by one that takes ``item`` seconds (an item is its duration,
    or an exception to raise) and records when each decode began."""
    started, lock = {}, threading.Lock()

    def fake(item, card, what):
        index = int(what.split()[-1])
        with lock:
            started[index] = time.monotonic()
        if isinstance(item, Exception):
            raise item
        time.sleep(item)
        return np.full(card.sample_shape, index, np.float32)
    monkeypatch.setattr(images, "to_sample", fake)
    return started


def test_batches_keep_their_order_whatever_finishes_first(slow_decode):
    durations = [0.06, 0.0, 0.04, 0.0, 0.02, 0.0, 0.0]  # early items finish last
    got = list(images.read_batches(durations, CARD, batch=3, threads=3))
    assert [len(b) for b in got] == [3, 3, 1]
    assert [int(s[0, 0, 0]) for b in got for s in b] == list(range(7))


def test_the_next_batch_decodes_while_the_caller_works(monkeypatch):
    """Batch 0's items finish only once batch 1's items have begun decoding: were batch 1
    submitted after batch 0 is handed out, batch 0 would wait out its timeout and fail."""
    begun = {i: threading.Event() for i in range(4)}

    def fake(item, card, what):
        index = int(what.split()[-1])
        begun[index].set()
        if index < 2 and not (begun[2].wait(5) and begun[3].wait(5)):
            raise AssertionError("batch 1 had not begun while batch 0 was decoding")
        return np.full(card.sample_shape, index, np.float32)
    monkeypatch.setattr(images, "to_sample", fake)
    got = list(images.read_batches([None] * 4, CARD, batch=2, threads=4))
    assert [int(s[0, 0, 0]) for b in got for s in b] == [0, 1, 2, 3]


def test_unreadable_items_stop_the_run_or_are_reported(slow_decode):
    items = [0.0, IAUnetError("input 1 is corrupt"), 0.0, IAUnetError("input 3 is corrupt")]
    with pytest.raises(IAUnetError, match="input 1 is corrupt"):
        list(images.read_batches(items, CARD, batch=2))
    reported = []
    got = list(images.read_batches(items, CARD, batch=2, on_error=lambda i, e: reported.append((i, str(e)))))
    assert [int(s[0, 0, 0]) for b in got for s in b] == [0, 2]
    assert reported == [(1, "input 1 is corrupt"), (3, "input 3 is corrupt")]


def test_reduced_size_jpeg_decoding_would_change_the_pixels(tmp_path):
    """Pillow's ``draft`` decodes a JPEG at 1/2, 1/4 or 1/8 scale in the DCT; resizing that
    to the model's size does not give the pixels of a full decode resized, which training
    sees. This is why ``images`` decodes in full and overlaps decoding with inference instead."""
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)  # 512 x 256, the size of a high-resolution crop
    full = to_model_array(load_image(path), 256, 128, "bilinear")
    with Image.open(path) as img:
        img.draft("RGB", (128, 256))
        assert img.size == (128, 256)  # decoded at half size
        drafted = to_model_array(img.convert("RGB"), 256, 128, "bilinear")
    assert np.abs(drafted - full).max() > 40  # tens of grey levels apart, not rounding (84 here)


def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(path, side=40000):
    """A PNG whose header claims ``side`` x ``side`` pixels (a few hundred bytes on disk)."""
    import struct
    import zlib
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
    return path


def iccp_png(path, size=4 << 20):
    """A valid 8 x 4 PNG with an ICC profile chunk that inflates to ``size`` bytes."""
    import io
    import zlib
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 10, 10)).save(buffer, format="PNG")
    data = buffer.getvalue()
    at = 8 + 25  # after the signature and IHDR
    iccp = _chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(bytes(size)))
    path.write_bytes(data[:at] + iccp + data[at:])
    return path


@pytest.mark.parametrize("make", [bomb_png, iccp_png], ids=["decompression-bomb", "oversized-iccp"])
def test_images_pillow_refuses_are_unreadable_images(tmp_path, make):
    path = make(tmp_path / "x.png")
    with pytest.raises(IAUnetError, match=r"x\.png"):
        load_image(path)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (8, 4)).save(ok)
    reported = []
    got = list(images.read_batches([ok, path, ok], CARD, batch=4, on_error=lambda i, e: reported.append(i)))
    assert reported == [1] and sum(len(b) for b in got) == 2


def test_a_symlink_loop_in_a_folder_is_listed_so_it_is_reported(tmp_path):
    Image.new("RGB", (8, 4)).save(tmp_path / "a.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "gone.jpg").symlink_to("missing.jpg")
    found = images.list_images([tmp_path])
    assert [p.name for p in found] == ["a.jpg", "gone.jpg", "loop.jpg"]
    with pytest.raises(IAUnetError, match=r"cannot read image .*loop\.jpg: a symbolic link loop"):
        load_image(tmp_path / "loop.jpg")
    with pytest.raises(IAUnetError, match=r"loop\.jpg is a symbolic link that leads nowhere"):
        images.list_images([tmp_path / "loop.jpg"])


def test_a_file_named_twice_is_listed_once(tmp_path, iaunet_notes):
    Image.new("RGB", (8, 4)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 4)).save(tmp_path / "b.jpg")
    found = images.list_images([tmp_path / "b.jpg", tmp_path / "b.jpg", tmp_path, tmp_path / "." / "a.jpg"])
    assert [p.name for p in found] == ["b.jpg", "a.jpg"]
    assert any("3 image(s) named more than once, read once" in note for note in iaunet_notes)
