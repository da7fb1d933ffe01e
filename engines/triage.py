"""``iaunet triage``: where a variant parts from its FP32 reference, layer by layer.

Every node output of the reference (the FP32 ONNX on ONNX Runtime) and of the candidate
(an FP16 or INT8 ONNX variant on ONNX Runtime, or that ONNX built by TensorRT) is marked
as an output. Polygraphy's ``Comparator`` runs both on the same images and its
cosine-similarity compare function scores each pair of tensors. Tensors pair up by the
node that produces them: a node keeps its name through Q/DQ insertion, FP16 conversion
and TensorRT's parser, while FP16 conversion renames the tensors of FP32 islands. The
first node, in the reference graph's order, whose output falls below the threshold is
where the two part; ``triage.png`` plots every node's 1 - cosine in graph order.

This is how NVIDIA triages INT8 accuracy (``polygraphy run --onnxrt --trt
--onnx-outputs mark all --trt-outputs mark all``). Marking every layer stops TensorRT
fusing across them, so the engine triaged is a close relative of the deployed one.

onnx, onnxruntime, Pillow and polygraphy are imported when a triage runs (``iaunet --help``
needs none of them); TensorRT only for ``backend="tensorrt"``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, atomic_outputs, check_output_path, json_text
from iaunet.core.graph_io import CONSUMER_KEY, INPUT_NAME, TENSORRT_ONLY
from iaunet.core.log import get_logger
from iaunet.engines.plan import BuildOptions
from iaunet.export.metadata import load_onnx, metadata_of

log = get_logger("engines")

BACKENDS = ("onnxruntime", "tensorrt")
# a node's whole output tensor, cosine to FP32, below which the candidate has parted
LAYER_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}
DEFAULT_SAMPLES = 4
SKIPPED_OPS = {"Constant", "Shape"}  # no float activation of the model's to compare (the FP32 reference has no Q/DQ)


@dataclass
class Layer:
    node: str
    op: str
    tensor: str                       # the reference's output
    candidate_tensor: str             # the same node's output in the candidate
    cosine: float                     # NaN where an output held inf or NaN
    passed: bool

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.cosine))

    def describe(self) -> str:
        how = f"cosine {self.cosine:.6f}" if self.finite else "inf or NaN in the variant"
        return f"{self.node} ({self.op}), {how}"


@dataclass
class Triage:
    reference: str
    candidate: str
    backend: str
    precision: str
    threshold: float
    samples: int
    paired: int                       # reference tensors with a counterpart in the candidate
    layers: list = field(default_factory=list)

    @property
    def first(self) -> Layer | None:
        """The first layer, in the reference graph's order, below the threshold."""
        return next((layer for layer in self.layers if not layer.passed), None)

    @property
    def worst(self) -> Layer | None:
        """The lowest cosine; a non-finite one (inf or NaN in an output) is lowest of all."""
        return min(self.layers, key=lambda layer: layer.cosine if layer.finite else -np.inf, default=None)

    def to_dict(self) -> dict:
        """JSON-ready: a cosine that is not a number (inf or NaN in an output) becomes null."""
        def row(layer):
            return {**asdict(layer), "cosine": layer.cosine if layer.finite else None}
        first = self.first
        return {**{k: v for k, v in asdict(self).items() if k != "layers"},
                "first": row(first) if first else None, "layers": [row(layer) for layer in self.layers]}


def paired_tensors(reference, candidate) -> dict[str, tuple[str, str, str]]:
    """reference tensor -> (node, op, candidate tensor): the same node's same output, in the
    reference graph's order."""
    produced = {node.name: list(node.output) for node in candidate.graph.node if node.name}
    pairs = {}
    for node in reference.graph.node:
        outputs = produced.get(node.name) if node.name and node.op_type not in SKIPPED_OPS else None
        for i, tensor in enumerate(node.output if outputs else ()):
            if tensor and i < len(outputs) and outputs[i]:
                pairs[tensor] = (node.name, node.op_type, outputs[i])
    return pairs


