"""Bad input through the real console entry point: one line, exit 1, no traceback."""
import subprocess
import sys

import pytest


def iaunet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "iaunet.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_eval_missing_checkpoint(tmp_path):
    assert_one_line_error(iaunet("eval", tmp_path / "nope.pt", "--data", tmp_path), "nope.pt not found")


def test_eval_foreign_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    assert_one_line_error(iaunet("eval", tmp_path / "x.pt", "--data", tmp_path), "not a readable checkpoint")


def test_train_on_a_folder_without_a_layout(tmp_path):
    (tmp_path / "data").mkdir()  # the run folder goes beside it: inside the data set is refused
    result = iaunet("train", "--data", tmp_path / "data", "-o", tmp_path / "run", "--epochs", "1")
    assert_one_line_error(result, "no known re-ID layout", "bounding_box_train/")
    assert not (tmp_path / "run").exists()


def test_train_with_a_video_model_on_image_data(market_synth, tmp_path):
    result = iaunet("train", "--data", market_synth, "--model", "iaunet_video_r18", "-o", tmp_path / "r",
                    "--epochs", "1", "--batch-size", "8")
    assert_one_line_error(result, "is a video model", "image data")


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    assert_one_line_error(iaunet("synth", "-o", tmp_path), "not empty")


def test_unknown_model_name(market_synth, tmp_path):
    result = iaunet("train", "--data", market_synth, "--model", "resnet9000", "-o", tmp_path / "r")
    assert_one_line_error(result, "unknown model 'resnet9000'")


@pytest.mark.parametrize("args", [["--help"], ["synth", "--help"], ["train", "--help"], ["eval", "--help"]])
def test_help_exits_zero(args):
    assert iaunet(*args).returncode == 0


def test_export_of_a_checkpoint_whose_weights_do_not_fit_its_config_leaves_no_file(tmp_path):
    # the other bad exports (missing, unreadable, output folder or parent, opset, frames) are
    # rows of tests/test_bad_inputs.py; this one needs a checkpoint made on purpose
    import torch
    from iaunet.train import create_model, save_checkpoint
    from iaunet.train.checkpoint import tensors_sha256
    good = save_checkpoint(tmp_path / "good.pt", create_model("iaunet_r18", num_classes=3, height=64, width=32))
    raw = torch.load(good, weights_only=True)
    raw["config"]["backbone"] = "resnet34"
    raw["tensors_sha256"] = tensors_sha256(raw["state_dict"], raw["config"])  # intact file, wrong config
    torch.save(raw, tmp_path / "mismatch.pt")
    assert_one_line_error(iaunet("export", tmp_path / "mismatch.pt", "-o", tmp_path / "m.onnx"), "do not match its config")
    assert not list(tmp_path.glob("*.onnx*"))


def test_export_command_prints_the_summary(tmp_path):
    from iaunet.train import create_model, save_checkpoint
    good = save_checkpoint(tmp_path / "good.pt", create_model("iaunet_r18", num_classes=3, height=64, width=32))
    result = iaunet("export", good, "-o", tmp_path / "m.onnx")
    assert result.returncode == 0, result.stderr
    assert "4 plugin nodes" in result.stdout and "iaunet::IAUChannelAffinity 2" in result.stdout
    assert "batch 1: min cosine" in result.stdout and "batch 7: min cosine" in result.stdout
    assert [p.name for p in tmp_path.glob("*.onnx*")] == ["m.onnx"]


