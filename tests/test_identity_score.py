"""Scoring identities across cameras with TrackEval, on a tiny scene whose answer is known."""
import json

import numpy as np
import pytest

pytest.importorskip("trackeval", reason="trackeval is not installed (pip install -e '.[score]')")

from iaunet.identity_score import identity_metrics, sequence, track_retrieval  # noqa: E402


def write_case(root, swapped: bool):
    """Two people, 10 frames in each of two cameras; ours the same boxes with global ids,
    the second camera's two ids swapped when ``swapped``."""
    gt, ours = root / "gt", root / "out"
    gt.mkdir()
    ours.mkdir()
    ids = {"cameras": ["cam1", "cam2"], "gt_tracks": {"cam1": {"1": 7, "2": 9}, "cam2": {"1": 9, "2": 7}},
           "tracker_tracks": {}}
    (gt / "identities.json").write_text(json.dumps(ids))
    for cam in ("cam1", "cam2"):
        g, o = [], []
        for f in range(1, 11):
            for track, x in ((1, 10), (2, 200)):
                g.append(f"{f},{track},{x},20,40,100,1,1,1\n")
                person = ids["gt_tracks"][cam][str(track)]
                ours_id = {7: 100, 9: 200}[person]
                if swapped and cam == "cam2":
                    ours_id = 300 - ours_id
                o.append(f"{f},{ours_id},{x + 1},21,40,100,1,-1,-1,-1\n")   # a pixel off: IoU 0.93
        (gt / f"{cam}.gt.txt").write_text("".join(g))
        (ours / f"{cam}.txt").write_text("".join(o))
    return gt, ours


def test_perfect_identities_score_one_and_swapped_ones_half(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    perfect = identity_metrics(sequence(*write_case(tmp_path / "a", False), ["cam1", "cam2"]))
    assert perfect["IDF1"] == pytest.approx(1.0) and perfect["IDTP"] == 40 and perfect["IDFP"] == 0
    swapped = identity_metrics(sequence(*write_case(tmp_path / "b", True), ["cam1", "cam2"]))
    # each gt person matches one of our ids in one camera only: 20 of 40 boxes
    assert swapped["IDTP"] == 20 and swapped["IDFN"] == 20 and swapped["IDFP"] == 20
    assert swapped["IDF1"] == pytest.approx(0.5) and swapped["IDP"] == pytest.approx(0.5)


def test_track_retrieval_counts_only_other_cameras():
    e = np.eye(4, dtype=np.float32)
    e[1] = e[0] * 0.9 + e[1] * 0.1          # track 1 (cam1) looks like track 0 (cam1), but same-camera
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cams, ids = ["cam1", "cam1", "cam2", "cam2"], [5, 6, 5, 6]
    e[2] = e[0]                             # cam2's person 5 equals cam1's person 5
    e[3] = e[1]                             # cam2's person 6 equals cam1's person 6
    r = track_retrieval(e, cams, ids)
    # queries 0 and 2 find their match first; 1 and 3 too (0.994 > 0.7 to the other person)
    assert r["queries"] == 4 and r["rank1"] == 1.0 and r["mAP"] == 1.0
    r = track_retrieval(e, cams, [5, 6, 6, 5])   # identities of cam2 swapped: every first hit wrong
    assert r["rank1"] == 0.0 and r["mAP"] == pytest.approx(0.5)
