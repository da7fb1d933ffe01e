"""Atomic outputs: whole or absent, with the permissions a plain write would give."""
import os
import re
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


# --- what an output may replace, and how (issues 25 and 29) ------------------------------

def _kinds(tmp_path):
    """A file of each kind the toolkit writes, made by its real writer: {kind: path}."""
    import json

    import numpy as np
    import onnx
    import torch
    from onnx import helper

    from iaunet.core import file_kinds
    from iaunet.runtime.gallery import Gallery
    made = {}
    made[file_kinds.CHECKPOINT] = tmp_path / "model.pt"
    torch.save({"format": 1, "state_dict": {"w": torch.zeros(3)}}, made[file_kinds.CHECKPOINT])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    made[file_kinds.ONNX] = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(made[file_kinds.ONNX]))
    gallery = Gallery(4, "ab" * 32)
    gallery.add(np.ones((1, 4), np.float32), ids=[1])
    made[file_kinds.GALLERY] = gallery.save(tmp_path / "gallery.npz")
    made[file_kinds.CALIB_RECORD] = tmp_path / "model.int8.json"
    made[file_kinds.CALIB_RECORD].write_text(json.dumps({"precision": "int8", "source": "m.onnx",
                                                         "source_sha256": "0" * 64}))
    made[file_kinds.CALIB_CACHE] = tmp_path / "model.int8.calib"
    made[file_kinds.CALIB_CACHE].write_text("TRT-100300-EntropyCalibration2\nx: 3c000000\n")
    made[file_kinds.ENGINE] = tmp_path / "model.engine"
    made[file_kinds.ENGINE].write_bytes(b"\0" * 64)
    (tmp_path / "model.engine.json").write_text(json.dumps({"tensorrt_version": "10.3", "plugin_route": "aot",
                                                            "onnx_sha256": "0" * 64}))
    return made


def test_an_output_never_replaces_a_file_of_another_kind(tmp_path):
    from iaunet.core import file_kinds
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import check_output_path
    made = _kinds(tmp_path)
    for found, path in made.items():
        assert file_kinds.kind_of(path) == found, path
        assert check_output_path(path, kind=found) == path  # the same kind: re-export, re-embed
        for other in set(made) - {found}:
            with pytest.raises(IAUnetError, match=re.escape(f"is {file_kinds.article(found)}; not replacing")):
                check_output_path(path, kind=other)
    renamed = tmp_path / "weights.json"  # the kind comes from the bytes, not the name
    os.replace(made[file_kinds.CHECKPOINT], renamed)
    with pytest.raises(IAUnetError, match="is a PyTorch checkpoint; not replacing it with a machine report"):
        check_output_path(renamed, kind=file_kinds.DOCTOR)
    (tmp_path / "notes.txt").write_text("the user's own file, named as the output")
    assert check_output_path(tmp_path / "notes.txt", kind=file_kinds.DOCTOR)


def test_special_files_are_refused_and_never_renamed_over(tmp_path):
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import atomic_output, check_output_path
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "stdout").symlink_to(tmp_path / "fifo")  # what /dev/stdout -> /proc/self/fd/1 is under a pipe
    for path, what in ((tmp_path / "fifo", "FIFO"), (tmp_path / "stdout", "FIFO"), ("/dev/null", "character device")):
        with pytest.raises(IAUnetError, match=what):
            check_output_path(path)
    with pytest.raises(IAUnetError, match="not a regular file"):
        with atomic_output(tmp_path / "stdout") as tmp:
            open(tmp, "w").write("{}")
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode) and (tmp_path / "stdout").is_symlink()


def test_a_symlinked_output_updates_its_target_and_a_replaced_file_keeps_its_permissions(tmp_path):
    from iaunet.core.files import check_output_path, write_json
    (tmp_path / "v1.json").write_text("{}")
    os.chmod(tmp_path / "v1.json", 0o600)
    (tmp_path / "current.json").symlink_to("v1.json")
    check_output_path(tmp_path / "current.json")
    write_json(tmp_path / "current.json", {"new": 1})
    assert (tmp_path / "current.json").is_symlink() and os.readlink(tmp_path / "current.json") == "v1.json"
    assert (tmp_path / "v1.json").read_text().strip() == '{\n  "new": 1\n}'
    assert stat.S_IMODE((tmp_path / "v1.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json", "v1.json"]


def test_a_legal_long_name_is_written_and_a_too_long_one_refused_before_the_work(tmp_path):
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import atomic_folder, check_output_path, write_json
    name = "x" * 245 + ".json"  # 250 bytes: legal; a temporary name built by appending to it is not
    write_json(check_output_path(tmp_path / name), {"a": 1})
    assert (tmp_path / name).is_file()
    with atomic_folder(tmp_path / ("d" * 250)) as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / ("d" * 250) / "f").is_file()
    with pytest.raises(IAUnetError, match="300 bytes long"):
        check_output_path(tmp_path / ("y" * 300))


def test_outputs_inside_an_input_folder_or_twice_on_one_path_are_refused(tmp_path):
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import check_distinct_outputs, check_output_path
    (tmp_path / "query").mkdir()
    with pytest.raises(IAUnetError, match="inside the input folder"):
        check_output_path(tmp_path / "query" / "grid.png", inputs=[tmp_path / "query"])
    with pytest.raises(IAUnetError, match="are the same file"):
        check_distinct_outputs(tmp_path / "x", None, tmp_path / "." / "x")


def test_several_outputs_are_one_unit(tmp_path):
    from iaunet.core.files import atomic_outputs
    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError):
        with atomic_outputs(tmp_path / "a.json", tmp_path / "b.png") as (a, b):
            open(a, "w").write("new a")
            raise RuntimeError("the plot failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (tmp_path / "a.json").read_text() == "old a"
    with atomic_outputs(tmp_path / "a.json", tmp_path / "b.png") as (a, b):
        open(a, "w").write("new a")
        open(b, "w").write("new b")
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "b.png").read_text() == "new b"


def test_folders_get_the_usual_permissions(tmp_path):
    from iaunet.core.files import atomic_folder
    umask = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "bundle") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755


FULL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
{body}
"""


@pytest.mark.parametrize("writer", [
    "from iaunet.core.files import write_json\nwrite_json(sys.argv[1], {'x': 'y' * 100000})",
    # torch.save hides the OS error in a RuntimeError without errno
    "import torch\nfrom iaunet.core.files import atomic_output\n"
    "with atomic_output(sys.argv[1]) as tmp:\n    torch.save({'w': torch.zeros(100000)}, tmp)",
], ids=["json", "torch-save"])
def test_a_file_size_limit_is_one_line_naming_the_output(tmp_path, writer):
    import subprocess
    import sys
    script = FULL.format(body="from iaunet.core.errors import IAUnetError\ntry:\n" +
                         "\n".join("    " + line for line in writer.splitlines()) +
                         "\nexcept IAUnetError as e:\n    print(e)")
    out = tmp_path / "out.bin"
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.strip() == f"cannot write {out}: File too large; nothing was written"
    assert os.listdir(tmp_path) == []
