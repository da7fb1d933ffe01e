"""The IAU plugin contract, with the standard library only: the op names, domain and
plugin version the ONNX nodes and TensorRT's registry share, and what an engine with
IAU plugins needs at run time: the PTX manifest written by ``iaunet plugins compile``, the choice of kernel variant for
a dtype and shape, the launch geometry, and the kernel arguments packed the way the CUDA
driver's ``cuLaunchKernel`` takes them. Both TensorRT plugin routes use it.

A kernel also travels on its own (``Kernel.to_bytes``): the IPluginV3 route serialises
the one it chose into the engine, so a deployed engine needs no PTX folder.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from iaunet.core.errors import IAUnetError

# the ops as they appear in ONNX (custom domain) and in TensorRT's plugin registry
DOMAIN = "iaunet"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "iaunet"
PLUGIN_VERSION = "1"
CHANNEL_OP = "IAUChannelAffinity"
PART_OP = "IAUPartAffinity"
PLUGIN_OPS = (CHANNEL_OP, PART_OP)

KERNEL_FORMAT = "iaunet-kernel-v1"
ALIGN = 16                       # what an aligned variant assumes: 16-byte pointers, H*W % 16 == 0
OP_ATTRIBUTES = {CHANNEL_OP: (), PART_OP: ("frames", "parts")}  # integer ONNX attributes of each op
# IAUPartAffinity's masked entries: finite in FP16 (exactly representable) and far enough
# below any shifted relation logit that exp(MASK_LOGIT - max) is exactly 0 in FP16 and FP32.
# The reference's ``- eye * 1e8`` is -inf in FP16 and turns the softmax into NaN.
MASK_LOGIT = -30000.0


def part_relation_mask(frames: int, parts: int) -> list[list[bool]]:
    """IAUPartAffinity's (T*P) x (T*P) mask, True where a pair of part nodes may NOT
    interact: inside a frame a part relates to every other part; across frames only to the
    same part (the reference STIAU's ``W_init``). For ``frames == 1`` it is the diagonal."""
    n = frames * parts
    return [[(i // parts == j // parts) == (i % parts == j % parts) for j in range(n)] for i in range(n)]
_PTX_PARAM = re.compile(r"\.param\s+\.([usbf])(8|16|32|64)\b")


def block_key(op: str) -> str:
    """The constexpr a variant is compiled for: BLOCK_L (H*W) or BLOCK_N (part nodes)."""
    return "BLOCK_L" if op == CHANNEL_OP else "BLOCK_N"


def pow2_at_least(n: int, floor: int = 16) -> int:
    p = floor
    while p < n:
        p *= 2
    return p


def ptx_parameter_widths(ptx: str, entry: str) -> list:
    """Bit widths of an entry's parameters, in order, read off the PTX."""
    start = ptx.find(f".entry {entry}(")
    if start < 0:
        raise IAUnetError(f"PTX has no entry {entry!r}")
    header = ptx[start:ptx.index(")", start)]
    return [int(width) for _, width in _PTX_PARAM.findall(header)]


@dataclass(frozen=True)
class Kernel:
    op: str
    dtype: str
    entry: str
    ptx: bytes
    constexprs: dict
    params: tuple
    block: tuple
    shared_bytes: int
    aligned: bool = False
    arch: int = 0

    def grid(self, batch: int, size: int) -> tuple:
        """Grid for a batch; ``size`` is K (channel tokens) or N (part nodes)."""
        if self.op == CHANNEL_OP:
            m = self.constexprs["BLOCK_M"]
            return ((size + m - 1) // m, batch, 1)
        return (size, batch, 1)

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.ptx).hexdigest()

    @functools.cached_property
    def parameter_widths(self) -> tuple:
        """Bit widths of the entry's parameters, read once off the PTX."""
        return tuple(ptx_parameter_widths(self.ptx.decode("ascii"), self.entry))

    @property
    def block_size(self) -> int:
        """The largest L (channel) or N (part) this variant handles."""
        return self.constexprs[block_key(self.op)]

    def covers(self, size: int) -> bool:
        """Whether this variant handles an L (channel) or N (part) of ``size``."""
        return size <= self.block_size and not (self.aligned and size % ALIGN)

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        fields.update(format=KERNEL_FORMAT, ptx=self.ptx.decode("ascii"))
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Kernel":
        try:
            fields = json.loads(bytes(data).decode())
            if fields.pop("format") != KERNEL_FORMAT:
                raise ValueError
            fields.update(ptx=fields["ptx"].encode("ascii"), params=tuple(fields["params"]),
                          block=tuple(fields["block"]))
            return cls(**fields)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            raise IAUnetError(f"the serialised IAU kernel is not in the {KERNEL_FORMAT} format; rebuild the engine "
                              "with this version of iaunet") from None


def kernels_to_bytes(kernels) -> bytes:
    return b"\n".join(k.to_bytes() for k in kernels)


def kernels_from_bytes(data: bytes) -> list:
    return [Kernel.from_bytes(line) for line in bytes(data).split(b"\n") if line]


def choose_kernels(kernels, op: str, dtype: str, size: int) -> list:
    """The kernels among ``kernels`` for a dtype and an L (channel) or N (part), best first:
    the aligned variant when there is one, then the general one (for misaligned pointers)."""
    fitting = sorted((k for k in kernels if k.op == op and k.dtype == dtype and k.covers(size)),
                     key=lambda k: (not k.aligned, k.block_size))
    if not fitting:
        have = sorted({(k.dtype, k.block_size) for k in kernels})
        raise IAUnetError(f"{op} got {dtype} with size {size} but the engine carries kernels for {have}; "
                          "rebuild the engine for this input")
    general = next((k for k in fitting if not k.aligned), None)
    return [fitting[0]] + ([general] if fitting[0].aligned and general is not None else [])


def for_pointers(choices, src: int, dst: int) -> Kernel:
    """The first of ``choices`` (from ``choose_kernels``) that these device addresses can run:
    an aligned variant needs 16-byte aligned input and output. With none, the first, whose
    launch plan then refuses the pointers with the reason."""
    misaligned = src % ALIGN or dst % ALIGN
    return next((k for k in choices if not (k.aligned and misaligned)), choices[0])


@dataclass(frozen=True)
class Launch:
    """One kernel launch: geometry and the argument values by parameter name."""
    kernel: Kernel
    grid: tuple
    arguments: dict

    def packed(self):
        """(void** array for cuLaunchKernel, the ctypes values it points to: keep them alive
        until the launch call returns). Parameter widths come from the PTX itself."""
        widths = self.kernel.parameter_widths
        if len(widths) != len(self.kernel.params):
            raise IAUnetError(f"{self.kernel.entry} takes {len(widths)} parameters but the manifest lists "
                              f"{len(self.kernel.params)}; recompile with 'iaunet plugins compile'")
        unknown = sorted(set(self.kernel.params) - set(self.arguments))
        if unknown:
            raise IAUnetError(f"{self.kernel.entry} takes parameters {unknown} this version does not pass; "
                              "recompile with 'iaunet plugins compile'")
        values = [ctypes.c_uint64(self.arguments[name]) if width == 64 else ctypes.c_int32(self.arguments[name])
                  for name, width in zip(self.kernel.params, widths)]
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        return pointers, values


def check_shape(op: str, shape, attrs: dict) -> None:
    """The op's input contract (docs/ops): rank 3, square for the part op, N = frames*parts."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3:
        raise IAUnetError(f"{op} takes a rank-3 input [B, K, L] / [B, N, N], got shape {shape}")
    if op == PART_OP:
        n = attrs["frames"] * attrs["parts"]
        if shape[1:] != (n, n):
            raise IAUnetError(f"{op} with frames={attrs['frames']}, parts={attrs['parts']} takes [B, {n}, {n}], "
                              f"got {shape}")


def plan_launch(kernel: Kernel, shape, attrs: dict, src: int, dst: int) -> Launch:
    """The launch of ``kernel`` for an input of ``shape`` at device address ``src``, output at ``dst``."""
    check_shape(kernel.op, shape, attrs)
    batch, tokens, last = (int(d) for d in shape)
    if kernel.aligned and (src % ALIGN or dst % ALIGN or last % ALIGN):
        raise IAUnetError(f"{kernel.entry} (aligned variant) needs 16-byte aligned tensors and H*W % 16 == 0; "
                          f"got input 0x{src:x}, output 0x{dst:x}, H*W {last}")
    if kernel.op == CHANNEL_OP:
        arguments = {"X": src, "K": tokens, "L": last, "Y": dst}
    else:
        arguments = {"S": src, "N": tokens, "PARTS": attrs["parts"], "W": dst}
    return Launch(kernel, kernel.grid(batch, tokens), arguments)


class PtxManifest:
    """A folder of PTX and its manifest.json for one compute capability."""

    def __init__(self, folder):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise IAUnetError(f"{path} not found; expected the output of 'iaunet plugins compile --arch CC -o {folder}'")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise IAUnetError(f"{path} is not valid JSON ({e}); recompile with 'iaunet plugins compile'") from None
        if data.get("format") != "iaunet-ptx-v1":
            raise IAUnetError(f"{path} is not an IAUnet PTX manifest (format {data.get('format')!r})")
        self.arch = int(data["arch"])
        self.triton_version = data["triton_version"]
        self.entries = data["kernels"]

    def variants(self, op: str) -> list:
        """Every compiled kernel of ``op``."""
        return [self._kernel(e) for e in self.entries if e["op"] == op]

    def select(self, op: str, dtype: str, size: int, aligned: bool = True) -> Kernel:
        """The variant for ``op`` and ``dtype`` ('fp16'/'fp32'); ``size`` is L = H*W for the
        channel op and N = frames*parts for the part op. The aligned form is preferred when
        ``aligned`` (the caller's tensors are 16-byte aligned) and the size allows it."""
        key = block_key(op)
        want = pow2_at_least(size)
        matches = [e for e in self.entries
                   if e["op"] == op and e["dtype"] == dtype and e["constexprs"][key] == want
                   and (not e.get("aligned") or (aligned and size % ALIGN == 0))]
        if not matches:
            have = sorted({(e["dtype"], e["constexprs"][key]) for e in self.entries if e["op"] == op})
            raise IAUnetError(f"no {op} kernel for {dtype} with {key}={want} (size {size}) in {self.folder}; "
                              f"compiled variants: {have}. Recompile with matching --hw/--nodes")
        return self._kernel(max(matches, key=lambda e: bool(e.get("aligned"))))

    def _kernel(self, e: dict) -> Kernel:
        return Kernel(e["op"], e["dtype"], e["entry"], self._ptx(e), e["constexprs"], tuple(e["params"]),
                      tuple(e["block"]), e["shared_bytes"], bool(e.get("aligned")), self.arch)

    def _ptx(self, entry: dict) -> bytes:
        path = self.folder / entry["file"]
        if not path.is_file():
            raise IAUnetError(f"{path} is listed in the manifest but missing; recompile with 'iaunet plugins compile'")
        ptx = path.read_bytes()
        if "sha256" in entry and hashlib.sha256(ptx).hexdigest() != entry["sha256"]:
            raise IAUnetError(f"{path} does not match its manifest checksum (changed or corrupt); recompile it")
        return ptx


IPLUGINV3_MIN_VERSION = (10, 3)  # Python IPluginV3 plugins (JetPack 6); the names below exist from here on
TRT_MIN_VERSION = IPLUGINV3_MIN_VERSION


def tensorrt_version(trt) -> tuple:
    """(major, minor) of an imported ``tensorrt`` module."""
    return tuple(int(p) for p in trt.__version__.split(".")[:2])


def dtype_name(trt, dtype, op: str) -> str:
    """'fp32' or 'fp16' for a TensorRT DataType; anything else is refused naming the op."""
    if dtype == trt.DataType.FLOAT:
        return "fp32"
    if dtype == trt.DataType.HALF:
        return "fp16"
    raise IAUnetError(f"{op} takes float32 or float16 inputs, got {dtype}; keep the IAU affinity ops out of "
                      "INT8/BF16/FP8 (the calib stage does)")
