"""``Gallery``: embeddings of known people with their ids, cameras, tracks and source
files; exact top-k search by cosine (numpy, or FAISS when installed and the gallery is
large); save and load as ``.npz``; refusal of queries from another model.

A gallery belongs to one embedding space, named by the digest of the checkpoint's
weights and config (the ``model_id`` of ``iaunet.runtime.model_card``) and the embedding size: queries from any
other model are refused rather than compared. Embeddings are stored L2-normalised
float32, so the inner product is the cosine.

Ranking is by score, then by gallery index: of equal scores the earlier entry comes
first, in both backends. Identical embeddings (the same image added twice) tie exactly:
each distinct embedding is scored once and its score given to all its copies.

What the numpy backend promises, whatever the machine and however the queries are split
into blocks: the same indices in the same order, and float32 scores at most one float32
step apart (in practice equal; see below), except where two scores lie that close to a
rounding midpoint. A float32
BLAS product does not give that: its kernel and summation order depend on the matrix
shapes and the CPU (AVX2 against AVX-512), so one score can move by a last bit between a
block of 2 queries and one of 50, and two near-equal scores can swap. So the scores are
accumulated in float64 and rounded once to float32. float64's steps are 2^29 times finer
than float32's; the sums of two shapes or CPUs differ by a few of them and round to the
same float32 unless one lies that close to a rounding midpoint (then they are one float32
step apart). The ranking rule applies to those rounded scores, and the distinct
embeddings are also kept in float64 for it (twice the gallery's memory again).

The numpy backend selects with ``argpartition`` in blocks of queries (``BLOCK_SCORES``
scores at a time, whatever the gallery's size); the FAISS
backend (``IndexFlatIP``, exact) is built once per gallery state and checked at the
k-th place, where FAISS does not say which of equal scores it keeps. faiss is imported
only inside the search that uses it.

CMC/mAP evaluation lives in ``iaunet.core.metrics`` (numpy only), not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, check_output_path
from iaunet.core.validate import COUNT, Bounded, check, require_readable

FORMAT = 1
FAISS_FROM = 50_000        # entries from which "auto" searches with FAISS (when installed)
BLOCK_SCORES = 1 << 22     # query x gallery scores per numpy block: 32 MiB float64, ~150 MiB at peak
SEARCH_BACKENDS = ("auto", "numpy", "faiss")
UNKNOWN = -1               # id, camera or track not known
COSINE = Bounded(float, -1, 1)
FIELDS = ("format", "dim", "model_id", "embeddings", "ids", "cameras", "tracks", "paths")
WRITTEN_BY = "expected a gallery .npz written by Gallery.save or 'iaunet embed'"


@dataclass
class Matches:
    """Top-k per query, best first: gallery ``indices`` (-1 where fewer matched), cosine
    ``scores`` (NaN there), and the matches' ``ids`` (-1 there)."""
    indices: np.ndarray
    scores: np.ndarray
    ids: np.ndarray


def _normalized(x, what: str, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise IAUnetError(f"{what} have shape {x.shape}; expected (N, {dim}), rows of this gallery's "
                          f"{dim}-value embeddings")
    if not np.isfinite(x).all():
        raise IAUnetError(f"{what} hold NaN or infinite values; expected finite embeddings")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) + np.float32(0)  # + 0: no -0.0


def _labels(values, name: str, n: int, text: bool = False) -> np.ndarray:
    """One label per embedding: whole numbers (``text``: strings); None is unknown."""
    if values is None:
        return np.full(n, "" if text else UNKNOWN, str if text else np.int64)
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise IAUnetError(f"{name} has {arr.size if arr.ndim else 1} entries for {n} embeddings; expected one each")
    if text:
        return arr.astype(str)
    whole = arr.dtype.kind in "iub" or n == 0 or (
        arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all())
    if not whole:
        raise IAUnetError(f"{name} must be whole numbers; got {arr.dtype} values such as {arr[0]!r}")
    return arr.astype(np.int64)


