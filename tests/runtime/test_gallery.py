"""Gallery search against a brute-force ranking written here, both backends, save/load and refusals."""
import importlib.util
import re
import sys

import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.runtime import gallery as gallery_module
from iaunet.runtime.gallery import Gallery

MODEL = "ab" * 32


def _gallery(n=200, dim=16, seed=0, duplicates=True):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    if duplicates:
        emb[10] = emb[3]  # exact ties
        emb[50] = emb[3]
    g = Gallery(dim, MODEL)
    g.add(emb, ids=np.arange(n) // 4, cameras=np.arange(n) % 3, paths=[f"img{i}.jpg" for i in range(n)])
    return g, emb, rng


def _brute_force(emb, queries, k):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ e.T.astype(np.float64)
    order = np.array([sorted(range(len(e)), key=lambda j: (-round(s[j], 5), j))[:k] for s in sims])
    return order, np.take_along_axis(sims, order, 1)


def test_top_k_matches_a_brute_force_ranking_with_ties():
    g, emb, rng = _gallery()
    queries = np.concatenate([emb[3:4], rng.normal(size=(9, 16)).astype(np.float32)])
    expected, scores = _brute_force(emb, queries, 7)
    found = g.search(queries, k=7, backend="numpy")
    np.testing.assert_array_equal(found.indices, expected)
    np.testing.assert_allclose(found.scores, scores, atol=1e-5)
    assert list(found.indices[0, :3]) == [3, 10, 50]  # equal scores: earlier entries first
    np.testing.assert_array_equal(found.ids, expected // 4)


def test_threshold_and_k_beyond_the_gallery():
    g, emb, _ = _gallery(n=5, duplicates=False)
    found = g.search(emb[:1], k=50, threshold=0.5)
    assert found.indices.shape == (1, 5) and found.indices[0, 0] == 0 and found.scores[0, 0] == pytest.approx(1)
    low = found.indices[0] == -1
    assert low.any() and np.isnan(found.scores[0][low]).all() and (found.ids[0][low] == -1).all()
    kept = found.scores[0][~low]
    assert (kept >= 0.5).all()


def test_numpy_and_faiss_agree():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the 'faiss' extra)")
    g, emb, rng = _gallery(n=3000, dim=32, duplicates=False)
    queries = rng.normal(size=(40, 32)).astype(np.float32)
    a, b = g.search(queries, 10, backend="numpy"), g.search(queries, 10, backend="faiss")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    g, emb, _ = _gallery()
    path = g.save(tmp_path / "g.npz")
    back = Gallery.load(path, model_id=MODEL)
    for name in ("embeddings", "ids", "cameras", "tracks", "paths"):
        np.testing.assert_array_equal(getattr(back, name), getattr(g, name))
    assert (back.dim, back.model_id) == (g.dim, g.model_id) and sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]


