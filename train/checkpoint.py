"""Checkpoints: the state dict plus the model config, loadable with ``weights_only=True``,
and a SHA-256 of both (``tensors_sha256``) checked on every load, so a file corrupted on
disk is refused by name instead of loading wrong weights. That digest is also the model's
id (``model_id``): it names the embedding space every export, variant, engine and gallery
of these weights carries, and it depends on the weights and config alone, not on the
file (timings, history, the order of its entries)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output
from iaunet.core.log import get_logger
from iaunet.train.config import ModelConfig

FORMAT = "iaunet-checkpoint-v1"
DIGEST = "tensors_sha256"
log = get_logger("train")


def tensors_sha256(state: dict, config: dict) -> str:
    """SHA-256 over the config and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path, model, extra: dict | None = None) -> Path:
    """Write ``{format, config, state_dict, **extra}`` atomically (temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    payload = {"format": FORMAT, "config": config, "state_dict": state, DIGEST: tensors_sha256(state, config)}
    payload.update(extra or {})
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path) -> dict:
    """Load and validate the raw payload; one-line IAUnetError on any problem."""
    path = Path(path)
    if path.is_dir():
        raise IAUnetError(f"checkpoint {path} is a folder; expected a file written by 'iaunet train'")
    if not path.is_file():
        raise IAUnetError(f"checkpoint {path} not found; expected a file written by 'iaunet train'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IAUnetError(f"{path} is not a readable checkpoint: corrupted, or not written by 'iaunet train' "
                          f"({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IAUnetError(f"{path} is not an IAUnet checkpoint; expected a dict with format {FORMAT!r}")
    if DIGEST not in payload:
        log.info("note: %s carries no checksum (written before checkpoints had one); it cannot be verified", path)
    elif tensors_sha256(payload["state_dict"], payload["config"]) != payload[DIGEST]:
        raise IAUnetError(f"checkpoint {path} is corrupted: its weights do not match the SHA-256 saved with them; "
                          "restore it from a copy or train again")
    return payload


def model_id(payload: dict) -> str:
    """The model id of a payload ``read_checkpoint`` returned: its verified digest (computed
    for checkpoints written before they carried one)."""
    return payload.get(DIGEST) or tensors_sha256(payload["state_dict"], payload["config"])


def checkpoint_model_id(path) -> str:
    """The model id of the checkpoint at ``path`` (read and verified)."""
    return model_id(read_checkpoint(path))


def load_checkpoint(path):
    """Rebuild the model from a checkpoint: returns ``(model in eval mode, ModelConfig)``."""
    return model_from_payload(read_checkpoint(path), path)


def model_from_payload(payload: dict, path):
    """``load_checkpoint`` for a payload already read (``path`` names it in errors)."""
    from iaunet.train.registry import create_model
    config = ModelConfig.from_dict(payload["config"])
    overrides = {k: v for k, v in config.to_dict().items() if k != "name"}
    model = create_model(config.name, **overrides)
    load_matching_state(model, payload["state_dict"], f"checkpoint {path} weights do not match its config ({config.name})")
    return model.eval(), config


def load_matching_state(module, state: dict, problem: str) -> None:
    """Load ``state`` into ``module`` when the keys and shapes match exactly; otherwise one
    IAUnetError starting with ``problem`` and counting the mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        first = (wrong_shape + missing + unexpected)[:3]
        raise IAUnetError(f"{problem}: {len(wrong_shape)} wrong-shape, {len(missing)} missing, "
                          f"{len(unexpected)} unexpected keys (first: {', '.join(first)})")
    module.load_state_dict(state)
