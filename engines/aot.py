"""Ahead-of-time PTX for the IAU plugin kernels, on any machine (no GPU needed).

``compile_kernels(arch, out_dir)`` writes one PTX file per kernel variant (op, dtype,
block sizes) and ``manifest.json`` with what a launcher needs: the entry name, its
parameter order (Triton appends two scratch pointers, passed as null when their size is
0), grid and block rules, dynamic shared memory, and the Triton version. The same inputs
give the same bytes; compiled PTX is cached by (Triton version, kernel source, arch,
variant), so nothing compiles at inference.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from iaunet.errors import IAUnetError
from iaunet.progress import Progress

# compute capabilities the toolchain compiles: Ampere, Orin, Ada, Hopper, Blackwell, Thor (sm_110)
SUPPORTED_ARCHS = (80, 86, 87, 89, 90, 100, 110)
DTYPES = {"fp16": "*fp16", "fp32": "*fp32"}
DEFAULT_HW = (128, 512)       # H*W of the IAU blocks at 256x128 input (ResNet-50: 16*8, 32*16)
DEFAULT_NODES = (4, 16)       # part nodes: image (4), video up to T = 4 (16)


@dataclass(frozen=True)
class Variant:
    op: str            # ONNX op type
    dtype: str         # fp16 | fp32
    constexprs: tuple  # sorted (name, value) pairs
    num_warps: int
    grid: str          # launch grid, in the op's shape symbols
    params: tuple      # entry parameters in order

    @property
    def tag(self) -> str:
        return "_".join([self.op, self.dtype] + [f"{k}{v}" for k, v in self.constexprs if k.startswith("BLOCK")])


def channel_variant(dtype: str, hw: int) -> Variant:
    from engines.kernels.channel_affinity import launch_config
    cfg = launch_config(0, hw, dtype == "fp32")
    warps = cfg.pop("num_warps")
    return Variant("IAUChannelAffinity", dtype, tuple(sorted(cfg.items())), warps,
                   "(ceil(K / BLOCK_M), B, 1)",
                   ("X", "K", "L", "Y", "global_scratch", "profile_scratch"))


def part_variant(dtype: str, nodes: int) -> Variant:
    from engines.kernels.part_affinity import launch_config
    cfg = launch_config(nodes)
    warps = cfg.pop("num_warps")
    return Variant("IAUPartAffinity", dtype, tuple(sorted(cfg.items())), warps, "(N, B, 1)",
                   ("S", "N", "PARTS", "W", "global_scratch", "profile_scratch"))


def default_variants(hw_sizes=DEFAULT_HW, node_counts=DEFAULT_NODES) -> list[Variant]:
    out = [channel_variant(d, hw) for d in DTYPES for hw in sorted(set(hw_sizes))]
    out += [part_variant(d, n) for d in DTYPES for n in sorted(set(node_counts))]
    return list(dict.fromkeys(out))  # block sizes may coincide


def _kernel(op: str):
    if op == "IAUChannelAffinity":
        from engines.kernels.channel_affinity import channel_affinity_kernel
        return channel_affinity_kernel
    from engines.kernels.part_affinity import part_affinity_kernel
    return part_affinity_kernel


def _signature(variant: Variant, fn) -> dict:
    names = list(inspect.signature(fn.fn).parameters)
    constexprs = dict(variant.constexprs)
    tensors = {variant.params[0], variant.params[3]}  # input and output; the rest are i32 scalars
    return {n: ("constexpr" if n in constexprs else DTYPES[variant.dtype] if n in tensors else "i32") for n in names}


def _cache_key(variant: Variant, arch: int) -> str:
    import triton
    fn = _kernel(variant.op)
    payload = json.dumps([triton.__version__, inspect.getsource(fn.fn), arch, asdict(variant)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def compile_variant(variant: Variant, arch: int, cache_dir: Path) -> dict:
    """PTX text and launch metadata of one variant (from the cache when present)."""
    cached = cache_dir / f"{_cache_key(variant, arch)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = _kernel(variant.op)
    source = ASTSource(fn=fn, signature=_signature(variant, fn), constexprs=dict(variant.constexprs))
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps})
    meta = compiled.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise IAUnetError(f"{variant.tag} needs Triton scratch memory, which the plugins do not allocate")
    result = {"ptx": compiled.asm["ptx"], "name": meta.name, "shared_bytes": meta.shared,
              "num_warps": meta.num_warps}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cached)
    return result


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "iaunet" / "ptx"


def compile_kernels(arch: int, out_dir, variants=None, cache_dir=None) -> dict:
    """Write ``<tag>.sm<arch>.ptx`` files and ``manifest.json`` into ``out_dir``."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise IAUnetError("cannot compile PTX in a process running Triton's interpreter (TRITON_INTERPRET is set); "
                          "run 'iaunet plugins compile' in a separate process")
    import triton
    if arch not in SUPPORTED_ARCHS:
        raise IAUnetError(f"compute capability {arch} is not supported; expected one of {list(SUPPORTED_ARCHS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    variants = variants or default_variants()
    entries = []
    bar = Progress(len(variants), f"compiling sm_{arch}", "kernel")
    for v in variants:
        result = compile_variant(v, arch, cache)
        name = f"{v.tag}.sm{arch}.ptx"
        (out / name).write_text(result["ptx"])
        entries.append({"op": v.op, "dtype": v.dtype, "file": name, "entry": result["name"],
                        "sha256": hashlib.sha256(result["ptx"].encode()).hexdigest(),
                        "constexprs": dict(v.constexprs), "params": list(v.params), "grid": v.grid,
                        "block": [32 * result["num_warps"], 1, 1], "shared_bytes": result["shared_bytes"],
                        # above 48 KiB a launcher must raise the function's dynamic shared memory limit
                        "shared_opt_in": result["shared_bytes"] > 48 * 1024})
        bar.update()
    bar.close()
    manifest = {"format": "iaunet-ptx-v1", "arch": arch, "triton_version": triton.__version__,
                "kernels": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
