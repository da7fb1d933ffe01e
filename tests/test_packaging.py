"""The stage folders install as the one import package ``iaunet`` and nothing else lands in
site-packages: pyproject lists every package folder, the built wheel holds every module
under ``iaunet/``, and installed alone (with numpy and Pillow) into a fresh virtualenv it
runs the runtime, the core and the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
SOURCE_ROOTS = ("iaunet", "train", "export", "calib", "engines", "runtime")


def folder_of(package: str) -> PurePosixPath:
    """setuptools' rule: the longest package-dir prefix, then one sub-folder per further name."""
    head = max((p for p in SETUPTOOLS["package-dir"] if package == p or package.startswith(p + ".")), key=len)
    return PurePosixPath(SETUPTOOLS["package-dir"][head], *package.split(".")[head.count(".") + 1:])


def source_modules() -> dict[str, str]:
    """Installed path -> repository path of every module (``train/data/synth.py`` -> ``iaunet/train/data/synth.py``)."""
    installed_root = {folder: package.replace(".", "/") for package, folder in SETUPTOOLS["package-dir"].items()}
    modules = {}
    for root in SOURCE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT).as_posix()
                modules[installed_root[root] + rel[len(root):]] = rel
    return modules


def test_pyproject_lists_every_package_folder():
    listed = {str(folder_of(package)): package for package in SETUPTOOLS["packages"]}
    with_modules = {path.parent.relative_to(ROOT).as_posix() for path in map(ROOT.joinpath, source_modules().values())}
    with_init = {path.parent.relative_to(ROOT).as_posix()
                 for root in SOURCE_ROOTS for path in (ROOT / root).rglob("__init__.py")}
    assert with_modules <= with_init, f"folders with modules but no __init__.py: {sorted(with_modules - with_init)}"
    unlisted = sorted(with_init - set(listed))
    without_folder = sorted(f"{package} ({folder})" for folder, package in listed.items() if folder not in with_init)
    assert not unlisted and not without_folder, (f"package folders not in [tool.setuptools] packages: {unlisted}; "
                                                 f"listed without a package folder: {without_folder}")


def build_isolation() -> list[str]:
    """Build in this environment when its packages meet [build-system] requires, else let pip isolate."""
    for requirement in map(Requirement, PYPROJECT["build-system"]["requires"]):
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return []
        except PackageNotFoundError:
            return []
    return ["--no-build-isolation"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built once from a copy of the tree (so no build/ or egg-info lands in the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(ROOT, tmp / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "iaunet-demo"))
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
               *build_isolation(), "-w", tmp / "dist", source]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def test_wheel_holds_only_the_iaunet_package_with_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        read = {name: archive.read(name).decode() for name in names if name.endswith(".txt")}
    top_level = {name: text.split() for name, text in read.items() if name.endswith(".dist-info/top_level.txt")}
    entry_points = "".join(text for name, text in read.items() if name.endswith(".dist-info/entry_points.txt"))
    dist_info = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
    assert len(dist_info) == 1, dist_info
    outside = [name for name in names if name.split("/")[0] not in {"iaunet", *dist_info}]
    assert not outside, f"the wheel installs more than the iaunet package: {outside}"
    assert all(words == ["iaunet"] for words in top_level.values()), top_level
    modules = source_modules()
    assert {"iaunet/train/data/synth.py", "iaunet/engines/kernels/channel_affinity.py", "iaunet/cli/__main__.py",
            "iaunet/runtime/trt_plugin_v3.py", "iaunet/core/preprocess.py", "iaunet/__init__.py"} <= set(modules)
    packed = {name for name in names if name.endswith(".py")}
    assert not set(modules) - packed, f"missing from the wheel: {sorted(set(modules) - packed)}"
    assert not packed - set(modules), f"in the wheel but not in the source tree: {sorted(packed - set(modules))}"
    assert "iaunet = iaunet.cli:main" in entry_points, entry_points


