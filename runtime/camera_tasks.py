"""``iaunet cameras``' job: videos and MOT track files in, ``tracks.npz``, ``stats.json`` and
``latency.png`` out, through ``iaunet.runtime.cameras``.

- ``read_tracks``: a MOT Challenge text file (``frame,id,x,y,w,h,conf,...``, 1-based
  frames and pixels) -> per frame, 0-based boxes and ids; a bad line is an IAUnetError
  naming ``file:line``.
- ``video_frames``: PyAV (imported here, lazily) decodes anything FFmpeg opens; a frame's
  index comes from its timestamp, so a packet lost to corruption does not shift the frames
  after it against their tracks. A packet the decoder rejects, and a frame it flags as
  corrupt (its damage concealed, so its pixels are not the scene's), are counted and
  skipped: no crop is cut from smeared pixels.
- ``run_cameras``: one thread per camera decodes and pushes (``realtime``: paced at the
  video's frame rate), the stream's worker embeds, the caller's thread collects ended
  tracks. A camera whose video cannot be opened, ends before its tracks do, or fails
  mid-stream is reported in its stats and the others go on. Ctrl-C stops the cameras,
  embeds what is queued, writes what was processed marked ``complete: false``, and
  re-raises. Every file is written under a temporary name and renamed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.files import atomic_output, write_json
from iaunet.core.log import get_logger
from iaunet.runtime.cameras import CameraStream, StreamOptions

log = get_logger("runtime")
OUTPUTS = ("tracks.npz", "stats.json", "latency.png")
MOT_COLUMNS = 6    # frame, id, x, y, w, h are required; conf and the rest are ignored


def read_tracks(path) -> dict:
    """{frame (1-based): (boxes float64 N x 4, 0-based x, y, w, h; ids int64 N)}."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IAUnetError(f"track file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IAUnetError(f"track file {path} cannot be read ({exc}); expected MOT text") from None
    rows = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        frame, track, box = _parse_line(line, f"{path}:{number}")
        boxes, ids = rows.setdefault(frame, ([], []))
        if track in ids:
            raise IAUnetError(f"{path}:{number}: track {track} appears twice in frame {frame}; expected one box "
                              "per track and frame")
        boxes.append(box)
        ids.append(track)
    return {f: (np.array(b, dtype=np.float64), np.array(i, dtype=np.int64)) for f, (b, i) in sorted(rows.items())}


def _parse_line(line: str, where: str) -> tuple:
    fields = [f.strip() for f in line.split(",")]
    expected = "expected frame,id,x,y,w,h[,conf,...] with an integer frame >= 1 and id, and w, h > 0"
    if len(fields) < MOT_COLUMNS:
        raise IAUnetError(f"{where}: {len(fields)} fields in {line.strip()!r}; {expected}")
    try:
        frame, track = int(float(fields[0])), int(float(fields[1]))
        x, y, w, h = (float(v) for v in fields[2:6])
    except ValueError:
        raise IAUnetError(f"{where}: unreadable number in {line.strip()!r}; {expected}") from None
    if frame < 1 or frame != float(fields[0]) or track != float(fields[1]) or not (w > 0 and h > 0) \
            or not all(np.isfinite((x, y, w, h))):
        raise IAUnetError(f"{where}: {line.strip()!r}; {expected}")
    return frame, track, (x - 1, y - 1, w, h)


def is_url(source: str) -> bool:
    return "://" in str(source)


