"""``iaunet bundle``: what a device needs to build and run the model there, in one folder.

Engines are tied to a GPU and a TensorRT release, so a bundle carries the ONNX variants
(with their calibration caches and reports), the plugin PTX for the target's compute
capability, the toolkit's wheel when it can be built here, a manifest (model config,
preprocessing, SHA-256 of every file, the TensorRT versions the code was checked
against, the plugin route each supported version takes) and a README with the commands
to run on the device, and with ``--data`` a parity kit (``kit/``: held-out images and their
references, from ``--checkpoint`` or else the FP32 ONNX) that ``iaunet verify`` checks the
variants against there. ``--for deepstream`` adds nvinfer and tracker ReID configs (always
for the native graph: DeepStream runs TensorRT from C++, and when it builds its own engine
from the ONNX no Python plugin can be registered there), whose engine path is where the
README's build writes; ``--for triton`` writes a Triton Inference Server model repository
instead of ``models/``.

The README's commands are meant to run as written on the device: a virtualenv with
``--system-site-packages`` (JetPack's TensorRT is a system package, and pip refuses the
system Python on JetPack 7), the toolkit with Polygraphy first, the build, then pycuda
(built from source on Jetson: nvcc on PATH and the Python headers) for the bench. The
wheel is built without the network (no index, no pip version check) and cached by a digest
of the source tree, so later bundles of the same toolkit copy it. The folder is built
in a temporary sibling and renamed when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from iaunet import __version__
from iaunet.core import onnx_wire
from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_folder, cache_folder, check_output_folder, sha256_file, write_json
from iaunet.core.log import get_logger
from iaunet.core.graph_io import CONSUMER_KEY, METADATA_PREFIX, TENSORRT_ONLY, TENSORRT_SUFFIX, onnxruntime_layout_path
from iaunet.core.plugin_contract import DOMAIN, PLUGIN_OPS
from iaunet.engines.plan import CHECKED_TENSORRT, SUPPORTED_TENSORRT, choose_route, version_tuple
from iaunet.runtime.model_card import ModelCard
from iaunet.runtime.parity_kit import DEFAULT_SIZE as DEFAULT_KIT_SIZE

log = get_logger("engines")
TARGETS = {  # compute capabilities, the TensorRT the device ships, what it is
    "orin": {"archs": (87,), "tensorrt": "10.3", "what": "Jetson AGX/NX/Nano Orin, JetPack 6"},
    "thor": {"archs": (110,), "tensorrt": "10.13", "what": "Jetson Thor, JetPack 7"},
    "x86": {"archs": (80, 86, 89, 90), "tensorrt": "10.13", "what": "datacenter and desktop GPUs, TensorRT 10.13+ or 11.x"},
}
KINDS = ("jetson", "deepstream", "triton")
PRECISION_ORDER = ("int8", "fp16", "fp32")


def find_variants(artifacts) -> list[tuple[Path, ModelCard, bool]]:
    """(path, card, has plugin nodes) of every toolkit ONNX file in ``artifacts``."""
    root = Path(artifacts)
    if not root.is_dir():
        raise IAUnetError(f"artifacts folder {root} not found; expected the folder holding 'iaunet export'/'calib' output")
    found = []
    for path in sorted(root.glob("*.onnx")):
        props, nodes = onnx_wire.read_model(path.read_bytes(), path)
        if any(k.startswith("iaunet.config") for k in props):
            found.append((path, ModelCard.from_props(props, path), any(d == DOMAIN and o in PLUGIN_OPS for d, o in nodes)))
    if not found:
        raise IAUnetError(f"{root} holds no ONNX file written by 'iaunet export' or 'iaunet calib'")
    ids = {card.model_id for _, card, _ in found}
    if len(ids) > 1:
        raise IAUnetError(f"{root} holds ONNX files of {len(ids)} different checkpoints; bundle one model at a time")
    return found


def tensorrt_only(card: ModelCard) -> bool:
    """Whether the file is an INT8 variant's TensorRT layout, which no ONNX Runtime session may be handed."""
    return card.props.get(METADATA_PREFIX + CONSUMER_KEY) == TENSORRT_ONLY


