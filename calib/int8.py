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

ONNX Runtime's quantizer runs once per method; the graphs with layers kept out of INT8 (the
sensitivity's one-layer graphs, the fallback's steps) are that graph with those layers put
back in float (``kept_in_float``). The activation statistics are cached under a key of
everything that decides them (``calibration_key``): the source's hash, the calibrator's
settings, the seed, the quantized op types and every calibration image's path, size and
modification time; each method's ranges beside them.
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

from iaunet.calib import CALIBRATION_SAMPLES, DEFAULT_METHOD, METHOD_CHOICES, METHODS, PROBE_SAMPLES, graph
from iaunet.calib.data import calibration_sources, load_inputs, pick
from iaunet.calib.sensitivity import DEFAULT_MAX_FP16_LAYERS, fall_back, plot
from iaunet.export.checks import compare, run_onnxruntime, tensorrt_lint
from iaunet.export.flops import node_flops
from iaunet.export.metadata import load_onnx, metadata_of
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, cache_folder, check_output_path, sha256_file
from iaunet.calib.ort_layout import onnxruntime_layout
from iaunet.core.graph_io import (CONSUMER_KEY, INPUT_NAME, TENSORRT_ONLY, TENSORRT_SUFFIX, onnxruntime_layout_path,
                                  tensorrt_layout_path)
from iaunet.runtime.runners import OnnxRuntimeRunner
from iaunet.core.log import get_logger
from iaunet.core.progress import Progress
from iaunet.core.validate import COSINE_TARGET, COUNT, check
from iaunet.core.calib_cache import header as calib_header, trt_version_code  # noqa: F401  (re-exported)

log = get_logger("calib")
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Add"]
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128  # TensorRT's entropy calibrator histogram
HELD_OUT = 32        # training images kept out of calibration to judge the variant
MIN_HELD_OUT = 8     # fewer cannot steer the fallback or choose the method
HISTOGRAMS = "histograms.npz"  # the cached activation statistics every method's ranges come from
SHARED_WEIGHT_BYTES = 1024     # initializers at least this large are handed to sensitivity sessions, not serialized


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
    lines = [calib_header(trt_version)]
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


