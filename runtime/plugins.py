"""What an engine with IAU plugins needs at run time, with the standard library only:
the PTX manifest written by ``iaunet plugins compile``, the choice of kernel variant for
a dtype and shape, and the launch geometry. Both TensorRT plugin routes use it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from export.opdefs import CHANNEL_OP, PART_OP  # noqa: F401  (pure constants, re-exported for the plugins)
from iaunet.errors import IAUnetError



def _pow2_at_least(n: int, floor: int = 16) -> int:
    p = floor
    while p < n:
        p *= 2
    return p


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

    def grid(self, batch: int, size: int) -> tuple:
        """Grid for a batch; ``size`` is K (channel tokens) or N (part nodes)."""
        if self.op == CHANNEL_OP:
            m = self.constexprs["BLOCK_M"]
            return ((size + m - 1) // m, batch, 1)
        return (size, batch, 1)


class PtxManifest:
    """A folder of PTX and its manifest.json for one compute capability."""

    def __init__(self, folder):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise IAUnetError(f"{path} not found; expected the output of 'iaunet plugins compile --arch CC -o {folder}'")
        data = json.loads(path.read_text())
        if data.get("format") != "iaunet-ptx-v1":
            raise IAUnetError(f"{path} is not an IAUnet PTX manifest (format {data.get('format')!r})")
        self.arch = int(data["arch"])
        self.triton_version = data["triton_version"]
        self.entries = data["kernels"]

    def select(self, op: str, dtype: str, size: int) -> Kernel:
        """The variant for ``op`` and ``dtype`` ('fp16'/'fp32'); ``size`` is L = H*W for the
        channel op and N = frames*parts for the part op."""
        block_key = "BLOCK_L" if op == CHANNEL_OP else "BLOCK_N"
        want = _pow2_at_least(size)
        for e in self.entries:
            if e["op"] == op and e["dtype"] == dtype and e["constexprs"][block_key] == want:
                return Kernel(op, dtype, e["entry"], (self.folder / e["file"]).read_bytes(), e["constexprs"],
                              tuple(e["params"]), tuple(e["block"]), e["shared_bytes"])
        have = sorted({(e["dtype"], e["constexprs"][block_key]) for e in self.entries if e["op"] == op})
        raise IAUnetError(f"no {op} kernel for {dtype} with {block_key}={want} (size {size}) in {self.folder}; "
                          f"compiled variants: {have}. Recompile with matching --hw/--nodes")
