"""The camera benchmark's measurement of ``iaunet cameras``' peak memory: the child's own,
not the benchmark's (Linux carries a child's high-water mark across exec into
``RUSAGE_CHILDREN``, which once reported the benchmark's 840 MiB as the command's)."""
import resource
import subprocess
import sys

import numpy as np
import pytest

from iaunet.camera_bench import CHILD


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and exec's carried high-water mark are Linux's")
def test_the_child_reports_its_own_peak_not_the_parents(tmp_path):
    held = np.ones(300 * 2 ** 20 // 8)  # 300 MiB resident in this process when the child forks
    peak_file = tmp_path / "peak"
    done = subprocess.run([sys.executable, "-c", CHILD, str(peak_file), "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    inherited = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert inherited > 300 and held.sum() > 0  # what the old measurement read
    assert 0 < float(peak_file.read_text()) < 200
