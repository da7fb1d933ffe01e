"""Accuracy parity of every variant against the PyTorch model, on the same images, and the
parity kit that carries those references to a device.

For each variant (ONNX FP32 plugin/native, FP16, INT8 on ONNX Runtime; TensorRT engines
on the TensorRT runner, gated by the precision their sidecar names): per-sample cosine to PyTorch
(mean, min), max abs error, rank-1 and mAP with their change against PyTorch, judged by
default gates. Every ONNX file is also run the way a user opens it, in a plain
``onnxruntime.InferenceSession(path)`` with no options, and judged by the same gates; when
its embeddings differ from the runner's, the report gives it a row of its own. The TensorRT
layout of an INT8 variant (``*.trt.onnx``), which no ONNX Runtime session may be handed, is
measured as written (graph optimisations off): what TensorRT is asked to compute. The
figures, gates and reports are the runtime's (``iaunet.runtime.parity``), so a device
checking against a kit (``iaunet.runtime.parity_kit``) reports the same. ``write_kit`` picks
held-out query and gallery images and computes their references with PyTorch (or the FP32
ONNX on ONNX Runtime when no checkpoint is given).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from iaunet.core.files import atomic_folder, check_report_folder, sha256_file
from iaunet.core.preprocess import load_inputs
from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import CONSUMER_KEY, INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, TENSORRT_ONLY
from iaunet.core.log import get_logger
from iaunet.core.validate import require_same_variant
from iaunet.runtime.parity import (GATES, PARITY_BATCH, REPORT_FILES, VariantResult, compare, judge,  # noqa: F401
                                   measure, reference_result, write_reports)
from iaunet.runtime.parity_kit import DEFAULT_SIZE, SPLITS, embed_all, open_variant, save_kit

log = get_logger("calib")


def checkpoint_ids(checkpoint: Path) -> set:
    """The ids a model exported from ``checkpoint`` may carry: its weights' model id, and the
    file's SHA-256 (the id of files written before model ids)."""
    from iaunet.train.checkpoint import checkpoint_model_id
    return {checkpoint_model_id(checkpoint), sha256_file(checkpoint)}


def find_variants(checkpoint: Path) -> list[Path]:
    """ONNX files beside the checkpoint (or one folder up) exported from it (from its weights)."""
    from iaunet.export.metadata import load_onnx
    ids = checkpoint_ids(checkpoint)
    found = []
    for folder in dict.fromkeys([checkpoint.parent, checkpoint.parent.parent]):
        for path in sorted(folder.glob("*.onnx")):
            model = load_onnx(path, weights=False)
            if metadata_ids(model) & ids:
                found.append(path)
    return found


def metadata_ids(model) -> set:
    """The model ids an ONNX model's metadata names (the model id and the checkpoint file's SHA-256)."""
    from iaunet.calib.graph import get_prop
    return {v for v in (get_prop(model, "model_id"), get_prop(model, "checkpoint_sha256")) if v}


def run_parity(checkpoint, data, variants=(), out_dir=None) -> tuple[list[VariantResult], Path]:
    """Measure the variants; returns the results (PyTorch first) and the report folder."""
    from iaunet.export.metadata import preprocess_spec
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.runner import TorchRunner
    checkpoint = Path(checkpoint)
    paths = [Path(v) for v in variants]
    out = check_report_folder(out_dir if out_dir else checkpoint.parent / "parity", inputs=[checkpoint, data, *paths],
                              files=REPORT_FILES)
    model, config = load_checkpoint(checkpoint)
    paths = paths or find_variants(checkpoint)
    if not paths:
        raise IAUnetError(f"no variants given and no ONNX exported from {checkpoint} beside it; "
                          "pass VARIANT files or run 'iaunet export' first")
    ids = checkpoint_ids(checkpoint)
    opened = []
    try:
        for path in paths:  # every variant is opened and matched to the checkpoint before the data is read
            opened.append((path, _variant(path)))
            model_ids = opened[-1][1][0]
            if not model_ids & ids:
                raise IAUnetError(f"{path} was exported from another checkpoint (model "
                                  f"{(sorted(model_ids) or ['(unknown)'])[0][:12]}..., expected "
                                  f"{min(ids)[:12]}...)")
        ds = open_dataset(data)
        require_same_variant(config.variant, ds.video, checkpoint, data)
        samples = ds.query + ds.gallery
        pids = np.array([s.pid for s in samples])
        cams = np.array([s.camid for s in samples])
        sources = [s.paths if ds.video else s.paths[0] for s in samples]
        inputs = load_inputs(sources, preprocess_spec(config), "reading query+gallery")
        reference = TorchRunner(model, config).infer_batches(inputs, PARITY_BATCH)
        results = [reference_result("pytorch", str(checkpoint), "pytorch", reference, len(ds.query), pids, cams)]
        for path, variant in opened:
            results += _measure(path, variant, reference, inputs, len(ds.query), pids, cams, results[0])
    finally:
        for _, variant in opened:
            variant[-1].close()
    write_reports(results, out, data)
    return results, out


