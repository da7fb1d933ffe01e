"""Ahead-of-time PTX for the IAU plugin kernels, on any machine (no GPU needed).

``compile_kernels(arch, out_dir)`` writes one PTX file per kernel variant (op, dtype,
block sizes) and ``manifest.json`` with what a launcher needs: the entry name, its
parameter order, grid and block rules, dynamic shared memory, and the Triton version.

Triton appends two scratch-pointer parameters to every entry. These kernels use no
scratch (checked), so the unused parameters are removed from the PTX and the entry takes
exactly TensorRT's AOT plugin arguments (inputs, scalars, outputs); ptxas then assembles
the edited PTX to prove it still valid, and its register and spill counts go into the
manifest. The same inputs give the same bytes, on any machine and from any install folder:
the PTX carries no line information (Triton's would name the absolute paths of the kernel
sources and of Triton itself, in ``.file`` directives and DWARF strings, so the bytes, the
manifest's hashes and every engine-cache key would change with where the toolkit was
installed, and Triton's own on-disk cache would hand one install another's paths). Compiled PTX is cached by (Triton version,
kernel source, this module's source, arch, variant, PTX ISA), so nothing compiles at
inference and an upgraded toolkit never reuses PTX edited by an older one.

The PTX ISA version is the lowest that the architecture allows, not Triton's default
(its bundled ptxas writes the newest, 8.8 for CUDA 12.9): a driver JIT-compiles PTX only
up to its own ISA, and JetPack 6 (CUDA 12.6) stops at 8.5.

Channel-affinity variants come in two forms: ``aligned`` (tensors 16-byte aligned and
H·W a multiple of 16, which lets Triton emit 128-bit loads and stores) and general.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output, cache_folder
from iaunet.core.log import get_logger
from iaunet.core.progress import Progress
from iaunet.core.plugin_contract import ALIGN  # bytes / elements the aligned variants assume

log = get_logger("engines")

# compute capabilities the toolchain compiles: Ampere, Orin, Ada, Hopper, Blackwell, Thor (sm_110)
SUPPORTED_ARCHS = (80, 86, 87, 89, 90, 100, 110)
DTYPES = {"fp16": "*fp16", "fp32": "*fp32"}
DEFAULT_HW = (128, 512)       # H*W of the IAU blocks at 256x128 input (ResNet-50: 16*8, 32*16)
DEFAULT_NODES = (4, 16)       # part nodes: image (4), video up to T = 4 (16)
# lowest PTX ISA per architecture (sm_90a since 8.0 but 8.5 is the floor we support: JetPack 6,
# CUDA 12.5+ drivers; sm_100a needs 8.6, sm_110a 9.0)
MIN_PTX_VERSION = {80: 85, 86: 85, 87: 85, 89: 85, 90: 85, 100: 86, 110: 90}
PTX_CUDA = {85: "12.5", 86: "12.7", 87: "12.8", 88: "12.9", 90: "13.0"}  # the CUDA driver a PTX ISA needs


@dataclass(frozen=True)
class Variant:
    op: str            # ONNX op type
    dtype: str         # fp16 | fp32
    constexprs: tuple  # sorted (name, value) pairs
    num_warps: int
    grid: str          # launch grid, in the op's shape symbols
    params: tuple      # entry parameters in order
    aligned: bool = False  # pointers 16-byte aligned and L % 16 == 0 (vector loads)

    @property
    def tag(self) -> str:
        parts = [self.op, self.dtype] + [f"{k}{v}" for k, v in self.constexprs if k.startswith("BLOCK")]
        return "_".join(parts + (["A16"] if self.aligned else []))


def channel_variant(dtype: str, hw: int, aligned: bool = False, arch: int | None = None) -> Variant:
    from iaunet.engines.kernels.channel_affinity import launch_config
    cfg = launch_config(0, hw, dtype == "fp32", arch, aligned)
    warps = cfg.pop("num_warps")
    return Variant("IAUChannelAffinity", dtype, tuple(sorted(cfg.items())), warps,
                   "(ceil(K / BLOCK_M), B, 1)",
                   ("X", "K", "L", "Y"), aligned)


def part_variant(dtype: str, nodes: int) -> Variant:
    from iaunet.engines.kernels.part_affinity import launch_config
    cfg = launch_config(nodes)
    warps = cfg.pop("num_warps")
    return Variant("IAUPartAffinity", dtype, tuple(sorted(cfg.items())), warps, "(N, B, 1)",
                   ("S", "N", "PARTS", "W"))


def default_variants(hw_sizes=DEFAULT_HW, node_counts=DEFAULT_NODES, arch: int | None = None) -> list[Variant]:
    """The variants to compile; block sizes may depend on the architecture (``arch``)."""
    out = [channel_variant(d, hw, aligned, arch) for d in DTYPES for hw in sorted(set(hw_sizes))
           for aligned in ((False, True) if hw % ALIGN == 0 else (False,))]
    out += [part_variant(d, n) for d in DTYPES for n in sorted(set(node_counts))]
    return list(dict.fromkeys(out))  # block sizes may coincide


def _kernel(op: str):
    if op == "IAUChannelAffinity":
        from iaunet.engines.kernels.channel_affinity import channel_affinity_kernel
        return channel_affinity_kernel
    from iaunet.engines.kernels.part_affinity import part_affinity_kernel
    return part_affinity_kernel


def _signature(variant: Variant, fn) -> dict:
    names = list(inspect.signature(fn.fn).parameters)
    constexprs = dict(variant.constexprs)
    tensors = {variant.params[0], variant.params[3]}  # input and output; the rest are i32 scalars
    return {n: ("constexpr" if n in constexprs else DTYPES[variant.dtype] if n in tensors else "i32") for n in names}


def _attributes(variant: Variant, fn) -> dict:
    """Triton specialisation hints of an aligned variant: both tensors and L divisible by 16."""
    if not variant.aligned:
        return {}
    names = list(inspect.signature(fn.fn).parameters)
    return {(names.index(p),): [["tt.divisibility", ALIGN]] for p in ("X", "L", "Y")}


def _cache_key(variant: Variant, arch: int, ptx_version: int) -> str:
    """Everything the cached result depends on: Triton, the kernel's source, this module's
    source (the PTX edits and checks), the target and the variant."""
    import triton
    fn = _kernel(variant.op)
    payload = json.dumps([triton.__version__, inspect.getsource(fn.fn), Path(__file__).read_text(), arch,
                          ptx_version, asdict(variant)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def check_arch(arch: int) -> None:
    """Refuse a compute capability the toolchain does not compile for."""
    if arch not in SUPPORTED_ARCHS:
        raise IAUnetError(f"compute capability {arch} is not supported; expected one of {list(SUPPORTED_ARCHS)}")


def ptx_version_for(arch: int, requested: int | None = None) -> int:
    """The PTX ISA to write (e.g. 85 for 8.5): the architecture's floor unless asked for more."""
    floor = MIN_PTX_VERSION[arch]
    if requested is None:
        requested = floor
    if requested < floor or requested not in PTX_CUDA:
        raise IAUnetError(f"PTX ISA {requested // 10}.{requested % 10} cannot target sm_{arch}; expected one of "
                          f"{[f'{v // 10}.{v % 10}' for v in PTX_CUDA if v >= floor]}")
    ptxas = _ptxas_cuda_version(arch)
    if ptxas is not None and _version_tuple(PTX_CUDA[requested]) > ptxas:
        hint = "ask for a lower --ptx-version" if requested > floor else f"sm_{arch} needs a newer Triton"
        raise IAUnetError(f"PTX ISA {requested // 10}.{requested % 10} needs CUDA {PTX_CUDA[requested]}, newer than "
                          f"the ptxas of this Triton (CUDA {'.'.join(map(str, ptxas))}); {hint}")
    return requested


