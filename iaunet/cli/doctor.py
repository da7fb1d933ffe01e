"""``iaunet doctor``: arguments only; the work is in ``iaunet.doctor``."""
from __future__ import annotations

from iaunet.cli import args as common


def add_commands(sub):
    p = common.command(sub, "doctor", "what this machine can run: packages, TensorRT route, GPUs, per stage")
    p.add_argument("--json", metavar="PATH", help="also write the same facts as JSON to PATH (replaced if it exists)")
    p.set_defaults(func=run_doctor)


def run_doctor(args):
    from iaunet.doctor import run
    return run(args.json)