def _variant(path: Path):
    """(model ids, precision, mode, normalized embeddings, whether a plain ONNX Runtime session
    is checked too, runner) of an ONNX variant (ONNX Runtime on the CPU; the TensorRT layout of
    an INT8 variant as written) or a TensorRT engine (read from its sidecar, run by the
    TensorRT runner)."""
    from iaunet.calib.graph import get_prop
    from iaunet.export.metadata import load_onnx
    from iaunet.runtime.embedder import is_engine
    from iaunet.runtime.embedder import read_card
    if is_engine(path):
        runner, card, precision, mode = open_variant(path, "auto")
        return _ids(card), precision, mode, card.normalized, False, runner
    onnx_model = load_onnx(path, verify=True)  # a missing, unreadable or corrupted file is refused as such
    if get_prop(onnx_model, CONSUMER_KEY) == TENSORRT_ONLY:
        from iaunet.runtime.runners import OnnxRuntimeRunner
        card = read_card(path)
        mode = card.props.get(METADATA_PREFIX + "export_mode", "plugin") + ", TensorRT layout as written"
        return _ids(card), card.precision, mode, card.normalized, False, OnnxRuntimeRunner(path, as_written=True)
    runner, card, precision, mode = open_variant(path, "onnxruntime-cpu")
    return _ids(card), precision, mode, card.normalized, True, runner


def _ids(card) -> set:
    return {card.model_id, card.checkpoint_sha256} - {""}


def plain_session_embeddings(path, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    """``inputs`` through ``onnxruntime.InferenceSession(path)`` with no options, as a user opens
    the file (on an onnxruntime with several providers, ORT asks for the list: its own order)."""
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(str(path))
    except ValueError:  # "This ORT build has [...] enabled ... required to explicitly set the providers"
        session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: inputs[i:i + batch]})[0]
                           for i in range(0, len(inputs), batch)]).astype(np.float32)


PLAIN_AGREEMENT = 0.99999  # runner and plain session "agree" when every sample's cosine between them reaches this


def _measure(path, variant, reference, inputs, nq, pids, cams, base) -> list[VariantResult]:
    """Run one variant (the tuple ``_variant`` returned) on the inputs and judge it; an ONNX
    file also in a plain session, which gets its own row when it disagrees with the runner."""
    _, precision, mode, normalized, plain, runner = variant
    log.info("parity: %s (%s, %s)", path.name, precision, mode)
    with runner:
        emb = embed_all(runner, inputs)
    result = measure(path.name, str(path), precision, mode, normalized, emb, reference, nq, pids, cams, base)
    if not plain:
        return [result]
    plain_emb = plain_session_embeddings(path, inputs)
    other = measure(f"{path.name} (plain ORT session)", str(path), precision, f"{mode}, plain session", normalized,
                    plain_emb, reference, nq, pids, cams, base)
    agree = compare(emb, plain_emb).min_cosine >= PLAIN_AGREEMENT
    result.plain_session = {"agrees_with_runner": agree, "mean_cosine": other.mean_cosine,
                            "min_cosine": other.min_cosine, "mAP": other.mAP, "passed": other.passed,
                            "failures": other.failures}
    if not other.passed:
        result.failures = result.failures + [f"plain_session:{f}" for f in other.failures]
        result.passed = False
    return [result] if agree else [result, other]


