"""What the runtime needs to know about a model, read from the file it runs: the
preprocessing spec and model config that ``iaunet export`` writes into the ONNX file's
``metadata_props`` (and an engine's sidecar copies), without importing onnx or torch.

``ModelCard.from_props`` parses those key/value strings; ``model_id`` is the checkpoint's
SHA-256, which names the embedding space: every precision variant and engine of one
checkpoint embeds into the same space, so their embeddings may be compared.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import METADATA_PREFIX

REQUIRED = ("config", "preprocess")


@dataclass(frozen=True)
class ModelCard:
    """The model facts the runtime acts on."""
    name: str
    variant: str                 # "image" or "video"
    height: int
    width: int
    frames: int                  # video clip length (0 for image models)
    embedding_dim: int
    resize_filter: str
    model_id: str                # checkpoint SHA-256 ("" when the file does not say)
    precision: str = "fp32"
    normalized: bool = False     # whether the graph already L2-normalises its output
    props: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_props(cls, props: dict, source) -> "ModelCard":
        missing = [METADATA_PREFIX + k for k in REQUIRED if METADATA_PREFIX + k not in props]
        if missing:
            raise IAUnetError(f"{source} carries no IAUnet metadata (missing {', '.join(missing)}); expected a "
                              "model written by 'iaunet export' or 'iaunet calib', or an engine with its sidecar")
        try:
            config = json.loads(props[METADATA_PREFIX + "config"])
            preprocess = json.loads(props[METADATA_PREFIX + "preprocess"])
            return cls(name=str(config["name"]), variant=str(config.get("variant", "image")),
                       height=int(preprocess["height"]), width=int(preprocess["width"]),
                       frames=int(preprocess.get("frames") or 0), embedding_dim=int(config["embedding_dim"]),
                       resize_filter=str(preprocess.get("resize_filter", "bilinear")),
                       model_id=props.get(METADATA_PREFIX + "checkpoint_sha256", ""),
                       precision=props.get(METADATA_PREFIX + "precision", "fp32"),
                       normalized=json.loads(props.get(METADATA_PREFIX + "normalized_embeddings", "false")),
                       props=dict(props))
        except (ValueError, KeyError, TypeError) as exc:
            raise IAUnetError(f"{source} has unreadable IAUnet metadata ({type(exc).__name__}: {exc})") from None

    @property
    def sample_shape(self) -> tuple:
        """One sample's input shape: (3, H, W), or (T, 3, H, W) for video."""
        image = (3, self.height, self.width)
        return (self.frames, *image) if self.variant == "video" else image