def _calibrator_options() -> dict:
    """The statistics every method's ranges come from: ONNX Runtime's histogram of each
    activation's values over [-max|x|, max|x|] in TensorRT's entropy calibrator's 2048 bins
    (ORT's default of 128 bins leaves the KL search a single candidate, the full range, so
    entropy equalled minmax). Entropy searches it down to 128 quantized bins; percentile
    reads the same histogram folded onto |x| (1024 bins); minmax keeps max |x|."""
    return {"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}


def _method_ranges(histograms: dict, method: str, percentile: float) -> dict:
    """{tensor: (low, high, ...)} of ``method`` from the value histograms ONNX Runtime's
    collector made ({tensor: (hist, edges, min, max, threshold)}), by ONNX Runtime's own code."""
    from onnxruntime.quantization.calibrate import HistogramCollector
    if method == "minmax":
        return {name: (-(top := np.array(max(abs(h[2]), abs(h[3])), h[1].dtype)), top) for name, h in histograms.items()}
    if method == "entropy":
        return {name: (*entropy_threshold(h, ENTROPY_QUANTIZED_BINS), *h[:2]) for name, h in histograms.items()}
    collector = HistogramCollector(method, True, ENTROPY_BINS, ENTROPY_QUANTIZED_BINS, percentile, None)
    half = {name: len(h[0]) // 2 for name, h in histograms.items()}  # symmetric about 0, an even bin count
    collector.histogram_dict = {name: (h[0][half[name]:] + h[0][:half[name]][::-1], h[1][half[name]:], h[2], h[3])
                                for name, h in histograms.items()}  # folded onto |x|
    return collector.compute_percentile()


def entropy_threshold(histogram: tuple, quantized_bins: int) -> tuple:
    """ONNX Runtime's ``HistogramCollector.get_entropy_threshold`` (TensorRT's KL search) with
    its per-candidate Python loops and built-in ``sum`` over arrays turned into NumPy: the same
    candidates, the same integer arithmetic, ORT's own ``smooth_distribution`` and ``entropy``,
    so the same threshold (tests/calib/test_int8.py compares the two), 50 to 100 times faster."""
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution
    hist, edges, low, high = histogram[:4]
    zero, half = hist.size // 2, quantized_bins // 2
    before = np.concatenate([[0], np.cumsum(hist)])  # before[k] = sum(hist[:k]), exact in int64
    candidates, divergences = [], []
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, hist.size)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += before[start]
        p[-1] += before[-1] - before[end]
        merged = sliced.size // quantized_bins
        counts = sliced[:merged * quantized_bins].reshape(quantized_bins, merged).sum(axis=1)
        counts[-1] += sliced[merged * quantized_bins:].sum()
        norm = (p[:merged * quantized_bins] != 0).reshape(quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)  # ORT assigns count / norm into int64: truncated
        q[:merged * quantized_bins] = np.repeat(np.where(norm != 0, counts / np.maximum(norm, 1), 0), merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergences.append(np.inf if p is None or q is None else np.array(entropy(p, q), dtype=edges.dtype))
        candidates.append((edges[start], edges[end]))
    best = candidates[int(np.argmin(np.array(divergences, dtype=np.float64)))]  # the first of equal minima
    low_t, high_t = best
    return (low if low_t < low else low_t), (high if high_t > high else high_t)


def collect_histograms(src: Path, inputs: np.ndarray) -> dict:
    """Run ONNX Runtime's histogram calibrator once on ``inputs``: {tensor: (hist, edges, min,
    max, threshold)}, the statistics every method's ranges come from."""
    from onnxruntime.quantization.calibrate import create_calibrator
    printed = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(printed):  # its notes go to -v
        calibrator = create_calibrator(Path(src), QUANTIZED_OPS, str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method("entropy"),
                                       extra_options=_calibrator_options())
        calibrator.collect_data(_reader(inputs))
    if printed.getvalue().strip():
        log.debug("onnxruntime calibration printed:\n%s", printed.getvalue().rstrip())
    return calibrator.collector.histogram_dict


def save_ranges(histograms: dict, method: str, percentile: float, path: Path) -> Path:
    """``method``'s activation ranges from ``histograms``, in ONNX Runtime's JSON format (what
    ``quantize_static`` reads)."""
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), atomic_output(path) as tmp:
        save_tensors_data(TensorsData(_ort_method(method), _method_ranges(histograms, method, percentile)), tmp)
    return Path(path)


def calibrate_ranges(src: Path, inputs: np.ndarray, percentile: float, folder: Path) -> dict:
    """Every method's activation ranges from one pass of the histogram calibrator, written into
    ``folder``: {method: ranges file}."""
    histograms = collect_histograms(src, inputs)
    return {m: save_ranges(histograms, m, percentile, Path(folder) / f"{m}.ranges.json") for m in METHODS}


def _quantize(src: Path, out: Path, ranges_json: Path, method: str, exclude: set):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    quantize_static(str(src), str(out), None, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=sorted(exclude),
                    calibrate_method=_ort_method(method), calibration_cache_path=str(ranges_json),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})


def calibration_key(source_sha256: str, sources, seed: int) -> str:
    """What decides the activation ranges of every method: the ONNX content, the calibrator's
    settings, the seed, the quantized op types, and each calibration image with its size and
    modification time. Any change is a cache miss."""
    files = [str(f) for s in sources for f in (s if isinstance(s, (tuple, list)) else (s,))]
    stamp = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    payload = {"onnx": source_sha256, "seed": seed, "images": stamp, "methods": METHODS,
               "calibrator": _calibrator_options(), "ops": QUANTIZED_OPS}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return f"{len(sources)}-{digest}"


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


