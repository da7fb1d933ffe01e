"""The Triton kernels on CPU through Triton's interpreter, against the PyTorch reference.

Run by test_kernels_interpreted.py in its own process: TRITON_INTERPRET must be set
before triton is imported, and a process that interprets cannot also compile PTX.
"""
import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported by the kernel modules
triton = pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[kernels]')")
torch = pytest.importorskip("torch")

from iaunet.engines.kernels.channel_affinity import channel_affinity  # noqa: E402
from iaunet.engines.kernels.part_affinity import part_affinity  # noqa: E402
from iaunet.train.iau import channel_affinity as reference_channel  # noqa: E402
from iaunet.train.iau import part_affinity as reference_part  # noqa: E402


@pytest.mark.parametrize("shape", [(1, 40, 24), (3, 37, 50), (2, 64, 128), (2, 130, 17)])
def test_channel_affinity_fp32_awkward_shapes(shape, spread_tokens):
    x = spread_tokens(shape, 0)
    torch.testing.assert_close(channel_affinity(x), reference_channel(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape,blocks", [((2, 70, 128), (128, 16, 32)), ((1, 48, 200), (256, 16, 32)),
                                          ((2, 70, 128), (32, 16, 32)), ((1, 150, 128), (128, 64, 64)),
                                          ((1, 150, 512), (64, 64, 64))])
def test_channel_affinity_both_schedules(shape, blocks, dtype, spread_tokens):
    """One pass over H*W (BLOCK_C == BLOCK_L) and chunked, forced at sizes where the
    default picks the other one, and Hopper's 64-row blocks."""
    x = spread_tokens(shape, 4).to(dtype)
    block_c, block_m, block_n = blocks
    y = channel_affinity(x, {"BLOCK_C": block_c, "BLOCK_M": block_m, "BLOCK_N": block_n})
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(y.float(), reference_channel(x.float()), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(1, 33, 40), (3, 64, 128)])
def test_channel_affinity_fp16(shape, spread_tokens):
    x = spread_tokens(shape, 1).half()
    y = channel_affinity(x)
    assert y.dtype == torch.float16
    # reference: the same FP16 inputs in FP32 maths; the only extra error is FP16 output rounding
    torch.testing.assert_close(y.float(), reference_channel(x.float()), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("shape", [(1, 128, 512), (1, 1024, 128)])  # chunked H*W; one pass over layer3's real shape
def test_channel_affinity_logits_beyond_fp16_in_both_schedules(shape):
    torch.manual_seed(2)
    x = (torch.rand(*shape) * (300000 / shape[2]) ** 0.5).half()  # diagonal of X.X^T about 1e5
    logits = x.float() @ x.float().transpose(1, 2)
    assert logits.max() > 65504
    y = channel_affinity(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference_channel(x.float()), rtol=2e-3, atol=2e-2)


def test_channel_affinity_many_key_blocks(spread_tokens):
    """Many channel tokens, as the video block's C*T: 1024 tokens of H*W = 128, so each row
    block streams 32 key blocks (the GPU tests run layer3 at T = 2, 2048 tokens; the
    interpreter takes half a minute for it). Outputs average many tokens and are small, so
    the bound is relative to them."""
    x = spread_tokens((1, 1024, 128), 7).half()
    reference = reference_channel(x.float())
    y = channel_affinity(x)
    scale = reference.abs().max().item()
    torch.testing.assert_close(y.float(), reference, rtol=2e-3, atol=2e-3 * scale)


def test_part_affinity_image_and_video():
    torch.manual_seed(3)
    for frames, dtype in ((1, torch.float32), (4, torch.float32), (3, torch.float16)):
        s = (torch.randn(5, 4 * frames, 4 * frames) * 4).to(dtype)
        w = part_affinity(s, frames, 4)
        assert w.dtype == dtype
        torch.testing.assert_close(w.float(), reference_part(s.float(), frames, 4), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_part_affinity_is_exact_when_every_logit_is_far_below_the_mask(dtype):
    from iaunet.train.iau import part_relation_mask
    torch.manual_seed(4)
    s = (-5e4 + torch.rand(2, 8, 8) * 40).to(dtype)
    expected = torch.softmax(s.double().masked_fill(part_relation_mask(2, 4), float("-inf")), dim=-1)
    w = part_affinity(s, 2, 4)
    assert (w.double()[:, part_relation_mask(2, 4)] == 0).all()
    torch.testing.assert_close(w.double(), expected, rtol=0, atol=1e-3 if dtype == torch.float16 else 1e-6)


def test_launch_helpers_reject_bad_inputs():
    with pytest.raises(TypeError, match="float16/float32"):
        channel_affinity(torch.zeros(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="frames \\* parts"):
        part_affinity(torch.zeros(1, 8, 8), 1, 4)
