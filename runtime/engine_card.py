"""The TensorRT engine's sidecar (``model.engine.json``) and the refusal it allows.

An engine is tied to a GPU architecture and a TensorRT version. The sidecar, written by
the engines stage beside every engine, says which, with the precision, the batch
profile, the plugin route, the ONNX file's metadata and the engine's own SHA-256.
``read_sidecar`` checks its fields and their types; ``model_refusal`` compares it with
the model the caller expects, ``machine_refusal`` with the machine and ``bytes_refusal``
with the engine file's bytes (bit rot), in plain Python, so a mismatched engine is
refused with the sidecar's reason before TensorRT is asked to deserialize it;
``other_gpu_model`` words the warning for another GPU model of the same architecture,
which TensorRT loads but advises against. Standard library only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.validate import require_readable
from iaunet.runtime.model_card import model_ids

SIDECAR_SUFFIX = ".json"           # model.engine -> model.engine.json
FORMAT = 1
FIELDS = ("format", "tensorrt_version", "gpu_name", "compute_capability", "precision", "profile",
          "plugin_route", "plugins", "onnx_sha256", "toolkit_version", "metadata")
ENGINE_DIGEST = "engine_sha256"    # written since sidecars carry it; older ones are loaded with a note
TYPES = {"tensorrt_version": (str, "a string"), "gpu_name": (str, "a string"), "compute_capability": (int, "an integer"),
         "precision": (str, "a string"), "profile": (dict, "an object"), "plugin_route": (str, "a string"),
         "plugins": (list, "a list"), "metadata": (dict, "an object of strings")}


def sidecar_path(engine) -> Path:
    return Path(str(engine) + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class Machine:
    """What an engine must match: the GPU's architecture and TensorRT's version."""
    gpu_name: str
    compute_capability: int        # 87 for Orin, 90 for H100
    tensorrt_version: str          # "10.3.0"


def read_sidecar(engine) -> dict:
    """The sidecar of ``engine``; a missing, unreadable or incomplete one is one IAUnetError."""
    path = sidecar_path(engine)
    if not Path(engine).is_file():
        raise IAUnetError(f"engine {engine} not found")
    if not path.is_file():
        raise IAUnetError(f"engine {engine} has no sidecar {path.name}; expected the .json 'iaunet build' writes "
                          "beside every engine (rebuild it)")
    require_readable(engine, "engine")
    require_readable(path, "sidecar")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IAUnetError(f"sidecar {path} is not readable JSON ({type(exc).__name__})") from None
    missing = [f for f in FIELDS if not isinstance(card, dict) or f not in card]
    if missing:
        raise IAUnetError(f"sidecar {path} lacks {', '.join(missing)}; expected a sidecar of format {FORMAT}")
    if card["format"] != FORMAT:
        raise IAUnetError(f"sidecar {path} has format {card['format']}; this toolkit reads format {FORMAT}")
    for name, (kind, words) in TYPES.items():
        value = card[name]
        if not isinstance(value, kind) or isinstance(value, bool) or (name == "metadata" and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise IAUnetError(f"sidecar {path} has {name} {_show(value)}; expected {words} "
                              f"(a sidecar of format {FORMAT} as 'iaunet build' writes it)")
    return card


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def version_tuple(version: str, parts: int = 2) -> tuple:
    """'10.3.0.26' -> (10, 3) (or the first ``parts`` numbers): what TensorRT versions compare by."""
    try:
        return tuple(int(p) for p in str(version).split(".")[:parts])
    except ValueError:
        raise IAUnetError(f"TensorRT version {version!r} is not MAJOR.MINOR[...]") from None


def model_refusal(card: dict, expect_model: str | None) -> str | None:
    """Why the engine is not the model the caller expects (a gallery's), or None."""
    ids = model_ids(card["metadata"])
    built_from = ids[0]
    if expect_model and expect_model not in ids:
        return (f"the engine embeds for model {built_from[:12] or '(unknown)'} but model {expect_model[:12]} "
                "was expected; use the engine built from that model's ONNX")
    return None


def bytes_refusal(card: dict, data: bytes) -> str | None:
    """Why the engine's bytes are not the ones its sidecar was written for (a file corrupted
    on disk, or another engine under this name), or None. A sidecar written before engines
    carried the digest cannot tell, and gives None."""
    saved = card.get(ENGINE_DIGEST)
    if saved is None or hashlib.sha256(data).hexdigest() == saved:
        return None
    return ("the engine's bytes do not match the SHA-256 its sidecar was written with (corrupted on disk, or "
            "another engine under this name); rebuild it with 'iaunet build'")


def machine_refusal(card: dict, machine: Machine) -> str | None:
    """Why this machine must not load the engine, or None. TensorRT engines load only on
    the GPU architecture and the TensorRT release they were built with."""
    cc = int(card["compute_capability"])
    if cc != machine.compute_capability:
        return (f"the engine was built for sm_{cc} ({card['gpu_name']}) but this GPU is "
                f"sm_{machine.compute_capability} ({machine.gpu_name}); rebuild it here with 'iaunet build'")
    if version_tuple(card["tensorrt_version"], 3) != version_tuple(machine.tensorrt_version, 3):
        return (f"the engine was built with TensorRT {card['tensorrt_version']} but this machine has "
                f"{machine.tensorrt_version}; rebuild it here with 'iaunet build'")
    return None


def other_gpu_model(card: dict, machine: Machine) -> str | None:
    """A warning when the engine was built on another GPU model of the same architecture:
    TensorRT loads it but advises against it (its tactics were timed on the other model)."""
    if card["gpu_name"] == machine.gpu_name:
        return None
    return (f"the engine was built on {card['gpu_name']} and runs here on {machine.gpu_name} "
            f"(both sm_{machine.compute_capability}); TensorRT advises rebuilding on this GPU model "
            "for its speed ('iaunet build')")
