"""The local identity store: every flush complete, a killed writer loses at most its
unflushed tail and never corrupts the store, one writer at a time."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Track
from iaunet.runtime.identity_store import JOURNAL, LocalStore, read_frames

DIM = 8


def tracks(n):
    rng = np.random.default_rng(0)
    return [Track(f"cam{1 + k % 2}", k, 2.0 * k, 2.0 * k + 1, rng.normal(size=DIM).astype(np.float32))
            for k in range(n)]


def fill(folder, n):
    with LocalStore(folder, DIM) as store:
        m = IdentityMatcher(store, MatchOptions())
        return [m.match(t) for t in tracks(n)]


@pytest.mark.parametrize("cut", [1, 7, 40, -1])
def test_a_torn_last_flush_is_dropped_and_the_rest_kept(tmp_path, cut):
    fill(tmp_path / "s", 5)
    journal = tmp_path / "s" / JOURNAL
    data = journal.read_bytes()
    frames, end = read_frames(data)
    assert end == len(data) and len(frames) == 6                   # the header and one frame per match
    last = len(data) - len(frames[-1]) - 12                        # where the last frame starts
    journal.write_bytes(data[:last + cut] if cut > 0 else data[:-1] + bytes([data[-1] ^ 0xFF]))
    with LocalStore(tmp_path / "s", DIM) as store:
        assert sorted(store.index) == sorted(t.key for t in tracks(4))   # the fifth match's flush is gone
    assert journal.read_bytes() == data[:last]                     # the broken tail was cut off
    fill(tmp_path / "s", 6)                                        # and the store goes on
    with LocalStore(tmp_path / "s", DIM) as store:
        assert store.n == 6


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Track
    from iaunet.runtime.identity_store import LocalStore
    store = LocalStore(sys.argv[1], 8)
    m = IdentityMatcher(store, MatchOptions())
    rng = np.random.default_rng(0)
    k = 0
    while True:
        m.match(Track("cam1", k, 2.0 * k, 2.0 * k + 1, rng.normal(size=8).astype(np.float32)))
        print(k, flush=True)
        k += 1
""")


def test_a_killed_writer_leaves_a_readable_store_and_no_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(30):                     # 30 matches flushed; then killed in the middle of whatever it does
            done = int(proc.stdout.readline())
        with pytest.raises(IAUnetError, match=r"open for writing by another process \(pid \d+\); expected one writer"):
            LocalStore(tmp_path / "s", DIM)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with LocalStore(tmp_path / "s", DIM) as store:   # the kernel dropped the dead writer's lock
        assert store.n >= done + 1
        assert set(range(store.n)) == {store.get(k).track_id for k in store.index}   # no gap: a prefix
        data = (tmp_path / "s" / JOURNAL).read_bytes()
        assert read_frames(data)[1] == len(data)


def test_second_writer_in_one_process_is_refused_and_nothing_changes(tmp_path):
    fill(tmp_path / "s", 3)
    before = (tmp_path / "s" / JOURNAL).read_bytes()
    with LocalStore(tmp_path / "s", DIM):
        with pytest.raises(IAUnetError, match="open for writing by another process"):
            LocalStore(tmp_path / "s", DIM)
    assert (tmp_path / "s" / JOURNAL).read_bytes() == before


def test_not_a_store(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / JOURNAL).write_bytes(b"IAUS" + bytes(8))   # a frame of nothing: no meta
    with pytest.raises(IAUnetError, match="is not an identity store"):
        LocalStore(tmp_path / "s", DIM)
    (tmp_path / "s" / JOURNAL).write_text("someone's notes")          # not ours: refused and left as it was
    with pytest.raises(IAUnetError, match="is not an identity store"):
        LocalStore(tmp_path / "s", DIM)
    assert (tmp_path / "s" / JOURNAL).read_text() == "someone's notes"
    (tmp_path / "f").write_text("x")
    with pytest.raises(IAUnetError, match="is a file; expected a folder"):
        LocalStore(tmp_path / "f", DIM)
