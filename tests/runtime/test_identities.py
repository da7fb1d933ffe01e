"""Matching tracks into identities: the constraints, bounded representatives, reruns, and
the same identities from the local store and from Milvus Lite."""
import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Track, read_camera_graph
from iaunet.runtime.identity_store import LocalStore, open_store

DIM = 16


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def person(k, noise=0.0, seed=0):
    """Person ``k``'s embedding: a fixed direction, plus noise."""
    base = np.random.default_rng(1000 + k).normal(size=DIM)
    return unit(base + noise * np.random.default_rng(seed).normal(size=DIM))


def track(camera, tid, first, last, emb):
    return Track(camera, tid, float(first), float(last), emb, int(first * 10), int(last * 10))


@pytest.fixture
def matcher(tmp_path):
    def make(**kw):
        store = LocalStore(tmp_path / f"s{len(list(tmp_path.iterdir()))}", DIM)
        return IdentityMatcher(store, MatchOptions(**({"threshold": 0.8} | kw)))
    return make


def test_constraints_keep_simultaneous_tracks_apart(matcher):
    m = matcher()
    a = m.match(track("cam1", 1, 0, 5, person(0)))
    assert m.match(track("cam1", 2, 3, 8, person(0))) != a      # same camera, overlapping: two people
    assert m.match(track("cam2", 1, 4, 9, person(0))) != a      # another camera, overlapping: not one person
    assert m.match(track("cam2", 2, 10, 12, person(0))) == a    # later, elsewhere: joins the first
    b = m.match(track("cam3", 1, 20, 25, person(1)))
    assert b != a and m.match(track("cam1", 3, 26, 30, person(1, 0.1))) == b


def test_window_threshold_and_camera_graph(matcher):
    m = matcher(window=10.0)
    a = m.match(track("cam1", 1, 0, 5, person(0)))
    assert m.match(track("cam2", 1, 16, 20, person(0))) != a      # last seen 11 s before: outside the window
    m = matcher()
    a = m.match(track("cam1", 1, 0, 5, person(0)))
    assert m.match(track("cam2", 1, 6, 8, person(1))) != a        # another person: below the threshold
    m = matcher(travel=read_graph({"cam1": {"cam2": 4.0}}))
    a = m.match(track("cam1", 1, 0, 5, person(0)))
    assert m.match(track("cam2", 1, 7, 9, person(0))) != a        # 2 s after: faster than the walk
    assert m.match(track("cam3", 1, 6, 7, person(0))) == a        # no graph entry: overlap only
    assert m.match(track("cam2", 2, 12, 14, person(0))) == a      # 5 s after cam3's track: allowed


def read_graph(graph):
    import json
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp()) / "graph.json"
    path.write_text(json.dumps(graph))
    return read_camera_graph(path)


def test_representatives_are_bounded_and_drop_the_most_redundant(matcher):
    m = matcher(representatives=3, threshold=0.5)
    embs = [person(0, 0.3, seed=s) for s in range(6)]
    embs.insert(2, embs[1].copy())  # an exact duplicate of the second: the most redundant
    ids = {m.match(track(f"cam{1 + k % 2}", k, 2 * k, 2 * k + 1, e)) for k, e in enumerate(embs)}
    assert len(ids) == 1
    reps = m.store.representatives(ids.pop())
    assert len(reps) == 3 and m.store.n == 7
    sims = np.stack([r.embedding for r in reps]) @ np.stack([r.embedding for r in reps]).T
    assert sims[~np.eye(3, dtype=bool)].max() < 0.999              # the duplicate pair did not both survive
    assert {r.seen_first for r in reps} == {0.0} and {r.seen_last for r in reps} == {13.0}


def test_rerun_adds_no_identity(tmp_path):
    tracks = [track(f"cam{1 + k % 3}", k, 3 * k, 3 * k + 2, person(k % 4, 0.2, k)) for k in range(12)]
    with LocalStore(tmp_path / "s", DIM) as store:
        first = [IdentityMatcher(store, MatchOptions(threshold=0.7)).match(t) for t in tracks]
    with LocalStore(tmp_path / "s", DIM) as store:
        again = [IdentityMatcher(store, MatchOptions(threshold=0.7)).match(t) for t in tracks]
        assert again == first and store.n == 12 and store.next_id == max(first) + 1
    size = (tmp_path / "s" / "journal.bin").stat().st_size
    with LocalStore(tmp_path / "s", DIM) as store:
        IdentityMatcher(store).match(tracks[0])
    assert (tmp_path / "s" / "journal.bin").stat().st_size == size   # nothing written for a known key


