"""``iaunet build``: a TensorRT engine and its sidecar from an ONNX file of the toolkit,
built with Polygraphy's loaders (ONNX bytes -> strongly typed network -> config ->
serialized engine), cached by everything that decides it.

The decisions are ``engines.plan``'s; this module only chains the loaders and reads the
machine: it picks the PTX folder for this GPU (a bundle's ``ptx`` may hold one ``smXX``
folder per architecture), hashes its contents into the cache key, re-stamps a legacy
``.calib`` for this TensorRT, and counts the layers TensorRT can place on DLA. Arguments are checked and the plan made before TensorRT builds anything; the
engine and ``<engine>.json`` are written through temporary names. A parser failure is
one error naming each failing node, its op and the parser's reason. Polygraphy's own
log lines are shown only with ``-v``.

TensorRT, Polygraphy and the plugin registration are imported inside ``build_engine``;
none of it can run on a machine without TensorRT's libraries and a GPU.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

from iaunet.core import calib_cache, cuda_driver, onnx_wire
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import (atomic_output, atomic_outputs, cache_folder, check_distinct_outputs,
                               check_output_path, json_text, sha256_file, write_json)
from iaunet.core.graph_io import INPUT_NAME, tensorrt_layout_path
from iaunet.core.log import get_logger
from iaunet.core.plugin_contract import DOMAIN, PLUGIN_OPS
from iaunet.engines.plan import BuildOptions, Plan, check_options, plan_build
from iaunet.runtime.engine_card import ENGINE_DIGEST, Machine, sidecar_path
from iaunet.runtime.model_card import ModelCard
from iaunet.runtime.trt_runner import import_tensorrt

log = get_logger("engines")


def read_onnx(path) -> tuple[bytes, ModelCard, bool]:
    """(the file's bytes, its model card, whether it has IAU plugin nodes), read without
    the onnx package (``iaunet.core.onnx_wire``)."""
    path = Path(path)
    if not path.is_file():
        raise IAUnetError(f"ONNX file {path} not found")
    data = path.read_bytes()
    props, nodes = onnx_wire.read_model(data, path)
    card = ModelCard.from_props(props, path)
    return data, card, any(domain == DOMAIN and op in PLUGIN_OPS for domain, op in nodes)


def without_plugin_functions(data: bytes) -> bytes:
    """The ONNX bytes without the plugin ops' local functions (what 10.0 to 10.6 parse)."""
    return onnx_wire.drop_functions(data, DOMAIN, PLUGIN_OPS)


def this_machine(trt) -> Machine:
    return Machine(cuda_driver.device_name(), cuda_driver.current_compute_capability(), trt.__version__)


def _import_quietly(module: str):
    """Import ``module`` with what it prints at start-up sent to our debug log."""
    import contextlib
    import importlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        imported = importlib.import_module(module)
    if printed.getvalue().strip():
        log.debug("%s printed:\n%s", module, printed.getvalue().rstrip())
    return imported


def quiet_polygraphy(severity: str = "ERROR"):
    """Polygraphy's logger, kept to ``severity`` unless ``-v`` (our debug level) is on."""
    import logging
    G_LOGGER = _import_quietly("polygraphy.logger").G_LOGGER
    G_LOGGER.module_severity = G_LOGGER.VERBOSE if log.isEnabledFor(logging.DEBUG) else getattr(G_LOGGER, severity)
    return G_LOGGER


def polygraphy_trt():
    """polygraphy.backend.trt, imported with Polygraphy's log at errors only unless ``-v``."""
    quiet_polygraphy()
    return _import_quietly("polygraphy.backend.trt")


def loaders(data: bytes, plan: Plan, memory_pool_limits=None, calibrator=None, mark_all: bool = False,
            report: dict | None = None):
    """Polygraphy's lazy loader chain for ``plan``: nothing is built until it is called.
    ``memory_pool_limits``: {trt.MemoryPoolType.WORKSPACE: bytes} when a workspace is set.
    ``mark_all``: every layer's output becomes an engine output (layer-wise triage).
    ``report``: filled with the layer counts on DLA when the plan uses it. The legacy INT8
    path is weakly typed: FP16 is enabled beside INT8, else every layer the calibrator does
    not cover runs in FP32."""
    backend = polygraphy_trt()
    CreateConfig, EngineBytesFromNetwork = backend.CreateConfig, backend.EngineBytesFromNetwork
    NetworkFromOnnxBytes, PostprocessConfig, Profile = backend.NetworkFromOnnxBytes, backend.PostprocessConfig, backend.Profile
    options = plan.options
    network = NetworkFromOnnxBytes(data, strongly_typed=not options.legacy_int8)
    if mark_all:
        from polygraphy import constants
        network = backend.ModifyNetworkOutputs(network, outputs=constants.MARK_ALL)
    profile = Profile().add(INPUT_NAME, *(plan.profile[k] for k in ("min", "opt", "max")))
    config = CreateConfig(
        profiles=[profile], int8=options.legacy_int8, fp16=options.legacy_int8, calibrator=calibrator,
        memory_pool_limits=memory_pool_limits,
        load_timing_cache=options.timing_cache, builder_optimization_level=options.opt_level,
        use_dla=options.dla_core is not None, allow_gpu_fallback=options.dla_core is not None)
    if options.dla_core is not None:
        def on_dla(builder, network, config):
            config.DLA_core = options.dla_core
            if report is not None:
                layers = [network.get_layer(i) for i in range(network.num_layers)]
                report.update(dla_layers=sum(bool(config.can_run_on_DLA(layer)) for layer in layers),
                              network_layers=len(layers))
        config = PostprocessConfig(config, on_dla)
    return EngineBytesFromNetwork(network, config, save_timing_cache=options.timing_cache)


def parser_errors(trt, data: bytes) -> list[str]:
    """'node (op): reason' for every error TensorRT's ONNX parser reports on ``data``."""
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if parser.parse(data):
        return []
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    return [f"{e.node_name() or '(graph)'} ({e.node_operator() or '?'}): {e.desc()}" for e in errors]


def register_route_plugins(plan: Plan) -> None:
    """Register the IAU plugins ``plan``'s route needs (none for the native graph)."""
    if plan.route == "python":
        from iaunet.runtime.trt_plugin_v3 import register_plugins
        register_plugins(plan.options.ptx_dir)
    elif plan.route == "aot":
        from iaunet.engines.aot_plugins import register_aot_plugins
        register_aot_plugins(plan.options.ptx_dir)


def parser_copy(data: bytes, plan: Plan) -> bytes:
    """The ONNX bytes as TensorRT's parser gets them (without local functions on 10.0 to 10.6)."""
    return without_plugin_functions(data) if plan.strip_functions else data


def check_paths(onnx_path, output, options: BuildOptions) -> Path:
    """The paths the build reads and writes, refused before anything is read or built."""
    inputs = [onnx_path, options.calib, options.ptx_dir]
    output = check_output_path(output, inputs=[*inputs, options.timing_cache], kind=file_kinds.ENGINE)
    check_output_path(sidecar_path(output), inputs=inputs, kind=file_kinds.SIDECAR)
    if options.timing_cache:  # TensorRT saves it after the build: an input or another kind of file is refused now
        check_output_path(options.timing_cache, inputs=inputs, kind=file_kinds.TIMING_CACHE)
    check_distinct_outputs(output, sidecar_path(output), options.timing_cache)
    if options.calib and not Path(options.calib).is_file():
        raise IAUnetError(f"calibration cache {options.calib} not found")
    if options.timing_cache and Path(options.timing_cache).is_dir():
        raise IAUnetError(f"timing cache {options.timing_cache} is a folder; expected a file (created if missing)")
    if options.plugins in ("auto", "aot", "python") and options.ptx_dir and not Path(options.ptx_dir).is_dir():
        raise IAUnetError(f"PTX folder {options.ptx_dir} not found; make it with 'iaunet plugins compile'")
    return output


def ptx_for_gpu(ptx_dir, compute_capability: int):
    """The PTX folder for this GPU: ``ptx_dir`` itself (it holds a manifest), or its
    ``sm<cc>`` subfolder (a bundle for several architectures); None stays None."""
    if ptx_dir is None:
        return None
    folder = Path(ptx_dir)
    if (folder / "manifest.json").is_file():
        return str(folder)
    mine = folder / f"sm{compute_capability}"
    if (mine / "manifest.json").is_file():
        return str(mine)
    have = sorted(p.name for p in folder.glob("sm*") if (p / "manifest.json").is_file())
    raise IAUnetError(f"{folder} holds no PTX for this GPU (sm_{compute_capability}): it has "
                      f"{', '.join(have) or 'no manifest.json'}; compile with "
                      f"'iaunet plugins compile --arch {compute_capability}'")


def folder_digest(folder) -> str:
    """SHA-256 over a folder's files (relative names and contents): what changes the PTX."""
    if folder is None:
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def cache_key(plan: Plan) -> str:
    """The engine cache key of ``plan``, with the contents of its calibration cache and PTX."""
    options = plan.options
    return plan.cache_key(sha256_file(options.calib) if options.calib else "", folder_digest(options.ptx_dir))


def plan_for(onnx_path, options: BuildOptions):
    """(tensorrt, the ONNX bytes, the build plan on this machine) for ``onnx_path``."""
    data, card, has_plugins = read_onnx(onnx_path)
    check_options(options, has_plugins, card.precision)
    trt = import_tensorrt()
    machine = this_machine(trt)
    if has_plugins and options.plugins != "native":
        options = replace(options, ptx_dir=ptx_for_gpu(options.ptx_dir, machine.compute_capability))
    return trt, data, plan_build(card, sha256_file(onnx_path), has_plugins, machine, options)


def calibration_cache(plan: Plan):
    """The legacy path's .calib as a file object, its header stamped for this TensorRT
    (TensorRT skips a cache of another version and would then calibrate with no data)."""
    path = plan.options.calib
    text = calib_cache.for_version(Path(path).read_text(errors="replace"), plan.machine.tensorrt_version, path)
    return io.BytesIO(text.encode())


def tensorrt_source(onnx_path) -> Path:
    """The file TensorRT builds for ``onnx_path``: an INT8 variant's TensorRT layout
    (X.int8.trt.onnx, FP16 outside the Q/DQ) where it sits beside X.int8.onnx, else the file
    itself. Decided before TensorRT is imported."""
    path, beside = Path(onnx_path), tensorrt_layout_path(onnx_path)
    if beside != path and beside.is_file():
        log.info("building %s, the TensorRT layout of %s (FP16 outside the Q/DQ)", beside.name, path.name)
        return beside
    return path


def build_engine(onnx_path, output, options: BuildOptions = BuildOptions(), cache_dir=None) -> dict:
    """Build (or take from the cache) ``output`` and ``output.json``; returns the sidecar
    with ``cache_hit`` and the paths."""
    onnx_path = tensorrt_source(onnx_path)
    output = check_paths(onnx_path, output, options)
    cache = cache_folder("engines", cache_dir)  # a file there is refused before TensorRT is imported
    trt, data, plan = plan_for(onnx_path, options)
    key = cache_key(plan)
    cached = cache / f"{key}.engine"
    extra = Path(str(cached) + ".build.json")  # what the build found out (layers on DLA)
    hit = cached.is_file() and extra.is_file()
    if hit:
        log.info("engine cache hit: %s (same ONNX, PTX, TensorRT, GPU and flags)", cached)
    else:
        found = _build_into(trt, data, plan, cached)
        write_json(extra, found)
    record = {**plan.sidecar(), **json.loads(extra.read_text()), ENGINE_DIGEST: sha256_file(cached)}
    with atomic_outputs(output, sidecar_path(output)) as (engine_tmp, sidecar_tmp):  # both or neither
        shutil.copyfile(cached, engine_tmp)
        Path(sidecar_tmp).write_text(json_text(record))
    return {**record, "cache_hit": hit, "engine": str(output), "cache_key": key}


def _build_into(trt, data: bytes, plan: Plan, cached: Path) -> dict:
    """Build the engine into ``cached``; returns what the build found out for the sidecar."""
    Calibrator = polygraphy_trt().Calibrator
    register_route_plugins(plan)
    parsed = parser_copy(data, plan)
    calibrator = Calibrator(data_loader=[], cache=calibration_cache(plan)) if plan.options.legacy_int8 else None
    report = {}
    log.info("building %s engine (%s plugins, batch %s) with TensorRT %s on %s", plan.precision, plan.route,
             "/".join(map(str, plan.options.batch)), plan.machine.tensorrt_version, plan.machine.gpu_name)
    try:
        pools = {trt.MemoryPoolType.WORKSPACE: plan.options.workspace_mb << 20} if plan.options.workspace_mb else None
        engine = loaders(parsed, plan, pools, calibrator, report=report)()
    except Exception as exc:
        problems = parser_errors(trt, parsed)
        if problems:
            raise IAUnetError(f"TensorRT's ONNX parser failed on {len(problems)} node(s): " + "; ".join(problems)) from None
        raise IAUnetError(f"TensorRT could not build the engine: {str(exc).splitlines()[0][:300]}") from None
    if plan.options.dla_core is not None:
        log.info("DLA core %d: TensorRT can place %d of %d layers there; the rest run on the GPU",
                 plan.options.dla_core, report.get("dla_layers", 0), report.get("network_layers", 0))
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cached) as tmp:
        Path(tmp).write_bytes(bytes(engine))
    return report
