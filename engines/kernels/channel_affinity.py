"""``IAUChannelAffinity`` as one fused kernel: Y = softmax(X Xᵀ) X per batch item.

Flash-attention style with the K channel tokens as the sequence and L = H·W as the head
dimension (Q = K = V = X): each program owns BLOCK_M query rows, streams key blocks,
accumulates logits in FP32, keeps an online max-subtracted softmax and an FP32 output
accumulator, so the K×K matrix never reaches global memory. Two schedules, chosen by the
block sizes at compile time: BLOCK_C < BLOCK_L reads H·W in BLOCK_C chunks for the logits
(fewer live registers) and the key rows again as values; BLOCK_C == BLOCK_L keeps the
query rows loaded and uses each key tile as its value tile (half the key traffic).
FP16 or FP32 in and out; FP32 inputs use IEEE FP32 dots (TF32 would round logits in
the thousands far too coarsely).

Parameters follow TensorRT's AOT plugin convention: tensor inputs, then scalars, then
tensor outputs; tensors are contiguous (TensorRT's linear format).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def channel_affinity_kernel(X, K, L, Y, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_L: tl.constexpr, IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    stride_b = K * L
    stride_k = L
    base = X + batch * stride_b
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_L)
    row_ok = rows < K
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_L], tl.float32)
    if BLOCK_C == BLOCK_L:  # one pass over H*W: the query rows stay loaded, a key tile is also its value tile
        q_rows = tl.load(base + rows[:, None] * stride_k + dims[None, :],
                         mask=row_ok[:, None] & (dims[None, :] < L), other=0.0)
    for n0 in range(0, K, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        key_ok = keys < K
        if BLOCK_C == BLOCK_L:
            v = tl.load(base + keys[:, None] * stride_k + dims[None, :],
                        mask=key_ok[:, None] & (dims[None, :] < L), other=0.0)
            if IEEE:
                logits = tl.dot(q_rows, tl.trans(v), input_precision="ieee")
            else:
                logits = tl.dot(q_rows, tl.trans(v))
        else:  # H*W in BLOCK_C chunks (fewer live registers for large H*W)
            logits = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for c0 in range(0, L, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                c_ok = c < L
                q = tl.load(base + rows[:, None] * stride_k + c[None, :],
                            mask=row_ok[:, None] & c_ok[None, :], other=0.0)
                k = tl.load(base + keys[:, None] * stride_k + c[None, :],
                            mask=key_ok[:, None] & c_ok[None, :], other=0.0)
                if IEEE:
                    logits += tl.dot(q, tl.trans(k), input_precision="ieee")
                else:
                    logits += tl.dot(q, tl.trans(k))
            v = tl.load(base + keys[:, None] * stride_k + dims[None, :],
                        mask=key_ok[:, None] & (dims[None, :] < L), other=0.0)
        logits = tl.where(key_ok[None, :], logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(logits - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Y + batch * stride_b + rows[:, None] * stride_k + dims[None, :],
             out.to(Y.dtype.element_ty), mask=row_ok[:, None] & (dims[None, :] < L))


def launch_config(k: int, l: int, fp32: bool, arch: int | None = None, aligned: bool = False) -> dict:
    """Block sizes for a (K, L) problem; the grid is (ceil(K / BLOCK_M), B). Up to H*W = 128
    the one-pass schedule (BLOCK_C == BLOCK_L, the usual flash-attention shape for that head
    size), above it H*W in chunks of 64. On Hopper (``arch`` 90), FP16 with aligned tensors
    takes 64-row blocks: Triton uses the wgmma tensor-core instructions only from 64 rows per
    warp group (16 or 32 rows give the older mma.sync). Warps so that ptxas spills no
    registers for the compiled variants (checked by tests/engines/test_aot.py). Not yet
    tuned on a GPU: see ``iaunet plugins bench --sweep``."""
    block_l = max(16, triton.next_power_of_2(l))
    if arch == 90 and aligned and not fp32 and block_l <= 512:
        small = block_l <= 128  # H*W 512 with 64-key tiles sits at 255 registers and spills on Triton 3.6
        return {"BLOCK_M": 64, "BLOCK_N": 64 if small else 32, "BLOCK_C": block_l if small else 64, "BLOCK_L": block_l,
                "IEEE": False, "num_warps": 4 if small else 8}
    block_m = 16 if block_l >= 512 or fp32 else 32
    return {"BLOCK_M": block_m, "BLOCK_N": 32, "BLOCK_C": block_l if block_l <= 128 else 64, "BLOCK_L": block_l,
            "IEEE": fp32, "num_warps": 8 if block_l >= 256 or (fp32 and block_l >= 128) else 4}


def channel_affinity(x, config: dict | None = None):
    """torch tensor (B, K, L), float16 or float32 -> softmax(X Xᵀ) X, same dtype.
    ``config`` overrides entries of ``launch_config`` (block sizes, num_warps, num_stages)."""
    import torch
    if x.dim() != 3 or x.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"channel_affinity expects a (B, K, L) float16/float32 tensor, got {tuple(x.shape)} {x.dtype}")
    x = x.contiguous()
    y = torch.empty_like(x)
    b, k, l = x.shape
    arch = None
    if x.is_cuda:
        major, minor = torch.cuda.get_device_capability(x.device)
        arch = major * 10 + minor
    aligned = l % 16 == 0 and x.data_ptr() % 16 == 0 and y.data_ptr() % 16 == 0
    cfg = {**launch_config(k, l, x.dtype == torch.float32, arch, aligned), **(config or {})}
    grid = (triton.cdiv(k, cfg["BLOCK_M"]), b)
    channel_affinity_kernel[grid](x, k, l, y, **cfg)
    return y