def test_log_lines_print_once_even_when_a_library_configures_the_root_logger():
    code = ("import logging; from iaunet.core.log import configure, get_logger; configure(); "
            "logging.basicConfig(level=logging.INFO); get_logger('demo').info('hello')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.count("hello") == 1, result.stderr


def test_a_missing_optional_package_is_one_line_naming_how_to_install_it(tmp_path):
    """Triton blocked at import, as on a machine without the [kernels] extra."""
    blocker = ("import importlib.abc, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] == 'triton':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "from iaunet.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", blocker, "plugins", "compile", "--arch", "87", "-o", tmp_path / "p"],
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "needs the Python package 'triton'", ".[kernels]")
    assert not (tmp_path / "p").exists()


def test_parity_points_each_failing_variant_to_triage():
    from iaunet.calib.parity import VariantResult
    from iaunet.cli.calib import triage_hints
    results = [VariantResult("pytorch", "m.pt", "fp32", "pytorch"),
               VariantResult("m.onnx", "run/m.onnx", "fp32", "plugin"),
               VariantResult("m.int8.onnx", "run/m.int8.onnx", "int8", "plugin", passed=False),
               VariantResult("m.fp16.onnx", "run/m.fp16.onnx", "fp16", "plugin"),
               VariantResult("m.engine", "m.engine", "int8", "engine (aot)", passed=False)]
    hints = triage_hints(results, "data")
    assert len(hints) == 2
    assert "'iaunet triage run/m.onnx run/m.int8.onnx --data data'" in hints[0]
    assert hints[1].startswith("m.engine:") and "--backend tensorrt" in hints[1]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_every_stopping_signal_cleans_up_like_ctrl_c(tmp_path, signame):
    """timeout, docker stop and systemd send SIGTERM; a closed terminal SIGHUP: the hidden
    temporary folder goes, as on Ctrl-C, and the exit status names the signal."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "iaunet.cli", "synth", "-o", "data", "--identities", "5000"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".data.*/bounding_box_train/*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.05)  # stopped mid-work: crops already written
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    number = getattr(signal, signame).value
    assert proc.returncode == 128 + number, err
    assert err.strip() == f"iaunet synth: interrupted ({signame})", err
    assert list(tmp_path.iterdir()) == []


def test_double_dash_ends_the_options_and_a_repeated_option_is_refused(tmp_path, image_onnx):
    from iaunet.cli import parse_args
    args = parse_args(["embed", "-m", "m.onnx", "-o", "g.npz", "--", "-1_c1s1_000001_00.jpg", "q"])
    assert args.inputs == ["./-1_c1s1_000001_00.jpg", "q"] and args.model == "m.onnx"
    for argv, option in ((["embed", "q", "-m", "a.onnx", "-m", "b.onnx", "-o", "g.npz"], "-m/--model"),
                         (["embed", "q", "-m", "a.onnx", "-o", "g.npz", "--output=h.npz"], "-o/--output"),
                         (["bench", "a.onnx", "--batch", "1", "--bat", "8"], "--batch")):
        result = iaunet(*argv, cwd=tmp_path)
        assert_one_line_error(result, f"{option} given twice", "expected it once")
    assert parse_args(["bench", "a.onnx", "--backend", "onnxruntime-cpu", "--backend", "onnxruntime-cuda"]).backend \
        == ["onnxruntime-cpu", "onnxruntime-cuda"]  # repeatable by design
    junk = tmp_path / "-1_c1s1_000001_00.jpg"  # Market-1501's junk id: a real file name
    from PIL import Image
    Image.new("RGB", (32, 64), (90, 20, 200)).save(junk)
    result = iaunet("embed", "-m", image_onnx, "-o", "g.npz", "--", junk.name, cwd=tmp_path)
    assert "-1_c1s1_000001_00.jpg not found" not in result.stderr and "unrecognized" not in result.stderr, result.stderr


@pytest.mark.parametrize("folder", ["/", "/usr"])
def test_demo_refuses_a_system_folder_before_walking_it(folder, monkeypatch):
    from pathlib import Path

    from iaunet.core.errors import IAUnetError
    from iaunet.demo import run_demo

    def walked(*args, **kw):
        raise AssertionError("the demo walked the folder before refusing it")
    monkeypatch.setattr(Path, "rglob", walked)
    with pytest.raises(IAUnetError, match="is not a previous demo folder"):
        run_demo(folder)


def test_search_writes_its_json_and_grid_both_or_neither(tmp_path, image_onnx, market_synth):
    """A file-size limit stops the second output: neither is left, and the error is one line."""
    import resource
    queries = market_synth / "query"
    assert iaunet("embed", market_synth / "bounding_box_test", "-m", image_onnx, "-o", tmp_path / "g.npz").returncode == 0
    (tmp_path / "m.json").write_text('{"previous": "run"}')
    argv = [sys.executable, "-m", "iaunet.cli", "search", queries, "-m", image_onnx, "--gallery", tmp_path / "g.npz",
            "--json", tmp_path / "m.json", "--grid", tmp_path / "grid.png"]

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # the JSON fits, the grid does not
    r = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=300, preexec_fn=limited)
    last = r.stderr.strip().splitlines()[-1]  # after the progress line
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert last.startswith("iaunet search: error: cannot write ") and "grid.png" in last and "File too large" in last
    assert (tmp_path / "m.json").read_text() == '{"previous": "run"}' and not (tmp_path / "grid.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "m.json"]
