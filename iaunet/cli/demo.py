"""``iaunet demo``: arguments only; the pipeline is ``iaunet.demo``."""
from __future__ import annotations

from iaunet.cli import args as common
from iaunet.core.validate import Bounded


def add_commands(sub):
    from iaunet.demo import DEFAULT_OUTPUT
    p = common.command(sub, "demo", "the whole pipeline on this machine (synth, train, eval, export, fp16/int8, parity, "
                                    "engines where TensorRT is, search, bench, Jetson bundle) with report.html, in one "
                                    "folder")
    common.output(p, "output folder; an existing one is replaced only if everything in it is a previous demo's",
                  required=False, default=DEFAULT_OUTPUT)
    p.add_argument("--identities", type=Bounded(int, 16, 2000), default=120, help="synthetic identities")
    p.add_argument("--epochs", type=Bounded(int, 1, 500), default=20, help="training epochs")
    common.seed(p)
    p.set_defaults(func=_run)


def _run(args):
    from iaunet.demo import run_demo
    return run_demo(args.output, args.identities, args.epochs, args.seed)