def _version_tuple(text: str) -> tuple:
    return tuple(int(p) for p in text.split(".")[:2])


def _ptxas_cuda_version(arch: int) -> tuple | None:
    """The CUDA version of Triton's bundled ptxas, e.g. (12, 8); None when unknown."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return _version_tuple(str(get_ptxas(arch).version))
    except Exception:  # older Triton layouts: let ptxas itself judge
        return None


@contextlib.contextmanager
def _compile_environment():
    """Triton's switches for one compile, through its environment variables (they are part of
    its own cache key, so a cached result never comes from other settings): FP fusion on
    (unless the caller chose), and no line information, whose file paths would make the
    bytes depend on the install folder."""
    saved = {name: os.environ.get(name) for name in ("TRITON_DEFAULT_FP_FUSION", "TRITON_DISABLE_LINE_INFO")}
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def compile_variant(variant: Variant, arch: int, cache_dir: Path, ptx_version: int | None = None) -> dict:
    """PTX text and launch metadata of one variant (from the cache when present)."""
    ptx_version = ptx_version_for(arch, ptx_version)
    cached = cache_dir / f"{_cache_key(variant, arch, ptx_version)}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text())
        except ValueError:
            log.warning("ignoring the corrupt cache entry %s; compiling %s again", cached, variant.tag)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = _kernel(variant.op)
    source = ASTSource(fn=fn, signature=_signature(variant, fn), constexprs=dict(variant.constexprs),
                       attrs=_attributes(variant, fn))
    with _compile_environment():
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": variant.num_warps, "ptx_version": ptx_version})
    meta = compiled.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise IAUnetError(f"{variant.tag} needs Triton scratch memory, which the plugins do not allocate")
    ptx = drop_trailing_params(compiled.asm["ptx"], meta.name, len(variant.params))
    resources = assemble_check(ptx, arch)
    result = {"ptx": ptx, "name": meta.name, "shared_bytes": meta.shared, "num_warps": meta.num_warps, **resources}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(cached) as tmp:  # a temporary name of its own: two processes compiling at once do not collide
        Path(tmp).write_text(json.dumps(result))
    return result


def drop_trailing_params(ptx: str, entry: str, keep: int) -> str:
    """``ptx`` with the entry's parameters after the first ``keep`` removed; refuses when the
    kernel body reads one of them."""
    header_start = ptx.index(f".entry {entry}(")
    header_end = ptx.index(")", header_start)
    lines = ptx[header_start:header_end].split("\n")
    params = [i for i, line in enumerate(lines) if ".param" in line]
    dropped = [lines[i].strip().rstrip(",").split()[-1] for i in params[keep:]]
    if not dropped:
        return ptx
    body = ptx[header_end:]
    used = [name for name in dropped if re.search(rf"\b{re.escape(name)}\b", body)]
    if used:
        raise IAUnetError(f"{entry} reads its trailing parameters {used}; the plugins cannot pass them")
    kept = [line for i, line in enumerate(lines) if i not in params[keep:]]
    last = max(i for i, line in enumerate(kept) if ".param" in line)
    kept[last] = kept[last].rstrip().rstrip(",")
    return ptx[:header_start] + "\n".join(kept) + ptx[header_end:]


def assemble_check(ptx: str, arch: int) -> dict:
    """Assemble ``ptx`` with Triton's ptxas for its target; an IAUnetError if it does not.
    Returns what ptxas reports: registers per thread and spilled bytes (stores + loads)."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas
    target = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={target}", str(src), "-o", str(Path(tmp) / "k.cubin")],
                           capture_output=True, text=True)
    if r.returncode:
        raise IAUnetError(f"ptxas rejected the edited PTX for {target}: {r.stderr.strip()[:300]}")
    registers = re.search(r"Used (\d+) registers", r.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    return {"registers": int(registers.group(1)) if registers else None,
            "spill_bytes": int(spills.group(1)) + int(spills.group(2)) if spills else None}


def compile_kernels(arch: int, out_dir, variants=None, cache_dir=None, ptx_version: int | None = None) -> dict:
    """Write ``<tag>.sm<arch>.ptx`` files and ``manifest.json`` into ``out_dir``."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise IAUnetError("cannot compile PTX in a process running Triton's interpreter (TRITON_INTERPRET is set); "
                          "run 'iaunet plugins compile' in a separate process")
    import triton
    check_arch(arch)
    ptx_version = ptx_version_for(arch, ptx_version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache_folder("ptx", cache_dir)
    variants = variants or default_variants(arch=arch)
    entries = []
    bar = Progress(len(variants), f"compiling sm_{arch}", "kernel")
    for v in variants:
        result = compile_variant(v, arch, cache, ptx_version)
        name = f"{v.tag}.sm{arch}.ptx"
        (out / name).write_text(result["ptx"])
        entries.append({"op": v.op, "dtype": v.dtype, "file": name, "entry": result["name"],
                        "sha256": hashlib.sha256(result["ptx"].encode()).hexdigest(),
                        "constexprs": dict(v.constexprs), "params": list(v.params), "grid": v.grid,
                        "aligned": v.aligned,
                        "block": [32 * result["num_warps"], 1, 1], "shared_bytes": result["shared_bytes"],
                        # above 48 KiB a launcher must raise the function's dynamic shared memory limit
                        "shared_opt_in": result["shared_bytes"] > 48 * 1024,
                        "registers": result.get("registers"), "spill_bytes": result.get("spill_bytes")})
        if result.get("spill_bytes"):
            log.warning("%s spills %d bytes to local memory on sm_%d (slow); try other block sizes",
                        v.tag, result["spill_bytes"], arch)
        bar.update()
    bar.close()
    manifest = {"format": "iaunet-ptx-v1", "arch": arch, "triton_version": triton.__version__,
                "ptx_version": f"{ptx_version // 10}.{ptx_version % 10}", "min_cuda_driver": PTX_CUDA[ptx_version],
                "kernels": entries}
    with atomic_output(out / "manifest.json") as tmp:  # last, and whole: a failed compile leaves no manifest change
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
