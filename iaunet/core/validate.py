"""Value checks shared by the command line (at parse time) and the stages' functions,
and ``require_readable``: one wording for a file this user may not read.

A ``Bounded`` converts a value (a string from the command line, or a number from a
caller) and checks its range. A bad value raises ``BadValue``: an ``IAUnetError`` for
callers, and an ``argparse.ArgumentTypeError`` so the parser prints its message as it is.
Standard library only.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from iaunet.core.errors import IAUnetError

SEED_MAX = 2 ** 32 - 1  # numpy's RandomState and torch.manual_seed accept 0 .. 2**32 - 1


class BadValue(IAUnetError, argparse.ArgumentTypeError):
    """A number or name outside what the option accepts."""


@dataclass(frozen=True)
class Bounded:
    """An int or float within [low, high] (an open end when ``low_open``/``high_open``)."""
    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return self.kind.__name__

    def _show(self, bound) -> str:
        return str(int(bound)) if self.kind is int else f"{bound:g}"

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{self._show(low)}, {self._show(high)}{right}"
        if low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self._show(low)}"
        if high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {self._show(high)}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def __call__(self, value):
        try:
            number = self.kind(value) if not isinstance(value, str) or self.kind is float else int(value, 10)
        except (TypeError, ValueError):
            raise BadValue(f"expected {self.describe()}, got {value!r}") from None
        if isinstance(value, float) and self.kind is int and number != value:
            raise BadValue(f"expected {self.describe()}, got {value!r}")
        if self.kind is float and not math.isfinite(number):
            raise BadValue(f"expected {self.describe()}, got {value}")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if too_low or too_high:
            raise BadValue(f"expected {self.describe()}, got {value}")
        return number


COUNT = Bounded(int, 1)                       # how many of something: at least one
NON_NEGATIVE = Bounded(int, 0)                # a count where 0 means "none" (the help says what)
POSITIVE = Bounded(float, 0, low_open=True)   # a finite number > 0 (learning rate, margin)
NON_NEGATIVE_FLOAT = Bounded(float, 0)        # a finite weight, 0 turns the term off
FRACTION = Bounded(float, 0, 1)               # a factor in [0, 1]
PERCENTILE = Bounded(float, 0, 100, low_open=True)
COSINE_TARGET = Bounded(float, 0, 1, low_open=True, high_open=True)  # a mean cosine to aim at; 1 is unreachable
SEED = Bounded(int, 0, SEED_MAX)
WORKERS = Bounded(int, 0, 256)                # data-loading processes: more only costs start-up time and memory


def check(name: str, value, rule: Bounded):
    """``rule(value)``, with the failure naming ``name``: for callers outside the CLI."""
    try:
        return rule(value)
    except BadValue as exc:
        raise BadValue(f"{name}: {exc}") from None


def physical_memory() -> int | None:
    """This machine's total physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def require_memory(what: str, needed: int) -> None:
    """Refuse, before any work, a job whose estimated memory (``needed`` bytes, a lower
    bound) exceeds this machine's physical memory: it could only fail or swap for hours."""
    total = physical_memory()
    if total and needed > total:
        raise IAUnetError(f"{what} would need at least {_gib(needed)} of memory, more than this machine's "
                          f"{_gib(total)}; expected smaller sizes")


def _gib(size: int) -> str:
    return f"{size / 2 ** 30:,.1f} GiB" if size < 2 ** 60 else f"{size / 2 ** 30:.3g} GiB"


def require_same_variant(model_variant: str, data_is_video: bool, model_desc: str, data_desc) -> None:
    """Refuse video data for an image model and the reverse (every stage that pairs them)."""
    data_variant = "video" if data_is_video else "image"
    if model_variant != data_variant:
        article = "an" if model_variant == "image" else "a"
        raise IAUnetError(f"{model_desc} is {article} {model_variant} model but {data_desc} holds {data_variant} data; "
                          "expected matching data")


def require_readable(path, what: str) -> Path:
    """``path`` when this process may open it for reading; else one IAUnetError
    "cannot read WHAT PATH (permission denied)" (or the OS's reason)."""
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise IAUnetError(f"cannot read {what} {path} (permission denied)") from None
    except IsADirectoryError:
        raise IAUnetError(f"{what} {path} is a folder; expected a file") from None
    except OSError as exc:
        raise IAUnetError(f"cannot read {what} {path} ({exc.strerror or type(exc).__name__})") from None
    return path
