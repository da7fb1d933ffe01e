"""Bundles tested as written: for each target (orin, thor, x86) and kind (jetson,
deepstream), the bundle's README commands run on CPU in a clean virtualenv made exactly as
the README says, with only what it installs, up to the build; there, with no TensorRT,
they stop with the one line "TensorRT is not installed". Every path a command or config
names exists in the bundle (the PTX for the target's architectures), and DeepStream's
engine path is where the README's build writes. The Triton kind: its paths exist.

Not run here: the README's system-package line (``sudo apt-get``) and, after the build,
pycuda's install (it builds from source and needs nvcc, absent on a CPU machine) and the
bench; a device runs them. The virtualenv is made once per session (the first bundle's
README), the later bundles reuse it through a symlink and run every other command again.
"""
import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from iaunet.engines.bundle import TARGETS, build_bundle

KINDS = ("jetson", "deepstream")


@pytest.fixture(scope="session")
def bundle_artifacts(tmp_path_factory, image_onnx, image_checkpoint):
    """{'jetson': the plugin export with one real PTX kernel per architecture the targets
    compile for (one variant: enough for paths), 'deepstream': the native export}."""
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[kernels]')")
    from iaunet.engines.aot import compile_kernels, part_variant
    from iaunet.export.exporter import export_checkpoint
    root = tmp_path_factory.mktemp("bundle_art")
    (root / "jetson").mkdir()
    shutil.copy(image_onnx, root / "jetson" / "model.onnx")
    for arch in sorted({a for spec in TARGETS.values() for a in spec["archs"]}):
        compile_kernels(arch, root / "jetson" / "ptx" / f"sm{arch}", [part_variant("fp32", 4)], root / "cache")
    (root / "deepstream").mkdir()
    export_checkpoint(image_checkpoint, root / "deepstream" / "model.native.onnx", "native")
    return root


def readme_commands(readme: str) -> list:
    """The commands of the README's last bash block (the one run in the bundle folder)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    return [line for line in blocks[-1].splitlines() if line.strip()]


@pytest.fixture(scope="session")
def venv_home(tmp_path_factory):
    return {}


def run_as_written(bundle: Path, commands: list, venv_home: dict):
    """Run the commands up to and including the build; returns (build's CompletedProcess, commands)."""
    build = next(i for i, c in enumerate(commands) if c.startswith("iaunet build"))
    before = commands[:build]
    if venv_home:  # the session's virtualenv, made by the first README's own command
        (bundle / ".venv").symlink_to(venv_home["path"])
        before = [c for c in before if not c.startswith("python3 -m venv")]
    script = " && ".join(before) + " > install.log 2>&1 || { cat install.log; exit 99; }\n" + commands[build]
    r = subprocess.run(["bash", "-c", script], cwd=bundle, capture_output=True, text=True, timeout=600)
    venv_home.setdefault("path", (bundle / ".venv").resolve())
    return r


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_readme_runs_as_written_up_to_tensorrt(target, kind, bundle_artifacts, venv_home, tmp_path):
    out = tmp_path / "bundle"
    manifest = build_bundle(bundle_artifacts / kind, target, kind, out)
    assert manifest["wheel"] and (out / manifest["wheel"]).is_file(), "the bundle carries the toolkit's wheel"
    commands = readme_commands((out / "README.md").read_text())
    assert commands[0] == "python3 -m venv --system-site-packages .venv"  # sees JetPack's TensorRT
    r = run_as_written(out, commands, venv_home)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0], r.stderr
    check_paths(out, commands, manifest, target, kind)


def check_paths(out: Path, commands: list, manifest: dict, target: str, kind: str):
    build = next(c for c in commands if c.startswith("iaunet build")).split()
    model, engine = build[2], build[build.index("-o") + 1]
    assert (out / model).is_file() and (out / engine).parent.is_dir()
    if "--ptx" in build:
        ptx = out / build[build.index("--ptx") + 1]
        archs = TARGETS[target]["archs"]
        folders = [ptx] if len(archs) == 1 else [ptx / f"sm{a}" for a in archs]
        for folder, arch in zip(folders, archs):
            assert f'"arch": {arch}' in (folder / "manifest.json").read_text()
    bench = next(c for c in commands if c.startswith("iaunet bench")).split()
    assert bench[2] == engine
    if kind == "deepstream":
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(out / "deepstream" / "config_infer_secondary_reid.txt")
        prop = parser["property"]
        assert (out / "deepstream" / prop["onnx-file"]).resolve() == (out / model).resolve()
        assert (out / "deepstream" / prop["model-engine-file"]).resolve() == (out / engine).resolve()
        reid = yaml.safe_load((out / "deepstream" / "config_tracker_NvDCF_reid.yml").read_text())["ReID"]
        assert (out / "deepstream" / reid["onnxFile"]).resolve() == (out / model).resolve()
        assert (out / "deepstream" / reid["modelEngineFile"]).resolve() == (out / engine).resolve()
        assert manifest["graphs"][model] == "native"  # DeepStream never needs a Python plugin


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_triton_bundles_name_paths_that_exist(target, bundle_artifacts, tmp_path):
    manifest = build_bundle(bundle_artifacts / "deepstream", target, "triton", tmp_path / "t")
    for rel in manifest["variants"]:
        assert (tmp_path / "t" / rel).is_file()
        assert (tmp_path / "t" / rel).parent.parent.joinpath("config.pbtxt").is_file()
