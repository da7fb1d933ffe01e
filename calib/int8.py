"""INT8 graphs with explicit, symmetric Q/DQ (ONNX Runtime's quantization tooling), FP16
outside the Q/DQ pairs, an optional per-layer fallback to FP16 that meets a target, and a
TensorRT calibration cache from the same scales.

Placement for TensorRT: inputs of Conv, Gemm, MatMul and both inputs of Add are
quantized (per-channel weights, per-tensor activations, zero points 0); no bias
quantization; no Q/DQ on op outputs or graph outputs; the IAU affinity ops and the
MatMuls that feed or consume them are excluded. Everything outside the Q/DQ pairs is
then FP16 but the FP32 islands (``iaunet.calib.mixed``). With a target mean cosine, the
most sensitive layers leave INT8 until held-out training images reach it
(``iaunet.calib.sensitivity``).

Activation ranges are cached under a key of everything that decides them
(``calibration_key``): the source's hash, the method and its settings, the seed, the
quantized op types and every calibration image's path, size and modification time.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from iaunet.calib import CALIBRATION_SAMPLES, METHODS, PROBE_SAMPLES, graph
from iaunet.calib.data import calibration_sources, load_inputs, pick
from iaunet.calib.sensitivity import DEFAULT_MAX_FP16_LAYERS, fall_back, plot
from iaunet.export.checks import compare, run_onnxruntime, tensorrt_lint
from iaunet.export.flops import node_flops
from iaunet.export.metadata import load_onnx, metadata_of
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, cache_folder, check_output_path, sha256_file
from iaunet.core.graph_io import INPUT_NAME
from iaunet.core.log import get_logger
from iaunet.core.progress import Progress
from iaunet.core.validate import COSINE_TARGET, COUNT, check

log = get_logger("calib")
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Add"]
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128  # TensorRT's entropy calibrator histogram
HELD_OUT = 32        # training images kept out of calibration to judge the variant
MIN_HELD_OUT = 8     # fewer cannot steer the fallback


def trt_version_code(version: str) -> int:
    """'10.3.0' -> 100300 (TensorRT's NV_TENSORRT_VERSION for 10.x)."""
    try:
        major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        raise IAUnetError(f"TensorRT version {version!r} is not MAJOR.MINOR[.PATCH]") from None
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def activation_scales(model: onnx.ModelProto) -> dict:
    """{activation tensor: scale} of every QuantizeLinear on a non-initializer input."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: next(a.t for a in n.attribute if a.name == "value")
              for n in model.graph.node if n.op_type == "Constant"}
    scales = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        tensor = inits.get(node.input[1]) or consts.get(node.input[1])
        scales[node.input[0]] = float(numpy_helper.to_array(tensor).reshape(-1)[0])
    return scales


def write_trt_cache(scales: dict, path: Path, trt_version: str = "10.3.0") -> None:
    """TensorRT calibration cache: header, then ``tensor: hex(float32 scale)`` lines."""
    lines = [f"TRT-{trt_version_code(trt_version)}-EntropyCalibration2"]
    lines += [f"{name}: {struct.pack('>f', scale).hex()}" for name, scale in sorted(scales.items())]
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def read_trt_cache(path) -> dict:
    lines = Path(path).read_text().splitlines()
    return {k: struct.unpack(">f", bytes.fromhex(v.strip()))[0] for k, v in (l.rsplit(":", 1) for l in lines[1:])}


def check_qdq(model: onnx.ModelProto) -> list[str]:
    """TensorRT placement rules the result must follow; returns the violations."""
    problems = []
    outputs = {o.name for o in model.graph.output}
    inits = {t.name: t for t in model.graph.initializer}
    plugin_io = {name for n in model.graph.node if n.name in graph.plugin_node_names(model)
                 for name in list(n.input) + list(n.output)}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2] in inits and np.any(numpy_helper.to_array(inits[node.input[2]]) != 0):
            problems.append(f"{node.name}: non-zero zero point")
        if set(node.output) & outputs:
            problems.append(f"{node.name}: Q/DQ on a graph output")
        if set(node.input[:1]) & plugin_io or set(node.output) & plugin_io:
            problems.append(f"{node.name}: Q/DQ touching an IAU affinity op")
    return problems


def _reader(inputs: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.index = 0
            self.bar = Progress(len(inputs), "calibrating", "img")

        def get_next(self):
            if self.index >= len(inputs):
                self.bar.close()
                return None
            self.index += 1
            self.bar.update()
            return {INPUT_NAME: inputs[self.index - 1:self.index]}

    return Reader()


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod
    return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[method]


def _calibrator_options(method: str, percentile: float) -> dict:
    """ONNX Runtime's calibrator settings per method. Entropy uses TensorRT's histogram
    (2048 bins searched down to 128 quantized bins): ORT's default of 128 bins for both
    leaves the KL search a single candidate, the full range, so entropy equalled minmax."""
    if method == "entropy":
        return {"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    if method == "percentile":
        return {"symmetric": True, "num_bins": ENTROPY_BINS, "percentile": percentile}
    return {"symmetric": True}


def calibrate_ranges(src: Path, inputs: np.ndarray, method: str, percentile: float, ranges_json: Path) -> None:
    """Run ONNX Runtime's calibrator for ``method`` on ``inputs``; save the activation
    ranges (its own JSON format) for ``quantize_static``."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    printed = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(printed):  # its notes go to -v
        calibrator = create_calibrator(Path(src), QUANTIZED_OPS, str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method),
                                       extra_options=_calibrator_options(method, percentile))
        calibrator.collect_data(_reader(inputs))
        save_tensors_data(calibrator.compute_data(), ranges_json)
    if printed.getvalue().strip():
        log.debug("onnxruntime calibration printed:\n%s", printed.getvalue().rstrip())