BARE_VENV_CHECK = '''
import importlib, json, pkgutil, sys, sysconfig
from pathlib import Path
import iaunet
site = Path(sysconfig.get_paths()["purelib"]).resolve()
names = ["iaunet.runtime", "iaunet.core", "iaunet.cli"]
for package in tuple(names):
    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")
              if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
missing = []
for name in ("torch", "onnx"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
outside = [f"{name}: {module.__file__}" for name, module in sys.modules.items() if name.partition(".")[0] == "iaunet"
           and getattr(module, "__file__", None) and not Path(module.__file__).resolve().is_relative_to(site)]
print(json.dumps(dict(file=iaunet.__file__, site=str(site), modules=names, missing=missing, outside=outside)))
'''


def test_wheel_runs_in_a_bare_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = [bin_dir / "python", "-I"]  # isolated: no PYTHONPATH, user site or cwd on sys.path

    def run(*args, timeout=120):
        return subprocess.run([*map(str, args)], capture_output=True, text=True, cwd=tmp_path, timeout=timeout)

    install = run(*python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input", "--no-deps",
                  wheel, "numpy", "Pillow", timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]

    check = run(*python, "-c", BARE_VENV_CHECK)
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(Path(result["site"])), result["file"]
    assert not result["outside"], f"imported from outside the venv's site-packages: {result['outside']}"
    assert result["missing"] == ["torch", "onnx"], f"the venv is not bare: {result['missing']}"
    assert {"iaunet.runtime.trt_plugin_v3", "iaunet.core.preprocess", "iaunet.core.cuda_driver",
            "iaunet.cli.doctor"} <= set(result["modules"]), result["modules"]

    cli = [*python, "-m", "iaunet.cli"]
    for args in ([*cli, "--help"], [*cli, "doctor"], [bin_dir / "iaunet", "--help"]):
        completed = run(*args)
        assert completed.returncode == 0, f"{args[-2:]} exited {completed.returncode}:\n{completed.stderr[-3000:]}"
        assert "Traceback" not in completed.stderr, completed.stderr
    assert "usage: iaunet" in completed.stdout, completed.stdout


def test_device_install_stops_at_tensorrt_with_one_line(wheel, tmp_path, image_onnx, market_synth):
    """What a Jetson installs for engines/ and runtime/ ([trt]: tensorrt and pycuda are absent
    here, so numpy, Pillow and polygraphy): `iaunet build` and the runtime's engine path import,
    then stop with one line saying TensorRT is not installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = [str(bin_dir / "python"), "-I"]
    install = subprocess.run([*python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
                              "--no-deps", str(wheel)], capture_output=True, text=True, timeout=600)
    deps = subprocess.run([*python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
                           "numpy", "Pillow", "polygraphy"], capture_output=True, text=True, timeout=600)
    if deps.returncode:
        pytest.skip(f"could not install polygraphy into a fresh venv: {deps.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stderr[-3000:]
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not loaded: the sidecar is read first")
    from iaunet.engines.plan import BuildOptions, plan_build
    from iaunet.runtime.engine_card import Machine, sidecar_path
    from iaunet.runtime.embedder import Embedder
    with Embedder.open(image_onnx) as embedder:
        card = embedder.card
    plan = plan_build(card, "cd" * 32, True, Machine("Orin", 87, "10.3.0"), BuildOptions(ptx_dir="ptx"))
    sidecar_path(engine).write_text(json.dumps(plan.sidecar()))
    imports = subprocess.run([*python, "-c", "import iaunet.engines.builder, iaunet.engines.bundle, "
                              "iaunet.runtime.trt_runner, polygraphy; import sys; "
                              "assert 'onnx' not in sys.modules and 'torch' not in sys.modules"],
                             capture_output=True, text=True, timeout=120)
    assert imports.returncode == 0, imports.stderr[-3000:]
    iaunet = str(bin_dir / "iaunet")
    (tmp_path / "ptx").mkdir()
    for argv in ([iaunet, "build", str(image_onnx), "-o", str(tmp_path / "new.engine"), "--ptx", str(tmp_path / "ptx")],
                 [iaunet, "embed", str(market_synth / "query"), "-m", str(engine), "-o", str(tmp_path / "g.npz")]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "TensorRT is not installed" in lines[0], done.stderr[-3000:]
    assert not (tmp_path / "new.engine").exists() and not (tmp_path / "g.npz").exists()