def check_pair(reference, candidate, backend: str):
    """Load and match the two ONNX files: (reference model, its export metadata, candidate
    model, candidate precision)."""
    from iaunet.calib.graph import get_prop
    from iaunet.runtime.embedder import is_engine
    if backend not in BACKENDS:
        raise IAUnetError(f"unknown triage backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if is_engine(candidate):
        raise IAUnetError(f"{candidate} is a TensorRT engine, whose inner layers cannot be read back; pass the ONNX "
                          "it was built from with --backend tensorrt")
    if Path(candidate).resolve() == Path(reference).resolve():
        raise IAUnetError(f"{candidate} is the reference itself; expected an FP16 or INT8 variant of it")
    models = [load_onnx(reference), load_onnx(candidate)]
    metas = [metadata_of(m, p) for m, p in zip(models, (reference, candidate))]
    facts = [meta.model_id for meta in metas]
    if get_prop(models[0], "precision", "fp32") != "fp32":
        raise IAUnetError(f"reference {reference} is a {get_prop(models[0], 'precision')} variant; expected the FP32 "
                          "ONNX written by 'iaunet export'")
    if facts[0] != facts[1]:
        raise IAUnetError(f"{candidate} comes from another model than {reference} (model {facts[1][:12]}... "
                          f"vs {facts[0][:12]}...)")
    return models[0], metas[0], models[1], get_prop(models[1], "precision", "fp32")


def triage_sources(meta, data, samples: int, seed: int = 0) -> list:
    """``samples`` training images (or crops, or clips) of ``data`` for the model of export
    metadata ``meta``, picked as calibration picks."""
    from iaunet.calib.data import calibration_sources, pick
    return pick(calibration_sources(data, meta.config.variant == "video"), samples, seed)


def _ort_runner(model, name: str):
    """Polygraphy's ONNX Runtime runner over every node output of ``model``, on the session
    our runtime would open (ONNX Runtime's defaults). An INT8 variant's TensorRT layout
    (``iaunet.consumer = tensorrt``) runs as written, graph optimisations off: what TensorRT
    is asked to compute, which a default session computes wrongly (``iaunet.calib.ort_layout``)."""
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from iaunet.runtime.runners import OnnxRuntimeRunner
    marked = BytesFromOnnx(ModifyOutputs(model, outputs=constants.MARK_ALL, copy=True))()
    return OnnxrtRunner(OnnxRuntimeRunner(marked, as_written=tensorrt_layout(model)).session, name=name)


def tensorrt_layout(model) -> bool:
    """Whether ``model`` is an INT8 variant's TensorRT layout (its metadata says so)."""
    from iaunet.calib.graph import get_prop
    return get_prop(model, CONSUMER_KEY) == TENSORRT_ONLY


def trt_plan(path, batch: int, options: BuildOptions):
    """(the ONNX bytes, the build plan) for ``path`` on this machine at a fixed ``batch``;
    refuses (TensorRT missing, a route this graph or version lacks) before any work."""
    from dataclasses import replace
    from iaunet.engines.builder import plan_for
    _, data, plan = plan_for(path, replace(options, batch=(batch, batch, batch)))
    return data, plan


def layer_runner(data: bytes, plan, name: str):
    """Polygraphy's TensorRT runner (lazy: nothing is built until it is activated) over an
    engine built by the builder's loader chain from ONNX ``data`` with every layer an output."""
    from iaunet.engines.builder import loaders, parser_copy, polygraphy_trt
    backend = polygraphy_trt()
    return backend.TrtRunner(backend.EngineFromBytes(loaders(parser_copy(data, plan), plan, mark_all=True)), name=name)


def compare_layers(reference, candidate, inputs: np.ndarray, threshold: float, trt=None) -> tuple[list[Layer], int]:
    """Run both models with every node output marked, on ``inputs``: the candidate on ONNX
    Runtime, or on TensorRT when ``trt`` is ``trt_plan``'s (bytes, plan). Returns (the
    compared layers in the reference's order, how many reference tensors have a counterpart)."""
    from polygraphy.comparator import Comparator, CosineSimilarityCompareFunc
    from iaunet.engines.builder import quiet_polygraphy
    pairs = paired_tensors(reference, candidate)
    if trt:
        from iaunet.engines.builder import register_route_plugins
        register_route_plugins(trt[1])
    runners = [_ort_runner(reference, "fp32"), layer_runner(*trt, "candidate") if trt else
               _ort_runner(candidate, "candidate")]
    quiet_polygraphy("CRITICAL")  # the per-tensor verdicts are ours to report; -v shows Polygraphy's
    results = Comparator.run(runners, data_loader=[{INPUT_NAME: inputs}])

    def counterpart(name, index, result):
        tensor = pairs.get(name, (None, None, None))[2]
        return [tensor] if tensor in result and np.asarray(result[tensor]).dtype.kind == "f" else []

    accuracy = Comparator.compare_accuracy(results, compare_func=CosineSimilarityCompareFunc(
        cosine_similarity_threshold=threshold, find_output_func=counterpart))
    scored = next(iter(accuracy[0].values()))[0]  # the one pair of runners, the one iteration
    layers = []
    for tensor, (node, op, theirs) in pairs.items():  # absent: no float counterpart; a bare bool: shapes differ
        cosine = getattr(scored.get(tensor), "cosine_similarity", None)
        if cosine is not None:
            layers.append(Layer(node, op, tensor, theirs, float(cosine), bool(scored[tensor])))
    return layers, len(pairs)


def check_triage_paths(reference, candidate, output, data=None) -> tuple[Path, Path]:
    """(report JSON, its plot) for ``output`` (default: beside the candidate), refused
    before any work if either is an input, lies in the data folder, holds a file of
    another kind or cannot be written."""
    output = Path(output) if output else Path(candidate).with_suffix(".triage.json")
    inputs = [reference, candidate, data]
    check_output_path(output, inputs=inputs, kind=file_kinds.TRIAGE)
    if output.suffix != ".json":
        raise IAUnetError(f"triage report {output} must end in .json (its plot goes beside it as .png)")
    return output, check_output_path(output.with_suffix(".png"), inputs=inputs, kind=file_kinds.IMAGE)


def run_triage(reference, candidate, data, samples: int = DEFAULT_SAMPLES, backend: str = "onnxruntime",
               threshold: float | None = None, output=None, options: BuildOptions = BuildOptions(),
               seed: int = 0) -> tuple[Triage, Path]:
    """Triage ``candidate`` against the FP32 ``reference`` on ``samples`` images of ``data``;
    writes the JSON report and its plot, returns (the triage, the report's path)."""
    from iaunet.calib.data import load_inputs
    if backend == "tensorrt":  # what 'iaunet build' builds: an INT8 variant in its TensorRT layout
        from iaunet.engines.builder import tensorrt_source
        candidate = tensorrt_source(candidate)
    report, plot = check_triage_paths(reference, candidate, output, data)
    ref_model, meta, cand_model, precision = check_pair(reference, candidate, backend)
    threshold = LAYER_COSINE[precision] if threshold is None else threshold
    sources = triage_sources(meta, data, samples, seed)
    trt = trt_plan(candidate, len(sources), options) if backend == "tensorrt" else None
    inputs = load_inputs(sources, meta.preprocess, "reading triage images")
    log.info("triage: %s (%s, %s) against %s on %d image(s), every node output marked", Path(candidate).name,
             precision, backend, Path(reference).name, len(inputs))
    layers, paired = compare_layers(ref_model, cand_model, inputs, threshold, trt)
    if not layers:
        raise IAUnetError(f"no node output of {candidate} pairs with one of {reference} by node name; expected a "
                          "variant made from it by 'iaunet calib'")
    result = Triage(str(reference), str(candidate), backend, precision, threshold, len(inputs), paired, layers)
    with atomic_outputs(plot, report) as (plot_tmp, report_tmp):  # both or neither
        plot_layers(result, Path(plot_tmp))
        Path(report_tmp).write_text(json_text(result.to_dict()))
    return result, report


def plot_layers(result: Triage, path: Path) -> None:
    """1 - cosine per compared node in graph order (log scale), the threshold and the first
    node below it marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gaps = np.array([1 - layer.cosine for layer in result.layers])
    broken = ~np.isfinite(gaps)
    gaps = np.where(broken, 2.0, np.maximum(gaps, 1e-9))  # inf/NaN outputs drawn at the top
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.semilogy(range(len(gaps)), gaps, marker=".", lw=0.8, color="tab:blue")
    if broken.any():
        ax.plot(np.flatnonzero(broken), gaps[broken], "x", color="black", label="inf or NaN in the variant")
    ax.axhline(1 - result.threshold, color="tab:red", ls="--", lw=1, label=f"threshold (cosine {result.threshold})")
    first = result.first
    if first:
        index = result.layers.index(first)
        ax.plot([index], [gaps[index]], "o", color="tab:red", ms=8, mfc="none")
        ax.annotate(f"{first.node} ({first.op})", (index, gaps[index]), textcoords="offset points", xytext=(6, -12),
                    fontsize=8, color="tab:red")
    ax.set_xlabel("node output, in the FP32 graph's order")
    ax.set_ylabel("1 - cosine to FP32")
    ax.set_title(f"{Path(result.candidate).name} ({result.precision}, {result.backend}) against "
                 f"{Path(result.reference).name}, {result.samples} image(s)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
