"""Gallery search against a brute-force ranking written here, both backends, save/load and refusals."""
import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
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
    with pytest.raises(IAUnetError, match="faiss|unknown search backend"):
        g.search(emb[:1], backend="annoy")
