"""Re-ID evaluation: distances, CMC / mAP / mINP and k-reciprocal re-ranking (numpy only, so
the training stage, evaluation and the runtime's parity against a kit share them).

``evaluate_rank`` follows the convention of torchreid and FastReID so numbers compare:
for each query, gallery entries with the same identity *and* camera are left out; a
query with no remaining true match is skipped; AP averages precision at each hit;
mINP (Ye et al. 2021) is hits / rank of the hardest hit. Gallery identity -1 (junk) is
ignored as well.
"""
from __future__ import annotations

import numpy as np

from iaunet.core.errors import IAUnetError


def rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> dict:
    """CMC (length ``max_rank``), mAP, mINP and the number of valid queries."""
    distmat = np.asarray(distmat, dtype=np.float64)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    if (num_q, num_g) != (len(q_pids), len(g_pids)):
        raise IAUnetError(f"distance matrix is {num_q}x{num_g} but there are {len(q_pids)} queries and {len(g_pids)} gallery entries")
    max_rank = min(max_rank, num_g)
    order = np.argsort(distmat, axis=1, kind="stable")
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        ranked = order[i]
        keep = ~(((g_pids[ranked] == q_pids[i]) & (g_camids[ranked] == q_camids[i])) | (g_pids[ranked] == -1))
        hits = (g_pids[ranked][keep] == q_pids[i]).astype(np.float64)
        if not hits.any():
            continue
        cmc = np.minimum(hits.cumsum(), 1.0)
        cmcs.append(cmc[:max_rank] if len(cmc) >= max_rank else np.pad(cmc, (0, max_rank - len(cmc)), mode="edge"))
        precision_at_hit = hits.cumsum() / np.arange(1, len(hits) + 1)
        aps.append((precision_at_hit * hits).sum() / hits.sum())
        hardest = np.flatnonzero(hits)[-1]
        inps.append(hits.sum() / (hardest + 1))
    if not cmcs:
        raise IAUnetError("no query has a true match in the gallery (from another camera); check the query/gallery split")
    return {"cmc": np.mean(cmcs, axis=0), "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)),
            "num_valid_queries": len(cmcs)}


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """Return ``(cmc, mAP)`` under the Market-1501 protocol (torchreid's signature)."""
    result = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    return result["cmc"], result["mAP"]


def distance_matrix(qf: np.ndarray, gf: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Cosine distance (1 - cos) or squared Euclidean distance between feature rows."""
    qf, gf = np.asarray(qf, np.float64), np.asarray(gf, np.float64)
    if metric == "cosine":
        qn = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gn = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ gn.T
    if metric == "euclidean":
        d = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None, :] - 2 * qf @ gf.T
        return np.maximum(d, 0.0)
    raise IAUnetError(f"unknown metric {metric!r}; expected 'cosine' or 'euclidean'")


def _k_reciprocal(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[(backward == i).any(axis=1)]


def re_rank(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
            lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of a query x gallery distance.

    Distances are re-weighted by the Jaccard distance of expanded k-reciprocal
    neighbour sets; returns the final query x gallery distance.
    """
    num_q = q_g.shape[0]
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    dist = dist / np.maximum(dist.max(axis=0, keepdims=True), 1e-12)
    n = dist.shape[0]
    initial_rank = np.argsort(dist, axis=1, kind="stable")
    V = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        recip = _k_reciprocal(initial_rank, i, k1)
        expanded = recip
        for cand in recip:
            cand_recip = _k_reciprocal(initial_rank, cand, half)
            if len(np.intersect1d(cand_recip, recip)) > 2.0 / 3.0 * len(cand_recip):
                expanded = np.append(expanded, cand_recip)
        expanded = np.unique(expanded)
        weight = np.exp(-dist[i, expanded])
        V[i, expanded] = weight / weight.sum()
    if k2 > 1:
        V = V[initial_rank[:, :k2]].mean(axis=1)
    jaccard = np.zeros((num_q, n))
    for i in range(num_q):
        nz = np.flatnonzero(V[i])
        overlap = np.minimum(V[i, nz][None, :], V[:, nz]).sum(axis=1)
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]


def format_metrics(result: dict) -> str:
    """One line of ``rank_metrics``/``evaluate`` results, as the CLI and the demo print them."""
    return (f"rank-1 {result['rank1']:.4f}  rank-5 {result['rank5']:.4f}  rank-10 {result['rank10']:.4f}  "
            f"mAP {result['mAP']:.4f}  mINP {result['mINP']:.4f}  ({result['num_valid_queries']} queries)")