def test_broken_files_are_one_error_naming_them(tmp_path):
    g, _, _ = _gallery()
    path = g.save(tmp_path / "g.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for name in ("cut.npz", "text.npz", "other.npz", "missing.npz"):
        with pytest.raises(IAUnetError, match=name):
            Gallery.load(tmp_path / name)
    with pytest.raises(IAUnetError, match="does not exist"):
        g.save(tmp_path / "no" / "such" / "g.npz")


def test_other_models_and_bad_embeddings_are_refused():
    g, emb, _ = _gallery()
    with pytest.raises(IAUnetError, match="built with model abababababab"):
        g.search(emb[:2], model_id="cd" * 32)
    with pytest.raises(IAUnetError, match="8 dimensions but the gallery has 16"):
        g.search(np.zeros((1, 8), np.float32), model_id=MODEL)
    with pytest.raises(IAUnetError, match="NaN"):
        g.add(np.full((1, 16), np.nan), ids=[0])
    with pytest.raises(IAUnetError, match="2 entries for 1"):
        g.add(np.ones((1, 16)), ids=[0, 1])
    with pytest.raises(IAUnetError, match="empty"):
        Gallery(16, MODEL).search(emb[:1])
    with pytest.raises(IAUnetError, match="unknown search backend"):
        g.search(emb[:1], backend="annoy")


# -- exact ties, blocks, FAISS's k-th place, bad arguments, files (added with the argpartition search)

BACKENDS = ["numpy", pytest.param("faiss", marks=pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="faiss-cpu is not installed (the 'faiss' extra)"))]


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(gallery, queries, k):
    """Stable argsort of -cosine with every distinct embedding scored once (so copies tie
    exactly), after checking that distinct scores are far enough apart to rank the same
    under any float32 rounding."""
    distinct, group = np.unique(gallery.embeddings, axis=0, return_inverse=True)
    sims = (_unit(queries).astype(np.float64) @ distinct.T.astype(np.float64))
    for row in sims:
        top = np.sort(np.unique(row))[::-1][:k + 1]
        assert len(top) < 2 or np.diff(top).min() < -1e-5, "test data has near-ties; pick another seed"
    sims = sims[:, group.ravel()]
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def _with_copies(distinct=17, copies_of=None, dim=64, seed=1):
    """``distinct`` random embeddings, then copies of some of them (all of them by default)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(distinct, dim)).astype(np.float32)
    copies_of = np.arange(distinct) if copies_of is None else np.asarray(copies_of)
    g = Gallery(dim, MODEL)
    g.add(np.concatenate([base, base[copies_of]]), ids=np.arange(distinct + len(copies_of)))
    return g, rng


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("queries", [3, 25])  # FAISS: fewer than 20 queries and the BLAS path
def test_copies_of_an_embedding_tie_exactly_and_rank_in_index_order(backend, queries):
    # 34 rows: a BLAS product scores some copies a last bit apart (the edge tile sums in another order)
    g, rng = _with_copies()
    q = rng.normal(size=(queries, 64)).astype(np.float32)
    for k in (1, 2, 5, 34):
        found = g.search(q, k, backend=backend)
        expected, scores = _reference(g, q, k)
        np.testing.assert_array_equal(found.indices, expected)
        np.testing.assert_allclose(found.scores, scores, atol=1e-5)
        np.testing.assert_array_equal(found.ids, expected)
    found = g.search(q, 34, backend=backend)
    for j in range(17):  # entry j and its copy 17 + j: adjacent, j first, the very same score
        where = np.argwhere(found.indices == j)[:, 1], np.argwhere(found.indices == 17 + j)[:, 1]
        assert (where[1] == where[0] + 1).all()
        np.testing.assert_array_equal(found.scores[np.arange(queries), where[0]],
                                      found.scores[np.arange(queries), where[1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_scores_at_the_kth_place_keep_the_lowest_indices(backend):
    rng = np.random.default_rng(2)
    v = rng.normal(size=8).astype(np.float32)
    emb = -np.abs(rng.normal(size=(40, 8))).astype(np.float32) * np.sign(v)  # all far from v
    at = [2, 9, 14, 20, 31, 39]
    emb[at] = v
    g = Gallery(8, MODEL)
    g.add(emb, ids=np.arange(40) + 100)
    for n in (1, 30):
        found = g.search(np.repeat(v[None], n, 0), k=3, backend=backend)
        np.testing.assert_array_equal(found.indices, np.repeat([[2, 9, 14]], n, 0))
        np.testing.assert_array_equal(found.ids, np.repeat([[102, 109, 114]], n, 0))
        np.testing.assert_allclose(found.scores, 1, atol=1e-6)
    # a zero query scores 0 with every entry: distinct embeddings, all tied
    found = g.search(np.zeros((21, 8), np.float32), k=4, backend=backend)
    np.testing.assert_array_equal(found.indices, np.repeat([[0, 1, 2, 3]], 21, 0))
    assert (found.scores == 0).all()


@pytest.mark.parametrize("per_block", [1, 2, 7])
def test_blocks_of_queries_give_the_same_indices_and_float32_scores(monkeypatch, per_block):
    # the promise: the same indices in the same order; scores the float32 rounding of the
    # exact cosine, so at most one float32 step apart whatever the block's shape or CPU
    g, rng = _with_copies(distinct=300, copies_of=[5, 5, 40, 299], dim=16, seed=3)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    whole = g.search(q, 6, backend="numpy")
    monkeypatch.setattr(gallery_module, "BLOCK_SCORES", per_block * len(g))
    blocked = g.search(q, 6, backend="numpy")
    np.testing.assert_array_equal(blocked.indices, whole.indices)
    np.testing.assert_array_max_ulp(blocked.scores, whole.scores, maxulp=1)
    expected, exact = _reference(g, q, 6)
    np.testing.assert_array_equal(whole.indices, expected)
    np.testing.assert_array_max_ulp(whole.scores, exact.astype(np.float32), maxulp=1)


def test_scores_closer_than_a_float32_step_tie_and_rank_by_index(monkeypatch):
    # two distinct entries whose exact cosines to the query differ by ~1e-12: one float32 score,
    # so the earlier entry ranks first in every block shape. A float32 BLAS product sums them in
    # a shape- and CPU-dependent order and may put either first.
    rng = np.random.default_rng(5)
    dim = 64
    q = _unit(rng.normal(size=(1, dim)))
    q[0, 7] = np.float32(1e-6)  # the component that tells the two entries apart hardly counts
    base = _unit(q + 0.2 * rng.normal(size=(1, dim)))[0]  # the best match
    twin = base.copy()
    twin[7] = np.nextafter(base[7], np.float32(np.inf))  # one float32 step in one component
    exact = (q.astype(np.float64) @ np.stack([base, twin]).astype(np.float64).T)[0]
    assert exact[0] != exact[1] and np.float32(exact[0]) == np.float32(exact[1]), "pick another seed"
    others = _unit(rng.normal(size=(40, dim)))
    g = Gallery(dim, MODEL)
    g.add(np.concatenate([others[:20], twin[None], others[20:], base[None]]), ids=np.arange(42))
    queries = np.concatenate([rng.normal(size=(12, dim)).astype(np.float32), q, q, q])
    for per_block in (1, 3, 15):
        monkeypatch.setattr(gallery_module, "BLOCK_SCORES", per_block * len(g))
        found = g.search(queries, 3, backend="numpy")
        for row in (12, 13, 14):
            pair = [i for i in found.indices[row] if i in (20, 41)]
            assert pair == [20, 41], (per_block, found.indices[row])
            where = [list(found.indices[row]).index(i) for i in pair]
            assert found.scores[row, where[0]] == found.scores[row, where[1]]


def test_threshold_keeps_exactly_the_scores_at_or_above_it():
    g, emb, rng = _gallery(n=60, duplicates=False)
    q = rng.normal(size=(8, 16)).astype(np.float32)
    expected, scores = _reference(g, q, 10)
    cut = float(np.median(scores))
    found = g.search(q, 10, threshold=cut)
    keep = found.scores >= cut
    np.testing.assert_array_equal(found.indices, np.where(scores >= cut, expected, -1))
    np.testing.assert_array_equal(found.ids, np.where(scores >= cut, g.ids[expected], -1))
    assert np.isnan(found.scores[~keep]).all() and 0 < keep.sum() < keep.size


def test_k_beyond_the_gallery_and_no_queries():
    g, emb, rng = _gallery(n=6, duplicates=False)
    found = g.search(emb, k=100)
    assert found.indices.shape == found.scores.shape == found.ids.shape == (6, 6)
    np.testing.assert_array_equal(found.indices[:, 0], np.arange(6))  # each finds itself first
    assert sorted(found.indices[0]) == list(range(6))
    empty = g.search(np.zeros((0, 16), np.float32), k=3)
    assert empty.indices.shape == (0, 3) and empty.scores.shape == (0, 3)


@pytest.mark.parametrize("kwargs, words", [
    ({"k": 0}, "k: expected an integer >= 1, got 0"),
    ({"k": 2.5}, "k: expected an integer"),
    ({"threshold": 1.5}, "threshold: expected a number in [-1, 1], got 1.5"),
    ({"threshold": float("nan")}, "threshold"),
])
def test_bad_search_arguments_are_one_error(kwargs, words):
    g, emb, _ = _gallery(n=5, duplicates=False)
    with pytest.raises(IAUnetError) as err:
        g.search(emb[:1], **kwargs)
    assert words in str(err.value)


def test_bad_embeddings_and_labels_are_refused():
    g = Gallery(16, MODEL)
    for emb, words in [(np.ones((2, 8)), "expected (N, 16)"), (np.ones(16), "expected (N, 16)"),
                       (np.array([[np.inf] * 16]), "NaN or infinite")]:
        with pytest.raises(IAUnetError, match=re.escape(words)):
            g.add(emb, ids=np.zeros(len(emb)))
    for labels, words in [({"ids": [1.5, 2]}, "ids must be whole numbers"), ({"ids": ["a", "b"]}, "ids must be"),
                          ({"ids": [1, 2], "cameras": [1]}, "cameras has 1 entries for 2")]:
        with pytest.raises(IAUnetError, match=words):
            g.add(np.ones((2, 16)), **labels)
    assert len(g) == 0  # nothing half-added
    with pytest.raises(IAUnetError, match=re.escape("queries have shape (1, 8); expected (N, 16)")):
        _gallery()[0].search(np.ones((1, 8)))
    with pytest.raises(IAUnetError, match="embedding size: expected an integer >= 1, got 0"):
        Gallery(0, MODEL)


def test_labels_default_to_unknown_and_embeddings_are_unit_float32():
    g = Gallery(4, MODEL)
    g.add(np.array([[3, 4, 0, 0], [0, 0, 0, 2]], np.float64), ids=np.array([7.0, 8.0]))
    assert g.embeddings.dtype == np.float32
    np.testing.assert_allclose(g.embeddings, [[0.6, 0.8, 0, 0], [0, 0, 0, 1]], atol=1e-7)
    assert g.ids.tolist() == [7, 8] and g.cameras.tolist() == [-1, -1] and g.tracks.tolist() == [-1, -1]


def test_faiss_missing_is_named_and_auto_falls_back(monkeypatch):
    g, emb, rng = _gallery(n=60)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(IAUnetError, match=re.escape("pip install faiss-cpu")):
        g.search(emb[:2], backend="faiss")
    monkeypatch.setattr(gallery_module, "FAISS_FROM", 10)
    expected, _ = _reference(g, emb[20:22], 5)
    np.testing.assert_array_equal(g.search(emb[20:22], 5).indices, expected)


def test_adding_after_a_search_is_searched(monkeypatch):
    g, emb, rng = _gallery(n=30, duplicates=False)
    backends = ["numpy"] + (["faiss"] if importlib.util.find_spec("faiss") else [])
    for backend in backends:
        g.search(emb[:1], 1, backend=backend)
    g.add(emb[29:30], ids=[1000])  # a copy of entry 29, added last
    for backend in backends:
        found = g.search(emb[29:30], 2, backend=backend)
        assert found.indices.tolist() == [[29, 30]] and found.ids.tolist() == [[29 // 4, 1000]]


def test_save_writes_nothing_when_it_cannot_finish(tmp_path, monkeypatch):
    g, _, _ = _gallery(n=10, duplicates=False)
    with pytest.raises(IAUnetError, match="does not exist"):
        g.save(tmp_path / "missing" / "g.npz")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "g.npz").write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        g.save(tmp_path / "g.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"] and (tmp_path / "g.npz").read_bytes() == b"old"


def test_loaded_files_are_checked_and_named(tmp_path):
    g, _, _ = _gallery(n=10, duplicates=False)
    path = g.save(tmp_path / "g.npz")
    good = dict(np.load(path))
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = {
        "array.npy": None,
        "version.npz": {**good, "format": np.array(2)},
        "raw.npz": {**good, "embeddings": good["embeddings"] * 3},
        "f64.npz": {**good, "embeddings": good["embeddings"].astype(np.float64)},
        "short.npz": {**good, "ids": good["ids"][:4]},
        "pickled.npz": {**good, "paths": np.array([object()] * 10, dtype=object)},
    }
    for name, data in cases.items():
        if data is not None:
            np.savez(tmp_path / name, **data)
        with pytest.raises(IAUnetError, match=re.escape(str(tmp_path / name))):
            Gallery.load(tmp_path / name)
    with pytest.raises(IAUnetError, match="built with model abababababab"):
        Gallery.load(path, model_id="cd" * 32)
    back = Gallery.load(path, model_id=MODEL)
    np.testing.assert_array_equal(back.search(back.embeddings, 3).indices, g.search(g.embeddings, 3).indices)
