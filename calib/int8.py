"""INT8 graphs with explicit, symmetric Q/DQ (ONNX Runtime's quantization tooling),
and a TensorRT calibration cache from the same scales.

Placement for TensorRT: inputs of Conv, Gemm, MatMul and both inputs of Add are
quantized (per-channel weights, per-tensor activations, zero points 0); no bias
quantization; no Q/DQ on op outputs or graph outputs; the IAU affinity ops and the
MatMuls that feed or consume them are excluded. Results are cached under a key of
everything that decides them (``calibration_key``): the source's hash, the method and
its settings, the seed, the quantization settings and every calibration image's path,
size and modification time.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import io
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from iaunet.calib import METHODS, graph
from iaunet.calib.data import calibration_sources, load_inputs, pick
from iaunet.export.checks import compare, run_onnxruntime
from iaunet.export.metadata import load_onnx, metadata_of
from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output, cache_folder, check_output_path, sha256_file
from iaunet.core.graph_io import INPUT_NAME
from iaunet.core.log import get_logger
from iaunet.core.progress import Progress

log = get_logger("calib")
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Add"]
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128  # TensorRT's entropy calibrator histogram


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


def calibration_key(source_sha256: str, sources, method: str, percentile: float, seed: int, exclude) -> str:
    """What decides a calibration: the ONNX content, the method and its settings, the seed,
    the quantization settings, and each calibration image with its size and modification
    time. Any change is a cache miss."""
    files = [str(f) for s in sources for f in (s if isinstance(s, (tuple, list)) else (s,))]
    stamp = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    payload = {"onnx": source_sha256, "method": method, "seed": seed, "images": stamp,
               "calibrator": _calibrator_options(method, percentile), "ops": QUANTIZED_OPS,
               "exclude": sorted(exclude)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return f"{method}-{len(sources)}-{digest}"


def quantize_int8(src, dst, data, method: str = "entropy", samples: int = 128, percentile: float = 99.99,
                  trt_version: str = "10.3.0", cache_dir=None, seed: int = 0) -> dict:
    """Write ``dst`` (Q/DQ INT8), ``dst.calib`` (TensorRT cache) and return the record."""
    if method not in METHODS:
        raise IAUnetError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")
    if data is None:
        raise IAUnetError("INT8 needs calibration images: pass --data (a training split or a folder of crops)")
    trt_version_code(trt_version)  # refused before anything is written
    src, dst = Path(src), check_output_path(dst, inputs=[src])
    model = load_onnx(src)
    meta = metadata_of(model, src)
    if graph.get_prop(model, "precision", "fp32") != "fp32":
        raise IAUnetError(f"{src} is already a {graph.get_prop(model, 'precision')} variant; expected an FP32 export")
    sources = pick(calibration_sources(data, meta.config.variant == "video"), samples, seed)
    exclude = graph.native_affinity_nodes(model) | graph.affinity_neighbour_matmuls(model)
    source_sha256 = sha256_file(src)
    key = calibration_key(source_sha256, sources, method, percentile, seed, exclude)
    cache = cache_folder("calib", cache_dir)
    cached = cache / f"{key}.onnx"
    from_cache = cached.is_file()
    if from_cache:
        log.info("int8: reusing cached calibration %s", cached)
    else:
        inputs = load_inputs(sources, meta.preprocess, "reading calibration images")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            out, ranges = Path(tmp) / "q.onnx", Path(tmp) / "ranges.json"
            calibrate_ranges(src, inputs, method, percentile, ranges)
            _quantize(src, out, ranges, method, exclude)
            with atomic_output(cached) as tmp_cached:  # a unique name: parallel runs do not collide
                shutil.copyfile(out, tmp_cached)
    quantized = load_onnx(cached)
    problems = check_qdq(quantized)
    if problems:
        raise IAUnetError(f"the INT8 graph breaks TensorRT's Q/DQ rules: {problems[0]} (+{len(problems) - 1} more)")
    scales = activation_scales(quantized)
    record = {"precision": "int8", "source": str(src), "source_sha256": source_sha256,
              "tool": "onnxruntime.quantization.quantize_static (QDQ, QInt8, per-channel, symmetric)",
              "method": method, "percentile": percentile if method == "percentile" else None,
              "calibrator": _calibrator_options(method, percentile),
              "calibration": {"data": str(data), "samples": len(sources), "cache_key": key,
                              "from_cache": from_cache},
              "quantized_op_types": QUANTIZED_OPS, "excluded_nodes": sorted(exclude),
              "quantize_linear_nodes": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
              "activation_scales": len(scales), "trt_cache": str(dst.with_suffix(".calib")),
              "trt_cache_header_version": trt_version}
    graph.set_props(quantized, precision="int8", variant=record)
    graph.save_atomically(quantized, dst)
    write_trt_cache(scales, dst.with_suffix(".calib"), trt_version)
    probe = load_inputs(pick(sources, 16, seed + 1), meta.preprocess, "parity probe", progress=False)
    record["parity_vs_fp32_onnx"] = vars(compare(run_onnxruntime(src, probe, 8), run_onnxruntime(dst, probe, 8)))
    return record
