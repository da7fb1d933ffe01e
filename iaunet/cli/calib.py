"""``iaunet calib`` and ``iaunet parity``: arguments only; the work is in ``iaunet.calib``."""
from __future__ import annotations

from pathlib import Path

from iaunet.cli import args as common
from iaunet.core.validate import COUNT, COSINE_TARGET, PERCENTILE


def add_commands(sub):
    from iaunet.calib import CALIBRATION_SAMPLES, METHODS, PROBE_SAMPLES
    from iaunet.calib.sensitivity import DEFAULT_MAX_FP16_LAYERS
    p = common.command(sub, "calib", "make an FP16 or INT8 variant of an exported ONNX")
    p.add_argument("model", help="FP32 ONNX written by 'iaunet export'")
    p.add_argument("--precision", choices=("fp16", "int8"), required=True, help="the variant to make")
    common.output(p, "ONNX file to write (replaced if it exists); its .json record (and .calib for int8) beside it")
    common.data(p, "training split (data set root) or folder of crops; required for int8, optional FP16 overflow "
                   "probe for fp16", required=False)
    p.add_argument("--method", choices=METHODS, default="entropy", help="int8 activation calibration")
    p.add_argument("--samples", type=COUNT, help=f"calibration images (default: int8 {CALIBRATION_SAMPLES}, "
                                                  f"fp16 probe {PROBE_SAMPLES})")
    p.add_argument("--percentile", type=PERCENTILE, default=99.99, help="int8 --method percentile: the percentile")
    p.add_argument("--trt-version", default="10.3.0", help="TensorRT version written in the .calib header")
    p.add_argument("--target-cosine", type=COSINE_TARGET, help="int8: move the most sensitive layers to FP16 until "
                   "the mean cosine to FP32 on held-out training images reaches this (e.g. 0.99); writes a "
                   "sensitivity plot beside the variant")
    p.add_argument("--max-fp16-layers", type=COUNT,
                   help="int8 --target-cosine: at most this many layers leave INT8; fail (and write nothing) if the "
                        f"target needs more (default: {DEFAULT_MAX_FP16_LAYERS})")
    common.seed(p)
    common.cache_dir(p, "calib")
    p.set_defaults(func=run_calib)

    p = common.command(sub, "parity", "accuracy parity of ONNX variants against the PyTorch checkpoint")
    p.add_argument("checkpoint", help="model.pt the variants were exported from")
    p.add_argument("variants", nargs="*", help="ONNX files (default: those exported from CHECKPOINT beside it)")
    common.data(p, "data set with query and gallery splits")
    common.output(p, "report folder (default: CHECKPOINT's folder/parity); parity.json, parity.md and the plots in it "
                     "are replaced", required=False)
    p.set_defaults(func=run_parity_cmd)


def run_calib(args):
    from iaunet.core.errors import IAUnetError
    from iaunet.core import file_kinds
    from iaunet.core.files import cache_folder, check_output_path, write_json
    inputs = [args.model, args.data]
    output = check_output_path(args.output, inputs=inputs, kind=file_kinds.ONNX)
    beside = {".json": ("its .json record", file_kinds.CALIB_RECORD)}
    if args.precision == "int8":
        beside[".calib"] = ("its .calib cache", file_kinds.CALIB_CACHE)
        cache_folder("calib", args.cache_dir)  # refused now if it is a file, not after calibrating
        if args.target_cosine is not None:
            beside[".png"] = ("its sensitivity plot", file_kinds.IMAGE)
    elif args.target_cosine is not None:
        raise IAUnetError("--target-cosine applies to --precision int8; an FP16 variant has no INT8 layers to move")
    if args.max_fp16_layers is not None and args.target_cosine is None:
        raise IAUnetError("--max-fp16-layers is the budget of --target-cosine's fallback; pass --target-cosine too")
    for suffix, (what, kind) in beside.items():
        if output.suffix == suffix:
            raise IAUnetError(f"output {output} is where {what} goes; expected an ONNX path such as "
                              f"{output.with_suffix('.onnx')}")
        check_output_path(output.with_suffix(".sensitivity.png" if suffix == ".png" else suffix), inputs=inputs,
                          kind=kind)
    record_path = output.with_suffix(".json")
    if args.precision == "fp16":
        from iaunet.calib import PROBE_SAMPLES
        from iaunet.calib.fp16 import convert_fp16
        record = convert_fp16(args.model, output, args.data, args.samples or PROBE_SAMPLES, args.seed)
    else:
        from iaunet.calib import CALIBRATION_SAMPLES
        from iaunet.calib.int8 import quantize_int8
        from iaunet.calib.sensitivity import DEFAULT_MAX_FP16_LAYERS
        record = quantize_int8(args.model, output, args.data, args.method, args.samples or CALIBRATION_SAMPLES,
                               args.percentile, args.trt_version, args.cache_dir, args.seed, args.target_cosine,
                               args.max_fp16_layers or DEFAULT_MAX_FP16_LAYERS)
    write_json(record_path, record)
    parity = record.get("parity_vs_fp32_onnx")
    extra = f"; vs FP32 ONNX: min cosine {parity['min_cosine']:.6f}, mean {parity['mean_cosine']:.6f}" if parity else ""
    print(f"wrote {output} ({args.precision}) and {record_path}{extra}")
    return 0


def run_parity_cmd(args):
    from iaunet.calib.parity import run_parity
    results, out = run_parity(args.checkpoint, args.data, args.variants, args.output)
    for r in results:
        verdict = "reference" if r.mode == "pytorch" else ("pass" if r.passed else "FAIL " + ",".join(r.failures))
        print(f"{r.name:28s} {r.precision:5s} {r.mode:8s} cos mean {r.mean_cosine:.6f} min {r.min_cosine:.6f}  "
              f"rank-1 {r.rank1:6.2f} ({r.delta_rank1:+.2f})  mAP {r.mAP:6.2f} ({r.delta_map:+.2f})  {verdict}")
    print(f"reports in {Path(out)}/ (parity.json, parity.md, parity_cosine.png, parity_cmc.png)")
    for hint in triage_hints(results, args.data):
        print(hint)
    return 0 if all(r.passed for r in results) else 2


def triage_hints(results, data) -> list[str]:
    """For each failing variant, the command that names the first layer where it parts from FP32."""
    fp32 = {r.mode: r.path for r in results if r.precision == "fp32" and r.mode in ("plugin", "native")}
    hints = []
    for r in results[1:]:
        if r.passed:
            continue
        if r.mode.startswith("engine"):
            hints.append(f"{r.name}: find the first layer where it parts from FP32 with 'iaunet triage FP32.onnx "
                         f"SOURCE.onnx --data TRAIN_DIR --backend tensorrt' (SOURCE: the ONNX it was built from)")
        else:
            reference = fp32.get(r.mode, "FP32.onnx")
            hints.append(f"{r.name}: find the first layer where it parts from FP32 with 'iaunet triage {reference} "
                         f"{r.path} --data {data}'")
    return hints