def kept_in_float(qdq: onnx.ModelProto, source: onnx.ModelProto, kept_out: set) -> onnx.ModelProto:
    """The Q/DQ graph ``qdq`` with the layers ``kept_out`` back in float (a new model): each such
    node reads its inputs as the FP32 ``source`` names them (the float activation, the float
    weight), and the Q/DQ nodes and INT8 initializers no longer read are dropped. What
    ``quantize_static`` writes with those nodes excluded, without quantizing the graph again
    (tests/calib/test_int8.py compares the two)."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    if not kept_out:
        return model
    original = {n.name: n for n in source.graph.node if n.name in kept_out}
    for node in model.graph.node:
        if node.name in original:
            del node.input[:]
            node.input.extend(original[node.name].input)
    live = {o.name for o in model.graph.output}
    nodes = list(model.graph.node)
    kept = []
    for node in reversed(nodes):  # the graph is topologically sorted: readers come after writers
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or set(node.output) & live:
            kept.append(node)
            live.update(node.input)
    names = {t.name for t in model.graph.initializer}
    extra = [t for t in source.graph.initializer if t.name in live and t.name not in names]
    inits = [t for t in model.graph.initializer if t.name in live] + extra
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    produced = {o for n in model.graph.node for o in n.output}
    values = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(values)
    return model


class _Quantizer:
    """Q/DQ graphs of one FP32 source from one set of activation ranges: one layer alone
    quantized, FP32 elsewhere (serialized, for sensitivity), or the INT8 variant with FP16
    outside the Q/DQ and some layers kept out. ONNX Runtime quantizes the graph once; a graph
    with layers kept out is that graph with them put back in float (``kept_in_float``)."""

    def __init__(self, src: Path, ranges: Path, method: str, exclude: set, overflow: dict, path: Path,
                 source: onnx.ModelProto):
        self.src, self.ranges, self.method, self.exclude, self.overflow = src, ranges, method, exclude, overflow
        self.source = source
        _quantize(src, path, ranges, method, exclude)
        self.full = load_onnx(path)
        self.layers = quantized_layers(self.full)
        self._last = (frozenset(), self.full)
        self._bare = None  # (full, source) without their weights, and the weights: for ``alone``

    def qdq(self, kept_out: set) -> onnx.ModelProto:
        """The Q/DQ graph with ``kept_out`` left in float; shared, so read it, do not change it."""
        key = frozenset(kept_out)
        if self._last[0] != key:  # the latest only: each graph is the model's size
            self._last = (key, kept_in_float(self.full, self.source, key))
        return self._last[1]

    def alone(self, layer: str) -> tuple[bytes, dict]:
        """The Q/DQ graph (FP32 elsewhere) with only ``layer`` quantized: (the graph serialized
        without its weights, the weights it reads as ``OnnxRuntimeRunner`` takes them). One
        graph per layer: copying and serializing the weights each time was most of the
        measurement (iaunet_r18, 46 layers: 4.4 of 8.7 s)."""
        if self._bare is None:
            self._bare = _without_weights([self.full, self.source])
        (full, source), weights = self._bare
        model = kept_in_float(full, source, set(self.layers) - {layer})
        used = {t.name for t in model.graph.initializer} & set(weights)
        return model.SerializeToString(), {name: weights[name] for name in used}

    def variant(self, kept_out: set) -> tuple[onnx.ModelProto, dict]:
        from iaunet.calib.mixed import fp16_outside_qdq
        return fp16_outside_qdq(self.qdq(kept_out), set(self.overflow))


def _without_weights(models: list) -> tuple[list, dict]:
    """(copies of ``models`` whose large initializers are external references, {name: OrtValue}
    of their data). ``kept_in_float`` prefers the first model's initializer of a name, and so
    does the dict."""
    import onnxruntime as ort
    bare, weights = [], {}
    for model in models:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        for tensor in copy.graph.initializer:
            if len(tensor.raw_data) < SHARED_WEIGHT_BYTES:
                continue
            if tensor.name not in weights:
                weights[tensor.name] = ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(tensor))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.add(key="location", value=tensor.name)
        bare.append(copy)
    return bare, weights


class _Ranges:
    """Activation ranges per method for one cache key: the histograms are collected once (and
    cached); each method's ranges are computed from them when first asked for (and cached)."""

    def __init__(self, src: Path, sources: list, meta, percentile: float, key: str, cache: Path):
        self.src, self.sources, self.meta, self.percentile = src, sources, meta, percentile
        self.folder, self._histograms = cache / key, None
        self.from_cache = (self.folder / HISTOGRAMS).is_file()
        if self.from_cache:
            log.info("int8: reusing cached activation statistics %s", self.folder)

    def histograms(self) -> dict:
        stats = self.folder / HISTOGRAMS
        if self._histograms is None and stats.is_file():
            try:
                with np.load(stats) as saved:
                    self._histograms = {str(name): (saved[f"h{i}"], saved[f"e{i}"], *saved[f"s{i}"])
                                        for i, name in enumerate(saved["names"])}
            except (OSError, ValueError, KeyError, EOFError) as exc:
                log.info("int8: the cached activation statistics %s cannot be read (%s); computing them again",
                         stats, type(exc).__name__)
        if self._histograms is None:
            inputs = load_inputs(self.sources, self.meta.preprocess, "reading calibration images")
            self._histograms = collect_histograms(self.src, inputs)
            self.folder.mkdir(parents=True, exist_ok=True)
            arrays = {"names": np.array(list(self._histograms))}
            for i, (hist, edges, *stat) in enumerate(self._histograms.values()):
                arrays.update({f"h{i}": hist, f"e{i}": edges, f"s{i}": np.array(stat, edges.dtype)})
            with atomic_output(stats) as tmp:  # a unique name: parallel runs do not collide
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
        return self._histograms

    def __getitem__(self, method: str) -> Path:
        suffix = f"-{self.percentile}" if method == "percentile" else ""
        path = self.folder / f"{method}{suffix}.ranges.json"
        if path.is_file():
            problem = _unreadable_ranges(path)
            if problem is None:
                return path
            log.info("int8: the cached activation ranges %s cannot be read (%s); computing them again", path, problem)
        return save_ranges(self.histograms(), method, self.percentile, path)


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


