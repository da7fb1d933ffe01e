"""pyproject lists every package folder, so a non-editable install carries all the code."""
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).parents[1]


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in ROOT.glob("*/**/__init__.py")
               if not p.relative_to(ROOT).parts[0].startswith((".", "tests", "build"))}
    assert folders == listed, f"unlisted: {sorted(folders - listed)}; listed but missing: {sorted(listed - folders)}"
