"""Argument groups every command shares, so an option is spelled, helped and checked once.

``-o/--output``, ``--data``, ``--seed``, ``--workers``, ``--cache-dir`` and ``-v`` are
declared only here. The help formatter appends each option's default and, for numbers,
its allowed range (taken from the option's ``Bounded`` type).
"""
from __future__ import annotations

import argparse

from iaunet.core.validate import SEED, WORKERS, Bounded


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, ``iaunet <command>: error: ...``, exit 1 (like every user error)."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` and the allowed range to every option's help line."""

    def _get_help_string(self, action):
        text = action.help or ""
        notes = []
        if isinstance(action.type, Bounded) and "range" not in text:
            notes.append(action.type.describe())
        shows_default = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings \
            and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                        argparse._VersionAction, argparse._HelpAction))
        if shows_default and "%(default)" not in text:
            default = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            notes.append(f"default: {default}".replace("%", "%%"))
        return f"{text} ({'; '.join(notes)})" if notes else text


def command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter and ``-v``."""
    p = sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
    verbose(p)
    return p


def verbose(p) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also show third-party warnings and debug lines")


def output(p, what: str, required: bool = True, default=None) -> None:
    p.add_argument("-o", "--output", required=required, default=default, metavar="PATH", help=what)


def data(p, what: str = "data set root (Market-1501, DukeMTMC-reID, MSMT17 or MARS layout)",
         required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="DIR", help=what)


def seed(p, default: int = 0) -> None:
    p.add_argument("--seed", type=SEED, default=default, help="random seed")


def workers(p) -> None:
    p.add_argument("--workers", type=WORKERS, default=0,
                   help="data-loading worker processes (0: load in the main process)")


def cache_dir(p, kind: str) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help=f"cache folder (default: ~/.cache/iaunet/{kind})")