def check_int8_output(dst, src) -> tuple[Path, Path]:
    """(the ONNX Runtime file, the TensorRT file) an INT8 variant named ``dst`` writes, both
    checked as outputs; a ``dst`` that is itself a TensorRT layout name is refused."""
    dst = Path(dst)
    if dst.name.endswith(TENSORRT_SUFFIX):
        raise IAUnetError(f"output {dst} ends in {TENSORRT_SUFFIX}, the name of the TensorRT layout written beside "
                          f"the variant; expected a name such as {onnxruntime_layout_path(dst)}")
    return (check_output_path(dst, inputs=[src], kind=file_kinds.ONNX),
            check_output_path(tensorrt_layout_path(dst), inputs=[src], kind=file_kinds.ONNX))


def quantize_int8(src, dst, data, method: str = DEFAULT_METHOD, samples: int = CALIBRATION_SAMPLES,
                  percentile: float = 99.99, trt_version: str = "10.3.0", cache_dir=None, seed: int = 0,
                  target_cosine: float | None = None, max_fp16_layers: int = DEFAULT_MAX_FP16_LAYERS) -> dict:
    """Write the INT8 variant in its two layouts: ``dst`` (FP32 outside the Q/DQ, right in any
    ONNX Runtime session; ``iaunet.calib.ort_layout``) and ``dst.trt.onnx`` (FP16 outside the
    Q/DQ, for TensorRT), with ``dst.calib`` (TensorRT cache) and, with ``target_cosine``,
    ``dst``'s ``.sensitivity.png``; return the record. ``method`` 'auto' scores every method on
    the held-out images and keeps the best. Everything is computed before the first file is
    written; a missed target raises and writes nothing."""
    if method not in METHOD_CHOICES:
        raise IAUnetError(f"unknown calibration method {method!r}; expected one of {list(METHOD_CHOICES)}")
    if data is None:
        raise IAUnetError("INT8 needs calibration images: pass --data (a training split or a folder of crops)")
    trt_version_code(trt_version)  # refused before anything is written
    check_fallback_options(target_cosine, max_fp16_layers)
    src = Path(src)
    dst, trt_dst = check_int8_output(dst, src)
    model = load_onnx(src, verify=True)
    meta = metadata_of(model, src)
    if graph.get_prop(model, "precision", "fp32") != "fp32":
        raise IAUnetError(f"{src} is already a {graph.get_prop(model, 'precision')} variant; expected an FP32 export")
    cache = cache_folder("calib", cache_dir)  # a file there is refused before the images are read
    sources, held_out = split_sources(calibration_sources(data, meta.config.variant == "video"), samples,
                                      HELD_OUT, seed)
    if (target_cosine is not None or method == "auto") and len(held_out) < MIN_HELD_OUT:
        why = "--target-cosine" if target_cosine is not None else "--method auto (the default) scores methods on"
        raise IAUnetError(f"{why} needs at least {MIN_HELD_OUT} training images beside the {len(sources)} "
                          f"used for calibration, found {len(held_out)}; lower --samples, add images or pass "
                          f"--method {'/'.join(METHODS)}")
    exclude = graph.native_affinity_nodes(model) | graph.affinity_neighbour_matmuls(model)
    source_sha256 = sha256_file(src)
    key = calibration_key(source_sha256, sources, seed)
    ranges = _Ranges(src, sources, meta, percentile, key, cache)
    probe = load_inputs(held_out or pick(sources, PROBE_SAMPLES, seed + 1), meta.preprocess, "held-out images",
                        progress=False)
    overflow = graph.fp16_overflow_nodes(model, probe)
    judge = _Judge(run_onnxruntime(src, probe, 8), probe)
    with tempfile.TemporaryDirectory() as tmp:
        quantizer, choice = _pick_method(method, ranges, lambda m: _Quantizer(src, ranges[m], m, exclude, overflow,
                                                                               Path(tmp) / f"{m}.q.onnx", model), judge)
        (variant, mixed, parity), fallback = _choose(quantizer, judge, target_cosine, max_fp16_layers)
        kept_out = set(fallback.fp16_layers) if fallback else set()
        qdq = quantizer.qdq(kept_out)
        scales = activation_scales(qdq)  # the .calib holds what the variant quantizes
        ort_variant, ort_record = onnxruntime_layout(qdq)
    ort_parity = judge.onnxruntime_parity(qdq)
    problems = check_qdq(variant) + tensorrt_lint(variant)
    if problems:
        raise IAUnetError(f"the INT8 graph would not suit TensorRT 10.3: {problems[0]} (+{len(problems) - 1} more)")
    flops = node_flops(model)
    judged_on = (f"{len(probe)} held-out training images" if held_out else
                 f"{len(probe)} calibration images (none left to hold out)")
    record = {"precision": "int8", "source": str(src), "source_sha256": source_sha256,
              "tool": "onnxruntime.quantization.quantize_static (QDQ, QInt8, per-channel, symmetric)",
              "method": quantizer.method, "method_choice": choice,
              "percentile": percentile if quantizer.method == "percentile" else None,
              "calibrator": _calibrator_options(),
              "calibration": {"data": str(data), "samples": len(sources), "held_out": len(held_out),
                              "cache_key": key, "from_cache": ranges.from_cache},
              "quantized_op_types": QUANTIZED_OPS, "excluded_nodes": sorted(exclude),
              "int8_layers": len(quantizer.layers) - len(kept_out),
              "layouts": {"onnxruntime": {"file": str(dst), **ort_record, "mean_cosine_vs_fp32": ort_parity.mean_cosine,
                                          "min_cosine_vs_fp32": ort_parity.min_cosine,
                                          "judged_in": "ONNX Runtime's default session"},
                          "tensorrt": {"file": str(trt_dst), "mean_cosine_vs_fp32": parity.mean_cosine,
                                       "min_cosine_vs_fp32": parity.min_cosine,
                                       "judged_in": "ONNX Runtime with graph optimisations off (the file as written)"}},
              "fp16_outside_qdq": mixed, "fp32_overflow_nodes": {k: round(v, 1) for k, v in sorted(overflow.items())},
              "quantize_linear_nodes": sum(n.op_type == "QuantizeLinear" for n in variant.graph.node),
              "activation_scales": len(scales), "trt_cache": str(dst.with_suffix(".calib")),
              "trt_cache_header_version": trt_version,
              "mean_cosine_vs_fp32": min(parity.mean_cosine, ort_parity.mean_cosine), "judged_on": judged_on,
              "fallback": fallback.record(flops) if fallback else None,
              "sensitivity_plot": str(sensitivity_plot_path(dst)) if fallback else None}
    graph.set_props(variant, precision="int8", variant=record, **{CONSUMER_KEY: TENSORRT_ONLY})
    graph.set_props(ort_variant, precision="int8", variant=record)
    record["parity_vs_fp32_onnx"] = vars(parity) if parity.mean_cosine < ort_parity.mean_cosine else vars(ort_parity)
    if fallback is not None:
        plot(fallback, flops, sensitivity_plot_path(dst))
    write_trt_cache(scales, dst.with_suffix(".calib"), trt_version)
    graph.save_atomically(variant, trt_dst)
    graph.save_atomically(ort_variant, dst)
    return record


