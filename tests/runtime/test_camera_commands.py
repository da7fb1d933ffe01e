"""``iaunet cameras`` as a user runs it, on a tiny synthetic scene (2 cameras, 2 s at 10 fps,
160x96): its files as numpy and json load them, a bad track line, a camera that fails, a
corrupt packet, Ctrl-C."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_cli as run

pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[cameras]')")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from iaunet.train.data.scenes import SceneSpec, generate_scenes
    root = tmp_path_factory.mktemp("scene")
    generate_scenes(root, SceneSpec(cameras=2, seconds=2, fps=10, identities=4, seed=2, frame_size=(160, 96)))
    return root


def inputs(root, names=("cam1", "cam2")):
    return [root / f"{n}.mp4" for n in names], ["--tracks", *[root / f"{n}.tracks.txt" for n in names]]


def test_cameras_writes_tracks_stats_and_plot(capsys, tmp_path, scene, image_onnx):
    videos, tracks = inputs(scene)
    out = tmp_path / "out"
    code, printed, err = run(capsys, "cameras", *videos, *tracks, "-m", image_onnx, "-o", out, "--every", 3,
                             "--min-height", 16)
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and not stats["errors"]
    with np.load(out / "tracks.npz") as npz:
        assert set(npz["cameras"]) == {"cam1", "cam2"} and str(npz["model_id"]) == stats["model_id"]
        assert len(npz["embeddings"]) == stats["overall"]["tracks"] - stats["overall"]["tracks_without_embedding"]
        np.testing.assert_allclose(np.linalg.norm(npz["embeddings"], axis=1), 1, atol=1e-5)
        assert npz["crops_embedded"].sum() == stats["overall"]["crops_embedded"] > 0
        assert (npz["first_frame"] <= npz["last_frame"]).all() and (npz["crops_taken"] <= npz["crops_seen"]).all()
    for name in ("cam1", "cam2"):
        cam = stats["cameras"][name]
        lines = (scene / f"{name}.tracks.txt").read_text().splitlines()
        assert cam["frames"] == cam["frames_decoded"] == 20 and cam["boxes_seen"] == len(lines)
        assert cam["latency_ms"]["count"] == cam["crops_embedded"]
    from PIL import Image
    with Image.open(out / "latency.png") as png:
        assert png.size[0] > 500
    assert sorted(p.name for p in out.iterdir()) == ["cam1.txt", "cam2.txt", "frames", "identities.json",
                                                     "latency.png", "stats.json", "store", "timeline.png",
                                                     "tracks.npz"]   # identities: tests/runtime/test_identity_commands.py


def test_a_bad_track_line_names_file_and_line(capsys, tmp_path, scene, image_onnx):
    bad = tmp_path / "cam2.tracks.txt"
    lines = (scene / "cam2.tracks.txt").read_text().splitlines()
    lines[2] = "3,1,10,20,-5,40,1,-1,-1,-1"  # negative width
    bad.write_text("\n".join(lines) + "\n")
    videos, _ = inputs(scene)
    code, _, err = run(capsys, "cameras", *videos, "--tracks", scene / "cam1.tracks.txt", bad, "-m", image_onnx,
                       "-o", tmp_path / "out")
    assert code == 1 and f"{bad}:3:" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_failing_camera_is_reported_and_the_others_go_on(capsys, tmp_path, scene, image_onnx):
    import av
    short = tmp_path / "short.mp4"  # cam2's first 8 frames: the video ends before its tracks
    with av.open(str(scene / "cam2.mp4")) as src, av.open(str(short), "w") as dst:
        stream = dst.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for k, frame in enumerate(src.decode(video=0)):
            if k == 8:
                break
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        dst.mux(stream.encode())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((scene / "cam1.mp4").read_bytes()[:2000])  # cut off: no index, FFmpeg cannot open it
    out = tmp_path / "out"
    code, printed, err = run(capsys, "cameras", scene / "cam1.mp4", short, broken, "--tracks",
                             scene / "cam1.tracks.txt", scene / "cam2.tracks.txt", scene / "cam1.tracks.txt",
                             "-m", image_onnx, "-o", out, "--min-height", 16)
    assert code == 2, err
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["errors"]) == {"short", "broken"}
    assert stats["errors"]["short"].startswith("video ended at frame 8")
    assert "cannot open video" in stats["errors"]["broken"] and "camera broken:" in printed
    assert stats["cameras"]["cam1"]["frames"] == 20 and stats["cameras"]["cam1"]["crops_embedded"] > 0
    with np.load(out / "tracks.npz") as npz:
        assert "cam1" in set(npz["cameras"]) and (npz["last_frame"][npz["cameras"] == "short"] <= 8).all()


def test_ctrl_c_writes_what_was_processed_marked_incomplete(capsys, tmp_path, scene, image_onnx, monkeypatch):
    from iaunet.runtime.cameras import CameraStream
    polls = []
    real_poll = CameraStream.poll

    def interrupted(self):
        polls.append(1)
        if len(polls) == 3:
            raise KeyboardInterrupt
        return real_poll(self)

    monkeypatch.setattr(CameraStream, "poll", interrupted)
    videos, tracks = inputs(scene)
    out = tmp_path / "out"
    code, printed, err = run(capsys, "cameras", *videos, *tracks, "-m", image_onnx, "-o", out, "--realtime")
    assert code == 130 and "interrupted" in err and "marked incomplete" in printed
    stats = json.loads((out / "stats.json").read_text())
    # marked incomplete; how many frames were decoded before the third poll depends on the
    # machine's speed (paced at real time, usually far fewer than the 40 there are)
    assert stats["complete"] is False and stats["overall"]["frames"] <= 40
    with np.load(out / "tracks.npz") as npz:
        assert not bool(npz["complete"])
    assert sorted(p.name for p in out.iterdir()) == ["latency.png", "stats.json", "store",   # the identities
                                                     "tracks.npz"]  # no partial file       # matched so far


def test_read_tracks_converts_mot_to_zero_based(tmp_path):
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.camera_tasks import read_tracks
    path = tmp_path / "t.txt"
    path.write_text("2,5,11.5,21,30,60,0.9,-1,-1,-1\n2,6,1,1,10,20,1,-1,-1,-1\n\n4,5,12,22,30,60,1,-1,-1,-1\n")
    rows = read_tracks(path)
    assert sorted(rows) == [2, 4]
    boxes, ids = rows[2]
    np.testing.assert_array_equal(boxes, [[10.5, 20, 30, 60], [0, 0, 10, 20]])
    assert ids.tolist() == [5, 6]
    path.write_text("1,5,1,1,10,20\n1,5,2,2,10,20\n")
    with pytest.raises(IAUnetError, match=r"t.txt:2: track 5 appears twice in frame 1"):
        read_tracks(path)
    path.write_text("1.5,5,1,1,10,20\n")
    with pytest.raises(IAUnetError, match=r"t.txt:1: "):
        read_tracks(path)


def damage_one_packet(src, dst, which):
    """``src``'s packets remuxed (no re-encoding) into ``dst``, packet ``which``'s payload
    overwritten in its middle third, as a lossy link or a bad sector leaves it."""
    import av
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for k, packet in enumerate(inp.demux(video=0)):
            if packet.size == 0:
                continue
            if k == which:
                payload = bytearray(bytes(packet))
                third = len(payload) // 3
                payload[third:2 * third] = bytes([0xFF]) * third
                damaged = av.Packet(bytes(payload))
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                damaged.is_keyframe = packet.is_keyframe
                packet = damaged
            packet.stream = stream
            out.mux(packet)


def test_a_corrupt_packet_is_reported_for_its_camera_and_the_others_go_on(capsys, tmp_path, scene, image_onnx):
    import av
    damaged = tmp_path / "damaged.mp4"
    damage_one_packet(scene / "cam1.mp4", damaged, 5)
    with av.open(str(damaged)) as check:  # FFmpeg itself finds the damage: a frame it flags or a packet it rejects
        found = 0
        for packet in check.demux(video=0):
            try:
                found += sum(frame.is_corrupt for frame in packet.decode())
            except av.error.FFmpegError:
                found += 1
    assert found >= 1
    out = tmp_path / "out"
    code, printed, err = run(capsys, "cameras", damaged, scene / "cam2.mp4", "--tracks", scene / "cam1.tracks.txt",
                             scene / "cam2.tracks.txt", "-m", image_onnx, "-o", out, "--min-height", 16)
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    cam = stats["cameras"]["damaged"]
    skipped = cam["corrupt_packets"] + cam["corrupt_frames"]
    assert skipped == found and "corrupt" in cam["note"] and f"camera damaged: {cam['note']}" in printed
    assert cam["frames"] == 20 - cam["corrupt_frames"] and cam["error"] is None  # every other frame went on
    assert stats["cameras"]["cam2"]["frames"] == 20 and "note" not in stats["cameras"]["cam2"]
    with np.load(out / "tracks.npz") as npz:
        assert {"damaged", "cam2"} <= set(npz["cameras"])
