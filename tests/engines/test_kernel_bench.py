"""The kernel benchmark's CPU-side behaviour: the sweep's candidate space and the refusal
without a GPU (the timings themselves need CUDA)."""
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton is not installed")


@pytest.mark.parametrize("hw", [128, 512, 100])
def test_sweep_candidates_are_valid_and_include_the_default(hw):
    from iaunet.engines.kernel_bench import sweep_configs
    from iaunet.engines.kernels.channel_affinity import launch_config
    candidates = sweep_configs(hw)
    assert candidates and len({tuple(sorted(c.items())) for c in candidates}) == len(candidates)
    for c in candidates:
        assert c["BLOCK_L"] >= hw and c["BLOCK_L"] & (c["BLOCK_L"] - 1) == 0 and c["BLOCK_C"] <= c["BLOCK_L"]
    for default in (launch_config(0, hw, False), launch_config(0, hw, False, 90, hw % 16 == 0)):
        assert any(all(c[k] == v for k, v in default.items()) for c in candidates), default


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("extra", [[], ["--sweep"]])
def test_bench_without_a_gpu_is_a_one_line_error(tmp_path, extra):
    r = subprocess.run([sys.executable, "-m", "iaunet.cli", "plugins", "bench", "-o", str(tmp_path / "b"), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "needs a CUDA GPU" in r.stderr
    assert not (tmp_path / "b").exists()
