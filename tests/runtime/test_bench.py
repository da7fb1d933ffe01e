"""``iaunet bench``'s table: each row's ratio is to PyTorch on the same device and batch (FP32 on
the CPU, FP16 on the GPU)."""
import pytest

from iaunet.runtime.bench import Timing, runner_device, table


def _row(backend, batch, samples_per_s, device, kind="model"):
    return Timing(backend, batch, kind, 1e3 * batch / samples_per_s, 0.0, samples_per_s, 100.0, None, device)


def test_rows_compare_with_pytorch_on_their_own_device():
    timings = [_row("m.onnx onnxruntime-cpu", 8, 13.0, "cpu"),
               _row("m.engine tensorrt", 8, 960.0, "cuda"),
               _row("m.onnx onnxruntime-cuda", 8, 500.0, "cuda"),
               _row("m.onnx onnxruntime-cuda", 32, 700.0, "cuda"),
               _row("pytorch eager fp32 (cpu)", 8, 10.0, "cpu"),
               _row("pytorch eager fp16 (cuda)", 8, 320.0, "cuda")]
    ratios = [line[-8:].strip() for line in table(timings, 200.0, "numpy")[1:-1]]  # the last column, row by row
    # by hand: 13/10, 960/320, 500/320; nothing at batch 32 on the GPU (no PyTorch row there)
    assert ratios == ["1.30x", "3.00x", "1.56x", "", "1.00x", "1.00x"]


def test_runner_device_follows_the_backend_name():
    class Named:
        def __init__(self, name):
            self.name = name
    assert [runner_device(Named(n)) for n in ("onnxruntime-cpu", "pytorch-cpu", "onnxruntime-cuda",
                                               "onnxruntime-tensorrt", "tensorrt", "pytorch-cuda")] == \
        ["cpu", "cpu", "cuda", "cuda", "cuda", "cuda"]


@pytest.mark.gpu
def test_gpu_rows_are_compared_with_pytorch_fp16_on_the_gpu(tmp_path, image_onnx, image_checkpoint):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    from iaunet.benchmark import benchmark
    result = benchmark([image_onnx], tmp_path / "b", [1, 32], 5, image_checkpoint, ["onnxruntime-cuda"], quiet=True)
    rows = {(t["backend"].split()[-1], t["batch"], t["kind"]): t for t in result["timings"]}
    for batch in (1, 32):
        gpu, torch_gpu = rows[("onnxruntime-cuda", batch, "model")], rows[("(cuda)", batch, "model")]
        assert gpu["device"] == torch_gpu["device"] == "cuda"
        assert torch_gpu["backend"] == "pytorch eager fp16 (cuda)"
        assert gpu["vs_pytorch"] == pytest.approx(gpu["samples_per_s"] / torch_gpu["samples_per_s"])
