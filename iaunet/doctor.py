"""``iaunet doctor``: what this machine can run, and the one command that installs what a
stage lacks.

Probes Python packages without importing them (``importlib.util.find_spec`` and the
installed distributions' metadata); only torch, onnxruntime and TensorRT are imported,
inside their probes, for what the metadata cannot tell (torch's CUDA build and whether
CUDA is available, onnxruntime's providers, whether TensorRT's libraries load). The CUDA
driver is asked through libcuda with ``ctypes``, without torch. Every probe turns a
failure into one line, so the report is always made.

The facts are a JSON-ready dict; the text report labels its rows with the same keys.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import sys
import warnings
from pathlib import Path

from iaunet import __version__
from iaunet.core import cuda_driver
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import check_output_path, write_json
from iaunet.engines.aot import MIN_PTX_VERSION, PTX_CUDA, SUPPORTED_ARCHS
from iaunet.engines.aot_plugins import MIN_AOT_VERSION
from iaunet.core.plugin_contract import IPLUGINV3_MIN_VERSION as TRT_MIN_VERSION

# reported packages (report key -> import name); tensorrt has its own probe
PACKAGES = {"numpy": "numpy", "torch": "torch", "scipy": "scipy", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "onnxconverter-common": "onnxconverter_common", "matplotlib": "matplotlib", "triton": "triton",
            "polygraphy": "polygraphy", "pycuda": "pycuda"}
TORCH_CPU = "torch==2.13.0"
# stage -> (Python packages it needs, the pyproject extra that installs them, needs TensorRT and a GPU)
STAGES = {
    "train": (("torch", "scipy"), "train", False),
    "export": (("torch", "onnx", "onnxruntime"), "export", False),
    "calib": (("onnx", "onnxruntime", "onnxconverter-common", "matplotlib"), "calib", False),
    "kernels": (("triton",), "kernels", False),
    "engines": ((), None, True),
    "runtime_ort": (("onnxruntime",), "ort", False),
    "runtime_trt": (("pycuda",), "trt", True),
}
AOT, IPLUGINV3, TOO_OLD = "aot", "ipluginv3", "too old"
NO_DRIVER = "no CUDA driver (libcuda not found)"
LOWEST_PTX = min(MIN_PTX_VERSION.values())  # 8.5: what every IAU kernel needs at least


def _dotted(version: tuple) -> str:
    return ".".join(map(str, version))


ROUTE_TEXT = {
    AOT: f"AOT plugins (tensorrt.plugin aot_impl, TensorRT >= {_dotted(MIN_AOT_VERSION)})",
    IPLUGINV3: f"Python IPluginV3 plugins (TensorRT {_dotted(TRT_MIN_VERSION)} and later; "
               f"AOT needs >= {_dotted(MIN_AOT_VERSION)} with tensorrt.plugin)",
    TOO_OLD: f"too old for the IAU plugins (needs >= {_dotted(TRT_MIN_VERSION)})",
}


# ---------------------------------------------------------------- pure rules

def version_tuple(text: str) -> tuple:
    """(major, minor) of '10.3.0.26', '2.13.0+cpu', '12.6'."""
    parts = re.findall(r"\d+", str(text))[:2]
    return tuple(int(p) for p in parts) + (0,) * (2 - len(parts))


def tensorrt_route(version: tuple, has_plugin_module: bool) -> str:
    """How the IAU plugins run on this TensorRT: AOT plugins (>= 10.9 with ``tensorrt.plugin``),
    Python IPluginV3 (>= 10.3, also later versions without ``tensorrt.plugin``), or too old."""
    if tuple(version[:2]) >= MIN_AOT_VERSION and has_plugin_module:
        return AOT
    if tuple(version[:2]) >= TRT_MIN_VERSION:
        return IPLUGINV3
    return TOO_OLD


def cuda_version_text(driver_version: int) -> str:
    """cuDriverGetVersion's 12060 -> '12.6'."""
    return f"{driver_version // 1000}.{driver_version % 1000 // 10}"


