"""Checkpoint -> ONNX: the export wrapper, plugin/native modes, metadata, atomic write.

The graph takes ``images`` float32 RGB 0..255 (N x 3 x H x W; video N x T x 3 x H x W),
normalises them itself and returns ``embeddings`` N x D (optionally L2-normalised).
The file is written next to its destination under a temporary name and renamed into
place only after the checker, the TensorRT lint and the ONNX Runtime parity pass.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from iaunet.export import checks
from iaunet.export.cleanup import clean_graph
from iaunet.export.metadata import ExportMetadata, preprocess_spec, save_onnx, write_metadata
from iaunet.export.functions import attach_local_functions, plugin_nodes
from iaunet.export.plugin_nodes import traced_channel_affinity, traced_part_affinity
from iaunet import __version__
from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, check_output_path, sha256_file
from iaunet.core.graph_io import DEFAULT_OPSET, INPUT_NAME, OPSET_RANGE, OUTPUT_NAME
from iaunet.core.log import get_logger
from iaunet.core.preprocess import to_model_array
from iaunet.core.validate import require_memory, require_same_variant
from iaunet.runtime.embedder import l2_normalize
from iaunet.runtime.runners import OnnxRuntimeRunner
from iaunet.train.checkpoint import model_from_payload, model_id, read_checkpoint
from iaunet.train.iau import affinity_ops
from iaunet.train.runner import TorchRunner

log = get_logger("export")
PARITY_BATCHES = (1, 7)


class ExportWrapper(nn.Module):
    """Normalisation in the graph, embeddings out."""

    def __init__(self, model: nn.Module, normalize_embeddings: bool = False):
        super().__init__()
        self.model = model
        config = model.config
        shape = (1, 1, 3, 1, 1) if config.variant == "video" else (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(shape))
        self.normalize_embeddings = normalize_embeddings

    def forward(self, images):
        embeddings = self.model((images - self.mean) / self.std)
        return F.normalize(embeddings, dim=1) if self.normalize_embeddings else embeddings


@dataclass
class ExportReport:
    path: Path
    metadata: ExportMetadata
    nodes: dict
    traced_nodes: int  # before the cleanup
    plugin_nodes: int
    size_bytes: int
    parity: dict = field(default_factory=dict)  # batch size -> checks.Parity

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.nodes.items(), key=lambda kv: (-kv[1], kv[0])))
        lines = [f"wrote {self.path} ({self.size_bytes / 2 ** 20:.1f} MiB, opset {self.metadata.opset}, "
                 f"{self.metadata.mode} mode, {self.plugin_nodes} plugin nodes)",
                 f"nodes: {self.traced_nodes} traced, {sum(self.nodes.values())} after cleanup "
                 f"({sum(self.nodes.values()) / self.traced_nodes:.0%})",
                 f"node types: {ops}"]
        lines += [f"ONNX Runtime vs PyTorch, batch {b}: {p.describe()}" for b, p in self.parity.items()]
        return "\n".join(lines)


def parity_inputs(config, count: int, data=None, seed: int = 0) -> np.ndarray:
    """``count`` real inputs in the graph's layout: query crops from ``data`` if given,
    else crops drawn by the synthetic generator."""
    if data is not None:
        from iaunet.train.data.datasets import open_dataset
        from iaunet.train.data.loaders import ReIDDataset
        ds = open_dataset(data)
        require_same_variant(config.variant, ds.video, config.name, data)
        samples = ReIDDataset(ds.query[:count], config.height, config.width, config.resize_filter,
                              frames=config.frames if ds.video else 0)
        return np.stack([samples[i][0].numpy() for i in range(len(samples))])
    from iaunet.train.data.synth import Camera, Identity, render
    rng = np.random.default_rng(seed)
    cameras = [Camera.draw(rng) for _ in range(3)]
    out = []
    for i in range(count):
        person, camera = Identity.draw(rng), cameras[i % 3]
        frames = max(config.frames, 1) if config.variant == "video" else 1
        clip = [to_model_array(render(person, camera, rng, phase=0.5 * t)[0], config.height, config.width,
                               config.resize_filter) for t in range(frames)]
        out.append(np.stack(clip) if config.variant == "video" else clip[0])
    return np.stack(out).astype(np.float32)


def fp32_noise_floor(wrapper: ExportWrapper, inputs: np.ndarray, fp32: np.ndarray) -> "checks.Parity":
    """How far PyTorch's own FP32 result is from float64 (tells a broken export from a
    model whose FP32 rounding alone exceeds the gate)."""
    with torch.no_grad():
        exact = wrapper.double()(torch.from_numpy(inputs).double()).numpy()
    wrapper.float()
    return checks.compare(exact, fp32)


def _trace(wrapper: ExportWrapper, example: torch.Tensor, opset: int, mode: str) -> onnx.ModelProto:
    buffer = io.BytesIO()
    plugin = mode == "plugin"
    ctx = affinity_ops(traced_channel_affinity, traced_part_affinity) if plugin else affinity_ops()
    with ctx, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          custom_opsets={"iaunet": 1} if plugin else None, do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    if plugin:
        attach_local_functions(model, opset)
    return model


def declare_output(model: onnx.ModelProto, embedding_dim: int) -> onnx.ModelProto:
    """Declare ``embeddings`` as ('batch', embedding_dim), in place: shape inference stops at the
    plugin ops, so the tracer names the size instead of stating it, and consumers that read
    the graph's shapes (Triton's config check, nvinfer, a user's code) need the number."""
    shape = next(o for o in model.graph.output if o.name == OUTPUT_NAME).type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "batch"
    shape.dim.add().dim_value = embedding_dim
    return model