def _pick_method(method: str, ranges: dict, quantizer_for, judge: "_Judge") -> tuple:
    """(the quantizer of the method to use, the record of the choice). A named method is
    used as it is; 'auto' makes every method's all-INT8 variant and keeps the one whose
    held-out images agree best with FP32: highest minimum cosine (the tail the parity gates
    guard), then highest mean."""
    if method != "auto":
        return quantizer_for(method), {"asked": method, "scores": None}
    scores, best = {}, None
    for candidate in METHODS:
        quantizer = quantizer_for(candidate)
        parity = judge.parity(quantizer.variant(set())[0])
        scores[candidate] = {"min_cosine": parity.min_cosine, "mean_cosine": parity.mean_cosine}
        log.info("int8: %s ranges -> held-out cosine to FP32 min %.6f, mean %.6f", candidate, parity.min_cosine,
                 parity.mean_cosine)
        if best is None or _score(scores[candidate]) > _score(scores[best.method]):
            best = quantizer
    ranked = sorted(scores, key=lambda m: _score(scores[m]), reverse=True)
    margin = {k: scores[ranked[0]][k] - scores[ranked[1]][k] for k in ("min_cosine", "mean_cosine")}
    log.info("int8: %s calibration kept (min cosine %+.6f over %s)", ranked[0], margin["min_cosine"], ranked[1])
    return best, {"asked": "auto", "scores": scores, "won": ranked[0], "runner_up": ranked[1], "won_by": margin,
                  "score": "held-out min cosine to FP32, then mean"}