def _quantize(src: Path, out: Path, ranges_json: Path, method: str, exclude: set):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    quantize_static(str(src), str(out), None, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=sorted(exclude),
                    calibrate_method=_ort_method(method), calibration_cache_path=str(ranges_json),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})


def calibration_key(source_sha256: str, sources, method: str, percentile: float, seed: int) -> str:
    """What decides the activation ranges: the ONNX content, the method and its settings,
    the seed, the quantized op types, and each calibration image with its size and
    modification time. Any change is a cache miss."""
    files = [str(f) for s in sources for f in (s if isinstance(s, (tuple, list)) else (s,))]
    stamp = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    payload = {"onnx": source_sha256, "method": method, "seed": seed, "images": stamp,
               "calibrator": _calibrator_options(method, percentile), "ops": QUANTIZED_OPS}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return f"{method}-{len(sources)}-{digest}"


def split_sources(sources: list, samples: int, held_out: int, seed: int) -> tuple[list, list]:
    """``samples`` calibration sources and up to ``held_out`` others, disjoint, both
    deterministic. Held-out images judge the variant; they never set a range."""
    chosen = pick(list(range(len(sources))), samples, seed)
    taken = set(chosen)
    rest = [i for i in range(len(sources)) if i not in taken]
    return [sources[i] for i in chosen], [sources[i] for i in pick(rest, held_out, seed + 1)]


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes with a dequantised input: the layers that run in INT8."""
    dequantised = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OPS and any(i in dequantised for i in n.input)]


class _Quantizer:
    """Q/DQ graphs of one FP32 source from one set of activation ranges: one layer alone
    quantized, FP32 elsewhere (serialized, for sensitivity), or the INT8 variant with FP16
    outside the Q/DQ and some layers kept out. Quantized graphs are reused per kept-out set."""

    def __init__(self, src: Path, ranges: Path, method: str, exclude: set, overflow: dict, folder: Path):
        self.src, self.ranges, self.method, self.exclude, self.overflow = src, ranges, method, exclude, overflow
        self.path, self._last = folder / "q.onnx", (None, None)
        self.layers = quantized_layers(self.qdq(set()))

    def qdq(self, kept_out: set) -> onnx.ModelProto:
        """The Q/DQ graph with ``kept_out`` left in float; shared, so read it, do not change it."""
        key = frozenset(kept_out)
        if self._last[0] != key:  # the latest only: each graph is the model's size
            _quantize(self.src, self.path, self.ranges, self.method, self.exclude | kept_out)
            self._last = (key, load_onnx(self.path))
        return self._last[1]

    def alone(self, layer: str) -> bytes:
        """The Q/DQ graph (FP32 elsewhere) with only ``layer`` quantized."""
        return self.qdq(set(self.layers) - {layer}).SerializeToString()

    def variant(self, kept_out: set) -> tuple[onnx.ModelProto, dict]:
        from iaunet.calib.mixed import fp16_outside_qdq
        return fp16_outside_qdq(self.qdq(kept_out), set(self.overflow))


def _ranges(src: Path, sources: list, meta, method: str, percentile: float, key: str, cache: Path) -> tuple:
    """The activation ranges file for ``key`` (computed and cached on a miss), and whether
    it came from the cache."""
    cached = cache / f"{key}.ranges.json"
    if cached.is_file():
        problem = _unreadable_ranges(cached)
        if problem is None:
            log.info("int8: reusing cached activation ranges %s", cached)
            return cached, True
        log.info("int8: the cached activation ranges %s cannot be read (%s); computing them again", cached, problem)
    inputs = load_inputs(sources, meta.preprocess, "reading calibration images")
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_output(cached) as tmp:  # a unique name: parallel runs do not collide
        calibrate_ranges(src, inputs, method, percentile, Path(tmp))
    return cached, False


def _unreadable_ranges(path: Path) -> str | None:
    """Why ``path`` is not a usable ranges file (read as quantize_static reads it), or None."""
    from onnxruntime.quantization.calibrate import load_tensors_data
    try:
        data = load_tensors_data(path).data
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    return None if data else "no ranges in it"


def check_fallback_options(target_cosine, max_fp16_layers) -> None:
    if target_cosine is not None:
        check("--target-cosine", target_cosine, COSINE_TARGET)
    check("--max-fp16-layers", max_fp16_layers, COUNT)


def quantize_int8(src, dst, data, method: str = "entropy", samples: int = CALIBRATION_SAMPLES,
                  percentile: float = 99.99, trt_version: str = "10.3.0", cache_dir=None, seed: int = 0,
                  target_cosine: float | None = None, max_fp16_layers: int = DEFAULT_MAX_FP16_LAYERS) -> dict:
    """Write ``dst`` (Q/DQ INT8, FP16 outside the Q/DQ), ``dst.calib`` (TensorRT cache) and,
    with ``target_cosine``, ``dst``'s ``.sensitivity.png``; return the record. Everything is
    computed before the first file is written; a missed target raises and writes nothing."""
    if method not in METHODS:
        raise IAUnetError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")
    if data is None:
        raise IAUnetError("INT8 needs calibration images: pass --data (a training split or a folder of crops)")
    trt_version_code(trt_version)  # refused before anything is written
    check_fallback_options(target_cosine, max_fp16_layers)
    src, dst = Path(src), check_output_path(dst, inputs=[src], kind=file_kinds.ONNX)
    model = load_onnx(src)
    meta = metadata_of(model, src)
    if graph.get_prop(model, "precision", "fp32") != "fp32":
        raise IAUnetError(f"{src} is already a {graph.get_prop(model, 'precision')} variant; expected an FP32 export")
    sources, held_out = split_sources(calibration_sources(data, meta.config.variant == "video"), samples,
                                      HELD_OUT, seed)
    if target_cosine is not None and len(held_out) < MIN_HELD_OUT:
        raise IAUnetError(f"--target-cosine needs at least {MIN_HELD_OUT} training images beside the {len(sources)} "
                          f"used for calibration, found {len(held_out)}; lower --samples or add images")
    exclude = graph.native_affinity_nodes(model) | graph.affinity_neighbour_matmuls(model)
    source_sha256 = sha256_file(src)
    key = calibration_key(source_sha256, sources, method, percentile, seed)
    ranges, from_cache = _ranges(src, sources, meta, method, percentile, key, cache_folder("calib", cache_dir))
    probe = load_inputs(held_out or pick(sources, PROBE_SAMPLES, seed + 1), meta.preprocess, "held-out images",
                        progress=False)
    overflow = graph.fp16_overflow_nodes(model, probe)
    judge = _Judge(run_onnxruntime(src, probe, 8), probe)
    with tempfile.TemporaryDirectory() as tmp:
        quantizer = _Quantizer(src, ranges, method, exclude, overflow, Path(tmp))
        if not quantizer.layers:
            raise IAUnetError(f"{src} has no Conv, Gemm, MatMul or Add the quantizer could give INT8 inputs; "
                              "nothing to make an INT8 variant of")
        (variant, mixed, parity), fallback = _choose(quantizer, judge, target_cosine, max_fp16_layers)
        kept_out = set(fallback.fp16_layers) if fallback else set()
        scales = activation_scales(quantizer.qdq(kept_out))  # the .calib holds what the variant quantizes
    problems = check_qdq(variant) + tensorrt_lint(variant)
    if problems:
        raise IAUnetError(f"the INT8 graph would not suit TensorRT 10.3: {problems[0]} (+{len(problems) - 1} more)")
    flops = node_flops(model)
    record = {"precision": "int8", "source": str(src), "source_sha256": source_sha256,
              "tool": "onnxruntime.quantization.quantize_static (QDQ, QInt8, per-channel, symmetric)",
              "method": method, "percentile": percentile if method == "percentile" else None,
              "calibrator": _calibrator_options(method, percentile),
              "calibration": {"data": str(data), "samples": len(sources), "held_out": len(held_out),
                              "cache_key": key, "from_cache": from_cache},
              "quantized_op_types": QUANTIZED_OPS, "excluded_nodes": sorted(exclude),
              "int8_layers": len(quantizer.layers) - len(kept_out),
              "fp16_outside_qdq": mixed, "fp32_overflow_nodes": {k: round(v, 1) for k, v in sorted(overflow.items())},
              "quantize_linear_nodes": sum(n.op_type == "QuantizeLinear" for n in variant.graph.node),
              "activation_scales": len(scales), "trt_cache": str(dst.with_suffix(".calib")),
              "trt_cache_header_version": trt_version,
              "mean_cosine_vs_fp32": parity.mean_cosine,
              "judged_on": f"{len(probe)} held-out training images" if held_out else
                           f"{len(probe)} calibration images (none left to hold out)",
              "fallback": fallback.record(flops) if fallback else None,
              "sensitivity_plot": str(sensitivity_plot_path(dst)) if fallback else None}
    graph.set_props(variant, precision="int8", variant=record)
    record["parity_vs_fp32_onnx"] = vars(parity)
    if fallback is not None:
        plot(fallback, flops, sensitivity_plot_path(dst))
    write_trt_cache(scales, dst.with_suffix(".calib"), trt_version)
    graph.save_atomically(variant, dst)
    return record


class _Judge:
    """Agreement with the FP32 graph's embeddings of the probe (held-out) images."""

    def __init__(self, reference, probe):
        self.reference, self.probe = reference, probe

    def parity(self, candidate: onnx.ModelProto | bytes):
        serialized = candidate if isinstance(candidate, bytes) else candidate.SerializeToString()
        return compare(self.reference, run_onnxruntime(serialized, self.probe, 8))


