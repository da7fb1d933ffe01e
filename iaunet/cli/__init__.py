"""The ``iaunet`` console command, the top of the package: it parses arguments and calls
the stages' public functions, and may import every stage.

One module per stage's arguments (``iaunet.cli.train``, ``.export``, ``.calib``,
``.plugins``, ``.runtime`` (embed, search, bench), ``.cameras``, ``.engines`` (build, triage, bundle, verify), ``.demo``, ``.doctor``), each exposing ``add_commands(subparsers)`` built
from the shared groups in ``iaunet.cli.args``. Handlers import their stage when they
run, so ``iaunet --help`` and ``iaunet doctor`` start without torch or onnx.

Positional and optional arguments may be mixed in any order
(``iaunet parity CKPT --data DIR A.onnx B.onnx``). A user error (``IAUnetError``, or a
missing optional package) prints one line and exits 1, as does a full disk or file-size
limit. Ctrl-C, SIGTERM and SIGHUP all interrupt the command the same way (its temporary
files removed) and exit 128 + the signal's number (130, 143, 129). ``--`` ends the options,
and a single-value option given twice is refused.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from iaunet import __version__
from iaunet.core.errors import IAUnetError
from iaunet.core.log import configure, get_logger, hidden_summary

COMMAND_MODULES = ("iaunet.cli.train", "iaunet.cli.export", "iaunet.cli.calib", "iaunet.cli.plugins",
                   "iaunet.cli.runtime", "iaunet.cli.cameras", "iaunet.cli.engines", "iaunet.cli.demo", "iaunet.cli.doctor")
# optional packages -> the pyproject extra that installs them
EXTRAS = {"scipy": "train", "onnx": "export", "onnxruntime": "export", "onnx_graphsurgeon": "export",
          "onnxconverter_common": "calib",
          "matplotlib": "calib", "triton": "kernels", "pycuda": "trt", "polygraphy": "calib", "faiss": "faiss", "av": "cameras"}
OPTIONAL = {"torch": "pip install torch==2.13.0 (CPU) or your CUDA build",
            "tensorrt": "JetPack's TensorRT or NVIDIA's tensorrt wheels",
            **{name: f"pip install -e '.[{extra}]' in the toolkit's folder" for name, extra in EXTRAS.items()}}


def build_parser() -> argparse.ArgumentParser:
    from iaunet.cli.args import HelpFormatter, Parser
    parser = Parser(prog="iaunet", description="IAUnet re-ID: train, export, quantize, build, run.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"iaunet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show third-party warnings and debug lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def _subcommands(parser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def parse_args(argv) -> argparse.Namespace:
    """Walk down to the (sub)command named in ``argv`` and let it parse the rest with
    positionals and options intermixed. Global options may come before the command."""
    parser, names, verbose = build_parser(), [], False
    current = parser
    while (action := _subcommands(current)) is not None:
        index = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
        head = argv[:index] if index is not None else argv
        if index is None or argv[index] not in action.choices or set(head) - {"-v", "--verbose"}:
            current.parse_args(argv)  # help, version, a missing or unknown command: prints and exits
            current.error(f"unrecognized arguments: {' '.join(head)}")
        verbose = verbose or bool(head)
        names.append(argv[index])
        current, argv = action.choices[argv[index]], argv[index + 1:]
    argv = _after_double_dash(argv)
    _refuse_repeats(current, argv)
    args = current.parse_intermixed_args(argv)
    args.verbose = getattr(args, "verbose", False) or verbose
    args.command = " ".join(names)
    return args


def _after_double_dash(argv: list) -> list:
    """Honour ``--``: what follows it is positional, even a file named ``-1_c1s1_...jpg``.
    argparse's intermixed parsing drops such tokens; every positional here is a path, so
    ``-x`` becomes ``./-x`` (the same file) and needs no ``--``."""
    if "--" not in argv:
        return argv
    cut = argv.index("--")
    return argv[:cut] + [f"./{a}" if a.startswith("-") else a for a in argv[cut + 1:]]


def _refuse_repeats(parser, argv: list) -> None:
    """A single-value option given twice (``-m a -m b``) is refused, not silently the last."""
    seen = {}
    for token in argv:
        action = _option_action(parser, token)
        if action is None or type(action) is not argparse._StoreAction:
            continue
        if action.dest in seen:
            parser.error(f"{'/'.join(action.option_strings)} given twice ({seen[action.dest]} and {token}); "
                         "expected it once")
        seen[action.dest] = token


def _option_action(parser, token: str):
    """The option action ``token`` names (``--out=x``, ``-ox`` and unique ``--outp`` prefixes too), or None."""
    if not token.startswith("-") or token == "-":
        return None
    name = token.split("=", 1)[0] if token.startswith("--") else token
    actions = parser._option_string_actions
    if name in actions:
        return actions[name]
    if not token.startswith("--"):
        return actions.get(token[:2])  # -oVALUE
    matches = {actions[s] for s in actions if s.startswith(name)}
    return matches.pop() if len(matches) == 1 else None


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``timeout``, ``docker stop``, systemd, a closed terminal), raised
    where the command is, like Ctrl-C: every ``finally`` and temporary folder cleans up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _stop(signum, frame):
    for name in STOP_SIGNALS:  # once stopping, a second signal must not cut the clean-up short
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def _signals_as_interrupt():
    """Within the command, every stopping signal is a KeyboardInterrupt (main thread only)."""
    names = [n for n in STOP_SIGNALS if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {n: signal.getsignal(getattr(signal, n)) for n in names}
    for name in names:
        signal.signal(getattr(signal, name), _stop)
    try:
        yield
    finally:
        for name, handler in before.items():
            signal.signal(getattr(signal, name), handler)


def main(argv=None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    configure(args.verbose)
    try:
        with _signals_as_interrupt():
            code = int(args.func(args) or 0)
    except IAUnetError as err:
        print(f"iaunet {args.command}: error: {err}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package not in OPTIONAL:
            raise
        print(f"iaunet {args.command}: error: this command needs the Python package '{package}', which is not "
              f"installed; {OPTIONAL[package]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"iaunet {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except OSError as err:
        from iaunet.core.files import out_of_room
        error = out_of_room(err, err.filename or "an output")
        if error is None:
            raise
        print(f"iaunet {args.command}: error: {error}", file=sys.stderr)
        return 1
    summary = hidden_summary()
    if summary:
        get_logger("cli").info(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
