"""The parity kit: held-out images with their reference embeddings, so a variant's accuracy
is checked where it runs, without torch or the data set (``iaunet parity --kit``, ``iaunet verify``).

A kit is a folder::

    kit.json        format, model id and name, where the references came from, the
                    preprocessing, the number of queries, the gates, the SHA-256 of every other file
    reference.npz   embeddings (N x D float32, not normalised), files (N paths relative to
                    the kit), ids and cameras (N int64); queries first, then the gallery
    query/*.jpg     the images, byte for byte as in the data set
    gallery/*.jpg

This module owns the format (``save_kit`` writes the index of a folder whose images and
references are already chosen; ``iaunet.calib.parity.write_kit`` computes them with torch),
reading it back (every hash checked, refused in one line otherwise) and running variants
against it through the runtime's runners: numpy and Pillow, and the variant's backend.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.files import check_report_folder, sha256_file, write_json
from iaunet.core.graph_io import METADATA_PREFIX
from iaunet.core.log import get_logger
from iaunet.runtime import parity

log = get_logger("runtime")

FORMAT = 1
INDEX = "kit.json"
REFERENCE = "reference.npz"
SPLITS = ("query", "gallery")
# Images in a kit (queries and gallery together), by default. Its INT8 gate allows mAP to fall
# 1 point, so the kit needs queries enough that one query's AP is worth well under that: 256
# images held 51 queries on the demo's data, where one query moved mAP 1.1 points and the gate
# failed on a 1-core run (full query+gallery: -0.46). The demo's kit at 1024 is its whole
# query+gallery: 887 images, 187 queries, 5.5 MiB with the references.
DEFAULT_SIZE = 1024
ARRAYS = ("embeddings", "files", "ids", "cameras")


@dataclass
class Kit:
    root: Path
    info: dict
    embeddings: np.ndarray
    files: list
    ids: np.ndarray
    cameras: np.ndarray

    @property
    def model_id(self) -> str:
        return self.info["model_id"]

    @property
    def num_query(self) -> int:
        return int(self.info["num_query"])

    @property
    def gates(self) -> dict:
        return self.info["gates"]

    @property
    def source(self) -> str:
        """What the references were computed with: 'pytorch' or 'onnxruntime'."""
        return self.info["reference"]["source"]

    def describe(self) -> str:
        ref = self.info["reference"]
        return (f"kit {self.root} ({len(self.files)} images, {self.num_query} queries; references from "
                f"{ref['source']} on {ref['file']})")

    def inputs(self) -> np.ndarray:
        """The images through the model's evaluation transform, float32 N x 3 x H x W."""
        from iaunet.core.preprocess import load_inputs
        return load_inputs([self.root / f for f in self.files], self.info["preprocess"], "reading the kit")


def save_kit(folder, model_id: str, model_name: str, preprocess: dict, reference: dict, embeddings, files: list,
             ids, cameras, num_query: int, gates: dict = parity.GATES) -> dict:
    """Write reference.npz and kit.json into ``folder``, which already holds the images
    ``files`` names (relative to it); returns the index written."""
    folder = Path(folder)
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(files) or not 0 < num_query < len(files):
        raise IAUnetError(f"a kit needs N x D embeddings for its N files and 0 < queries < N; got {embeddings.shape} "
                          f"for {len(files)} files, {num_query} queries")
    np.savez(folder / REFERENCE, embeddings=embeddings, files=np.array(files, dtype=str),
             ids=np.asarray(ids, np.int64), cameras=np.asarray(cameras, np.int64))
    hashes = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
              if p.is_file() and p.name != INDEX}
    info = {"format": FORMAT, "model_id": model_id, "model": model_name, "reference": reference,
            "preprocess": preprocess, "num_query": int(num_query), "size": len(files), "gates": gates,
            "sha256": hashes}
    write_json(folder / INDEX, info)
    return info


