"""The IPluginV3 launch path without TensorRT (which this project's GPU machines lack): the
compiled PTX for this GPU is loaded and launched by iaunet.core.cuda_driver.run_kernel, the
function the plugin's enqueue calls, on a side stream, and compared with PyTorch.
Covers module loading, the argument block, the shared-memory opt-in (fp32, L=512) and
the aligned and general variants. Skipped without CUDA."""
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    pytest.importorskip("triton")
    from iaunet.engines.aot import compile_kernels
    from iaunet.core.plugin_contract import PtxManifest
    torch.zeros(1, device="cuda")  # torch's context current on this thread
    major, minor = torch.cuda.get_device_capability()
    out = tmp_path_factory.mktemp("ptx")
    compile_kernels(major * 10 + minor, out, cache_dir=out / "cache")
    return PtxManifest(out)


def _launch(kernel, x, attrs):
    """The plugin's enqueue path (run_kernel) on a stream the launcher did not create, as TensorRT's is."""
    from iaunet.core import cuda_driver
    y = torch.empty_like(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    cuda_driver.run_kernel(kernel, tuple(x.shape), attrs, x.data_ptr(), y.data_ptr(), stream.cuda_stream)
    stream.synchronize()
    return y


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", [(1, 512, 512), (8, 1024, 128), (3, 2048, 128), (2, 300, 100)])
@pytest.mark.parametrize("data", ["spread", "large logits"])
def test_channel_ptx_matches_pytorch(manifest, shape, dtype, data, spread_tokens):
    from iaunet.core.plugin_contract import CHANNEL_OP
    from iaunet.train.iau import channel_affinity
    torch.manual_seed(0)
    x = spread_tokens(shape, 6, "cuda") if data == "spread" else torch.rand(*shape, device="cuda") * 6
    x = x.to(getattr(torch, dtype))
    kernel = manifest.select(CHANNEL_OP, "fp16" if dtype == "float16" else "fp32", shape[2])
    assert kernel.aligned == (shape[2] % 16 == 0)
    y = _launch(kernel, x, {})
    assert torch.isfinite(y).all()
    tol = {"spread": 2e-3 if dtype == "float16" else 1e-4, "large logits": 2e-2}[data]
    torch.testing.assert_close(y.float(), channel_affinity(x.float()), rtol=2e-3, atol=tol)


@pytest.mark.parametrize("frames", [1, 4])
def test_part_ptx_matches_pytorch(manifest, frames):
    from iaunet.core.plugin_contract import PART_OP
    from iaunet.train.iau import part_affinity
    s = torch.randn(16, 4 * frames, 4 * frames, device="cuda") * 4
    y = _launch(manifest.select(PART_OP, "fp32", 4 * frames), s, {"frames": frames, "parts": 4})
    torch.testing.assert_close(y, part_affinity(s, frames, 4), rtol=1e-5, atol=1e-6)


def test_a_kernel_for_another_gpu_is_refused(manifest):
    import dataclasses

    from iaunet.core.errors import IAUnetError
    from iaunet.core import cuda_driver
    from iaunet.core.plugin_contract import PART_OP
    kernel = manifest.select(PART_OP, "fp32", 4)
    other = dataclasses.replace(kernel, arch=80 if kernel.arch != 80 else 90)
    with pytest.raises(IAUnetError, match="compiled for sm_"):
        cuda_driver.function(other)


def test_compute_capability_matches_torch():
    from iaunet.core import cuda_driver
    major, minor = torch.cuda.get_device_capability()
    assert cuda_driver.current_compute_capability() == major * 10 + minor
