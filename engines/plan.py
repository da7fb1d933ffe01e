"""What an engine build will be, decided in plain Python before TensorRT is touched: the
optimisation profile from the batch flags, the plugin route per TensorRT version,
whether the parser's copy of the ONNX must lose its local functions, whether the legacy
INT8 calibrator path exists (for the FP32 ONNX only: Polygraphy attaches no calibrator to
a Q/DQ network), DLA's fixed batch, the engine cache key (covering the plugin PTX's
contents) and the sidecar's contents.

Tested on CPU for every supported version (10.3, 10.13 to 10.16, 11.x) without TensorRT.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from iaunet import __version__
from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import INPUT_NAME
from iaunet.core.plugin_contract import IPLUGINV3_MIN_VERSION, PLUGIN_NAMESPACE, PLUGIN_OPS
from iaunet.runtime.engine_card import FORMAT, Machine, version_tuple
from iaunet.runtime.model_card import ModelCard

ROUTES = ("auto", "aot", "python", "native")
AOT_MIN_VERSION = (10, 9)            # tensorrt.plugin aot_impl: the PTX travels inside the engine
FUNCTION_FIRST_BEFORE = (10, 7)      # 10.0 to 10.6 parse a node's local function instead of its plugin
LEGACY_INT8_REMOVED = (11, 0)        # weakly typed INT8 and the implicit calibrator
DEFAULT_BATCH = (1, 8, 32)
CHECKED_TENSORRT = ("10.3", "11.4")   # binding wheels every TensorRT name is checked against (tests)
SUPPORTED_TENSORRT = ("10.3", "10.13", "10.14", "10.15", "10.16", "11.0")  # JetPack 6, JetPack 7, datacenter 11.x
OPT_LEVELS = (0, 5)


def parse_batch(text) -> tuple:
    """'1,8,32' (MIN,OPT,MAX) or '8' (fixed) -> (min, opt, max), each >= 1, min <= opt <= max."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise IAUnetError(f"--batch {text!r} is not MIN,OPT,MAX integers") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or values[0] < 1 or not values[0] <= values[1] <= values[2] or values[2] > 4096:
        raise IAUnetError(f"--batch {text!r} must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX <= 4096")
    return values


def profile_shapes(card: ModelCard, batch: tuple) -> dict:
    """{'min'|'opt'|'max': input shape}; a video model's batch counts clips (N x T x 3 x H x W)."""
    return {name: [b, *card.sample_shape] for name, b in zip(("min", "opt", "max"), batch)}


def choose_route(trt_version: tuple, asked: str, has_plugins: bool) -> str:
    """The plugin route for this TensorRT: AOT plugins from 10.9, the Python IPluginV3 from
    10.3, or the native graph (plain ops, the only route for a graph without plugin nodes)."""
    check_route_for_graph(asked, has_plugins)
    if not has_plugins:
        return "native"
    dotted = ".".join(map(str, trt_version))
    if asked == "aot" and trt_version < AOT_MIN_VERSION:
        raise IAUnetError(f"TensorRT {dotted} has no AOT plugins (from 10.9); use --plugins python")
    if asked == "python" and trt_version < IPLUGINV3_MIN_VERSION:
        raise IAUnetError(f"TensorRT {dotted} is older than the IPluginV3 route needs (10.3)")
    if asked == "auto":
        if trt_version < IPLUGINV3_MIN_VERSION:
            raise IAUnetError(f"TensorRT {dotted} is too old for the IAU plugins; export with --mode native")
        return "aot" if trt_version >= AOT_MIN_VERSION else "python"
    return asked


def check_route_for_graph(asked: str, has_plugins: bool) -> None:
    """What the graph alone rules out (no TensorRT needed): a plugin route for a native
    export, the native route for a graph with plugin nodes."""
    if asked not in ROUTES:
        raise IAUnetError(f"unknown plugin route {asked!r}; expected one of {', '.join(ROUTES)}")
    if not has_plugins and asked in ("aot", "python"):
        raise IAUnetError("this ONNX file has no IAU plugin nodes (a native export); build it with "
                          "--plugins native or export with --mode plugin")
    if has_plugins and asked == "native":
        raise IAUnetError("this ONNX file has IAU plugin nodes; for the native route export with --mode native")


