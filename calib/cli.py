"""``iaunet calib`` and ``iaunet parity``: argument parsing only."""
from __future__ import annotations

import json
from pathlib import Path


def add_commands(sub):
    p = sub.add_parser("calib", help="make an FP16 or INT8 variant of an exported ONNX")
    p.add_argument("model", help="FP32 ONNX written by 'iaunet export'")
    p.add_argument("--precision", choices=("fp16", "int8"), required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--data", help="training split (data set root) or folder of crops; required for int8")
    p.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy")
    p.add_argument("--samples", type=int, default=None, help="calibration images (int8: 128, fp16 probe: 16)")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--trt-version", default="10.3.0", help="TensorRT version written in the .calib header")
    p.add_argument("--cache-dir", help="calibration cache folder (default ~/.cache/iaunet/calib)")
    p.set_defaults(func=run_calib)

    p = sub.add_parser("parity", help="accuracy parity of ONNX variants against the PyTorch checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("variants", nargs="*", help="ONNX files (default: those exported from CHECKPOINT beside it)")
    p.add_argument("--data", required=True, help="data set with query and gallery splits")
    p.add_argument("--out", help="report folder (default: CHECKPOINT's folder/parity)")
    p.set_defaults(func=run_parity_cmd)


def run_calib(args):
    if args.precision == "fp16":
        from calib.fp16 import convert_fp16
        record = convert_fp16(args.model, args.output, args.data, args.samples or 16)
    else:
        from calib.int8 import quantize_int8
        record = quantize_int8(args.model, args.output, args.data, args.method, args.samples or 128,
                               args.percentile, args.trt_version, args.cache_dir)
    record_path = Path(args.output).with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2))
    parity = record.get("parity_vs_fp32_onnx")
    extra = f"; vs FP32 ONNX: min cosine {parity['min_cosine']:.6f}, mean {parity['mean_cosine']:.6f}" if parity else ""
    print(f"wrote {args.output} ({args.precision}) and {record_path}{extra}")
    return 0


def run_parity_cmd(args):
    from calib.parity import run_parity
    results, out = run_parity(args.checkpoint, args.data, args.variants, args.out)
    for r in results:
        verdict = "reference" if r.mode == "pytorch" else ("pass" if r.passed else "FAIL " + ",".join(r.failures))
        print(f"{r.name:28s} {r.precision:5s} {r.mode:8s} cos mean {r.mean_cosine:.6f} min {r.min_cosine:.6f}  "
              f"rank-1 {r.rank1:6.2f} ({r.delta_rank1:+.2f})  mAP {r.mAP:6.2f} ({r.delta_map:+.2f})  {verdict}")
    print(f"reports in {out}/ (parity.json, parity.md, parity_cosine.png, parity_cmc.png)")
    return 0 if all(r.passed for r in results) else 2
