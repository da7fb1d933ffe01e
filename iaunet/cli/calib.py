"""``iaunet calib`` and ``iaunet parity``: arguments only; the work is in ``iaunet.calib``."""
from __future__ import annotations

from pathlib import Path

from iaunet.cli import args as common
from iaunet.core.validate import COUNT, COSINE_TARGET, PERCENTILE, Bounded

KIT_SIZE = Bounded(int, 2, 100_000)


def add_commands(sub):
    from iaunet.calib import CALIBRATION_SAMPLES, DEFAULT_METHOD, METHOD_CHOICES, PROBE_SAMPLES
    from iaunet.runtime.parity_kit import DEFAULT_SIZE
    from iaunet.runtime.runners import BACKENDS
    from iaunet.calib.sensitivity import DEFAULT_MAX_FP16_LAYERS
    p = common.command(sub, "calib", "make an FP16 or INT8 variant of an exported ONNX")
    p.add_argument("model", help="FP32 ONNX written by 'iaunet export'")
    p.add_argument("--precision", choices=("fp16", "int8"), required=True, help="the variant to make")
    common.output(p, "ONNX file to write (replaced if it exists); its .json record beside it; for int8 also its "
                     ".calib and the TensorRT layout NAME.trt.onnx (FP16 outside the Q/DQ; for 'iaunet build' only)")
    common.data(p, "training split (data set root) or folder of crops; required for int8, optional FP16 overflow "
                   "probe for fp16", required=False)
    p.add_argument("--method", choices=METHOD_CHOICES, default=DEFAULT_METHOD,
                   help="int8 activation calibration; auto scores entropy, percentile and minmax on held-out "
                        "training images and keeps the best (the record says which won and by how much)")
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

    p = common.command(sub, "parity", "accuracy parity of variants against the PyTorch checkpoint, or against a "
                                      "parity kit (no torch); --kit-out writes a kit")
    p.add_argument("paths", nargs="*", metavar="CHECKPOINT|VARIANT",
                   help="CHECKPOINT (model.pt the variants were exported from) then the variants (default: the ONNX "
                        "files exported from it beside it); with --kit, the variants only (.onnx files or engines); "
                        "with --kit-out, the checkpoint (or the FP32 ONNX) alone")
    common.data(p, "data set with query and gallery splits (not with --kit)", required=False)
    p.add_argument("--kit", metavar="KIT", help="check the variants against this parity kit (a bundle's kit/ or "
                                                "--kit-out's folder) instead of a checkpoint")
    p.add_argument("--kit-out", metavar="KIT", help="write a parity kit to this new folder: --data's held-out query "
                                                    "and gallery images with their references")
    p.add_argument("--kit-size", type=KIT_SIZE, default=DEFAULT_SIZE, help="--kit-out: images in the kit")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="--kit: what runs an ONNX variant")
    common.output(p, "report folder (default: CHECKPOINT's folder/parity; with --kit, parity/ beside the kit); "
                     "parity.json, parity.md and the plots in it are replaced", required=False)
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
    if args.precision == "int8":
        from iaunet.calib.int8 import check_int8_output
        check_int8_output(output, args.model)
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
    layouts = record.get("layouts")
    written = (f"{output} (int8, any ONNX Runtime session), {layouts['tensorrt']['file']} (int8, TensorRT layout)"
               if layouts else f"{output} ({args.precision})")
    print(f"wrote {written} and {record_path}{extra}")
    return 0


def run_parity_cmd(args):
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.parity import describe
    if args.kit and (args.kit_out or args.data):
        raise IAUnetError("--kit checks variants against a kit's references; --data and --kit-out make them: "
                          "use one or the other")
    if args.kit_out:
        if len(args.paths) != 1 or not args.data:
            raise IAUnetError("--kit-out takes one CHECKPOINT (or the FP32 ONNX) and --data DIR; got "
                              f"{len(args.paths)} path(s){'' if args.data else ' and no --data'}")
        from iaunet.calib.parity import write_kit
        info = write_kit(args.paths[0], args.data, args.kit_out, args.kit_size)
        print(f"{args.kit_out}: parity kit of {info['size']} images ({info['num_query']} queries) for model "
              f"{info['model_id'][:12]}, references from {info['reference']['source']} ({info['reference']['file']})")
        return 0
    if args.kit:
        from iaunet.runtime.parity_kit import kit_parity
        results, out = kit_parity(args.kit, args.paths, args.output, args.backend)
    else:
        if not args.paths or not args.data:
            raise IAUnetError("expected CHECKPOINT [VARIANT ...] --data DIR, or --kit KIT VARIANT ...")
        from iaunet.calib.parity import run_parity
        results, out = run_parity(args.paths[0], args.data, args.paths[1:], args.output)
    for r in results:
        print(describe(r))
    print(f"reports in {Path(out)}/ (parity.json, parity.md, parity_cosine.png, parity_cmc.png)")
    for hint in triage_hints(results, args.data or "TRAIN_DIR"):
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