def export_checkpoint(checkpoint, output, mode: str = "plugin", opset: int = DEFAULT_OPSET, frames: int | None = None,
                      normalize_embeddings: bool = False, data=None, parity_batches=PARITY_BATCHES) -> ExportReport:
    """Export, check, and write ``output``; raises IAUnetError (and writes nothing) on failure."""
    output = Path(output)
    if mode not in ("plugin", "native"):
        raise IAUnetError(f"unknown export mode {mode!r}; expected 'plugin' or 'native'")
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise IAUnetError(f"opset {opset} is outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]} "
                          "(TensorRT 10.3's parser accepts up to 20; per-channel Q/DQ needs 13)")
    check_output_path(output, inputs=[checkpoint, data], kind=file_kinds.ONNX)
    payload = read_checkpoint(checkpoint)
    model, config = model_from_payload(payload, checkpoint)
    if frames is not None:
        if config.variant != "video":
            raise IAUnetError(f"--frames applies to video models; {checkpoint} is an image model")
        config = dataclasses.replace(config, frames=frames)
        model.config = config
        batch = max(parity_batches)
        require_memory(f"the export check's inputs ({batch} clips x {frames} frames x 3 x {config.height} x "
                       f"{config.width}; --frames)", batch * frames * 3 * config.height * config.width * 4)
    wrapper = ExportWrapper(model, normalize_embeddings).eval()
    inputs = parity_inputs(config, max(parity_batches), data)
    log.info("exporting %s (%s, %s mode, opset %d)", checkpoint, config.name, mode, opset)
    traced = _trace(wrapper, torch.from_numpy(inputs[:2]), opset, mode)
    onnx_model = declare_output(clean_graph(traced), config.embedding_dim)
    meta = ExportMetadata(config, preprocess_spec(config), mode, opset, sha256_file(checkpoint), __version__,
                          normalize_embeddings, model_id(payload))
    write_metadata(onnx_model, meta)
    checks.check_onnx(onnx_model)
    problems = checks.tensorrt_lint(onnx_model)
    if problems:
        raise IAUnetError(f"the graph would not parse in TensorRT 10.3: {problems[0]} (+{len(problems) - 1} more)")
    expected = TorchRunner(model, config).infer(inputs)  # the reference, through the one inference path
    if normalize_embeddings:
        expected = l2_normalize(expected)
    with atomic_output(output) as tmp:
        save_onnx(onnx_model, tmp)
        runner = OnnxRuntimeRunner(tmp)
        parity = {b: checks.compare(expected, checks.run_onnxruntime(runner, inputs, b)) for b in parity_batches}
        runner.close()
        failed = {b: p for b, p in parity.items() if not p.passes(checks.COSINE_GATE, checks.REL_ERROR_GATE)}
        if failed:
            b, p = next(iter(failed.items()))
            floor = fp32_noise_floor(wrapper, inputs, expected)
            raise IAUnetError(f"ONNX Runtime disagrees with PyTorch at batch {b}: {p.describe()}; expected min cosine "
                              f">= {checks.COSINE_GATE} and max abs error <= {checks.REL_ERROR_GATE} x max |embedding| "
                              f"(for scale: PyTorch FP32 against float64 on these inputs has relative error "
                              f"{floor.relative_error:.2g})")
    return ExportReport(output, meta, dict(checks.node_summary(onnx_model)), len(traced.graph.node),
                        len(plugin_nodes(onnx_model)), output.stat().st_size, parity)
