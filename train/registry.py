"""Models registered by name: ``create_model('iaunet_r50', num_classes=751)``."""
from __future__ import annotations

from typing import Callable

from iaunet.core.errors import IAUnetError

_REGISTRY: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register a model constructor under its function name (duplicates raise)."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def _load_builtin_models():
    import iaunet.train.models  # noqa: F401  (its decorators fill the registry)


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_REGISTRY)


def require_model(name: str) -> None:
    """Refuse a name no model is registered under, listing those that are."""
    _load_builtin_models()
    if name not in _REGISTRY:
        raise IAUnetError(f"unknown model {name!r}; expected one of {sorted(_REGISTRY)}")


def create_model(name: str, **config):
    """Build a registered model; keyword arguments override fields of its ModelConfig."""
    require_model(name)
    return _REGISTRY[name](**config)
