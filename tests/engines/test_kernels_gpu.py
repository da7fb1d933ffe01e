"""The compiled kernels on a real GPU against PyTorch (skipped without CUDA)."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton is not installed")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 512, 512), (32, 512, 512), (1, 1024, 128), (32, 1024, 128), (2, 2048, 128)])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_channel_affinity_on_gpu(shape, dtype):
    from iaunet.engines.kernels.channel_affinity import channel_affinity
    from iaunet.train.iau import channel_affinity as reference
    torch.manual_seed(0)
    x = (torch.rand(*shape, device="cuda") * 6).to(getattr(torch, dtype))
    y = channel_affinity(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference(x.float()), rtol=2e-3, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(32, 512, 512), (8, 1024, 128), (2, 300, 100)])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_channel_affinity_on_gpu_with_spread_weights(shape, dtype, spread_tokens):
    """The cases above have logits so large that the softmax is one-hot; these are not."""
    from iaunet.engines.kernels.channel_affinity import channel_affinity
    from iaunet.train.iau import channel_affinity as reference
    x = spread_tokens(shape, 5, "cuda").to(getattr(torch, dtype))
    tol = 2e-3 if dtype == "float16" else 1e-4
    torch.testing.assert_close(channel_affinity(x).float(), reference(x.float()), rtol=tol, atol=tol)


@pytest.mark.gpu
def test_part_affinity_on_gpu():
    from iaunet.engines.kernels.part_affinity import part_affinity
    from iaunet.train.iau import part_affinity as reference
    s = torch.randn(64, 16, 16, device="cuda") * 4
    torch.testing.assert_close(part_affinity(s, 4, 4), reference(s, 4, 4), rtol=1e-5, atol=1e-6)
