"""``iaunet synth --scenes``: videos that decode to the ground truth's frames, MOT files whose
tracker output differs from the ground truth as a tracker's does, identities across cameras."""
import json

import numpy as np
import pytest

from iaunet.cli import main

pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[cameras]')")


def _rows(path):
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "s"
    assert main(["synth", "--scenes", "-o", str(out), "--cameras", "2", "--seconds", "3", "--fps", "10",
                 "--identities", "5", "--frame-size", "160x96", "--seed", "1"]) == 0
    return out


def test_scene_files_and_identities(scenes):
    import av
    ids = json.loads((scenes / "identities.json").read_text())
    assert ids["cameras"] == ["cam1", "cam2"]
    boxes = {"gt": 0, "tracks": 0}
    for cam in ids["cameras"]:
        gt, tracks = _rows(scenes / f"{cam}.gt.txt"), _rows(scenes / f"{cam}.tracks.txt")
        with av.open(str(scenes / f"{cam}.mp4")) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(frames) == 30 and frames[0].shape == (96, 160, 3)
        assert gt[:, 0].min() >= 1 and gt[:, 0].max() <= 30 and gt.shape[1] == 9
        assert ((gt[:, 8] >= 0) & (gt[:, 8] <= 1)).all() and (gt[:, 8] < 1).any()  # some occlusion
        assert set(ids["gt_tracks"][cam]) == {str(int(t)) for t in np.unique(gt[:, 1])}
        assert set(ids["tracker_tracks"][cam]) == {str(int(t)) for t in np.unique(tracks[:, 1])}
        boxes["gt"], boxes["tracks"] = boxes["gt"] + len(gt), boxes["tracks"] + len(tracks)
        # a person is drawn where its box is: the box interior differs from the empty background
        f, x, y, w, h = gt[np.argmax(gt[:, 8] * gt[:, 5])][[0, 2, 3, 4, 5]]
        crop = frames[int(f) - 1][int(max(y - 1, 0)):int(y - 1 + h), int(max(x - 1, 0)):int(x - 1 + w)]
        assert crop.std() > 10
    assert boxes["tracks"] < boxes["gt"]  # missed detections
    seen = {}
    for cam, tracks in ids["gt_tracks"].items():
        for identity in tracks.values():
            seen.setdefault(identity, set()).add(cam)
    assert any(len(cams) > 1 for cams in seen.values()), "nobody reappears in another camera"


def test_tracker_output_jitters_and_fragments():
    from iaunet.train.data.scenes import tracker_output
    rng = np.random.default_rng(0)
    gt = [(f, t, 10.0 + f, 20.0, 30.0, 60.0, 1.0) for t in (1, 2) for f in range(100)]
    rows, held = tracker_output(gt, rng, dict(jitter=0.03, miss=0.05, miss_occluded=0.5, fragment=1.0, switch=0.0), 100)
    assert 170 < len(rows) < 200  # about 5% missed
    assert len(held) == 4 and sorted(held.values()) == [1, 1, 2, 2]  # each track cut in two
    boxes = np.array([r[2:6] for r in rows])
    assert 0 < np.abs(boxes[:, 3] - 60).mean() < 5  # jittered, not moved away
