"""``iaunet doctor``: arguments only (placeholder until iaunet.doctor lands)."""
from __future__ import annotations

from iaunet.cli import args as common


def add_commands(sub):
    p = common.command(sub, "doctor", "what this machine can run: packages, TensorRT route, GPUs, per stage")
    p.set_defaults(func=lambda args: 0)
