"""evaluate_rank and friends on cases worked out by hand."""
import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.train import evaluate_rank
from iaunet.train.metrics import distance_matrix, rank_metrics, re_rank

# gallery:          g0      g1      g2      g3      g4      g5 (junk)
G_PIDS = np.array([1, 2, 1, 3, 1, -1])
G_CAMS = np.array([0, 1, 1, 1, 1, 1])
Q_PIDS = np.array([1, 2, 9])
Q_CAMS = np.array([0, 0, 0])
DIST = np.array([
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.0],  # g0 same pid+cam (dropped), g5 junk: hits 0 1 0 1
    [0.5, 0.1, 0.2, 0.3, 0.4, 0.0],  # first valid entry is the match: hits 1 0 0 0 0
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # identity 9 is not in the gallery: skipped
])


def test_cmc_map_minp_by_hand():
    r = rank_metrics(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4)
    # query 0: CMC 0 1 1 1, AP (1/2 + 2/4) / 2 = 0.5, INP 2 hits / rank 4 = 0.5
    # query 1: CMC 1 1 1 1, AP 1, INP 1
    np.testing.assert_allclose(r["cmc"], [0.5, 1.0, 1.0, 1.0])
    assert r["mAP"] == pytest.approx(0.75)
    assert r["mINP"] == pytest.approx(0.75)
    assert r["num_valid_queries"] == 2


def test_evaluate_rank_has_torchreids_signature_and_results():
    cmc, mAP = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=2)
    np.testing.assert_allclose(cmc, [0.5, 1.0])
    assert mAP == pytest.approx(0.75)


def test_no_valid_query_is_an_error():
    with pytest.raises(IAUnetError, match="no query has a true match"):
        rank_metrics(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)


def test_distances():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    g = np.array([[3.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(distance_matrix(q, g, "cosine"), [[0, 1 - 2 ** -0.5], [1, 1 - 2 ** -0.5]], atol=1e-12)
    np.testing.assert_allclose(distance_matrix(q, g, "euclidean"), [[4, 1], [13, 2]])


def test_re_ranking_with_lambda_one_is_the_normalised_distance():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    qg, qq, gg = (distance_matrix(a, b, "euclidean") for a, b in ((q, g), (q, q), (g, g)))
    full = np.block([[qq, qg], [qg.T, gg]])
    expected = (full / full.max(axis=0, keepdims=True))[:3, 3:]
    np.testing.assert_allclose(re_rank(qg, qq, gg, k1=3, k2=1, lambda_value=1.0), expected)


def test_re_ranking_demotes_an_isolated_nearest_neighbour():
    # the query lies between two tight clusters; its nearest gallery entry is an isolated
    # point that no cluster member counts among its neighbours, so re-ranking demotes it
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.05, (6, 2)) + [0, 0]
    b = rng.normal(0, 0.05, (6, 2)) + [1, 0]
    query = np.array([[0.45, 0.0]])
    gallery = np.vstack([a, b, [[0.55, 0.3]]])
    qg = distance_matrix(query, gallery, "euclidean")
    reranked = re_rank(qg, distance_matrix(query, query, "euclidean"),
                       distance_matrix(gallery, gallery, "euclidean"), k1=6, k2=3)
    assert np.argmin(qg[0]) == 12
    assert reranked.shape == qg.shape
    assert np.argmin(reranked[0]) != 12
