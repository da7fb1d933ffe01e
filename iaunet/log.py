"""Logging setup: one logger per package, configured once by the CLI."""
import logging
import sys


def get_logger(package: str) -> logging.Logger:
    """Return the logger of a stage package (``train``, ``export``, ...)."""
    return logging.getLogger(f"iaunet.{package}")


def configure(verbose: bool = False) -> None:
    """Send toolkit logs to stderr in a compact format (idempotent)."""
    root = logging.getLogger("iaunet")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        root.addHandler(handler)
        root.propagate = False  # libraries that configure the root logger would print our lines twice
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