def ptx_isa_for_driver(driver_version: int) -> int | None:
    """The highest PTX ISA (85 = 8.5) among those the kernels are compiled to that a driver of
    this CUDA version (cuDriverGetVersion, e.g. 12060) JIT-compiles; None when below them all."""
    cuda = version_tuple(cuda_version_text(driver_version))
    return max((isa for isa, needs in PTX_CUDA.items() if version_tuple(needs) <= cuda), default=None)


def isa_text(isa: int | None) -> str | None:
    return None if isa is None else f"{isa // 10}.{isa % 10}"


def jetson_release(text: str) -> str | None:
    """'R36.4.0' from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.0, ...')."""
    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{found.group(1)}.{found.group(2)}" if found else None


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200].rstrip(": ")


# ---------------------------------------------------------------- package probes

def _spec(module: str):
    """The module's spec, or None when it is not installed (or an import hook refuses it)."""
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _distributions() -> dict:
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # a broken distribution's metadata must not stop the report
        return {}


def dist_version(module: str) -> str | None:
    """Installed version of the distribution that provides ``module`` (its metadata only)."""
    for name in _distributions().get(module, []) + [module]:
        try:
            return importlib.metadata.version(name)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def probe_package(module: str) -> dict:
    spec = _spec(module)
    return {"installed": spec is not None, "version": dist_version(module) if spec is not None else None}


