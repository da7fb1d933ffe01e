"""``iaunet export``: arguments only; the work is in ``iaunet.export``."""
from __future__ import annotations

from iaunet.cli import args as common
from iaunet.core.validate import COUNT, Bounded


def add_commands(sub):
    from iaunet.core.graph_io import DEFAULT_OPSET, OPSET_RANGE
    p = common.command(sub, "export", "checkpoint -> ONNX (IAU plugin nodes or plain ops), checked against PyTorch")
    p.add_argument("checkpoint", help="model.pt written by 'iaunet train'")
    common.output(p, "ONNX file to write (replaced if it exists)")
    p.add_argument("--mode", choices=("plugin", "native"), default="plugin",
                   help="plugin: IAU ops as TensorRT plugin nodes with ONNX reference bodies; native: plain ops")
    p.add_argument("--opset", type=Bounded(int, *OPSET_RANGE), default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--frames", type=COUNT, help="clip length of a video model's graph (default: the checkpoint's)")
    p.add_argument("--normalize-embeddings", action="store_true", help="L2-normalise the embeddings in the graph")
    common.data(p, "take parity images from this data set's query split (default: synthetic crops)", required=False)
    p.set_defaults(func=run_export)


def run_export(args):
    from iaunet.export.exporter import export_checkpoint
    report = export_checkpoint(args.checkpoint, args.output, args.mode, args.opset, args.frames,
                               args.normalize_embeddings, args.data)
    print(report.summary())
    return 0
