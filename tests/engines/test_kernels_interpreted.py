"""Runs interpreted_cases.py in a separate pytest process with TRITON_INTERPRET=1."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[kernels]')")


def test_kernels_match_the_reference_in_the_interpreter():
    cases = Path(__file__).with_name("interpreted_cases.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases)],
                            capture_output=True, text=True, env=env, timeout=900, cwd=Path(__file__).parents[2])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    assert result.returncode == 0, result.stdout[-3000:]
    assert int(re.search(r"(\d+) passed", summary).group(1)) >= 10 and "skipped" not in summary, summary
