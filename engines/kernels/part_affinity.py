"""``IAUPartAffinity`` kernel: masked row softmax of the (B, N, N) relation logits.

One program per (batch, row). The mask comes from the ``frames`` and ``parts``
attributes (docs/ops/IAUPartAffinity.md): inside a frame a node skips itself, across
frames it sees only the same part. The row is shifted by its largest unmasked logit,
then masked entries take the finite logit -30000 as the op definition says; padding
columns take -inf. FP32 arithmetic, FP16 or FP32 in/out.
Parameters: input, scalars, output (TensorRT's AOT plugin order); tensors contiguous.
"""
from __future__ import annotations

import triton
import triton.language as tl

MASK_LOGIT = tl.constexpr(-30000.0)  # the op definition's finite mask logit


@triton.jit
def part_affinity_kernel(S, N, PARTS, W, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    stride_b = N * N
    stride_r = N
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    logits = tl.load(S + batch * stride_b + row * stride_r + cols, mask=col_ok,
                     other=float("-inf")).to(tl.float32)
    same_frame = (row // PARTS) == (cols // PARTS)
    same_part = (row % PARTS) == (cols % PARTS)
    masked = (same_frame & same_part) | ((~same_frame) & (~same_part))
    # shift by the largest unmasked logit, then mask: exact for any finite logits
    unmasked_max = tl.max(tl.where(masked | (~col_ok), float("-inf"), logits), 0)
    logits = tl.where(masked & col_ok, MASK_LOGIT, logits - unmasked_max)
    e = tl.exp(logits)
    w = e / tl.sum(e, 0)
    tl.store(W + batch * stride_b + row * stride_r + cols, w.to(W.dtype.element_ty), mask=col_ok)


def launch_config(n: int) -> dict:
    return {"BLOCK_N": max(16, triton.next_power_of_2(n)), "num_warps": 1}


def part_affinity(s, frames: int, parts: int):
    """torch tensor (B, N, N), N = frames * parts -> masked row softmax, same dtype."""
    import torch
    if s.dim() != 3 or s.shape[1] != s.shape[2] or s.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"part_affinity expects a (B, N, N) float16/float32 tensor, got {tuple(s.shape)} {s.dtype}")
    if s.shape[1] != frames * parts:
        raise ValueError(f"N = {s.shape[1]} but frames * parts = {frames * parts}")
    s = s.contiguous()
    w = torch.empty_like(s)
    b, n, _ = s.shape
    part_affinity_kernel[(n, b)](s, n, parts, w, **launch_config(n))
    return w