def routes_by_version(has_plugins: bool) -> dict:
    return {v: choose_route(version_tuple(v), "auto", has_plugins) for v in SUPPORTED_TENSORRT}


def _ptx(artifacts: Path, arch: int, out: Path, cache_dir=None) -> None:
    """The plugin PTX for ``arch``: reused from ``artifacts`` when a matching folder is there, else compiled."""
    from iaunet.core.plugin_contract import PtxManifest
    for candidate in (artifacts / "ptx", artifacts / "ptx" / f"sm{arch}"):
        if (candidate / "manifest.json").is_file() and PtxManifest(candidate).arch == arch:
            shutil.copytree(candidate, out)
            return
    from iaunet.engines.aot import compile_kernels
    log.info("compiling the plugin kernels for sm_%d", arch)
    compile_kernels(arch, out, cache_dir=cache_dir)


def _package_folders(root: Path) -> list:
    """The folders the wheel packs: [tool.setuptools] package-dir's values in pyproject.toml."""
    try:
        import tomllib
        folders = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    except ModuleNotFoundError:  # Python 3.10: every top-level package but the tests
        folders = {p.name for p in root.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    return sorted(folders)


def _source_digest(root: Path) -> str:
    """SHA-256 of what the wheel is built from: pyproject.toml and every module's path and bytes."""
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for path in sorted(p for folder in _package_folders(root) for p in (root / folder).rglob("*.py")
                       if "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _source_copy(root: Path, scratch: Path) -> Path:
    """What the wheel is built from (pyproject.toml, the README, the package folders) copied
    into ``scratch``, so that building it writes nothing (build/, egg-info) into the tree
    this runs from."""
    copy = scratch / "source"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, copy / name)
    for folder in _package_folders(root):
        shutil.copytree(root / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _wheel(out: Path) -> str | None:
    """The toolkit's wheel, built from a copy of the source tree this runs from (None where
    there is none) and cached by that tree's digest, so a second bundle of the same toolkit
    copies it."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return None
    cached = cache_folder("wheels") / _source_digest(root)[:24]
    found = sorted(cached.glob("iaunet_toolkit-*.whl"))
    if not found:
        found = _build_wheel(root, cached)
        if not found:
            return None
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(found[0], out / found[0].name)
    return found[0].name


def _build_wheel(root: Path, cached: Path) -> list:
    """Build the wheel into the cache folder ``cached`` (complete or absent); [] when pip cannot."""
    # --no-index and no version check: nothing touches the network (the build backend is the
    # setuptools already installed, --no-build-isolation)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".build-", ignore_cleanup_errors=True) as tmp, \
            tempfile.TemporaryDirectory(prefix="iaunet-wheel-") as scratch:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "--disable-pip-version-check", "-w", tmp, str(_source_copy(root, Path(scratch)))],
                           capture_output=True, text=True, timeout=600, env=env)
        wheels = sorted(Path(tmp).glob("iaunet_toolkit-*.whl"))
        if r.returncode or not wheels:
            log.info("could not build the toolkit's wheel here (%s); the README says how to install it",
                     (r.stderr.strip().splitlines() or ["pip wheel failed"])[-1][:120])
            return []
        try:
            os.replace(tmp, cached)  # whole or not at all; another process may have won the race
        except OSError:
            pass
    return sorted(cached.glob("iaunet_toolkit-*.whl"))


def build_bundle(artifacts, target: str, kind: str, output, cache_dir=None, checkpoint=None, data=None,
                 kit_size: int = DEFAULT_KIT_SIZE) -> dict:
    """Write the bundle folder ``output`` (with a parity kit when ``data`` is given); returns its manifest."""
    if target not in TARGETS:
        raise IAUnetError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if kind not in KINDS:
        raise IAUnetError(f"unknown bundle kind {kind!r}; expected one of {', '.join(KINDS)}")
    artifacts, output = Path(artifacts), check_output_folder(output)  # a non-empty folder, the artifacts too, is refused
    variants = find_variants(artifacts)
    kit_source = _kit_source(variants, checkpoint, data)
    spec, has_plugins = TARGETS[target], any(p for _, _, p in variants)
    route = choose_route(version_tuple(spec["tensorrt"]), "auto", has_plugins)
    with atomic_folder(output) as tmp:
        files, deepstream_model = _models(artifacts, variants, tmp, kind, spec, route)
        if has_plugins and kind != "triton":
            for arch in spec["archs"]:
                _ptx(artifacts, arch, tmp / "ptx" / (f"sm{arch}" if len(spec["archs"]) > 1 else ""), cache_dir)
        kit = _kit(kit_source, data, tmp / "kit", kit_size) if kit_source else None
        wheel = _wheel(tmp)
        manifest = _manifest(tmp, variants, target, kind, route, has_plugins, wheel, files, kit)
        manifest["graphs"] = {f"models/{p.name}": ("plugin" if plugins else "native") for p, _, plugins in variants
                              if kind != "triton"}
        manifest["deepstream_model"] = deepstream_model
        write_json(tmp / "manifest.json", manifest)
        (tmp / "README.md").write_text(_readme(manifest, spec))
    if kit is None:
        log.info("no --data: the bundle carries no parity kit, so 'iaunet verify' cannot check parity with it")
    return manifest


def _kit_source(variants, checkpoint, data) -> Path | None:
    """What the kit's references come from: the checkpoint (checked to be the variants' model),
    else the FP32 ONNX; None without ``data``."""
    if data is None:
        if checkpoint:
            raise IAUnetError("--checkpoint gives the parity kit's references; the kit's images come from --data DIR")
        return None
    if not Path(data).is_dir():
        raise IAUnetError(f"data folder {data} not found; expected a data set with query and gallery splits")
    card = variants[0][1]
    if checkpoint:
        from iaunet.train.checkpoint import checkpoint_model_id
        if not Path(checkpoint).is_file() or not card.matches(checkpoint_model_id(checkpoint)):
            raise IAUnetError(f"checkpoint {checkpoint} is {'not found' if not Path(checkpoint).is_file() else 'not the one'}"
                              f"; expected the checkpoint the variants were exported from (model {card.model_id[:12]}...)")
        return Path(checkpoint)
    fp32 = [path for path, card, _ in variants if card.precision == "fp32"]
    if not fp32:
        raise IAUnetError("the parity kit's references come from --checkpoint or the FP32 ONNX; the artifacts hold "
                          "no FP32 ONNX, so pass --checkpoint")
    return fp32[0]


def _kit(source: Path, data, folder: Path, size: int) -> dict:
    from iaunet.calib.parity import fill_kit
    folder.mkdir()
    info = fill_kit(source, data, folder, size)
    return {"path": "kit/", "size": info["size"], "num_query": info["num_query"],
            "reference": f"{info['reference']['source']} ({info['reference']['file']})"}


def _models(artifacts: Path, variants, tmp: Path, kind: str, spec: dict, route: str) -> tuple:
    """Copy the variants where the bundle kind wants them; returns ({variant path: precision},
    the variant the DeepStream configs use or None)."""
    if kind == "triton":
        return _triton(variants, tmp), None
    (tmp / "models").mkdir()
    copied = {}
    for path, card, _ in variants:
        for extra in (path, onnxruntime_layout_path(path).with_suffix(".calib"), path.with_suffix(".json")):
            if extra.is_file():
                shutil.copy2(extra, tmp / "models" / extra.name)
        copied[f"models/{path.name}"] = card.precision
    return copied, (_deepstream(variants, tmp, spec) if kind == "deepstream" else None)


def _pick(variants, want_plugins: bool | None = None):
    """The variant a single-model config for TensorRT uses: the lowest precision available (and
    of the wanted graph form), an INT8 variant in its TensorRT layout."""
    usable = [v for v in variants if want_plugins is None or v[2] == want_plugins]
    return min(usable, key=lambda v: (PRECISION_ORDER.index(v[1].precision), not tensorrt_only(v[1]))) if usable else None


def deepstream_engine(model: str) -> str:
    """Where the DeepStream configs name the engine of ``model`` (models/X.onnx), from the
    bundle's root: beside the configs, which DeepStream resolves relative paths against."""
    return f"deepstream/{Path(model).stem}.engine"


def _deepstream(variants, tmp: Path, spec: dict) -> str:
    """Write the configs for the native graph's leanest variant; returns its bundle path."""
    chosen = _pick(variants, False)
    if chosen is None:
        raise IAUnetError("a DeepStream bundle needs the native graph (DeepStream runs TensorRT from C++: a Python "
                          "plugin cannot be registered there when it builds its engine from the ONNX); add one with "
                          "'iaunet export CKPT --mode native' (and calib it) into the artifacts folder")
    from iaunet.engines.deployment_configs import deepstream_files
    path, card, _ = chosen
    calib = onnxruntime_layout_path(path).with_suffix(".calib")
    engine = Path(deepstream_engine(f"models/{path.name}")).name
    files = deepstream_files(card, f"../models/{path.name}", engine,
                             f"../models/{calib.name}" if calib.is_file() else None, card.precision, batch=16)
    (tmp / "deepstream").mkdir()
    for name, text in files.items():
        (tmp / "deepstream" / name).write_text(text)
    return f"models/{path.name}"


def _triton(variants, tmp: Path) -> dict:
    """The model repository: every variant on ONNX Runtime, an INT8 variant in its ONNX Runtime
    layout (the TensorRT layout is computed wrongly there; ``iaunet.calib.ort_layout``), named
    iaunet_<precision>, with _native for the native graph where the plugin graph is there too."""
    from iaunet.engines.deployment_configs import triton_repository
    repo, copied = tmp / "model_repository", {}
    both_forms = len({plugins for _, _, plugins in variants}) > 1
    for path, card, plugins in variants:
        if tensorrt_only(card):
            continue
        name = f"iaunet_{card.precision}" + ("_native" if both_forms and not plugins else "")  # one model per name
        for rel, text in triton_repository(card, name, "model.onnx", "onnxruntime_onnx", 32, [8, 16, 32]).items():
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if text is None:
                shutil.copy2(path, target)
            else:
                target.write_text(text)
        copied[f"model_repository/{name}/1/model.onnx"] = card.precision
    return copied


def _manifest(tmp: Path, variants, target: str, kind: str, route: str, has_plugins: bool, wheel, files: dict,
              kit: dict | None) -> dict:
    card = variants[0][1]
    hashes = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    return {"format": 1, "toolkit_version": __version__, "target": target, "kind": kind,
            "model": json.loads(card.props["iaunet.config"]), "preprocess": json.loads(card.props["iaunet.preprocess"]),
            "model_id": card.model_id, "variants": files, "plugin_route_on_target": route,
            "plugin_routes": routes_by_version(has_plugins),
            "tensorrt_checked_against": list(CHECKED_TENSORRT), "wheel": wheel, "kit": kit, "sha256": hashes}


def device_commands(manifest: dict) -> tuple[str, str]:
    """(build, bench): what to run in the bundle's folder on the device. A DeepStream bundle
    builds the variant its configs use, where they look for the engine; the others the
    leanest variant (an INT8 one in its TensorRT layout) as model.engine. A plugin graph's build names the PTX folder (the
    builder picks the subfolder for the GPU where there is one per architecture)."""
    if manifest.get("deepstream_model"):
        model, engine = manifest["deepstream_model"], deepstream_engine(manifest["deepstream_model"])
    else:
        model = min(manifest["variants"], key=lambda v: (PRECISION_ORDER.index(manifest["variants"][v]),
                                                         not v.endswith(TENSORRT_SUFFIX)))
        engine = "model.engine"
    ptx = " --ptx ptx" if manifest.get("graphs", {}).get(model) == "plugin" else ""
    return f"iaunet build {model} -o {engine}{ptx}", f"iaunet bench {engine} --batch 1,8"


def install_commands(manifest: dict) -> tuple[list, list]:
    """(before the build, before the bench): the README's install steps, in a virtualenv that
    sees the system's TensorRT. pycuda comes second: only the bench needs it, and it builds
    from source (nvcc and the Python headers)."""
    wheel = _wheel_reference(manifest)
    venv = ["python3 -m venv --system-site-packages .venv", ". .venv/bin/activate",
            f"python -m pip install '{wheel}[build]'"]
    return venv, ["export PATH=/usr/local/cuda/bin:$PATH", f"python -m pip install '{wheel}[trt]'"]


VERIFY_COMMAND = "iaunet verify ."
INSTALL_EXTRAS = {"device": "trt,ort", "cpu": "ort"}  # TensorRT rows need pycuda (trt); ONNX Runtime rows ort


def install_command(manifest: dict, where: str = "device") -> str:
    """The pip command that installs the bundle's wheel with what verify needs ('device': with
    TensorRT, from JetPack or NVIDIA; 'cpu': a machine without CUDA, ONNX Runtime rows only)."""
    return f"python -m pip install '{_wheel_reference(manifest)}[{INSTALL_EXTRAS[where]}]'"


def _wheel_reference(manifest: dict) -> str:
    return f"./{manifest['wheel']}" if manifest["wheel"] else "<the toolkit's source folder>"


def _readme(manifest: dict, spec: dict) -> str:
    build, bench = device_commands(manifest)
    before_build, before_bench = install_commands(manifest)
    kit = manifest["kit"]
    lines = [f"# IAUnet bundle for {manifest['target']} ({spec['what']})", "",
             f"Model {manifest['model']['name']} ({manifest['model_id'][:12]}), {manifest['kind']} bundle, "
             f"toolkit {manifest['toolkit_version']}. Engines are built on the device: they are tied to its GPU "
             "and TensorRT release.", "",
             "Once per device, the system packages (JetPack brings TensorRT, CUDA and nvcc; pycuda builds from "
             "source and needs the Python headers):", "", "```bash", "sudo apt-get install -y python3-venv python3-dev",
             "```", "",
             "Then in this folder, the acceptance check: a virtualenv that sees JetPack's TensorRT "
             "(`--system-site-packages`; on JetPack 7 pip refuses to install into the system Python), the toolkit "
             "with what verify needs (pycuda builds with nvcc, hence the PATH), and `iaunet verify .`:", "",
             "```bash", *before_build[:2], before_bench[0], install_command(manifest), VERIFY_COMMAND, "```", "",
             "`iaunet verify .` builds an engine of every variant here (plugin route as `iaunet build` chooses), "
             "checks its parity against the kit "
             + (f"(`kit/`: {kit['size']} held-out images, references from {kit['reference']}) " if kit else
                "(this bundle has none: it was made without `--data`) ")
             + "and benches it at batch 1 and 8, and does the same for every ONNX variant on ONNX Runtime. It writes "
             "`verify.json` and `verify.md` (one row per variant and backend: built, plugin route, build time, parity "
             "and gates, p50/p99 latency and throughput; a failed step's reason; on a failed gate, the first layer "
             "where the variant parts from the FP32 ONNX) and exits non-zero if a variant fails. Without TensorRT, "
             f"`{install_command(manifest, 'cpu')}` and the same command give the ONNX Runtime rows, and the TensorRT "
             "rows say why they were not run.", "",
             "Step by step instead: the toolkit, the engine, pycuda, the bench:", "",
             "```bash", *before_build, build, *before_bench, bench, "```", "",
             f"Plugin route on TensorRT {spec['tensorrt']}: {manifest['plugin_route_on_target']}. "
             "Routes by TensorRT version: " + ", ".join(f"{v}: {r}" for v, r in manifest["plugin_routes"].items()) + ".",
             f"The TensorRT calls were checked against the {', '.join(manifest['tensorrt_checked_against'])} bindings.",
             "`manifest.json` lists the SHA-256 of every file."]
    if manifest["kind"] == "deepstream":
        lines += ["", "DeepStream runs TensorRT from C++, so no Python plugin can run in it: the configs in "
                  f"`deepstream/` use the native graph `{manifest['deepstream_model']}`, and the build above writes "
                  f"`{deepstream_engine(manifest['deepstream_model'])}`, the engine they name (DeepStream would "
                  "otherwise build its own from the ONNX with its own flags)."]
    if manifest["kind"] == "triton":
        lines += ["", "`model_repository/` serves each variant on ONNX Runtime: `tritonserver "
                  "--model-repository=model_repository`. For TensorRT, put an engine built on the server's GPU as "
                  "`model.plan` and set `platform: \"tensorrt_plan\"`."]
    return "\n".join(lines) + "\n"