class Gallery:
    """Embeddings (``embeddings``, N x ``dim``, L2-normalised float32) with ``ids``,
    ``cameras``, ``tracks`` (int64, -1 unknown) and ``paths`` (str), of model ``model_id``."""

    def __init__(self, dim: int, model_id: str):
        self.dim, self.model_id = check("embedding size", dim, COUNT), str(model_id)
        self.embeddings = np.zeros((0, self.dim), np.float32)
        self.ids = self.cameras = self.tracks = np.zeros(0, np.int64)
        self.paths = np.zeros(0, dtype=str)
        self._reset()

    def _reset(self) -> None:
        self._groups = None         # _Groups of the current embeddings, made by the first search
        self._faiss_index = None    # FAISS index of the distinct embeddings, made by the first FAISS search

    def __len__(self) -> int:
        return len(self.embeddings)

    def add(self, embeddings, ids, cameras=None, tracks=None, paths=None) -> None:
        """Append embeddings (L2-normalised here) with their labels; None labels are unknown."""
        self._append(_normalized(embeddings, "embeddings", self.dim), ids, cameras, tracks, paths)

    def _append(self, emb: np.ndarray, ids, cameras, tracks, paths) -> None:
        n = len(emb)
        new = (_labels(ids, "ids", n), _labels(cameras, "cameras", n), _labels(tracks, "tracks", n))
        new_paths = _labels(paths, "paths", n, text=True)
        self.embeddings = np.concatenate([self.embeddings, emb])
        self.ids, self.cameras, self.tracks = (np.concatenate([a, b]) for a, b in
                                               zip((self.ids, self.cameras, self.tracks), new))
        self.paths = np.concatenate([self.paths, new_paths])
        self._reset()

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Refuse embeddings of another embedding space."""
        if dim is not None and int(dim) != self.dim:
            raise IAUnetError(f"queries have {dim} dimensions but the gallery has {self.dim}; "
                              "they come from another model")
        if model_id != self.model_id:
            raise IAUnetError(f"queries come from model {model_id[:12] or '(unknown)'} but the gallery was built "
                              f"with model {self.model_id[:12] or '(unknown)'}; embed the gallery with this model")

    def search(self, queries, k: int = 10, threshold: float | None = None, backend: str = "auto",
               model_id: str | None = None) -> Matches:
        """The ``k`` most similar entries per query row (k clamped to the gallery's size),
        best first; with ``threshold``, matches scoring below it become -1 / NaN.
        ``model_id``: the model the queries come from, refused unless it is the gallery's.
        ``backend``: "numpy", "faiss", or "auto" (FAISS from ``FAISS_FROM`` entries when installed)."""
        if backend not in SEARCH_BACKENDS:
            raise IAUnetError(f"unknown search backend {backend!r}; expected one of {', '.join(SEARCH_BACKENDS)}")
        if model_id is not None:
            self.check_model(model_id, np.shape(queries)[-1] if np.ndim(queries) == 2 else None)
        if not len(self):
            raise IAUnetError("the gallery is empty; add embeddings before searching")
        k = min(check("k", k, COUNT), len(self))
        if threshold is not None:
            threshold = check("threshold", threshold, COSINE)
        q = _normalized(queries, "queries", self.dim)
        faiss = _faiss() if backend == "faiss" else (
            _faiss(required=False) if backend == "auto" and len(self) >= FAISS_FROM else None)
        indices, scores = self._search_faiss(faiss, q, k) if faiss is not None else self._search_numpy(q, k)
        if threshold is not None:
            low = scores < threshold
            indices, scores = np.where(low, -1, indices), np.where(low, np.nan, scores)
        return Matches(indices, scores, np.where(indices >= 0, self.ids[np.maximum(indices, 0)], UNKNOWN))

    # -- search internals: both backends rank the distinct embeddings, then expand to entries

    def _distinct(self) -> "_Groups":
        if self._groups is None:
            self._groups = _Groups.of(self.embeddings)
        return self._groups

    def _search_numpy(self, q: np.ndarray, k: int):
        groups = self._distinct()
        want = min(groups.size, k + 1)
        rows = max(1, BLOCK_SCORES // len(self))
        found = [_top(groups.scores(q[s:s + rows]), want) for s in range(0, len(q), rows)]
        cols = np.concatenate([f[0] for f in found]) if found else np.zeros((0, want), np.int64)
        scores = np.concatenate([f[1] for f in found]) if found else np.zeros((0, want), np.float32)
        return groups.expand(cols, scores, k)

    def _search_faiss(self, faiss, q: np.ndarray, k: int):
        groups = self._distinct()
        if self._faiss_index is None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self.embeddings if groups.first is None
                                           else self.embeddings[groups.first]))
            self._faiss_index = index
        want = min(groups.size, k + 1)
        scores, cols = self._faiss_index.search(np.ascontiguousarray(q), want)
        order = np.lexsort((cols, -scores), axis=1)
        cols, scores = np.take_along_axis(cols, order, 1).astype(np.int64), np.take_along_axis(scores, order, 1)
        # FAISS keeps some k of the equal scores at the k-th place, not said which: where the last
        # needed score equals the first one left out, rank that query again with numpy
        unsure = groups.unsure(cols, scores, k) if want < groups.size else np.zeros(len(q), bool)
        if unsure.any():
            cols[unsure], scores[unsure] = _top(groups.scores(q[unsure]), want)
        return groups.expand(cols, scores, k)

    # -- files

    def save(self, path) -> Path:
        """Write the gallery as ``.npz`` through a temporary name; returns the path."""
        path = check_output_path(path, kind=file_kinds.GALLERY)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, format=FORMAT, dim=self.dim, model_id=self.model_id, embeddings=self.embeddings,
                         ids=self.ids, cameras=self.cameras, tracks=self.tracks, paths=self.paths)
        return path

    @classmethod
    def load(cls, path, model_id: str | None = None) -> "Gallery":
        """Read a gallery written by ``save``; with ``model_id``, refuse one of another model."""
        path = Path(path)
        if not path.is_file():
            raise IAUnetError(f"gallery {path} not found; {WRITTEN_BY}")
        require_readable(path, "gallery")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {name: f[name] for name in f.files}
        except Exception as exc:  # a .npy holds no archive (no `with`), a cut zip, pickles, text
            raise IAUnetError(f"gallery {path} is not a readable .npz ({type(exc).__name__}); {WRITTEN_BY}") from None
        missing = [name for name in FIELDS if name not in data]
        if missing:
            raise IAUnetError(f"gallery {path} lacks {', '.join(missing)}; {WRITTEN_BY}")
        try:
            version, dim, stored_model = int(data["format"]), int(data["dim"]), str(data["model_id"])
        except (TypeError, ValueError):
            raise IAUnetError(f"gallery {path} has a malformed format, dim or model_id; {WRITTEN_BY}") from None
        if version != FORMAT:
            raise IAUnetError(f"gallery {path} has format {version}; this toolkit reads format {FORMAT}")
        emb = data["embeddings"]
        if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[1:] != (dim,) or not np.isfinite(emb).all():
            raise IAUnetError(f"gallery {path} holds {emb.dtype} embeddings of shape {emb.shape}; expected "
                              f"finite float32 (N, {dim})")
        norms = np.linalg.norm(emb, axis=1)
        if not (np.isclose(norms, 1, atol=1e-3) | (norms == 0)).all():
            raise IAUnetError(f"gallery {path} holds embeddings that are not L2-normalised; {WRITTEN_BY}")
        try:
            gallery = cls(dim, stored_model)
            gallery._append(emb, data["ids"], data["cameras"], data["tracks"], data["paths"])
        except IAUnetError as exc:
            raise IAUnetError(f"gallery {path}: {exc}") from None
        if model_id is not None:
            gallery.check_model(model_id)
        return gallery


class _Groups:
    """The distinct embeddings of a gallery: ``first`` (ascending) holds the first entry of
    each, ``members`` every entry grouped by distinct embedding (ascending within a group),
    ``starts`` and ``counts`` where each group lies in ``members``. ``first`` is None when
    all entries are distinct (then groups are entries). ``distinct``: their embeddings in
    float64, one row per group."""

    def __init__(self, distinct, first=None, members=None, starts=None, counts=None):
        self.distinct = distinct  # float64 copy of the distinct embeddings, scored by ``scores``
        self.size, self.first, self.members, self.starts, self.counts = len(distinct), first, members, starts, counts

    @classmethod
    def of(cls, emb: np.ndarray) -> "_Groups":
        n = len(emb)
        key = _row_hash(emb)
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        group = group.ravel()
        copies = np.flatnonzero(first[group] != np.arange(n))
        if len(copies) and not (emb[copies] == emb[first[group[copies]]]).all():  # a hash collision
            rows = np.ascontiguousarray(emb).view(np.dtype((np.void, emb.shape[1] * emb.itemsize))).ravel()
            _, first, group = np.unique(rows, return_index=True, return_inverse=True)
            group = group.ravel()
        if len(first) == n:
            return cls(emb.astype(np.float64))
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))   # number the groups by their first entry
        group = rank[group]
        counts = np.bincount(group)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first = np.sort(first)
        return cls(emb[first].astype(np.float64), first, np.argsort(group, kind="stable"), starts, counts)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """float32 cosine of each query with each distinct embedding (one column per group),
        accumulated in float64 and rounded once, so the same whatever the block's shape."""
        return (q.astype(np.float64) @ self.distinct.T).astype(np.float32)

    def unsure(self, cols: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Rows whose last group needed for k entries scores no higher than the last group
        found: groups beyond those found might tie with it."""
        needed = np.minimum(self.counts[cols], k).cumsum(1) if self.first is not None else \
            np.broadcast_to(np.arange(1, cols.shape[1] + 1), cols.shape)
        last = np.argmax(needed >= k, axis=1)
        return np.take_along_axis(scores, last[:, None], 1)[:, 0] <= scores[:, -1]

    def expand(self, cols: np.ndarray, scores: np.ndarray, k: int):
        """Top-k entries from the top groups (sorted by score, then group): the copies of a
        distinct embedding share its score and rank in index order among equal scores."""
        if self.first is None:
            return cols[:, :k], scores[:, :k]
        cap = int(min(k, self.counts.max()))
        within = np.arange(cap)
        out_i, out_s = [], []
        rows = max(1, BLOCK_SCORES // (cols.shape[1] * cap))
        for s in range(0, len(cols), rows):
            c, v = cols[s:s + rows], scores[s:s + rows]
            valid = within < self.counts[c][..., None]
            entry = self.members[np.minimum(self.starts[c][..., None] + within, len(self.members) - 1)]
            entry = np.where(valid, entry, np.iinfo(np.int64).max).reshape(len(c), -1)
            score = np.where(valid, v[..., None], -np.inf).reshape(len(c), -1)
            order = np.lexsort((entry, -score), axis=1)[:, :k]
            out_i.append(np.take_along_axis(entry, order, 1))
            out_s.append(np.take_along_axis(score, order, 1).astype(np.float32))
        if not out_i:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(out_i), np.concatenate(out_s)


def _row_hash(emb: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (equal rows, equal hashes; integer arithmetic, so
    the same in any order), in blocks of rows to keep memory small."""
    words = np.ascontiguousarray(emb).view(np.uint32)
    weights = np.random.default_rng(0).integers(1, 2 ** 63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(words), np.uint64)
    rows = max(1, BLOCK_SCORES // max(1, words.shape[1]) // 4)
    for s in range(0, len(words), rows):
        out[s:s + rows] = (words[s:s + rows].astype(np.uint64) * weights).sum(axis=1)
    return out


def _top(sims: np.ndarray, t: int):
    """The ``t`` best columns of each row, by score then lower column first: (columns, scores)."""
    n = sims.shape[1]
    if t < n:
        cols = np.argpartition(sims, n - t, axis=1)[:, n - t:]
        vals = np.take_along_axis(sims, cols, 1)
        kth = vals.min(axis=1, keepdims=True)
        # argpartition keeps an arbitrary few of the scores equal to the t-th: keep the lowest columns
        for r in np.flatnonzero((sims == kth).sum(1) > (vals == kth).sum(1)):
            better = cols[r][vals[r] > kth[r, 0]]
            cols[r] = np.concatenate([better, np.flatnonzero(sims[r] == kth[r, 0])[:t - len(better)]])
            vals[r] = sims[r, cols[r]]
    else:
        cols, vals = np.broadcast_to(np.arange(n), sims.shape), sims
    order = np.lexsort((cols, -vals), axis=1)
    return np.take_along_axis(cols, order, 1).astype(np.int64), np.take_along_axis(vals, order, 1)


def _faiss(required: bool = True):
    try:
        import faiss
        return faiss
    except ImportError:
        if required:
            raise IAUnetError("the faiss search backend needs faiss: pip install faiss-cpu "
                              "(or the toolkit's 'faiss' extra: pip install -e '.[faiss]')") from None
        return None
