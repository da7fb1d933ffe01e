"""``Gallery``: embeddings of known people with their ids, cameras, tracks and source
files; exact top-k search by cosine (numpy, or FAISS when installed and the gallery is
large); save and load as ``.npz``; refusal of queries from another model.

A gallery belongs to one embedding space, named by the checkpoint's SHA-256 (the
``model_id`` of ``iaunet.runtime.model_card``) and the embedding size: queries from any
other model are refused rather than compared. Embeddings are stored L2-normalised, so
the inner product is the cosine. Ties rank the earlier entry first, in both backends.
faiss is imported only inside the search that uses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output, check_output_path

FORMAT = 1
FAISS_FROM = 50_000        # entries from which "auto" searches with FAISS (when installed)
QUERY_CHUNK = 1024         # queries per numpy matrix product: memory stays O(chunk x gallery)
SEARCH_BACKENDS = ("auto", "numpy", "faiss")
UNKNOWN = -1               # id, camera or track not known


@dataclass
class Matches:
    """Top-k per query: gallery ``indices`` (-1 where fewer matched), cosine ``scores``
    (NaN there), and the matches' ``ids``."""
    indices: np.ndarray
    scores: np.ndarray
    ids: np.ndarray


def _normalized(x, what: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise IAUnetError(f"{what} has shape {x.shape}; expected (N, {dim or 'D'})")
    if not np.isfinite(x).all():
        raise IAUnetError(f"{what} holds NaN or infinite values")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Gallery:
    def __init__(self, dim: int, model_id: str):
        if int(dim) < 1:
            raise IAUnetError(f"embedding size {dim} must be at least 1")
        self.dim, self.model_id = int(dim), str(model_id)
        self.embeddings = np.zeros((0, self.dim), np.float32)
        self.ids = self.cameras = self.tracks = np.zeros(0, np.int64)
        self.paths = np.zeros(0, dtype=str)

    def __len__(self) -> int:
        return len(self.embeddings)

    def add(self, embeddings, ids, cameras=None, tracks=None, paths=None) -> None:
        """Append embeddings (L2-normalised here) with their labels; None labels are unknown."""
        self._append(_normalized(embeddings, "the embeddings", self.dim), ids, cameras, tracks, paths)

    def _append(self, emb: np.ndarray, ids, cameras, tracks, paths) -> None:
        n = len(emb)

        def column(values, name, dtype=np.int64, fill=UNKNOWN):
            out = np.full(n, fill, dtype) if values is None else np.asarray(values).astype(dtype)
            if out.shape != (n,):
                raise IAUnetError(f"{name} has {out.shape[0] if out.ndim else 0} entries for {n} embeddings")
            return out
        new = [column(ids, "ids"), column(cameras, "cameras"), column(tracks, "tracks"),
               column(paths, "paths", str, "")]
        self.embeddings = np.concatenate([self.embeddings, emb])
        self.ids, self.cameras, self.tracks = (np.concatenate([a, b]) for a, b in
                                               zip((self.ids, self.cameras, self.tracks), new[:3]))
        self.paths = np.concatenate([self.paths, new[3]])

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
        if backend not in SEARCH_BACKENDS:
            raise IAUnetError(f"unknown search backend {backend!r}; expected one of {', '.join(SEARCH_BACKENDS)}")
        if model_id is not None:
            self.check_model(model_id, np.shape(queries)[-1])
        if not len(self):
            raise IAUnetError("the gallery is empty; add embeddings before searching")
        if k < 1:
            raise IAUnetError(f"k must be at least 1, got {k}")
        q = _normalized(queries, "the queries", self.dim)
        k = min(int(k), len(self))
        use_faiss = backend == "faiss" or (backend == "auto" and len(self) >= FAISS_FROM and _faiss(False))
        indices, scores = (_search_faiss if use_faiss else _search_numpy)(self.embeddings, q, k)
        if threshold is not None:
            low = scores < threshold
            indices, scores = np.where(low, -1, indices), np.where(low, np.nan, scores)
        return Matches(indices, scores, np.where(indices >= 0, self.ids[np.maximum(indices, 0)], UNKNOWN))

    def save(self, path) -> Path:
        path = check_output_path(path)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, format=FORMAT, dim=self.dim, model_id=self.model_id, embeddings=self.embeddings,
                         ids=self.ids, cameras=self.cameras, tracks=self.tracks, paths=self.paths)
        return path

    @classmethod
    def load(cls, path, model_id: str | None = None) -> "Gallery":
        path = Path(path)
        if not path.is_file():
            raise IAUnetError(f"gallery {path} not found; expected an .npz written by 'iaunet embed'")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
            if int(data["format"]) != FORMAT:
                raise IAUnetError(f"gallery {path} has format {int(data['format'])}; this toolkit reads {FORMAT}")
            gallery = cls(int(data["dim"]), str(data["model_id"]))
            emb = data["embeddings"]
            if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[1] != gallery.dim or not np.isfinite(emb).all():
                raise ValueError("embeddings of the wrong type or shape")
            gallery._append(emb, data["ids"], data["cameras"], data["tracks"], data["paths"])
        except IAUnetError:
            raise
        except Exception as exc:
            raise IAUnetError(f"gallery {path} is not readable ({type(exc).__name__}); expected an .npz written "
                              "by 'iaunet embed'") from None
        if model_id is not None:
            gallery.check_model(model_id)
        return gallery


def _search_numpy(gallery: np.ndarray, queries: np.ndarray, k: int):
    indices, scores = [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        sims = queries[start:start + QUERY_CHUNK] @ gallery.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # stable: ties keep the earlier entry first
        indices.append(order)
        scores.append(np.take_along_axis(sims, order, 1))
    return np.concatenate(indices), np.concatenate(scores)


def _faiss(required: bool = True):
    try:
        import faiss
        return faiss
    except ImportError:
        if required:
            raise IAUnetError("the faiss search backend needs faiss: pip install faiss-cpu "
                              "(or the toolkit's 'faiss' extra)") from None
        return None


def _search_faiss(gallery: np.ndarray, queries: np.ndarray, k: int):
    faiss = _faiss()
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery))
    scores, indices = index.search(np.ascontiguousarray(queries), k)
    order = np.lexsort((indices, -scores), axis=1)  # equal scores: lower index first, as numpy does
    return np.take_along_axis(indices, order, 1).astype(np.int64), np.take_along_axis(scores, order, 1)
