"""``iaunet cameras`` matching identities, as a user runs it, on a tiny synthetic scene
(2 cameras, 3 s at 10 fps, 160x96): the files as their readers load them, a rerun into the
same store, the writer lock, Milvus Lite beside the local store, scoring with --gt."""
import json

import numpy as np
import pytest

from iaunet.cli import main
from tests.runtime.test_camera_commands import run

pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[cameras]')")
pytest.importorskip("trackeval", reason="trackeval is not installed (pip install -e '.[score]')")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from iaunet.train.data.scenes import SceneSpec, generate_scenes
    root = tmp_path_factory.mktemp("scene")
    generate_scenes(root, SceneSpec(cameras=2, seconds=3, fps=10, identities=4, seed=5, frame_size=(160, 96)))
    return root


def argv(scene, model, out, *extra):
    names = ("cam1", "cam2")
    return ["cameras", *[scene / f"{n}.mp4" for n in names], "--tracks", *[scene / f"{n}.tracks.txt" for n in names],
            "-m", model, "-o", out, "--every", 3, "--min-height", 16, "--backend", "onnxruntime-cpu", *extra]


@pytest.fixture(scope="module")
def first_run(scene, image_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ids") / "out"
    code = main([str(a) for a in argv(scene, image_onnx, out, "--gt", scene, "--match-every", 0.5, "--realtime")])
    return code, out


def test_outputs_as_their_readers_load_them(first_run, scene):
    code, out = first_run
    assert code == 0
    ids = json.loads((out / "identities.json").read_text())
    known = {e["identity"] for e in ids["identities"]}
    with np.load(out / "tracks.npz") as npz:
        embedded = {(str(c), int(t), int(a), int(b)) for c, t, a, b in
                    zip(npz["cameras"], npz["track_ids"], npz["first_frame"], npz["last_frame"])}
    listed = {(t["camera"], t["track_id"], t["first_frame"], t["last_frame"]) for e in ids["identities"]
              for t in e["tracks"]}
    assert listed == embedded and ids["tracks"] == len(embedded) and 0 < len(known) <= len(embedded)
    assert ids["provisional_matches"] > 0      # --match-every 0.5 s matched open tracks (paced: they are open)
    for cam in ("cam1", "cam2"):
        ours = [line.split(",") for line in (out / f"{cam}.txt").read_text().splitlines()]
        theirs = [line.split(",") for line in (scene / f"{cam}.tracks.txt").read_text().splitlines()]
        assert {int(r[1]) for r in ours} <= known
        spans = [(t[1], t[2], t[3]) for t in embedded if t[0] == cam]
        kept = [r for r in theirs if any(int(r[1]) == tid and a <= int(r[0]) <= b for tid, a, b in spans)]
        assert [(r[0], r[2], r[3]) for r in ours] == [(r[0], r[2], r[3]) for r in kept]   # same boxes, global ids
    from PIL import Image
    with Image.open(out / "timeline.png") as png:
        assert png.size[0] > 500
    frames = sorted((out / "frames").iterdir())
    assert 1 <= len(frames) <= 2
    with Image.open(frames[0]) as jpg:
        assert jpg.size == (160, 96)
    score = json.loads((out / "score.json").read_text())
    assert 0 <= score["IDF1"] <= 1 and score["IDTP"] + score["IDFN"] == sum(
        len((scene / f"{c}.gt.txt").read_text().splitlines()) for c in ("cam1", "cam2"))


def test_rerun_into_the_same_store_adds_nothing(first_run, scene, image_onnx, capsys):
    _, out = first_run
    before = {p: (out / p).read_bytes() for p in ("cam1.txt", "cam2.txt", "store/journal.bin")}
    code, printed, err = run(capsys, *argv(scene, image_onnx, out))
    assert code == 0, err
    assert {p: (out / p).read_bytes() for p in before} == before


def test_a_second_writer_is_refused_in_one_line(first_run, scene, image_onnx, capsys, tmp_path):
    from iaunet.runtime.identity_store import LocalStore
    _, out = first_run
    with LocalStore(out / "store", 512, ""):    # held by this process, as another writer would
        code, printed, err = run(capsys, *argv(scene, image_onnx, tmp_path / "o2", "--store", out / "store"))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "open for writing by another process" in err and not (tmp_path / "o2").exists()


def test_milvus_lite_store_matches_the_local_one(first_run, scene, image_onnx, capsys, tmp_path):
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install -e '.[milvus]')")
    from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Track
    from iaunet.runtime.identity_store import open_store
    _, out = first_run
    with np.load(out / "tracks.npz") as npz:     # the scene's real tracks, in the order they ended
        tracks = sorted((Track(str(c), int(t), float(a), float(b), e) for c, t, a, b, e in zip(
            npz["cameras"], npz["track_ids"], npz["first_time"], npz["last_time"], npz["embeddings"])),
            key=lambda t: (t.last, t.key))
    got = []
    for spec in (tmp_path / "local", f"milvus-lite:{tmp_path}/ids.db"):
        with open_store(spec, tracks[0].embedding.shape[0]) as store:
            m = IdentityMatcher(store, MatchOptions(threshold=0.9))
            got.append([m.match(t) for t in tracks])
    assert got[0] == got[1] and len(set(got[0])) < len(tracks)
    store = f"milvus-lite:{tmp_path}/c.db"
    code, printed, err = run(capsys, *argv(scene, image_onnx, tmp_path / "o", "--store", store))
    assert code == 0, err
    assert "milvus-lite:" in printed and json.loads((tmp_path / "o" / "identities.json").read_text())["tracks"] == len(
        tracks)


@pytest.mark.parametrize("extra, expect", [
    (["--threshold", "2"], "--threshold: expected a number in [-1, 1], got 2"),
    (["--store", "milvus://host/"], "expected milvus://HOST:PORT/COLLECTION"),
    (["--camera-graph", "nowhere.json"], "camera graph nowhere.json not found"),
    (["--gt", "nowhere"], "--gt nowhere: no readable identities.json"),
])
def test_bad_identity_options_one_line(scene, image_onnx, capsys, tmp_path, extra, expect):
    code, printed, err = run(capsys, *argv(scene, image_onnx, tmp_path / "o", *extra))
    assert code != 0 and len(err.strip().splitlines()) == 1 and expect in err
    assert not (tmp_path / "o").exists()
