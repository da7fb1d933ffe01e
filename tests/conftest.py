"""Shared fixtures and the GPU / TensorRT auto-skip."""
from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return torch.cuda.is_available()


def _tensorrt_loads() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    no_trt = pytest.mark.skip(reason="needs the TensorRT libraries; the bindings cannot load here")
    gpu, trt = _cuda_available(), None
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(no_gpu)
        if "trt" in item.keywords:
            trt = _tensorrt_loads() if trt is None else trt
            if not trt:
                item.add_marker(no_trt)


@pytest.fixture(scope="session")
def market_synth(tmp_path_factory):
    """A small synthetic Market-1501-layout set shared by the tests that read one."""
    from iaunet.train.data.synth import generate_market
    root = tmp_path_factory.mktemp("synth_market")
    generate_market(root, identities=12, cameras=3, seed=3, images_per_camera=(2, 3), distractors=3, junk=2)
    return root


@pytest.fixture(scope="session")
def trained_setup(tmp_path_factory, market_synth):
    """A briefly trained checkpoint on the synthetic set, with its plugin and native exports
    beside it: {checkpoint, plugin, native, data}."""
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.trainer import TrainOptions, main
    out = tmp_path_factory.mktemp("calib_run")
    checkpoint = main(TrainOptions(data=str(market_synth), output=str(out), model="iaunet_r18", epochs=2, height=64,
                                   width=32, batch_size=8, num_instances=2, lr=1e-3, warmup_epochs=1,
                                   progress=False))
    plugin = export_checkpoint(checkpoint, out / "model.onnx", "plugin").path
    native = export_checkpoint(checkpoint, out / "model.native.onnx", "native").path
    return {"checkpoint": checkpoint, "plugin": plugin, "native": native, "data": market_synth, "dir": out}


@pytest.fixture(scope="session")
def calib_cache(tmp_path_factory):
    """One INT8 calibration cache for the session: tests that do not test a cold cache share
    the activation statistics of the same model and images instead of collecting them again."""
    return tmp_path_factory.mktemp("calib_cache")


@pytest.fixture(scope="session")
def int8_variant(trained_setup, calib_cache, tmp_path_factory):
    """The INT8 variant of ``trained_setup``'s plugin export as ``iaunet calib --precision int8``
    writes it by default (method auto, 24 calibration images): (record, folder) with
    m.int8.onnx, m.int8.trt.onnx, m.int8.calib and m.int8.json in the folder."""
    from iaunet.calib.int8 import quantize_int8
    from iaunet.core.files import write_json
    out = tmp_path_factory.mktemp("int8")
    record = quantize_int8(trained_setup["plugin"], out / "m.int8.onnx", trained_setup["data"], samples=24,
                           cache_dir=calib_cache)
    write_json(out / "m.int8.json", record)
    return record, out


def randomised_model(name, **kw):
    """A model whose IAU blocks matter: every BN gets random affine and running stats
    (the zero-initialised update BNs of a fresh model make the blocks an identity)."""
    import torch
    from iaunet.train import create_model
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, height=64, width=32, **kw)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


_DEMO = {}  # the session's demo subprocess: folder, out, process and its output files
DEMO_TIMEOUT = 900


def pytest_collection_finish(session):
    """Start ``iaunet demo`` as soon as the tests that read it are collected, beside the rest
    of the suite: it is one subprocess of a few minutes, and the suite alone leaves a core
    idle about a third of the time (measured: 757 CPU seconds in 604 s on 2 cores)."""
    if any("demo_run" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_demo()


def _start_demo() -> None:
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    if _DEMO:
        return
    folder = Path(tempfile.mkdtemp(prefix="iaunet-demo-test-"))
    stdout, stderr = open(folder / "stdout.txt", "w"), open(folder / "stderr.txt", "w")
    process = subprocess.Popen([sys.executable, "-m", "iaunet.cli", "demo", "-o", str(folder / "demo")],
                               stdout=stdout, stderr=stderr, text=True, preexec_fn=_one_core_of_several())
    _DEMO.update(folder=folder, process=process, files=(stdout, stderr))


def _one_core_of_several():
    """A preexec_fn that pins the demo to the last core this process may use, when it may use
    several: PyTorch and ONNX Runtime then size their pools to one thread, so the demo and the
    suite do not spin-wait against each other. Measured on the 2-core VM (demo beside three
    INT8 sensitivity runs): unpinned, the demo took 260 s and 331 user-seconds, the other work
    50-57 s a run; pinned, 234 s and 201 user-seconds, the other work 37 s."""
    import os
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cores[-1]})