def _choose(quantizer: "_Quantizer", judge: _Judge, target: float | None, budget: int) -> tuple:
    """((variant, its FP16 record, its parity), Fallback or None): every layer in INT8
    without a target; with one, the fallback's choice, or a one-line error when the budget
    cannot reach it."""
    def scored_variant(kept_out: set) -> tuple:
        variant, mixed = quantizer.variant(kept_out)
        parity = judge.parity(variant)
        return parity.mean_cosine, (variant, mixed, parity)

    baseline, chosen = scored_variant(set())
    if target is None:
        return chosen, None
    log.info("int8: mean cosine %.6f on %d held-out images (target %s); measuring each layer's sensitivity",
             baseline, len(judge.probe), target)
    fallback = fall_back(quantizer.layers, (baseline, chosen), target, budget,
                         lambda layer: judge.parity(quantizer.alone(layer)).mean_cosine, scored_variant)
    if not fallback.met:
        tried, total = min(budget, len(quantizer.layers)), len(quantizer.layers)
        advice = "raise --max-fp16-layers or lower the target" if tried < total else "lower the target"
        raise IAUnetError(f"INT8 reaches mean cosine {fallback.reached:.6f} to FP32 on {len(judge.probe)} held-out "
                          f"images with the {tried} most sensitive of {total} layers in FP16, short of "
                          f"--target-cosine {target}; no variant written ({advice})")
    return fallback.model, fallback


def sensitivity_plot_path(dst) -> Path:
    """Where the sensitivity plot of the INT8 variant ``dst`` goes: beside it."""
    return Path(dst).with_suffix(".sensitivity.png")
