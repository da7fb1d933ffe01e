"""``iaunet bench``'s table: each row's ratio is to PyTorch on the same device and batch (FP32 on
the CPU, FP16 on the GPU)."""
from pathlib import Path

import numpy as np
import pytest

from iaunet.runtime.perf_figures import Timing, end_to_end_seconds, peak_rss_mb, reset_peak_rss, table, vs_pytorch


def _row(backend, batch, samples_per_s, device, kind="model"):
    return Timing(backend, batch, kind, 1e3 * batch / samples_per_s, 0.0, samples_per_s, 100.0, None, device)


def test_rows_compare_with_pytorch_on_their_own_device():
    timings = [_row("m.onnx onnxruntime-cpu", 8, 13.0, "cpu"),
               _row("m.onnx onnxruntime-cpu", 8, 12.0, "cpu", "bare session"),
               _row("m.onnx onnxruntime-cpu", 8, 11.0, "cpu", "end-to-end"),
               _row("m.engine tensorrt", 8, 960.0, "cuda"),
               _row("m.onnx onnxruntime-cuda", 8, 500.0, "cuda"),
               _row("m.onnx onnxruntime-cuda", 32, 700.0, "cuda"),
               _row("pytorch.onnx onnxruntime-cpu", 8, 26.0, "cpu"),  # a file named pytorch*: not a baseline
               _row("pytorch eager fp32 (cpu)", 8, 10.0, "cpu"),
               _row("pytorch eager fp16 (cuda)", 8, 320.0, "cuda")]
    # by hand: 13/10, 12/10, none end-to-end, 960/320, 500/320, no PyTorch row at batch 32 on the GPU, 26/10
    expected = [1.3, 1.2, None, 3.0, 1.5625, None, 2.6, 1.0, 1.0]
    assert vs_pytorch(timings) == [pytest.approx(e) if e else None for e in expected]
    printed = [line[-8:].strip() for line in table(timings, 200.0, "numpy")[1:-1]]  # the last column
    assert printed == ["1.30x", "1.20x", "", "3.00x", "1.56x", "", "2.60x", "1.00x", "1.00x"]


@pytest.mark.gpu
def test_gpu_rows_are_compared_with_pytorch_fp16_on_the_gpu(tmp_path, image_onnx, image_checkpoint):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    from iaunet.model_bench import benchmark
    result = benchmark([image_onnx], tmp_path / "b", [1, 32], 5, image_checkpoint, ["onnxruntime-cuda"], quiet=True)
    rows = {(t["backend"].split()[-1], t["batch"], t["kind"]): t for t in result["timings"]}
    for batch in (1, 32):
        gpu, torch_gpu = rows[("onnxruntime-cuda", batch, "model")], rows[("(cuda)", batch, "model")]
        assert gpu["device"] == torch_gpu["device"] == "cuda"
        assert torch_gpu["backend"] == "pytorch eager fp16 (cuda)"
        assert gpu["vs_pytorch"] == pytest.approx(gpu["samples_per_s"] / torch_gpu["samples_per_s"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resetting the peak needs Linux's clear_refs")
def _resident_block(mb: int):
    """``mb`` MB of fresh resident pages: an anonymous mapping, every page written, so the
    figure does not depend on what the process's allocator already holds (a whole test
    session's heap can serve a numpy array from pages that are resident already)."""
    import mmap
    block = mmap.mmap(-1, mb * 2**20)
    pages = np.frombuffer(block, np.uint8)
    pages[:] = 1
    del pages  # the mapping can be closed only once no view holds it
    return block


def test_each_backend_starts_its_own_memory_peak():
    """A backend's peak must not be an earlier backend's: 200 MB held and unmapped before
    the reset is in the peak before it and not after it."""
    block = _resident_block(200)
    held = peak_rss_mb()
    block.close()
    if not reset_peak_rss():
        pytest.skip("this system does not let a process reset its memory peak")
    after = peak_rss_mb()
    assert after < held - 150, (held, after)
    block = _resident_block(100)
    assert peak_rss_mb() > after + 80  # and it grows again from there
    block.close()


def test_end_to_end_rows_time_every_batch(monkeypatch):
    """Each batch is timed as it completes, so p99 rests on many batches, not a few calls."""
    from iaunet.runtime import perf_figures
    clock = [0.0]
    monkeypatch.setattr(perf_figures.time, "perf_counter", lambda: clock[0])

    class Batches:  # an embedder whose batches take 10, 30, 10, 30 ms on the clock above
        calls = 0

        def embed(self, files, progress=None):
            self.calls += 1
            for i in range(len(files)):
                clock[0] += 0.01 if i % 2 == 0 else 0.03
                if progress:
                    progress(1)

    embedder = Batches()
    seconds = end_to_end_seconds(embedder, ["a", "b", "c", "d"], calls=3)
    assert embedder.calls == 4  # one untimed call, then 3 timed
    np.testing.assert_allclose(seconds, [0.01, 0.03] * 6)
