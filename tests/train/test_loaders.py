"""P x K sampling and the augmentations that must move masks with the image."""
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from iaunet.train.data.datasets import Sample
from iaunet.train.data.loaders import IdentitySampler, clip_indices
from iaunet.train.data.transforms import TrainTransform


def test_identity_sampler_batches_are_p_by_k():
    samples = [Sample((f"{i}",), pid, 0) for pid in range(10) for i in range(pid % 3 + 2)]
    sampler = IdentitySampler(samples, batch_size=8, num_instances=2, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % 8 == 0 and order
    for start in range(0, len(order), 8):
        counts = Counter(samples[i].pid for i in order[start:start + 8])
        assert len(counts) == 4 and set(counts.values()) == {2}
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_identity_sampler_splits_batches_across_ranks():
    samples = [Sample(("x",), pid, 0) for pid in range(16) for _ in range(4)]
    ranks = [list(IdentitySampler(samples, 8, 4, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not set(ranks[0]) & set(ranks[1])


@pytest.mark.parametrize("length", [1, 5, 17])
def test_clip_indices(length):
    rng = np.random.default_rng(0)
    for picks in (clip_indices(length, 4, None), clip_indices(length, 4, rng)):
        assert len(picks) == 4 and all(0 <= p < length for p in picks)
        assert list(picks) == sorted(picks)


def test_flip_and_crop_move_masks_with_the_image(tmp_path):
    img = np.zeros((64, 32, 3), np.uint8)
    img[:, :8] = 255  # a white band on the left
    labels = np.zeros((64, 32), np.uint8)
    labels[:, :8] = 2  # labelled "upper"
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(labels).save(tmp_path / "m.png")
    tf = TrainTransform(64, 32, erase=0.0)
    for seed in range(6):
        image, masks = tf(tmp_path / "a.png", tmp_path / "m.png", np.random.default_rng(seed))
        white = image.mean(0) > 127
        assert np.array_equal(white, masks[1] > 0.5)