def read_kit(path, model_id: str | None = None) -> Kit:
    """The kit in folder ``path``, every file checked against its SHA-256 (and the model, when
    ``model_id`` is given); an IAUnetError in one line otherwise."""
    root = Path(path)
    try:
        info = json.loads((root / INDEX).read_text())
        hashes, declared = info["sha256"], info["format"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IAUnetError(f"{root} is not a parity kit ({INDEX} unreadable: {type(exc).__name__}); expected a folder "
                          "written by 'iaunet parity CHECKPOINT --kit-out' or a bundle's kit/") from None
    if declared != FORMAT:
        raise IAUnetError(f"{root} is a kit of format {declared}; this toolkit reads format {FORMAT}")
    for rel, digest in hashes.items():
        if not (root / rel).is_file() or sha256_file(root / rel) != digest:
            what = "is missing" if not (root / rel).is_file() else "does not match its SHA-256 in kit.json"
            raise IAUnetError(f"parity kit {root}: {rel} {what}; the kit was changed after it was written, "
                              "make it again with 'iaunet parity CHECKPOINT --data DIR --kit-out KIT'")
    if model_id is not None and info.get("model_id") != model_id:
        raise IAUnetError(f"parity kit {root} was made for model {str(info.get('model_id'))[:12]}..., not "
                          f"{model_id[:12]}...; use the kit made with this model's checkpoint")
    with np.load(root / REFERENCE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ARRAYS}
    files = [str(f) for f in arrays["files"]]
    unlisted = [f for f in files if f not in hashes]
    if REFERENCE not in hashes or unlisted:
        raise IAUnetError(f"parity kit {root}: {unlisted[0] if unlisted else REFERENCE} has no SHA-256 in {INDEX}")
    return Kit(root, info, arrays["embeddings"].astype(np.float32), files, arrays["ids"], arrays["cameras"])


def open_variant(path, backend: str = "auto"):
    """(runner, card, precision, mode) of an ONNX variant or an engine, on ``backend``."""
    from iaunet.runtime.embedder import open_runner
    runner, card = open_runner(path, backend)
    sidecar = getattr(runner, "sidecar", None)
    if sidecar:  # "int8 (legacy calibrator)" is gated as int8
        return runner, card, sidecar["precision"].split()[0], f"engine ({sidecar['plugin_route']})"
    return runner, card, card.precision, card.props.get(METADATA_PREFIX + "export_mode", "plugin")


def embed_all(runner, inputs: np.ndarray) -> np.ndarray:
    return runner.infer_batches(inputs, min(parity.PARITY_BATCH, runner.max_batch or parity.PARITY_BATCH))


def kit_parity(kit, variants, out_dir=None, backend: str = "auto") -> tuple[list, Path]:
    """Every variant against the kit's references; returns the results (the reference's own
    figures first) and the report folder."""
    kit = kit if isinstance(kit, Kit) else read_kit(kit)
    paths = [Path(v) for v in variants]
    if not paths:
        raise IAUnetError("no variants given; pass the .onnx files or engines to check against the kit")
    out = check_report_folder(out_dir if out_dir else kit.root.parent / "parity", inputs=[kit.root, *paths])
    for path in paths:
        if not path.is_file():
            raise IAUnetError(f"variant {path} not found; expected an .onnx file or a TensorRT engine")
    inputs = kit.inputs()
    results = [reference_figures(kit)]
    for path in paths:
        opened = open_variant(path, backend)
        with opened[0]:
            results.append(variant_figures(kit, inputs, path, opened, results[0]))
    write_kit_reports(kit, results, out)
    return results, out


def reference_figures(kit: Kit) -> parity.VariantResult:
    """The reference's own rank-1 and mAP on the kit: what the variants' changes are measured from."""
    ref = kit.info["reference"]
    return parity.reference_result(f"reference ({ref['source']})", ref["file"], "reference", kit.embeddings,
                                   kit.num_query, kit.ids, kit.cameras)


def variant_figures(kit: Kit, inputs: np.ndarray, path: Path, opened, base, name: str | None = None):
    """One variant (``open_variant``'s tuple) on the kit's ``inputs``, judged by the kit's gates."""
    runner, card, precision, mode = opened
    if not card.matches(kit.model_id):
        raise IAUnetError(f"parity kit {kit.root} was made for model {kit.model_id[:12]}..., but {path} "
                          f"embeds for model {card.model_id[:12] or '(unknown)'}...; use that model's kit")
    log.debug("parity: %s (%s, %s) on %s", Path(path).name, precision, mode, runner.name)
    emb = embed_all(runner, inputs)
    return parity.measure(name or Path(path).name, str(path), precision, mode, card.normalized, emb, kit.embeddings,
                          kit.num_query, kit.ids, kit.cameras, base, kit.gates)


def write_kit_reports(kit: Kit, results: list, out: Path) -> list[str]:
    ref = kit.info["reference"]
    return parity.write_reports(results, out, kit.root, f"the kit's references ({ref['source']})", kit.gates,
                                {"kit": str(kit.root), "reference": ref, "model_id": kit.model_id})