def _quiet_import(module: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def probe_torch(info: dict) -> dict:
    """Adds torch's CUDA build and whether it sees a GPU (imports torch, guarded)."""
    info.update(cuda_build=None, cuda_available=None)
    try:
        torch = _quiet_import("torch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info.update(version=torch.__version__, cuda_build=torch.version.cuda,
                        cuda_available=bool(torch.cuda.is_available()))
    except Exception as e:
        info["error"] = one_line(e)
    return info


def probe_onnxruntime(info: dict) -> dict:
    info["providers"] = []
    try:
        ort = _quiet_import("onnxruntime")
        info.update(version=ort.__version__, providers=list(ort.get_available_providers()))
    except Exception as e:
        info["error"] = one_line(e)
    return info


def _package_dirs(spec) -> list:
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []


def probe_triton(info: dict) -> dict:
    """Adds whether Triton's NVIDIA backend bundles ptxas (the kernels stage runs it)."""
    bundled = any((d / "backends" / "nvidia" / "bin" / "ptxas").is_file() for d in _package_dirs(_spec("triton")))
    info["ptxas"] = bundled or bool(os.environ.get("TRITON_PTXAS_PATH"))
    return info


def probe_packages() -> dict:
    facts = {name: probe_package(module) for name, module in PACKAGES.items()}
    for name, probe in (("torch", probe_torch), ("onnxruntime", probe_onnxruntime), ("triton", probe_triton)):
        if facts[name]["installed"]:
            probe(facts[name])
    return facts


# ---------------------------------------------------------------- TensorRT

def probe_tensorrt() -> tuple:
    """(facts, the imported module or None). Absent, installed but not loadable (the binding
    wheel without its libraries: the one-line reason), or loaded with its plugin route."""
    spec = _spec("tensorrt")
    info = {"installed": spec is not None, "version": None, "loads": False, "error": None,
            "plugin_module": False, "route": None}
    if spec is None:
        return info, None
    info["version"] = dist_version("tensorrt")
    info["plugin_module"] = any((d / "plugin").is_dir() or (d / "plugin.py").is_file() for d in _package_dirs(spec))
    trt = None
    try:
        trt = _quiet_import("tensorrt")
        info.update(version=trt.__version__, loads=True, plugin_module=_spec("tensorrt.plugin") is not None)
    except (Exception, SystemExit) as e:
        info["error"] = one_line(e)
    if info["version"]:
        info["route"] = tensorrt_route(version_tuple(info["version"]), info["plugin_module"])
    return info, trt


def probe_dla(trt, gpus: list) -> dict:
    """DLA cores as TensorRT's builder counts them; unknown without TensorRT or a GPU."""
    if trt is None:
        return {"cores": None, "note": "unknown without TensorRT"}
    if not gpus:
        return {"cores": None, "note": "unknown (no GPU visible)"}
    try:
        return {"cores": int(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores), "note": None}
    except Exception as e:
        return {"cores": None, "note": f"unknown ({one_line(e)})"}


# ---------------------------------------------------------------- CUDA driver (ctypes)

def load_libcuda():
    return cuda_driver.load_library()


def _gpu(lib, ordinal: int) -> dict:
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name, memory = ctypes.create_string_buffer(256), ctypes.c_size_t()
    cuda_driver.check(lib, lib.cuDeviceGet(ctypes.byref(device), ordinal), "cuDeviceGet")
    cuda_driver.check(lib, lib.cuDeviceGetName(name, len(name), device), "cuDeviceGetName")
    for value, attribute in ((major, cuda_driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                             (minor, cuda_driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)):
        cuda_driver.check(lib, lib.cuDeviceGetAttribute(ctypes.byref(value), attribute, device), "cuDeviceGetAttribute")
    cuda_driver.check(lib, lib.cuDeviceTotalMem_v2(ctypes.byref(memory), device), "cuDeviceTotalMem")
    return {"index": ordinal, "name": name.value.decode(errors="replace"), "sm": major.value * 10 + minor.value,
            "memory_gib": round(memory.value / 2**30, 1)}


def probe_cuda(lib=None) -> dict:
    """Driver version (before cuInit), cuInit, and each GPU: name, compute capability, memory.
    ``lib``: libcuda (loaded here when None; a stand-in in tests)."""
    info = {"found": False, "driver_version": None, "cuda": None, "ptx_isa": None, "error": None, "gpus": []}
    lib = lib if lib is not None else load_libcuda()
    if lib is None:
        info["error"] = NO_DRIVER
        return info
    info["found"] = True
    try:
        version, count = ctypes.c_int(), ctypes.c_int()
        cuda_driver.check(lib, lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
        info.update(driver_version=version.value, cuda=cuda_version_text(version.value),
                    ptx_isa=isa_text(ptx_isa_for_driver(version.value)))
        cuda_driver.check(lib, lib.cuInit(0), "cuInit")
        cuda_driver.check(lib, lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        for ordinal in range(count.value):
            info["gpus"].append(_gpu(lib, ordinal))
    except (IAUnetError, AttributeError, OSError) as e:  # AttributeError: a symbol this driver lacks
        info["error"] = str(e) if isinstance(e, IAUnetError) else one_line(e)
    return info


# ---------------------------------------------------------------- platform

def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def probe_platform() -> dict:
    release = jetson_release(_read("/etc/nv_tegra_release"))
    return {"system": platform.system(), "machine": platform.machine(), "jetson": release,
            "model": (_read("/proc/device-tree/model") or None) if release else None}


def toolkit_source() -> str | None:
    """The source folder (pyproject.toml beside the package) of an editable install, else None."""
    root = Path(__file__).resolve().parent.parent
    return str(root) if (root / "pyproject.toml").is_file() else None


# ---------------------------------------------------------------- stages

def _extra_spec(extra: str, source: str | None, cwd: str) -> str:
    if source is None:
        return shlex.quote(f"iaunet-toolkit[{extra}]")
    here = "." if Path(cwd).resolve() == Path(source).resolve() else source
    return "-e " + shlex.quote(f"{here}[{extra}]")


def tensorrt_install(trt: dict, cuda: dict, jetson: str | None) -> tuple:
    """(what to add to the stage's pip command, or a command of its own) that brings TensorRT:
    JetPack's on a Jetson, else NVIDIA's wheel for the driver's CUDA major; never our extras."""
    if jetson:
        return None, "sudo apt-get install nvidia-tensorrt"
    wheel = f"tensorrt-cu{cuda['driver_version'] // 1000}" if cuda.get("driver_version") else "tensorrt"
    if not trt["installed"]:
        return wheel, None
    if not trt["loads"]:
        return None, f"pip install --force-reinstall {wheel}" + (f"=={trt['version']}" if trt["version"] else "")
    return shlex.quote(f"{wheel}>={_dotted(MIN_AOT_VERSION)}"), None


def _tensorrt_missing(trt: dict) -> str | None:
    if not trt["installed"]:
        return "tensorrt"
    if not trt["loads"]:
        return "tensorrt (cannot load)"
    if trt["route"] == TOO_OLD:
        return f"tensorrt >= {_dotted(TRT_MIN_VERSION)}"
    return None


def kernel_notes(cuda: dict) -> list:
    """Why a visible GPU cannot run the IAU plugin kernels (architecture, driver's PTX ISA)."""
    notes = []
    isa = ptx_isa_for_driver(cuda["driver_version"]) if cuda.get("driver_version") else None
    for gpu in cuda.get("gpus", []):
        sm = gpu["sm"]
        if sm not in SUPPORTED_ARCHS:
            notes.append(f"sm_{sm} has no IAU kernels (export --mode native)")
        elif isa is None or isa < MIN_PTX_VERSION[sm]:
            notes.append(f"sm_{sm} kernels need PTX {isa_text(MIN_PTX_VERSION[sm])}, this driver (CUDA {cuda['cuda']}) "
                         f"loads up to {isa_text(isa) or 'below ' + isa_text(LOWEST_PTX)}: update the driver")
    return notes


def _tensorrt_and_gpu(facts: dict) -> tuple:
    """What a TensorRT stage lacks beyond Python packages: (missing, pip item, command of its own, notes)."""
    missing, item, command = [], None, None
    trt_missing = _tensorrt_missing(facts["tensorrt"])
    if trt_missing:
        missing.append(trt_missing)
        item, command = tensorrt_install(facts["tensorrt"], facts["cuda_driver"], facts["platform"]["jetson"])
    notes = kernel_notes(facts["cuda_driver"])
    if trt_missing and facts["platform"]["jetson"]:
        notes.append("JetPack's TensorRT: a venv sees it only with --system-site-packages")
    if not facts["cuda_driver"]["gpus"]:
        missing.append("a CUDA GPU")
        notes.insert(0, "needs an NVIDIA GPU and its driver")
    return missing, item, command, notes


def stage_report(name: str, facts: dict, cwd: str) -> dict:
    """Whether a stage can run here: what it lacks and the one command that installs it."""
    packages, extra, needs_gpu = STAGES[name]
    lacking = [p for p in packages if not facts[p]["installed"] or facts[p].get("error")]
    missing = [p + (" (cannot import)" if facts[p]["installed"] else "") for p in lacking]
    if name == "kernels" and facts["triton"]["installed"] and not facts["triton"].get("ptxas"):
        missing.append("Triton's ptxas")
    pip = ([TORCH_CPU] if "torch" in lacking else []) + \
          ([_extra_spec(extra, facts["iaunet"]["source"], cwd)] if set(lacking) - {"torch"} else [])
    more, item, command, notes = _tensorrt_and_gpu(facts) if needs_gpu else ([], None, None, [])
    missing += more
    pip = ([item] if item else []) + pip
    commands = (["pip install " + " ".join(pip)] if pip else []) + ([command] if command else [])
    return {"ready": not missing, "missing": missing, "install": " && ".join(commands) or None,
            "note": "; ".join(notes) or (None if missing else _ready_note(name, facts))}


def _ready_note(name: str, facts: dict) -> str | None:
    if name == "train" and facts["torch"].get("cuda_available") is False:
        return "CPU only: torch sees no CUDA GPU"
    if name == "kernels":
        return "compiles PTX for any GPU; none needed here"
    if name == "runtime_ort":
        gpu = [p for p in facts["onnxruntime"].get("providers", []) if p in ("CUDAExecutionProvider",
                                                                               "TensorrtExecutionProvider")]
        return f"GPU providers: {', '.join(gpu)}" if gpu else "CPU provider only"
    return None


# ---------------------------------------------------------------- collect, render, run

def collect(cwd: str | None = None) -> dict:
    facts = {"iaunet": {"version": __version__, "source": toolkit_source()},
             "python": {"version": platform.python_version(), "executable": sys.executable},
             "platform": probe_platform()}
    facts.update(probe_packages())
    facts["tensorrt"], trt = probe_tensorrt()
    facts["cuda_driver"] = probe_cuda()
    facts["dla"] = probe_dla(trt if facts["tensorrt"]["loads"] else None, facts["cuda_driver"]["gpus"])
    facts["stages"] = {name: stage_report(name, facts, cwd or os.getcwd()) for name in STAGES}
    return facts


def _package_text(info: dict) -> str:
    if not info["installed"]:
        return "not installed"
    text = info["version"] or "installed (version unknown)"
    if info.get("error"):
        return f"{text}, cannot import: {info['error']}"
    if "cuda_build" in info:
        text += f", CUDA build {info['cuda_build'] or 'none'}, CUDA available: {'yes' if info['cuda_available'] else 'no'}"
    if "providers" in info:
        text += f", providers: {', '.join(info['providers']) or 'none'}"
    if "ptxas" in info:
        text += ", ptxas bundled" if info["ptxas"] else ", no ptxas (set TRITON_PTXAS_PATH)"
    return text


def _tensorrt_text(trt: dict) -> str:
    if not trt["installed"]:
        return "not installed"
    version = trt["version"] or "version unknown"
    if not trt["loads"]:
        route = f"; would take {trt['route']}" if trt["route"] else ""
        return f"{version} installed but cannot load: {trt['error']}{route}"
    return f"{version}: {ROUTE_TEXT[trt['route']]}"


def _cuda_rows(cuda: dict) -> list:
    if not cuda["found"]:
        return [("cuda_driver", cuda["error"])]
    text = f"CUDA {cuda['cuda']}" if cuda["cuda"] else "version unknown"
    if cuda["cuda"]:
        text += f", PTX ISA up to {cuda['ptx_isa']}" if cuda["ptx_isa"] else \
            f", PTX ISA below {isa_text(LOWEST_PTX)} (the IAU kernels need {isa_text(LOWEST_PTX)}+)"
    text += f"; {cuda['error']}" if cuda["error"] else f", {len(cuda['gpus'])} GPU(s)"
    return [("cuda_driver", text)] + [(f"  gpu {g['index']}", f"{g['name']} (sm_{g['sm']}), {g['memory_gib']} GiB")
                                      for g in cuda["gpus"]]


def _stage_text(stage: dict) -> str:
    if stage["ready"]:
        return "ready" + (f" ({stage['note']})" if stage["note"] else "")
    text = f"missing {', '.join(stage['missing'])}"
    text += f" -> {stage['install']}" if stage["install"] else ""
    return text + (f" ({stage['note']})" if stage["note"] else "")


def _platform_text(p: dict) -> str:
    text = f"{p['system']} {p['machine']}"
    return text + (f", Jetson L4T {p['jetson']}" + (f" ({p['model']})" if p["model"] else "") if p["jetson"] else "")


def _dla_text(dla: dict) -> str:
    return f"{dla['cores']} core(s)" if dla["cores"] is not None else dla["note"]


def render(facts: dict) -> str:
    """The text report: one row per fact, labelled with the JSON key it shows."""
    source = facts["iaunet"]["source"]
    rows = [("iaunet", facts["iaunet"]["version"] + (f" ({source})" if source else "")),
            ("python", f"{facts['python']['version']} ({facts['python']['executable']})"),
            ("platform", _platform_text(facts["platform"]))]
    rows += [(name, _package_text(facts[name])) for name in PACKAGES]
    rows += [("tensorrt", _tensorrt_text(facts["tensorrt"]))] + _cuda_rows(facts["cuda_driver"])
    rows += [("dla", _dla_text(facts["dla"])), ("stages", "")]
    rows += [(f"  {name}", _stage_text(stage)) for name, stage in facts["stages"].items()]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{text}".rstrip() for label, text in rows)


def run(json_path=None) -> int:
    """Print the report (and write it as JSON to ``json_path``); 0 whenever it could be made."""
    if json_path:
        check_output_path(json_path, kind=file_kinds.DOCTOR)
    facts = collect()
    print(render(facts))
    if json_path:
        write_json(json_path, facts)
        print(f"wrote {json_path}")
    return 0