def video_frames(source, stats: dict):
    """Yield (frame index, seconds, H x W x 3 uint8 RGB) from a video file or URL; counts
    skipped packets and frames in ``stats['corrupt_packets']`` and ``stats['corrupt_frames']``
    and sets ``stats['fps']``."""
    import av
    try:
        container = av.open(str(source), timeout=10) if is_url(source) else av.open(str(source))
    except (av.error.FFmpegError, OSError) as exc:
        raise IAUnetError(f"cannot open video {source}: {exc}") from None
    with container:
        if not container.streams.video:
            raise IAUnetError(f"{source} holds no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        stats["fps"], stats["corrupt_packets"], stats["corrupt_frames"] = fps, 0, 0
        first, last = None, 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                stats["corrupt_packets"] += 1
                continue
            for frame in frames:
                seconds = frame.time if frame.time is not None else last / fps
                first = seconds if first is None else first
                index = max(last + 1, int(round((seconds - first) * fps)) + 1)
                last = index
                if frame.is_corrupt:
                    stats["corrupt_frames"] += 1
                    continue
                yield index, float(seconds), frame.to_ndarray(format="rgb24")


def _feed(camera, source, tracks: dict, realtime: float, start: float, stop: threading.Event, info: dict,
          max_frames: int | None) -> None:
    """One camera's thread: decode, pace (``realtime``: the speed against the video's clock,
    1 live, 2 twice as fast; 0 unpaced), push; report failures in ``info``."""
    last_track = max(tracks, default=0)
    empty = (np.zeros((0, 4)), np.zeros(0, np.int64))
    error = None
    try:
        t0 = None
        for index, seconds, frame in video_frames(source, info):
            if stop.is_set() or (max_frames and index > max_frames):
                break
            t0 = seconds if t0 is None else t0
            if realtime:
                delay = start + (seconds - t0) / realtime - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            camera.push(frame, index, seconds, *tracks.get(index, empty))
            info["frames_decoded"] = info.get("frames_decoded", 0) + 1
            info["last_frame"] = index
        else:
            if info.get("last_frame", 0) < last_track and not max_frames:
                error = f"video ended at frame {info.get('last_frame', 0)}, its tracks go on to frame {last_track}"
    except IAUnetError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001  (a camera's failure is reported; the others go on)
        error = f"{type(exc).__name__}: {exc}"
    if info.get("corrupt_packets") or info.get("corrupt_frames"):
        info["note"] = (f"{info['corrupt_packets']} corrupt packet(s) and {info['corrupt_frames']} corrupt frame(s) "
                        "skipped")
        log.warning("camera %s: %s", camera.name, info["note"])
    if error:
        log.warning("camera %s: %s", camera.name, error)
    try:
        camera.close(error)
    except Exception as exc:  # noqa: BLE001  (the stream itself failed; the caller sees it)
        info["close_error"] = str(exc)


def check_inputs(videos, track_files) -> list:
    """The parsed track files, after checking that each video has one; before any work."""
    if len(videos) != len(track_files):
        raise IAUnetError(f"{len(videos)} videos but {len(track_files)} track files; expected one track file per "
                          "video, in the same order")
    for video in videos:
        if not is_url(video) and not Path(video).is_file():
            raise IAUnetError(f"video {video} not found; expected a file FFmpeg opens (or a URL)")
    return [read_tracks(t) for t in track_files]


def camera_names(videos) -> list:
    """Names from the video files' stems (cam1.mp4 -> cam1), numbered where two would clash
    (the same file twice is two cameras)."""
    stems = [Path(str(v).rstrip("/")).stem or f"cam{i + 1}" for i, v in enumerate(videos)]
    return [s if stems.count(s) == 1 else f"{s}-{i + 1}" for i, s in enumerate(stems)]


def run_cameras(videos, track_files, model, out, options: StreamOptions | None = None, realtime: float = 0.0,
                backend: str = "auto", threads: int | None = None, max_frames: int | None = None,
                on_tracks=None) -> dict:
    """Run every camera through one stream; write OUT/tracks.npz, stats.json, latency.png.
    ``realtime``: pace each camera at this multiple of its video's frame rate (0: as fast
    as it decodes). ``on_tracks(results, stream)`` is called with each batch of ended
    tracks as they come (``stream`` None for the last), e.g. an identity matcher. Returns
    the stats (with ``complete``); re-raises KeyboardInterrupt after writing."""
    def collect(new, live=True):
        results.extend(new)
        if on_tracks is not None:
            on_tracks(new, stream if live else None)

    from iaunet.runtime.embedder import Embedder
    options = options or StreamOptions()
    tracks = check_inputs(videos, track_files)
    out = Path(out)
    with Embedder.open(model, backend=backend, threads=threads) as embedder:
        stream = CameraStream.from_embedder(embedder, options)
        names, stop, infos = camera_names(videos), threading.Event(), []
        start = time.perf_counter() + 0.05
        workers = []
        for name, video, rows, path in zip(names, videos, tracks, track_files):
            info = {"video": str(video), "tracks_file": str(path)}
            infos.append(info)
            workers.append(threading.Thread(target=_feed, name=f"camera-{name}", daemon=True,
                                            args=(stream.camera(name), video, rows, float(realtime), start, stop,
                                                  info, max_frames)))
        results, complete = [], True
        try:
            for w in workers:
                w.start()
            while any(w.is_alive() for w in workers):
                collect(stream.poll())
                workers[0].join(0.05) if workers[0].is_alive() else time.sleep(0.05)
            stream.close()
            collect(list(stream.results()), live=False)
        except KeyboardInterrupt:
            complete = False
            stop.set()
            for w in workers:
                w.join()
            stream.close()
            collect(list(stream.results()), live=False)
            _write(out, results, stream, names, infos, embedder.card, complete, realtime)
            raise
        return _write(out, results, stream, names, infos, embedder.card, complete, realtime)


def _write(out: Path, results: list, stream: CameraStream, names, infos, card, complete: bool, realtime) -> dict:
    stats = stream.stats()
    for name, info in zip(names, infos):
        stats["cameras"][name] = {**info, **stats["cameras"][name]}
    stats["overall"]["tracks_without_embedding"] = sum(r.embedding is None for r in results)
    stats.update(complete=complete, realtime=realtime, model=card.name, model_id=card.model_id,
                 variant=card.variant, options=asdict(stream.options),
                 errors={n: s["error"] for n, s in stats["cameras"].items() if s["error"]})
    out.mkdir(parents=True, exist_ok=True)
    write_tracks(out / "tracks.npz", results, card, complete)
    write_json(out / "stats.json", stats)
    plot_latency(stream, out / "latency.png")
    return stats


def write_tracks(path, results: list, card, complete: bool = True) -> None:
    """The embedded tracks, one row each, with their camera, id, frames, times and counts."""
    kept = [r for r in results if r.embedding is not None]
    kept.sort(key=lambda r: (r.camera, r.first_frame, r.track_id))
    dim = card.embedding_dim
    columns = {
        "embeddings": np.stack([r.embedding for r in kept]) if kept else np.zeros((0, dim), np.float32),
        "cameras": np.array([r.camera for r in kept], dtype=str),
        "track_ids": np.array([r.track_id for r in kept], dtype=np.int64),
        "first_frame": np.array([r.first_frame for r in kept], dtype=np.int64),
        "last_frame": np.array([r.last_frame for r in kept], dtype=np.int64),
        "first_time": np.array([r.first_time for r in kept], dtype=np.float64),
        "last_time": np.array([r.last_time for r in kept], dtype=np.float64),
        "crops_seen": np.array([r.crops_seen for r in kept], dtype=np.int64),
        "crops_taken": np.array([r.crops_taken for r in kept], dtype=np.int64),
        "crops_embedded": np.array([r.crops_embedded for r in kept], dtype=np.int64),
        "crops_dropped": np.array([r.crops_dropped for r in kept], dtype=np.int64),
        "model_id": np.array(card.model_id), "complete": np.array(complete)}
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **columns)


def plot_latency(stream: CameraStream, path) -> None:
    """Each camera's latency distribution (from its histogram) and each batch's oldest
    sample's latency over the run, with the batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from iaunet.runtime.cameras import LATENCY_RANGE, LATENCY_STEP
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    edges = LATENCY_RANGE[0] * LATENCY_STEP ** np.arange(len(next(iter(stream.cameras.values())).latency.bins)) * 1000 \
        if stream.cameras else np.zeros(0)
    used = []
    for name, camera in stream.cameras.items():
        hist = camera.latency
        if hist.total:
            left.plot(edges, np.cumsum(hist.bins) / hist.total, label=name)
            used += [edges[np.flatnonzero(hist.bins)[0]], hist.max * 1000]
    if used:
        left.set_xlim(min(used) / 2, max(used) * 2)
    left.set(xscale="log", xlabel="latency, frame arrival to embedding (ms)", ylabel="fraction of crops",
             title="latency per camera")
    if stream.cameras:
        left.axvline(stream.options.max_delay_ms, color="grey", ls=":", label="--max-delay-ms")
        left.legend(fontsize=8)
    if stream.timeline:
        t, size, oldest = (np.array(v) for v in zip(*stream.timeline))
        right.scatter(t, oldest * 1000, s=6, c=size, cmap="viridis")
        right.set(xlabel="seconds since start", ylabel="oldest sample's latency (ms)",
                  title="batches (colour: batch size)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
