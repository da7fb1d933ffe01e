"""``iaunet build``, ``iaunet triage`` and ``iaunet bundle``: arguments only; the work is in
``iaunet.engines``."""
from __future__ import annotations

from iaunet.cli import args as common
from iaunet.core.validate import COSINE_TARGET, COUNT, Bounded


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
    common.cache_dir(p, "ptx")
    p.set_defaults(func=run_bundle)


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
    manifest = build_bundle(args.artifacts, args.target, args.kind, args.output, args.cache_dir)
    print(f"{args.output}: {args.kind} bundle for {args.target}, {len(manifest['variants'])} model file(s), "
          f"plugin route on the target: {manifest['plugin_route_on_target']}; see {args.output}/README.md")
    return 0
