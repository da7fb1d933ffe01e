"""What the runtime needs to know about a model, read from the file it runs: the
preprocessing spec and model config that ``iaunet export`` writes into the ONNX file's
``metadata_props`` (and an engine's sidecar copies), without importing onnx or torch.

``ModelCard.from_props`` parses those key/value strings. ``model_id`` names the embedding
space: the SHA-256 of the checkpoint's weights and config (``iaunet.model_id``), so every
precision variant and engine of those weights, and of a rerun that gives the same weights,
embeds into the same space and their embeddings may be compared. Files written before
carry only the checkpoint file's SHA-256 (``iaunet.checkpoint_sha256``, still written
beside it): that is their id, and ``matches`` accepts either for a file that has both, so
galleries embedded with an older export still serve.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from iaunet.core.errors import IAUnetError
from iaunet.core.graph_io import LEGACY_ID_KEY, METADATA_PREFIX, MODEL_ID_KEY

REQUIRED = ("config", "preprocess")


def model_ids(props: dict) -> tuple[str, str]:
    """(model id, checkpoint file SHA-256) named by a file's metadata ("" where it names none)."""
    legacy = str(props.get(LEGACY_ID_KEY, ""))
    return str(props.get(MODEL_ID_KEY) or legacy), legacy


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
    model_id: str                # weights-and-config SHA-256 (older files: the checkpoint file's; "" unknown)
    precision: str = "fp32"
    normalized: bool = False     # whether the graph already L2-normalises its output
    checkpoint_sha256: str = ""  # the checkpoint file's SHA-256, the id older galleries carry
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
                       model_id=model_ids(props)[0], checkpoint_sha256=model_ids(props)[1],
                       precision=props.get(METADATA_PREFIX + "precision", "fp32"),
                       normalized=json.loads(props.get(METADATA_PREFIX + "normalized_embeddings", "false")),
                       props=dict(props))
        except (ValueError, KeyError, TypeError) as exc:
            raise IAUnetError(f"{source} has unreadable IAUnet metadata ({type(exc).__name__}: {exc})") from None

    def matches(self, model_id: str) -> bool:
        """Whether ``model_id`` (a gallery's, an engine's) names this model: its id, or the
        checkpoint file's SHA-256 that files written before model ids carried."""
        return bool(model_id) and model_id in (self.model_id, self.checkpoint_sha256)

    @property
    def sample_shape(self) -> tuple:
        """One sample's input shape: (3, H, W), or (T, 3, H, W) for video."""
        image = (3, self.height, self.width)
        return (self.frames, *image) if self.variant == "video" else image
