"""The architecture's import layers, checked on the source with ``ast``.

1. core (``iaunet/core``) imports only the standard library, numpy and Pillow, never a stage;
2. runtime sits directly on the core and imports nothing else of ours, so every stage may use
   its runners (export checks and parity run ONNX through them, engines its TensorRT runner);
3. the other stages in pipeline order train -> export -> calib -> engines import the core,
   runtime and earlier stages;
4. the top (``iaunet/cli``, ``iaunet/demo.py``, ``iaunet/doctor.py``) imports anything.

``iaunet/__init__.py`` runs before every ``iaunet.*`` module, and stages import it for
``__version__``, so it is checked as core: whatever it imports, every layer imports.
No module, tests included, imports a stage folder by its bare name (``import train``):
it works only where the repository is on sys.path and yields a second copy of the stage.

Every import statement counts (also those inside functions), and so does
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path, PurePosixPath

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).parents[1]
STAGES = ("runtime", "train", "export", "calib", "engines")  # each may import the earlier ones
RANK = {"core": 0, **{stage: i for i, stage in enumerate(STAGES, 1)}, "top": len(STAGES) + 1}
CORE_MAY_IMPORT = set(sys.stdlib_module_names) | {"numpy", "PIL", "iaunet"}
TOP_FILES = {"iaunet/demo.py", "iaunet/report.py", "iaunet/model_bench.py", "iaunet/camera_bench.py", "iaunet/doctor.py",
             "iaunet/__main__.py", "iaunet/identity_bench.py", "iaunet/identity_score.py"}
# repository folder -> installed package, from pyproject's package-dir ("train" -> "iaunet.train")
PACKAGE_OF = {folder: package for package, folder in
              tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()}


def module_of(rel: str) -> str:
    """``train/data/synth.py`` -> ``iaunet.train.data.synth``; ``tests/x.py`` -> ``tests.x``."""
    parts = list(PurePosixPath(rel).with_suffix("").parts)
    parts[0] = PACKAGE_OF.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_files():
    return sorted(p for folder in PACKAGE_OF for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def suite_files():
    return sorted(p for p in (ROOT / "tests").rglob("*.py") if "__pycache__" not in p.parts)


# every module and (namespace) package of the source tree, to tell `from iaunet.core import log` (a module)
# from `from iaunet.core.log import configure` (a name)
KNOWN = {".".join(parts[:n]) for parts in (module_of(str(p.relative_to(ROOT))).split(".") for p in package_files())
         for n in range(1, len(parts) + 1)}


def file_layer(rel: str):
    parts = PurePosixPath(rel).parts
    if parts[0] in STAGES:
        return parts[0]
    if parts[0] == "iaunet" and (parts[1] == "core" or rel == "iaunet/__init__.py"):
        return "core"
    if parts[0] == "iaunet" and (parts[1] == "cli" or rel in TOP_FILES):
        return "top"
    return None


def target_layer(module: str) -> str:
    parts = module.split(".") + [""]
    if parts[1] in ("", "core"):
        return "core"
    return parts[1] if parts[1] in STAGES else "top"


def imports(tree: ast.AST, rel: str):
    """(line, imported module, statement) for every import in the tree."""
    package = module_of(rel) if rel.endswith("__init__.py") else module_of(rel).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            written = "." * node.level + (node.module or "")
            base = importlib.util.resolve_name(written, package) if node.level else written
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in KNOWN else base, f"from {written} import {alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            name = node.args[0].value
            anchor = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else package
            target = importlib.util.resolve_name(name, anchor) if name.startswith(".") else name
            yield node.lineno, target, f"{ast.unparse(node.func)}({name!r})"


def check_source(source: str, rel: str) -> list[str]:
    """The layer violations of one file, given by its path relative to the repository root."""
    layer, problems = file_layer(rel), []
    if layer is None and PurePosixPath(rel).parts[0] in PACKAGE_OF:
        problems.append(f"{rel}: in no layer of the architecture (if it belongs to the top, add it to TOP_FILES)")
    for line, target, statement in imports(ast.parse(source, rel), rel):
        head = target.split(".")[0]
        where = f"{rel}:{line}: {statement!r}"
        if head in STAGES:
            problems.append(f"{where} imports the bare stage folder {head!r}; import iaunet.{target} instead")
        elif layer is None:
            continue
        elif head == "iaunet":
            wanted = target_layer(target)
            if not (layer == "top" or wanted == "core" or wanted == layer or RANK[wanted] < RANK[layer]):
                problems.append(f"{where}: {layer} may not import {wanted} ({target})")
        elif layer == "core" and head not in CORE_MAY_IMPORT:
            problems.append(f"{where}: core imports only the standard library, numpy and Pillow, not {head!r}")
    return problems


def check_files(paths) -> list[str]:
    return [problem for path in paths
            for problem in check_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]


def test_package_modules_keep_to_their_layer():
    files = package_files()
    assert len(files) > 40 and any(file_layer(str(f.relative_to(ROOT))) == "runtime" for f in files)
    problems = check_files(files)
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_no_module_or_test_imports_a_bare_stage_folder():
    problems = [p for p in check_files(package_files() + suite_files()) if "bare stage folder" in p]
    assert not problems, "\n".join(problems)


BAD = [  # (file, source, the start of the one problem reported)
    ("runtime/fake.py", "import numpy\nfrom iaunet.export import x\n",
     "runtime/fake.py:2: 'from iaunet.export import x': runtime may not import export"),
    ("iaunet/core/fake.py", "import os\nimport torch\n", "iaunet/core/fake.py:2: 'import torch': core imports only"),
    ("iaunet/core/fake.py", "from iaunet.train import config\n",
     "iaunet/core/fake.py:1: 'from iaunet.train import config': core may not import train"),
    ("tests/test_fake.py", "import train\n",
     "tests/test_fake.py:1: 'import train' imports the bare stage folder 'train'"),
    ("calib/fake.py", "from export.checks import compare\n",
     "calib/fake.py:1: 'from export.checks import compare' imports the bare stage folder 'export'"),
    ("calib/fake.py", "def f():\n    import importlib\n    return importlib.import_module('iaunet.engines.aot')\n",
     "calib/fake.py:3: \"importlib.import_module('iaunet.engines.aot')\": calib may not import engines"),
    ("runtime/fake.py", "def f():\n    from iaunet.train.config import ModelConfig\n",
     "runtime/fake.py:2: 'from iaunet.train.config import ModelConfig': runtime may not import train"),
    ("iaunet/fake.py", "", "iaunet/fake.py: in no layer"),
]


@pytest.mark.parametrize("rel, source, expected", BAD)
def test_checker_reports_violations(rel, source, expected):
    problems = check_source(source, rel)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize("rel, source", [
    ("runtime/fake.py", "import numpy, ctypes\nfrom iaunet import __version__\nfrom iaunet.core import cuda_driver\n"
                        "def f():\n    import tensorrt\n"),
    ("calib/fake.py", "from iaunet.export.checks import compare\nfrom iaunet.train.config import ModelConfig\n"
                      "import onnx\n"),
    ("engines/kernels/fake.py", "from ..aot import compile_kernels\nfrom ...calib import graph\n"
                                "from ...runtime import trt_plugin_v3\n"),
    ("export/fake.py", "from iaunet.runtime.runners import OnnxRuntimeRunner\n"),
    ("iaunet/core/fake.py", "from __future__ import annotations\nimport numpy as np\nfrom PIL import Image\n"
                            "from . import errors\n"),
    ("iaunet/cli/fake.py", "def f():\n    from iaunet.runtime import trt_plugin_v3\n    import torch\n"),
    ("tests/runtime/test_fake.py", "from iaunet.train import config\nfrom . import helpers\n"),
])
def test_checker_accepts_allowed_imports(rel, source):
    assert check_source(source, rel) == []
