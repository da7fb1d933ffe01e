"""The ONNX file's ``metadata_props``: model config, preprocessing, export facts.

Keys are prefixed ``iaunet.``; values are strings (JSON where structured).
``read_metadata`` turns them back into the same ModelConfig the checkpoint carried.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core import onnx_wire
from iaunet.core.graph_io import LEGACY_ID_KEY, METADATA_PREFIX, MODEL_ID_KEY, WEIGHTS_KEY
from iaunet.train.config import ModelConfig


@dataclass
class ExportMetadata:
    config: ModelConfig
    preprocess: dict
    mode: str
    opset: int
    checkpoint_sha256: str
    toolkit_version: str
    normalized_embeddings: bool
    model_id: str = ""  # the checkpoint's weights-and-config digest (``train.checkpoint.model_id``)

    def to_props(self) -> dict:
        return {METADATA_PREFIX + "config": json.dumps(self.config.to_dict(), sort_keys=True),
                METADATA_PREFIX + "preprocess": json.dumps(self.preprocess, sort_keys=True),
                METADATA_PREFIX + "export_mode": self.mode,
                METADATA_PREFIX + "opset": str(self.opset),
                MODEL_ID_KEY: self.model_id,
                LEGACY_ID_KEY: self.checkpoint_sha256,
                METADATA_PREFIX + "toolkit_version": self.toolkit_version,
                METADATA_PREFIX + "normalized_embeddings": json.dumps(self.normalized_embeddings)}

    @classmethod
    def from_props(cls, props: dict, source="model") -> "ExportMetadata":
        missing = [k for k in ("config", "preprocess", "export_mode", "opset") if METADATA_PREFIX + k not in props]
        if missing:
            raise IAUnetError(f"{source} has no IAUnet export metadata (missing {', '.join(METADATA_PREFIX + k for k in missing)}); "
                              "expected an ONNX file written by 'iaunet export'")
        return cls(config=ModelConfig.from_dict(json.loads(props[METADATA_PREFIX + "config"])),
                   preprocess=json.loads(props[METADATA_PREFIX + "preprocess"]), mode=props[METADATA_PREFIX + "export_mode"],
                   opset=int(props[METADATA_PREFIX + "opset"]),
                   checkpoint_sha256=props.get(LEGACY_ID_KEY, ""),
                   model_id=props.get(MODEL_ID_KEY) or props.get(LEGACY_ID_KEY, ""),
                   toolkit_version=props.get(METADATA_PREFIX + "toolkit_version", ""),
                   normalized_embeddings=json.loads(props.get(METADATA_PREFIX + "normalized_embeddings", "false")))


def preprocess_spec(config: ModelConfig) -> dict:
    """What a caller must do before the graph: resize, channel order, value range, layout."""
    layout = "NTCHW" if config.variant == "video" else "NCHW"
    return {"height": config.height, "width": config.width, "resize_filter": config.resize_filter,
            "channel_order": config.channel_order, "value_range": [0, 255], "layout": layout,
            "frames": config.frames, "normalization": "in-graph (mean/std of the config)"}


def write_metadata(model, meta: ExportMetadata) -> None:
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def stamp_weights(model) -> str:
    """Write the digest of ``model``'s initializers into its metadata (``iaunet.weights_sha256``),
    the one the runtime checks at load; every stage calls it on the graph it is about to save,
    after its last edit. Returns the digest."""
    digest = onnx_wire.graph_weights_sha256(model.graph.SerializeToString())
    for entry in model.metadata_props:
        if entry.key == WEIGHTS_KEY:
            entry.value = digest
            return digest
    entry = model.metadata_props.add()
    entry.key, entry.value = WEIGHTS_KEY, digest
    return digest


def save_onnx(model, path) -> None:
    """Save ``model`` to ``path`` (a temporary name the caller renames) with its weights digest."""
    import onnx
    stamp_weights(model)
    onnx.save(model, str(path))


def load_onnx(path, weights: bool = True, verify: bool = False):
    """Load an ONNX file; a missing or unreadable file is one IAUnetError naming it. With
    ``verify`` (a user's file a stage starts from), weights that no longer match the digest
    written with them are refused (``iaunet.runtime.embedder.check_onnx_weights``)."""
    import onnx
    path = Path(path)
    if path.is_dir():
        raise IAUnetError(f"ONNX file {path} is a folder; expected a file written by 'iaunet export'")
    if not path.is_file():
        raise IAUnetError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:
        raise IAUnetError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    if verify:
        from iaunet.runtime.embedder import check_onnx_weights
        check_onnx_weights(path)
    return model


def metadata_of(model, source) -> ExportMetadata:
    """The export metadata of a loaded ONNX model (``source`` names it in errors)."""
    return ExportMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(source))


def read_metadata(path) -> ExportMetadata:
    """Read an exported ONNX file's metadata."""
    return metadata_of(load_onnx(path), path)
