"""Atomic outputs: whole or absent, with the permissions a plain write would give."""
import os
import stat

import pytest

from iaunet.core.files import atomic_output


def test_atomic_output_has_umask_permissions_and_leaves_nothing_on_failure(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "a.json") as tmp:
            open(tmp, "w").write("{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        with pytest.raises(RuntimeError):
            with atomic_output(tmp_path / "b.json") as tmp:
                open(tmp, "w").write("half")
                raise RuntimeError("interrupted")
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_report_folder_is_checked_before_any_work(tmp_path):
    import pytest

    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import check_report_folder
    (tmp_path / "f").write_text("mine")
    with pytest.raises(IAUnetError, match="is a file"):
        check_report_folder(tmp_path / "f")
    with pytest.raises(IAUnetError, match="does not exist"):
        check_report_folder(tmp_path / "no" / "report")
    assert check_report_folder(tmp_path / "new") == tmp_path / "new" and check_report_folder(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