def pytest_sessionfinish(session, exitstatus):
    import shutil
    if _DEMO:
        if _DEMO["process"].poll() is None:
            _DEMO["process"].kill()
            _DEMO["process"].wait()
        for f in _DEMO["files"]:
            f.close()
        shutil.rmtree(_DEMO["folder"], ignore_errors=True)


@pytest.fixture(scope="session")
def demo_run():
    """``iaunet demo`` as a user runs it, once per session (started when the tests were
    collected): (folder, CompletedProcess)."""
    import subprocess
    _start_demo()
    process = _DEMO["process"]
    process.wait(timeout=DEMO_TIMEOUT)
    for f in _DEMO["files"]:
        f.flush()
    folder = _DEMO["folder"]
    return folder / "demo", subprocess.CompletedProcess(process.args, process.returncode,
                                                        (folder / "stdout.txt").read_text(),
                                                        (folder / "stderr.txt").read_text())


def run_cli(capsys, *argv):
    """``iaunet ARGV`` in this process: (exit code, stdout, stderr)."""
    from iaunet.cli import main
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def noise_statistics_model(name, height=64, width=32, batches=3, **kw):
    """Random BatchNorm affine parameters and running statistics from a few batches of
    uniform noise: a model whose INT8 variant loses accuracy in a few layers, like an
    iaunet_r50 built this way at 256x128 (mean cosine 0.88 to FP32)."""
    import torch
    from iaunet.train import create_model
    torch.manual_seed(0)
    model = create_model(name, num_classes=8, height=height, width=width, **kw)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
            m.momentum = None  # running statistics: the plain average over the batches
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(8, 3, height, width) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="session")
def image_checkpoint(tmp_path_factory):
    from iaunet.train import save_checkpoint
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "image.pt", randomised_model("iaunet_r18"))


@pytest.fixture(scope="session")
def video_checkpoint(tmp_path_factory):
    from iaunet.train import save_checkpoint
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "video.pt", randomised_model("iaunet_video_r18", frames=3))


@pytest.fixture(scope="session")
def orin_ptx(tmp_path_factory):
    """(manifest, folder, cache folder): the default kernels compiled for sm_87 with a fresh cache."""
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[kernels]')")
    from iaunet.engines.aot import compile_kernels
    root = tmp_path_factory.mktemp("ptx")
    return compile_kernels(87, root / "a", cache_dir=root / "cache"), root / "a", root / "cache"


def _spread_tokens(shape, seed: int = 0, device: str = "cpu"):
    """float32 tokens (B, K, L) whose channel softmax is far from one-hot (logits of order 1),
    so a wrong logit or weight changes the output; plain randn makes softmax(X Xᵀ) almost
    the identity and hides such errors."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=generator) * (3.0 / shape[2]) ** 0.5).to(device)
    weights = torch.softmax(x @ x.transpose(1, 2), dim=-1)
    assert weights.max(dim=-1).values.mean() < 0.5, "test data too peaked to catch errors"
    return x


@pytest.fixture
def spread_tokens():
    return _spread_tokens


@pytest.fixture(scope="session")
def exported(image_checkpoint, tmp_path_factory):
    """Plugin and native exports of ``image_checkpoint``, once per session: {mode: ExportReport}."""
    from iaunet.export.exporter import export_checkpoint
    out = tmp_path_factory.mktemp("onnx")
    return {mode: export_checkpoint(image_checkpoint, out / f"{mode}.onnx", mode) for mode in ("plugin", "native")}


@pytest.fixture(scope="session")
def image_onnx(exported):
    """The randomised iaunet_r18 of ``image_checkpoint``, exported in plugin mode."""
    return exported["plugin"].path


@pytest.fixture(scope="session")
def video_onnx(tmp_path_factory, video_checkpoint):
    """The randomised iaunet_video_r18 (T=3) of ``video_checkpoint``, exported in plugin mode
    (export parity checked at batch 1 only)."""
    from iaunet.export.exporter import export_checkpoint
    return export_checkpoint(video_checkpoint, tmp_path_factory.mktemp("onnx") / "video.onnx", "plugin",
                             parity_batches=(1,)).path


@pytest.fixture
def iaunet_notes():
    """The messages the toolkit logs during a test. Its logger stops propagating to pytest's
    capture once a command configured it (``iaunet.core.log.configure``), so this listens on
    the logger itself."""
    import logging
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("iaunet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
