"""The ``iaunet`` console command: dispatches to each stage's own CLI module.

A stage CLI module exposes ``add_commands(subparsers)``; each subcommand's handler
imports what it needs. User errors (IAUnetError) print one line and exit 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from iaunet import __version__
from iaunet.errors import IAUnetError
from iaunet.log import configure

STAGE_CLIS = ("train.cli", "export.cli", "calib.cli", "engines.cli", "iaunet.demo")
# optional packages and how to get them (pyproject extras)
OPTIONAL = {"torch": "pip install torch==2.13.0 (CPU) or your CUDA build", "scipy": "pip install -e '.[train]'",
            "onnx": "pip install -e '.[export]'", "onnxruntime": "pip install -e '.[export]'",
            "onnxconverter_common": "pip install -e '.[calib]'", "matplotlib": "pip install -e '.[calib]'",
            "triton": "pip install -e '.[kernels]'", "pycuda": "pip install -e '.[trt]'",
            "tensorrt": "JetPack's TensorRT or NVIDIA's tensorrt wheels"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iaunet", description="IAUnet re-ID: train, export, build, run.")
    parser.add_argument("--version", action="version", version=f"iaunet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGE_CLIS:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.verbose)
    try:
        return int(args.func(args) or 0)
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


if __name__ == "__main__":
    sys.exit(main())
