"""The IAU plugin ops: how they trace to custom-domain nodes (the bodies the nodes carry
are written by ``iaunet.export.functions``, which needs no torch).

Two ops, in domain ``iaunet`` (see docs/ops/ for the exact contract a kernel follows):

* ``IAUChannelAffinity(X[B,K,L]) -> Y[B,K,L]``: ``Y = softmax(X X^T - rowmax) X``, FP32.
* ``IAUPartAffinity(S[B,N,N]; frames, parts) -> W[B,N,N]``: row softmax of the relation
  logits with the (frames, parts) mask excluded.

Each node carries string attributes ``plugin_namespace`` and ``plugin_version`` (what
the TensorRT ONNX parser binds a plugin by), and the model carries an ONNX local
function of the same name holding the reference maths, so ONNX Runtime and the ONNX
reference evaluator run the file as it is.
"""
from __future__ import annotations

import torch

from iaunet.core.plugin_contract import CHANNEL_OP, DOMAIN, PART_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from iaunet.train.iau import channel_affinity, part_affinity


class _ChannelAffinityNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens):
        return channel_affinity(tokens)

    @staticmethod
    def symbolic(g, tokens):
        out = g.op(f"{DOMAIN}::{CHANNEL_OP}", tokens, plugin_namespace_s=PLUGIN_NAMESPACE,
                   plugin_version_s=PLUGIN_VERSION)
        out.setType(tokens.type())
        return out


class _PartAffinityNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, frames, parts):
        return part_affinity(logits, frames, parts)

    @staticmethod
    def symbolic(g, logits, frames, parts):
        out = g.op(f"{DOMAIN}::{PART_OP}", logits, frames_i=frames, parts_i=parts,
                   plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION)
        out.setType(logits.type())
        return out


def traced_channel_affinity(tokens):
    return _ChannelAffinityNode.apply(tokens)


def traced_part_affinity(logits, frames, parts):
    return _PartAffinityNode.apply(logits, frames, parts)