def check_options(options: "BuildOptions", has_plugins: bool, precision: str = "fp32") -> None:
    """Every option check that needs no TensorRT, run before it is imported. ``precision``:
    the ONNX file's (its metadata)."""
    check_route_for_graph(options.plugins, has_plugins)
    if has_plugins and options.plugins != "native" and not options.ptx_dir:
        raise IAUnetError("this ONNX file has IAU plugin nodes: building it needs their PTX, --ptx DIR (the output "
                          "of 'iaunet plugins compile', or a bundle's ptx folder)")
    if options.legacy_int8 and not options.calib:
        raise IAUnetError("--legacy-int8 needs --calib FILE (the .calib 'iaunet calib --precision int8' writes)")
    if options.legacy_int8 and precision != "fp32":
        # Polygraphy attaches the calibrator only to a network without Q/DQ layers, and the
        # .calib names the FP32 export's tensors
        raise IAUnetError(f"--legacy-int8 calibrates the FP32 ONNX with its .calib; this file is the {precision} "
                          "variant (its own types give the precision: build it without --legacy-int8)")
    if options.dla_core is not None and (options.dla_core < 0 or len(set(options.batch)) != 1):
        raise IAUnetError(f"--dla-core needs a core >= 0 and a fixed batch (--batch N): DLA takes min = opt = max, "
                          f"and with the dynamic batch {','.join(map(str, options.batch))} TensorRT would put "
                          "every layer on the GPU")
    if options.opt_level is not None and not OPT_LEVELS[0] <= options.opt_level <= OPT_LEVELS[1]:
        raise IAUnetError(f"--opt-level {options.opt_level} is outside {OPT_LEVELS[0]}..{OPT_LEVELS[1]}")


def strip_functions_for_parser(trt_version: tuple, route: str) -> bool:
    """Whether the copy of the ONNX handed to the parser must lose the plugin ops' local
    functions: 10.0 to 10.6 would parse the function and never call the plugin."""
    return route in ("aot", "python") and trt_version < FUNCTION_FIRST_BEFORE


def check_legacy_int8(trt_version: tuple) -> None:
    if trt_version >= LEGACY_INT8_REMOVED:
        raise IAUnetError(f"TensorRT {'.'.join(map(str, trt_version))} has no weakly typed INT8 calibration "
                          "(removed in 11.0); build the Q/DQ INT8 ONNX from 'iaunet calib --precision int8'")


@dataclass(frozen=True)
class BuildOptions:
    plugins: str = "auto"
    batch: tuple = DEFAULT_BATCH
    workspace_mb: int | None = None
    timing_cache: str | None = None
    dla_core: int | None = None
    opt_level: int | None = None
    legacy_int8: bool = False
    calib: str | None = None
    ptx_dir: str | None = None

    def flags(self) -> dict:
        """The options that change the engine (paths of caches do not)."""
        out = asdict(self)
        for key in ("timing_cache", "ptx_dir"):
            out.pop(key)
        out["batch"] = list(self.batch)
        return out


@dataclass
class Plan:
    """Everything the build decides, and the sidecar it writes."""
    card: ModelCard
    onnx_sha256: str
    machine: Machine
    options: BuildOptions
    route: str
    strip_functions: bool
    plugins: list = field(default_factory=list)

    @property
    def profile(self) -> dict:
        return profile_shapes(self.card, self.options.batch)

    @property
    def precision(self) -> str:
        return "int8 (legacy calibrator, fp16 elsewhere)" if self.options.legacy_int8 else self.card.precision

    def cache_key(self, calib_sha256: str = "", ptx_sha256: str = "") -> str:
        """Everything the engine depends on: the ONNX, TensorRT, GPU, route, flags, and the
        contents of the calibration cache and of the plugin PTX (which travel into the engine)."""
        payload = {"onnx": self.onnx_sha256, "trt": self.machine.tensorrt_version,
                   "cc": self.machine.compute_capability, "route": self.route, "flags": self.options.flags(),
                   "calib": calib_sha256, "ptx": ptx_sha256, "toolkit": __version__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def sidecar(self) -> dict:
        return {"format": FORMAT, "tensorrt_version": self.machine.tensorrt_version,
                "gpu_name": self.machine.gpu_name, "compute_capability": self.machine.compute_capability,
                "precision": self.precision, "profile": {"input": INPUT_NAME, **self.profile},
                "plugin_route": self.route, "plugins": self.plugins, "onnx_sha256": self.onnx_sha256,
                "toolkit_version": __version__, "build_flags": self.options.flags(),
                "metadata": dict(self.card.props)}


def plan_build(card: ModelCard, onnx_sha256: str, has_plugins: bool, machine: Machine,
               options: BuildOptions) -> Plan:
    check_options(options, has_plugins, card.precision)
    version = version_tuple(machine.tensorrt_version)
    route = choose_route(version, options.plugins, has_plugins)
    if options.legacy_int8:
        check_legacy_int8(version)
    plugins = [f"{PLUGIN_NAMESPACE}::{name}" for name in PLUGIN_OPS] if route in ("aot", "python") else []
    return Plan(card, onnx_sha256, machine, options, route, strip_functions_for_parser(version, route), plugins)
