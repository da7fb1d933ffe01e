"""The IAU maths: masks, FP16 safety of both affinities, and agreement with the
reference code's layout for video."""
import pytest
import torch
from torch.nn import functional as F

from iaunet.train.iau import IAUBlock, channel_affinity, part_affinity, part_relation_mask


def test_image_mask_is_the_diagonal():
    assert torch.equal(part_relation_mask(1, 4), torch.eye(4, dtype=torch.bool))


def test_video_mask_follows_the_stiau_rule():
    frames, parts = 3, 4
    mask = part_relation_mask(frames, parts)
    for i in range(frames * parts):
        for j in range(frames * parts):
            fi, pi, fj, pj = i // parts, i % parts, j // parts, j % parts
            allowed = (fi == fj and pi != pj) or (fi != fj and pi == pj)
            assert bool(mask[i, j]) == (not allowed), (i, j)


def test_part_affinity_excludes_masked_pairs_exactly():
    logits = torch.randn(2, 8, 8) * 5
    mask = part_relation_mask(2, 4)
    w = part_affinity(logits, 2, 4)
    assert torch.all(w[:, mask] == 0)
    assert torch.allclose(w.sum(-1), torch.ones(2, 8))
    expected = torch.softmax(logits.masked_fill(mask, float("-inf")), -1)
    assert torch.allclose(w, expected, atol=1e-7)


def test_part_affinity_fp16_is_finite_where_the_reference_mask_gives_nan():
    logits = torch.randn(2, 4, 4) * 3
    eye = torch.eye(4, dtype=torch.float16)
    one_e8 = torch.tensor(1e8, dtype=torch.float16)  # the reference's constant in an FP16 graph
    assert torch.isinf(one_e8)
    reference = torch.softmax(logits.half() - eye * one_e8, -1)  # 0 * inf = NaN off the diagonal
    assert torch.isnan(reference).all()
    mask = part_relation_mask(1, 4)
    ours = part_affinity(logits.half(), 1, 4)
    assert torch.isfinite(ours).all()
    assert torch.all(ours[:, mask] == 0)
    assert torch.allclose(ours.float(), part_affinity(logits, 1, 4), atol=2e-3)


def _large_tokens():
    torch.manual_seed(0)
    x = torch.rand(2, 16, 64) * 60  # diagonal of X X^T ~ 64 * 60^2 / 3 ~ 77000
    assert (x @ x.transpose(1, 2)).max() > 65504
    return x


def test_channel_affinity_fp16_input_is_finite_and_matches_fp32():
    x = _large_tokens()
    naive = torch.softmax(x.half() @ x.half().transpose(1, 2), -1)
    assert not torch.isfinite(naive).all()  # what an FP16 implementation would do
    out = channel_affinity(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    ref = channel_affinity(x)
    assert torch.allclose(out.float(), ref, rtol=2e-3, atol=0.05)


def test_iau_block_under_fp16_autocast_matches_fp32():
    torch.manual_seed(1)
    block = IAUBlock(16).eval()
    for m in block.modules():  # non-trivial updates (the zero-initialised BNs would hide errors)
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.rand(2, 16, 8, 8) * 60
    tokens = x.reshape(2, 16, 64)
    assert (tokens @ tokens.transpose(1, 2)).max() > 65504
    ref, ref_maps = block(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out, maps = block(x)
    assert torch.isfinite(out).all() and torch.isfinite(maps).all()
    assert F.cosine_similarity(out.float().flatten(1), ref.flatten(1)).min() > 0.999


def test_video_ciau_uses_channel_major_tokens_like_the_reference():
    torch.manual_seed(2)
    b, t, c, h, w = 2, 3, 8, 4, 2
    block = IAUBlock(c).eval()
    torch.nn.init.uniform_(block.channel_update[1].weight, 0.5, 1.5)
    x = torch.randn(b * t, c, h, w)
    # the authors' IAU3D: x as (B, C, T, H, W) viewed as (B, C*T, H*W)
    x5 = x.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()
    g = x5.view(b, c * t, -1)
    y = torch.matmul(torch.softmax(g @ g.transpose(1, 2), -1), g).view(b, c, t, h, w)
    y2d = y.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    expected = x + block.channel_update(y2d)
    assert torch.allclose(block.ciau(x, t), expected, atol=1e-5)


@pytest.mark.parametrize("frames", [1, 3])
def test_zero_initialised_updates_make_a_new_block_the_identity(frames):
    block = IAUBlock(8).eval()
    x = torch.randn(2 * frames, 8, 4, 2)
    out, _ = block(x, frames)
    assert torch.equal(out, x)


def exact_masked_softmax(logits, frames, parts):
    """The authors' semantics in float64: masked pairs get no weight at all."""
    mask = part_relation_mask(frames, parts)
    return torch.softmax(logits.double().masked_fill(mask, float("-inf")), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_part_affinity_is_exact_when_every_logit_is_far_below_the_mask(dtype):
    """Logits around -5e4: the finite mask logit (-30000) lies above all of them, so
    filling it before the softmax's shift would give the masked pairs all the weight."""
    torch.manual_seed(0)
    logits = (-5e4 + torch.rand(3, 8, 8) * 40).to(dtype)
    w = part_affinity(logits, 2, 4)
    assert w.dtype == dtype and torch.isfinite(w).all()
    expected = exact_masked_softmax(logits, 2, 4)
    assert (w.double()[:, part_relation_mask(2, 4)] == 0).all()
    torch.testing.assert_close(w.double(), expected, rtol=0, atol=1e-3 if dtype == torch.float16 else 1e-6)
