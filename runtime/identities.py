"""Identities across cameras: ended (and long-running) tracks matched into people.

``IdentityMatcher(store, MatchOptions())``; ``matcher.match(track)`` with a ``Track``
(camera, tracker id, first and last time and frame, L2-normalised embedding) returns its
global identity. A track joins the identity of the most similar stored representative
whose similarity is at least ``threshold`` and whose identity
- has no track overlapping this one in time, in any camera: the same camera at
  overlapping times is two people, two cameras at overlapping times cannot be one; with a
  camera graph (``read_camera_graph``), no track in camera A closer in time to this one
  in camera B than the minimum travel time between them;
- was last seen within ``window`` seconds of this track;
else it starts a new identity. The constraints are filters of the store's vector query
(``Store.conflicts`` names the identities with a clashing track; ``Store.search`` leaves
them and the identities outside the window out), so a Milvus store applies them inside
Milvus.

Each identity keeps at most ``representatives`` embeddings flagged as representatives
(the search runs over those): a new track's embedding always joins them, and when there
are too many, the one most similar to another representative (the most redundant) stops
being one. Representatives carry their identity's time span, so the window is a filter.

A track's key is (camera, track id, first time): matching a key that the store holds as
final returns its stored identity and writes nothing, so rerunning the same videos into
the same store adds no identity. A long track matched before it ends (``final=False``,
every ``match_every`` seconds) is stored provisionally and rematched, excluding itself,
when it ends. numpy only; the stores are in ``iaunet.runtime.identity_store``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.validate import COUNT, NON_NEGATIVE_FLOAT, Bounded, check

# chosen on synthetic scenes of seeds 100-104 (never scored by the tests): see the README's
# "Identities across cameras" and iaunet/identity_bench.py
DEFAULT_THRESHOLD = 0.65
THRESHOLD = Bounded(float, -1, 1)
DEFAULT_WINDOW = 600.0          # seconds an identity stays matchable after it was last seen
DEFAULT_MATCH_EVERY = 10.0      # seconds between matches of a long track (0: only when it ends)
DEFAULT_REPRESENTATIVES = 8     # embeddings per identity the search runs over


@dataclass(frozen=True)
class MatchOptions:
    """How tracks join identities (one definition of each default; the CLI's options are these)."""
    threshold: float = DEFAULT_THRESHOLD
    window: float = DEFAULT_WINDOW
    match_every: float = DEFAULT_MATCH_EVERY
    representatives: int = DEFAULT_REPRESENTATIVES
    travel: dict = field(default_factory=dict)   # {(camera a, camera b): minimum seconds}, both orders

    def __post_init__(self):
        check("threshold", self.threshold, THRESHOLD)
        check("window", self.window, NON_NEGATIVE_FLOAT)
        check("match_every", self.match_every, NON_NEGATIVE_FLOAT)
        check("representatives", self.representatives, COUNT)

    def travel_from(self, camera: str, cameras) -> dict:
        """{other camera: minimum seconds between a track there and one in ``camera``} (0 where unlisted)."""
        return {c: (0.0 if c == camera else float(self.travel.get((camera, c), 0.0))) for c in cameras}


@dataclass
class Track:
    """A track as the matcher takes it (times in seconds on a clock shared by the cameras)."""
    camera: str
    track_id: int
    first: float
    last: float
    embedding: np.ndarray
    first_frame: int = 0
    last_frame: int = 0

    @property
    def key(self) -> str:
        return track_key(self.camera, self.track_id, self.first)

    @classmethod
    def from_result(cls, result, offset: float = 0.0) -> "Track":
        """From the camera stream's ``TrackResult`` (``offset``: seconds added to its video times)."""
        return cls(result.camera, int(result.track_id), float(result.first_time) + offset,
                   float(result.last_time) + offset, result.embedding, int(result.first_frame),
                   int(result.last_frame))


def track_key(camera: str, track_id: int, first: float) -> str:
    return f"{camera}/{int(track_id)}/{first:.3f}"


@dataclass
class Row:
    """One stored track: its identity, whether it is a representative, and (on
    representatives) its identity's time span, which the window filter reads."""
    key: str
    identity: int
    camera: str
    track_id: int
    first: float
    last: float
    first_frame: int
    last_frame: int
    rep: bool
    final: bool
    seen_first: float
    seen_last: float
    embedding: np.ndarray = field(repr=False)


class Store:
    """What a matcher needs from a store (``iaunet.runtime.identity_store`` has two)."""
    dim: int

    def get(self, key: str) -> Row | None: ...
    def conflicts(self, track: Track, travel: dict) -> set: ...
    def search(self, embedding: np.ndarray, track: Track, window: float, exclude: set) -> tuple | None: ...
    def representatives(self, identity: int) -> list: ...
    def holds_other(self, identity: int, key: str) -> bool: ...
    def put(self, rows: list) -> None: ...
    def new_identity(self) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IdentityMatcher:
    """Tracks in, global identities out, through a ``Store``."""

    def __init__(self, store: Store, options: MatchOptions | None = None):
        self.store, self.options = store, options or MatchOptions()
        self.cameras: set = set()

    def match(self, track: Track, final: bool = True) -> int:
        """The identity ``track`` joins (a new one if none qualifies); stored and flushed."""
        emb = self._check(track)
        prior = self.store.get(track.key)
        if prior is not None and (prior.final or not final and prior.last >= track.last):
            return prior.identity
        self.cameras.add(track.camera)
        travel = self.options.travel_from(track.camera, self.cameras | set(_cameras_of(self.options.travel)))
        clash = self.store.conflicts(track, travel)
        best = self.store.search(emb, track, self.options.window, clash)
        if best is not None and best[1] >= self.options.threshold:
            identity = best[0]
        elif prior is not None and not self.store.holds_other(prior.identity, track.key):
            identity = prior.identity   # a provisional track alone in its identity keeps its number
        else:
            identity = self.store.new_identity()
        self._join(identity, track, emb, final)
        self.store.flush()
        return identity

    def _check(self, track: Track) -> np.ndarray:
        emb = np.asarray(track.embedding, dtype=np.float32).reshape(-1)
        if emb.shape[0] != self.store.dim:
            raise IAUnetError(f"track {track.key}: embedding of {emb.shape[0]} values; the store holds "
                              f"{self.store.dim}-dimensional embeddings (another model?)")
        if not (math.isfinite(track.first) and math.isfinite(track.last)) or track.last < track.first:
            raise IAUnetError(f"track {track.key}: times {track.first}..{track.last}; expected first <= last")
        norm = float(np.linalg.norm(emb))
        if not np.isfinite(norm) or norm == 0:
            raise IAUnetError(f"track {track.key}: embedding is zero or not finite; expected an embedding")
        return emb / norm

    def _join(self, identity: int, track: Track, emb: np.ndarray, final: bool) -> None:
        """Store the track in ``identity``; keep the identity's representatives bounded and
        their span (the window filter's) up to date."""
        reps = [r for r in self.store.representatives(identity) if r.key != track.key]
        first = min([track.first] + [r.seen_first for r in reps])
        last = max([track.last] + [r.seen_last for r in reps])
        row = Row(track.key, identity, track.camera, track.track_id, track.first, track.last, track.first_frame,
                  track.last_frame, True, final, first, last, emb)
        reps.append(row)
        demoted = []
        while len(reps) > self.options.representatives:
            demoted.append(reps.pop(most_redundant([r.embedding for r in reps])))
        self.store.put([replace(r, seen_first=first, seen_last=last) for r in reps] +
                       [replace(r, rep=False) for r in demoted])


def most_redundant(embeddings: list) -> int:
    """Index of the embedding most similar to another (ties: the earliest)."""
    e = np.stack(embeddings).astype(np.float64)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    return int(np.argmax(sims.max(axis=1)))


def _cameras_of(travel: dict) -> set:
    return {c for pair in travel for c in pair}


def read_camera_graph(path) -> dict:
    """A camera graph file: JSON ``{"cam1": {"cam2": 4.0, ...}, ...}``, the minimum seconds
    to walk between two cameras (either direction; the larger where both are given).
    Returns {(a, b): seconds} with both orders."""
    path = Path(path)
    expected = 'expected JSON like {"cam1": {"cam2": 4.0}} (minimum travel seconds between cameras)'
    try:
        graph = json.loads(path.read_text())
    except FileNotFoundError:
        raise IAUnetError(f"camera graph {path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IAUnetError(f"camera graph {path} cannot be read ({exc}); {expected}") from None
    if not isinstance(graph, dict) or not all(isinstance(v, dict) for v in graph.values()):
        raise IAUnetError(f"camera graph {path}: {expected}")
    travel = {}
    for a, targets in graph.items():
        for b, seconds in targets.items():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                    or seconds < 0 or a == b:
                raise IAUnetError(f"camera graph {path}: {a} -> {b} is {seconds!r}; expected a number of seconds "
                                  ">= 0 between two different cameras")
            for pair in ((a, b), (b, a)):
                travel[pair] = max(travel.get(pair, 0.0), float(seconds))
    return travel
