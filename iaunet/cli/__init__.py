"""The ``iaunet`` console command, the top of the package: it parses arguments and calls
the stages' public functions, and may import every stage.

One module per stage's arguments (``iaunet.cli.train``, ``.export``, ``.calib``,
``.plugins``, ``.runtime`` (embed, search, bench), ``.cameras``, ``.engines`` (build, triage, bundle, verify), ``.demo``, ``.doctor``), each exposing ``add_commands(subparsers)`` built
from the shared groups in ``iaunet.cli.args``. Handlers import their stage when they
run, so ``iaunet --help`` and ``iaunet doctor`` start without torch or onnx.

Positional and optional arguments may be mixed in any order
(``iaunet parity CKPT --data DIR A.onnx B.onnx``). A user error (``IAUnetError``, or a
missing optional package) prints one line and exits 1; an interrupt exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

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
    args = current.parse_intermixed_args(argv)
    args.verbose = getattr(args, "verbose", False) or verbose
    args.command = " ".join(names)
    return args


def main(argv=None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    configure(args.verbose)
    try:
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
    except KeyboardInterrupt:
        print(f"iaunet {args.command}: interrupted", file=sys.stderr)
        return 130
    summary = hidden_summary()
    if summary:
        get_logger("cli").info(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