def kit_samples(query: list, gallery: list, size: int, seed: int = 0) -> tuple[list, list]:
    """At most ``size`` samples, in the data set's order: whole identities of the query split
    (their queries and gallery images) in a seeded order, then gallery distractors (identities
    with no query, junk) for up to a quarter of the kit. All of them when they fit."""
    if len(query) + len(gallery) <= size:
        return list(query), list(gallery)
    query_ids = sorted({s.pid for s in query})
    count = {pid: sum(s.pid == pid for s in query) + sum(s.pid == pid for s in gallery) for pid in query_ids}
    distractors = [s for s in gallery if s.pid not in count]
    budget, chosen = size - min(len(distractors), size // 4), set()
    for i in np.random.default_rng(seed).permutation(len(query_ids)):
        pid = query_ids[i]
        if count[pid] <= budget:
            chosen.add(pid)
            budget -= count[pid]
    extra = budget + min(len(distractors), size // 4)
    picked = set(map(id, [distractors[i] for i in sorted(np.random.default_rng(seed).permutation(len(distractors))[:extra])]))
    return ([s for s in query if s.pid in chosen],
            [s for s in gallery if s.pid in chosen or id(s) in picked])


def write_kit(source, data, output, size: int = DEFAULT_SIZE, seed: int = 0) -> dict:
    """The parity kit folder ``output`` (new or empty) for a checkpoint or an FP32 ONNX; returns its index."""
    with atomic_folder(output) as tmp:
        return fill_kit(source, data, tmp, size, seed)


def fill_kit(source, data, folder, size: int = DEFAULT_SIZE, seed: int = 0) -> dict:
    """Write a kit into the empty ``folder``: ``size`` query and gallery images of ``data``
    copied byte for byte, and their references from ``source``: a checkpoint (PyTorch FP32,
    training's evaluation transform) or an FP32 ONNX (ONNX Runtime on the CPU)."""
    from iaunet.train.data.datasets import open_dataset
    source, folder = Path(source), Path(folder)
    if size < 2:
        raise IAUnetError(f"a parity kit needs at least 2 images (a query and a gallery image); got {size}")
    embed, card = _reference_model(source)
    ds = open_dataset(data)
    require_same_variant("image", ds.video, "a parity kit", data)
    query, gallery = kit_samples(ds.query, ds.gallery, size, seed)
    files = []
    for split, samples in zip(SPLITS, (query, gallery)):
        (folder / split).mkdir()
        for i, sample in enumerate(samples):
            name = Path(sample.paths[0]).name
            rel = f"{split}/{name}" if not (folder / split / name).exists() else f"{split}/{i:05d}_{name}"
            shutil.copyfile(sample.paths[0], folder / rel)
            files.append(rel)
    inputs = load_inputs([folder / f for f in files], card["preprocess"], "reading the kit's images")
    reference = embed(inputs)
    samples = query + gallery
    info = save_kit(folder, card["model_id"], card["name"], card["preprocess"], card["reference"], reference, files,
                    [s.pid for s in samples], [s.camid for s in samples], len(query))
    megabytes = sum((folder / f).stat().st_size for f in files) / 2 ** 20
    log.info("parity kit: %d queries and %d gallery images (%.1f MiB), references from %s", len(query), len(gallery),
             megabytes, card["reference"]["source"])
    return info


def _reference_model(source: Path):
    """(embed function, facts for the kit's index) of a checkpoint or an FP32 ONNX file."""
    if not source.is_file():
        raise IAUnetError(f"{source} not found; expected the checkpoint (model.pt) or the FP32 ONNX")
    if source.suffix == ".onnx":
        from iaunet.runtime.runners import OnnxRuntimeRunner
        runner, card, precision, _ = open_variant(source, "onnxruntime-cpu")
        runner.close()
        if precision != "fp32":
            raise IAUnetError(f"{source} is a {precision} variant; a kit's references come from the checkpoint or "
                              "the FP32 ONNX")
        if card.variant != "image":
            raise IAUnetError(f"a parity kit holds images; {source} is a {card.variant} model")

        def embed(inputs):
            with OnnxRuntimeRunner(source, "cpu") as ort:
                return embed_all(ort, inputs)
        preprocess = json.loads(card.props[METADATA_PREFIX + "preprocess"])
        return embed, {"model_id": card.model_id, "name": card.name, "preprocess": preprocess,
                       "reference": {"source": "onnxruntime", "file": source.name, "sha256": sha256_file(source)}}
    from iaunet.export.metadata import preprocess_spec
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.runner import TorchRunner
    model, config = load_checkpoint(source)
    if config.variant != "image":
        raise IAUnetError(f"a parity kit holds images; {source} is a {config.variant} model")
    from iaunet.train.checkpoint import checkpoint_model_id
    return (lambda inputs: TorchRunner(model, config).infer_batches(inputs, PARITY_BATCH),
            {"model_id": checkpoint_model_id(source), "name": config.name, "preprocess": preprocess_spec(config),
             "reference": {"source": "pytorch", "file": source.name, "sha256": sha256_file(source)}})
