"""Logging: one logger per package, configured once by the CLI, and third-party noise
captured instead of printed.

Quiet by default: our own lines (``[iaunet.<package>] ...``) go to stderr; warnings
and log records from other libraries (``warnings.warn``, their loggers) are counted and
summarised in one line at the end (``hidden_summary``). ``verbose`` prints them as they
come, and our debug lines too.
"""
from __future__ import annotations

import logging
import re
import sys
from collections import Counter

_OURS = "iaunet"


def get_logger(package: str) -> logging.Logger:
    """Return the logger of a stage package (``train``, ``export``, ...)."""
    return logging.getLogger(f"{_OURS}.{package}")


class _ThirdParty(logging.Handler):
    """On the root logger: shows (verbose) or counts records that are not ours."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.verbose = False
        self.hidden = Counter()
        self.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))

    def emit(self, record):
        if record.name == _OURS or record.name.startswith(_OURS + "."):
            return
        if self.verbose:
            sys.stderr.write(self.format(record) + "\n")
        else:
            self.hidden[_source(record)] += 1


def _source(record) -> str:
    """The package a record came from: its logger's name, or for the root logger and
    warnings, the installed package its file lies in."""
    if record.name not in ("root", "py.warnings"):
        return record.name.split(".")[0]
    path = record.pathname.replace("\\", "/")
    if record.name == "py.warnings":
        match = re.search(r"(/[^\s:]+\.py):\d+:", record.getMessage())
        path = match.group(1) if match else path
    if "-packages/" in path:
        return path.split("-packages/", 1)[1].split("/")[0]
    return "warnings" if record.name == "py.warnings" else "root logger"


_CAPTURE = _ThirdParty()


def configure(verbose: bool = False) -> None:
    """Send toolkit logs to stderr in a compact format and capture third-party output
    (idempotent; a later call changes the verbosity)."""
    ours = logging.getLogger(_OURS)
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        ours.addHandler(handler)
        ours.propagate = False  # libraries that configure the root logger would print our lines twice
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    if _CAPTURE not in root.handlers:
        root.addHandler(_CAPTURE)
    logging.captureWarnings(True)  # warnings.warn -> the 'py.warnings' logger -> the capture
    _CAPTURE.verbose = verbose


def hidden_summary() -> str | None:
    """One line counting the third-party messages that were not shown, or None."""
    total = sum(_CAPTURE.hidden.values())
    if not total:
        return None
    parts = ", ".join(f"{n} from {name}" for name, n in _CAPTURE.hidden.most_common(3))
    return f"{total} third-party warning{'s' if total > 1 else ''} hidden ({parts}); -v shows them"
