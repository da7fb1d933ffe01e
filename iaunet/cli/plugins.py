"""``iaunet plugins compile | bench``: arguments only; the work is in ``iaunet.engines``."""
from __future__ import annotations

from iaunet.cli import args as common
from iaunet.core.validate import COUNT, POSITIVE, Bounded


def add_commands(sub):
    p = common.command(sub, "plugins", "IAU plugin kernels: ahead-of-time PTX for a GPU architecture, benchmark")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = common.command(actions, "compile", "compile the Triton kernels to PTX (no GPU needed)")
    c.add_argument("--arch", type=Bounded(int, 50, 200), action="append", required=True,
                   help="compute capability without the dot, e.g. 87 (Orin), 80, 86, 89, 90, 100, 110 (Thor); repeatable")
    common.output(c, "output folder (one sub-folder per architecture when several)")
    c.add_argument("--hw", type=Bounded(int, 1, 1 << 16), nargs="+", help="H*W sizes of the IAU blocks (default 128 512)")
    c.add_argument("--nodes", type=Bounded(int, 2, 1024), nargs="+", help="part node counts, 4*frames (default 4 16)")
    common.cache_dir(c, "ptx")
    c.add_argument("--ptx-version", help="PTX ISA to write, e.g. 8.7 (default: the lowest the architecture allows, "
                                         "8.5 up to sm_90, so CUDA 12.5+ drivers such as JetPack 6 load it)")
    c.set_defaults(func=run_compile)
    b = common.command(actions, "bench", "fused channel affinity vs PyTorch eager FP16 (needs a CUDA GPU)")
    common.output(b, "report folder", required=False, default="kernel-bench")
    b.add_argument("--repeats", type=COUNT, default=50, help="timed repetitions per case")
    b.add_argument("--peak-tflops", type=POSITIVE, help="dense FP16 tensor-core peak of this GPU (default: by name)")
    b.add_argument("--sweep", action="store_true",
                   help="instead, time every candidate block configuration at batch 32 and report the best")
    b.set_defaults(func=run_bench)


def run_bench(args):
    from iaunet.engines.kernel_bench import format_rows, format_sweep, run, sweep
    if args.sweep:
        print(format_sweep(sweep(args.output, min(args.repeats, 20))))
        print(f"wrote {args.output}/kernel_sweep.json")
        return 0
    rows = run(args.output, args.repeats, args.peak_tflops)
    print(format_rows(rows))
    print(f"wrote {args.output}/kernel_bench.json and kernel_bench.png")
    return 0


def run_compile(args):
    import os
    from pathlib import Path

    os.environ.pop("TRITON_INTERPRET", None)  # compiling, not interpreting: before triton is imported

    from iaunet.engines.aot import (DEFAULT_HW, DEFAULT_NODES, check_arch, compile_kernels, default_variants,
                                    ptx_version_for)
    from iaunet.core.errors import IAUnetError
    from iaunet.core.files import atomic_folder, cache_folder
    ptx_version = None
    if args.ptx_version:
        major, _, minor = args.ptx_version.partition(".")
        if not (major.isdigit() and minor.isdigit() and len(minor) == 1):
            raise IAUnetError(f"--ptx-version {args.ptx_version!r} is not a PTX ISA version; expected e.g. 8.5")
        ptx_version = int(major) * 10 + int(minor)
    cache_folder("ptx", args.cache_dir)  # refused now if it is a file, not after compiling
    archs = list(dict.fromkeys(args.arch))
    for arch in archs:  # every architecture is checked before the first is compiled
        check_arch(arch)
        ptx_version_for(arch, ptx_version)
    with atomic_folder(args.output) as tmp:  # an interrupt leaves no folder without its manifest
        manifests = {}
        for arch in archs:
            out = tmp if len(archs) == 1 else tmp / f"sm{arch}"
            variants = default_variants(args.hw or DEFAULT_HW, args.nodes or DEFAULT_NODES, arch)
            manifests[arch] = compile_kernels(arch, out, variants, args.cache_dir, ptx_version)
    for arch, manifest in manifests.items():
        out = Path(args.output) if len(manifests) == 1 else Path(args.output) / f"sm{arch}"
        print(f"sm_{arch}: {len(manifest['kernels'])} kernels, PTX {manifest['ptx_version']} (CUDA driver "
              f"{manifest['min_cuda_driver']}+) -> {out}/ (Triton {manifest['triton_version']})")
    return 0