def test_long_track_matched_before_it_ends_then_rematched(matcher):
    m = matcher()
    a = m.match(track("cam1", 1, 0, 5, person(0)))
    early = track("cam2", 1, 8, 10, person(3))                    # provisional: someone else so far
    b = m.match(early, final=False)
    assert b != a and not m.store.get(early.key).final
    done = track("cam2", 1, 8, 14, person(0))                     # at its end it looks like person 0
    assert m.match(done) == a and m.store.get(done.key).final
    assert m.store.holds_other(b, done.key) is False              # the provisional identity is left empty


def test_bad_inputs_one_line(tmp_path, matcher):
    m = matcher()
    with pytest.raises(IAUnetError, match="8 values; the store holds 16-dimensional"):
        m.match(track("cam1", 1, 0, 1, np.ones(8, np.float32)))
    with pytest.raises(IAUnetError, match="expected first <= last"):
        m.match(track("cam1", 1, 5, 1, person(0)))
    with pytest.raises(IAUnetError, match="threshold: expected a number in"):
        MatchOptions(threshold=1.5)
    (tmp_path / "g.json").write_text('{"cam1": {"cam2": -1}}')
    with pytest.raises(IAUnetError, match="cam1 -> cam2 is -1; expected a number of seconds"):
        read_camera_graph(tmp_path / "g.json")
    with pytest.raises(IAUnetError, match="expected milvus://HOST:PORT/COLLECTION"):
        open_store("milvus://localhost/", DIM)
    with pytest.raises(IAUnetError, match="needs a file ending in .db"):
        open_store(f"milvus-lite:{tmp_path}/x.sqlite", DIM)
    with LocalStore(tmp_path / "other", DIM, "model-a"):
        pass
    with pytest.raises(IAUnetError, match="expected the same model"):
        LocalStore(tmp_path / "other", DIM, "model-b")


def scene_tracks(n=40, people=6, seed=0):
    """A small made-up scene: people walking camera to camera, a few simultaneous."""
    rng = np.random.default_rng(seed)
    out, t = [], {}
    for k in range(n):
        p = int(rng.integers(people))
        start = t.get(p, float(rng.uniform(0, 5))) + float(rng.uniform(0.5, 3))
        length = float(rng.uniform(1, 4))
        t[p] = start + length
        out.append(track(f"cam{1 + k % 3}", k, round(start, 2), round(start + length, 2), person(p, 0.35, k)))
    return sorted(out, key=lambda x: x.last)


def test_local_and_milvus_lite_give_the_same_identities(tmp_path):
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install -e '.[milvus]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install -e '.[milvus]')")
    tracks = scene_tracks()
    got = {}
    for spec in (str(tmp_path / "local"), f"milvus-lite:{tmp_path}/m.db"):
        with open_store(spec, DIM, "m") as store:
            m = IdentityMatcher(store, MatchOptions(threshold=0.6, representatives=2, window=8.0))
            got[spec] = [m.match(t, final=k % 7 != 3) for k, t in enumerate(tracks)]
            got[spec] += [m.match(t) for t in tracks[::5]]          # provisional ones finished; a rerun
            stored = sorted((r.key, r.identity, r.rep, r.final) for r in store.rows())
        got[spec + "rows"] = stored
    local, milvus = (got[k] for k in got if not k.endswith("rows"))
    assert local == milvus and 3 < len(set(local)) < len(tracks)   # some joined, some did not
    rows = [got[k] for k in got if k.endswith("rows")]
    assert rows[0] == rows[1]
    with open_store(f"milvus-lite:{tmp_path}/m.db", DIM, "m") as store:   # reopened: the same rows, no new ids
        assert IdentityMatcher(store).match(tracks[0]) == local[0] and store.next_id == max(local) + 1
    import subprocess
    import sys
    code = ("import sys, numpy as np; from iaunet.runtime.identity_store import open_store\n"
            f"s = open_store('milvus-lite:{tmp_path}/m.db', {DIM}, 'm'); print(s.get(sys.argv[1]).identity, s.next_id)")
    done = subprocess.run([sys.executable, "-c", code, tracks[0].key], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == [str(local[0]), str(max(local) + 1)], done.stderr[-500:]   # another process