def _score(score: dict) -> tuple:
    return score["min_cosine"], score["mean_cosine"]


class _Judge:
    """Agreement with the FP32 graph's embeddings of the probe (held-out) images. Candidates
    run as written (graph optimisations off): the TensorRT layout's numbers are what TensorRT
    is asked to compute, and a default session would break it (``iaunet.calib.ort_layout``)."""

    def __init__(self, reference, probe):
        self.reference, self.probe = reference, probe

    def parity(self, candidate: onnx.ModelProto | bytes, weights: dict | None = None):
        serialized = candidate if isinstance(candidate, bytes) else candidate.SerializeToString()
        with OnnxRuntimeRunner(serialized, as_written=True, weights=weights) as runner:
            return compare(self.reference, run_onnxruntime(runner, self.probe, 8))

    def onnxruntime_parity(self, qdq: onnx.ModelProto):
        """The ONNX Runtime layout of the Q/DQ graph ``qdq`` in ONNX Runtime's default session."""
        return compare(self.reference, run_onnxruntime(onnxruntime_layout(qdq)[0].SerializeToString(), self.probe, 8))


def _choose(quantizer: "_Quantizer", judge: _Judge, target: float | None, budget: int) -> tuple:
    """((variant, its FP16 record, its parity), Fallback or None): every layer in INT8
    without a target; with one, the fallback's choice, or a one-line error when the budget
    cannot reach it. With a target, a variant is scored by the lower mean cosine of its two
    layouts: the TensorRT layout as written and the ONNX Runtime layout in a default session
    (both files are written, and each must meet it)."""
    def scored_variant(kept_out: set) -> tuple:
        variant, mixed = quantizer.variant(kept_out)
        parity = judge.parity(variant)
        return parity.mean_cosine, (variant, mixed, parity)

    def both_layouts(kept_out: set) -> tuple:
        cosine, chosen = scored_variant(kept_out)
        return min(cosine, judge.onnxruntime_parity(quantizer.qdq(kept_out)).mean_cosine), chosen

    if target is None:
        return scored_variant(set())[1], None
    baseline, chosen = both_layouts(set())
    log.info("int8: mean cosine %.6f on %d held-out images (target %s); measuring each layer's sensitivity",
             baseline, len(judge.probe), target)
    fallback = fall_back(quantizer.layers, (baseline, chosen), target, budget,
                         lambda layer: judge.parity(*quantizer.alone(layer)).mean_cosine, both_layouts)
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
