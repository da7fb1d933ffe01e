"""``iaunet export``: argument parsing only."""
from __future__ import annotations


def add_commands(sub):
    p = sub.add_parser("export", help="checkpoint -> ONNX (IAU plugin nodes or plain ops), checked against PyTorch")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--mode", choices=("plugin", "native"), default="plugin")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--frames", type=int, help="clip length of a video model's graph (default: the checkpoint's)")
    p.add_argument("--normalize-embeddings", action="store_true", help="L2-normalise the embeddings in the graph")
    p.add_argument("--data", help="take parity images from this data folder's query split (default: synthetic crops)")
    p.set_defaults(func=run_export)


def run_export(args):
    from export.exporter import export_checkpoint
    report = export_checkpoint(args.checkpoint, args.output, args.mode, args.opset, args.frames,
                               args.normalize_embeddings, args.data)
    print(report.summary())
    return 0
