"""``iaunet build``, ``iaunet triage`` and ``iaunet bundle``: arguments only; the work is in
``iaunet.engines``."""
from __future__ import annotations

from iaunet.cli import args as common
from iaunet.core.validate import COSINE_TARGET, COUNT, Bounded  # noqa: F401


def add_commands(sub):
    from iaunet.engines.plan import DEFAULT_BATCH, OPT_LEVELS, ROUTES
    p = common.command(sub, "build", "ONNX -> TensorRT engine (+ its .json sidecar), on the GPU that will run it")
    p.add_argument("onnx", metavar="MODEL.onnx", help="an ONNX file from 'iaunet export' or 'iaunet calib'")
    common.output(p, "engine file to write, with <engine>.json beside it (both replaced if they exist)")
    p.add_argument("--plugins", choices=ROUTES, default="auto",
                   help="IAU plugin route: aot (TensorRT >= 10.9), python (IPluginV3, >= 10.3), native "
                        "(plain ops; needs an --mode native export); auto picks by version")
    p.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCH)), metavar="MIN,OPT,MAX",
                   help="the optimisation profile's batch sizes (clips for video models)")
    p.add_argument("--workspace", type=Bounded(int, 16, 1 << 20), metavar="MB", help="builder workspace limit")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache, loaded and saved (created if missing)")
    p.add_argument("--dla-core", type=Bounded(int, 0, 1), metavar="N", help="build for DLA core N with GPU fallback (Orin)")
    p.add_argument("--opt-level", type=Bounded(int, *OPT_LEVELS), help="builder optimisation level")
    p.add_argument("--legacy-int8", action="store_true",
                   help="weakly typed INT8 with --calib's cache (TensorRT 10 only; the Q/DQ ONNX is the default way)")
    p.add_argument("--calib", metavar="FILE", help="calibration cache (.calib) for --legacy-int8")
    p.add_argument("--ptx", metavar="DIR", help="plugin PTX from 'iaunet plugins compile' (for the plugin routes)")
    common.cache_dir(p, "engines")
    p.set_defaults(func=run_build)

    from iaunet.engines.triage import BACKENDS, DEFAULT_SAMPLES, LAYER_COSINE
    p = common.command(sub, "triage", "the first layer where an FP16 or INT8 variant parts from the FP32 ONNX: "
                                      "every node output of both compared by Polygraphy on the same images")
    p.add_argument("reference", metavar="FP32.onnx", help="the FP32 ONNX written by 'iaunet export'")
    p.add_argument("candidate", metavar="VARIANT.onnx", help="its FP16 or INT8 variant from 'iaunet calib' (for an "
                                                             "engine, the ONNX it was built from)")
    common.data(p, "training split (data set root) or folder of crops to run both on", required=True)
    p.add_argument("--samples", type=COUNT, default=DEFAULT_SAMPLES, help="images to compare on")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="what runs the variant: ONNX Runtime, or TensorRT (an engine built from it with every "
                        "layer an output; needs a GPU)")
    p.add_argument("--threshold", type=COSINE_TARGET, help="a layer parts below this cosine to FP32 (default: " +
                   ", ".join(f"{k} {v}" for k, v in LAYER_COSINE.items()) + ")")
    common.output(p, "report to write (default: VARIANT.triage.json), with its plot beside it as .png; both "
                     "replaced if they exist", required=False)
    p.add_argument("--plugins", choices=ROUTES, default="auto", help="--backend tensorrt: the IAU plugin route")
    p.add_argument("--ptx", metavar="DIR", help="--backend tensorrt: plugin PTX from 'iaunet plugins compile'")
    common.seed(p)
    p.set_defaults(func=run_triage_cmd)

    from iaunet.engines.bundle import KINDS, TARGETS
    p = common.command(sub, "bundle", "a folder to build and run the model on a device: ONNX variants, plugin PTX, "
                                      "manifest, README (and DeepStream configs or a Triton model repository)")
    p.add_argument("artifacts", metavar="ARTIFACTS_DIR", help="folder with the model's .onnx variants (.calib, .json, ptx/)")
    p.add_argument("--target", choices=sorted(TARGETS), required=True, help="the device: " + "; ".join(
        f"{k}: {v['what']}" for k, v in TARGETS.items()))
    p.add_argument("--for", dest="kind", choices=KINDS, default="jetson", help="what the bundle feeds")
    common.output(p, "bundle folder to create (must not exist, or be empty)")
    common.data(p, "data set whose held-out query and gallery images make the bundle's parity kit (kit/); "
                   "without it the bundle has no kit", required=False)
    p.add_argument("--checkpoint", metavar="model.pt", help="the kit's references from PyTorch FP32 (default: the "
                                                            "FP32 ONNX on ONNX Runtime, and the kit says so)")
    from iaunet.cli.calib import KIT_SIZE
    from iaunet.runtime.parity_kit import DEFAULT_SIZE
    p.add_argument("--kit-size", type=KIT_SIZE, default=DEFAULT_SIZE, help="images in the parity kit")
    common.cache_dir(p, "ptx")
    p.set_defaults(func=run_bundle)

    from iaunet.engines.verify import BENCH_REPEATS
    p = common.command(sub, "verify", "on the device: build every variant of a bundle, check its parity against "
                                      "the bundle's kit (no torch) and bench it; verify.json and verify.md")
    p.add_argument("bundle", metavar="BUNDLE", help="a folder written by 'iaunet bundle' (on the device: '.')")
    common.output(p, "report folder (default: the bundle); verify.json, verify.md, parity/, engines/ and triage/ "
                     "in it are replaced", required=False)
    p.add_argument("--repeats", type=COUNT, default=BENCH_REPEATS, help="timed calls per bench row")
    common.cache_dir(p, "engines")
    p.set_defaults(func=run_verify)


def run_build(args):
    from iaunet.engines.builder import build_engine
    from iaunet.engines.plan import BuildOptions, parse_batch
    options = BuildOptions(args.plugins, parse_batch(args.batch), args.workspace, args.timing_cache, args.dla_core,
                           args.opt_level, args.legacy_int8, args.calib, args.ptx)
    record = build_engine(args.onnx, args.output, options, args.cache_dir)
    how = "taken from the engine cache" if record["cache_hit"] else "built"
    print(f"{record['engine']}: {how} ({record['precision']}, {record['plugin_route']} plugins, TensorRT "
          f"{record['tensorrt_version']}, {record['gpu_name']} sm_{record['compute_capability']}); "
          f"sidecar {record['engine']}.json")
    return 0


def run_triage_cmd(args):
    from iaunet.engines.plan import BuildOptions
    from iaunet.engines.triage import run_triage
    options = BuildOptions(plugins=args.plugins, ptx_dir=args.ptx)
    result, report = run_triage(args.reference, args.candidate, args.data, args.samples, args.backend,
                                args.threshold, args.output, options, args.seed)
    first, worst = result.first, result.worst
    print(f"{len(result.layers)} node outputs compared ({result.paired} paired, {result.samples} image(s), "
          f"{result.backend}); lowest: {worst.describe()}")
    if first:
        print(f"first layer below cosine {result.threshold}: {first.describe()}")
    else:
        print(f"no layer below cosine {result.threshold}: the variant follows FP32 layer by layer")
    print(f"wrote {report} and {report.with_suffix('.png')}")
    return 2 if first else 0


def run_bundle(args):
    from iaunet.core.files import cache_folder
    from iaunet.engines.bundle import build_bundle
    cache_folder("ptx", args.cache_dir)  # refused now if it is a file, not after copying the models
    manifest = build_bundle(args.artifacts, args.target, args.kind, args.output, args.cache_dir,
                            checkpoint=args.checkpoint, data=args.data, kit_size=args.kit_size)
    kit = manifest["kit"]
    kit_text = (f"parity kit of {kit['size']} images (references from {kit['reference']})" if kit else
                "no parity kit (give --data)")
    print(f"{args.output}: {args.kind} bundle for {args.target}, {len(manifest['variants'])} model file(s), "
          f"plugin route on the target: {manifest['plugin_route_on_target']}, {kit_text}; see {args.output}/README.md")
    return 0


def run_verify(args):
    from iaunet.engines.verify import verify_bundle
    report = verify_bundle(args.bundle, args.output, args.repeats, args.cache_dir)
    for r in report["rows"]:
        p = r["parity"]
        figures = (f"cos mean {p['mean_cosine']:.6f} min {p['min_cosine']:.6f}  rank-1 {p['rank1']:6.2f}  "
                   f"mAP {p['mAP']:6.2f} ({p['delta_map']:+.2f})" if p else "")
        bench = "  ".join(f"b{b['batch']} p50 {b['p50_ms']:.2f} ms" for b in r["bench"])
        print(f"{r['variant']:28s} {r['backend']:18s} {r['status']:7s} {figures}  {bench}  {r['reason'] or ''}".rstrip())
    out = args.output or args.bundle
    print(f"wrote {out}/verify.json and {out}/verify.md: " +
          ("every row that ran passes" if report["passed"] else "not every variant passes; see the rows above"))
    return 0 if report["passed"] else 2
