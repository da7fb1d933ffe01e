"""Synthetic camera scenes with ground truth: the people of ``synth`` walking through
several cameras' views, written as videos with MOT files (``iaunet synth --scenes``).

Per camera ``camK.mp4`` (FFmpeg's native ``mpeg4`` encoder, which every PyAV wheel
carries), ``camK.gt.txt`` (MOT ground truth: ``frame,id,x,y,w,h,1,1,visibility``, 1-based
frames and pixels, per-camera track ids), ``camK.tracks.txt`` (what a tracker gives: the
ground truth with box jitter, missed frames, fragmented tracks and switched ids, as
``frame,id,x,y,w,h,conf,-1,-1,-1``), and for the scene ``identities.json``: the global
identity of every (camera, ground-truth track), and the identity most of each tracker
track's boxes belong to.

Each identity visits a few cameras in turn, with a gap between visits; in a view it walks
across (side views) or along a diagonal towards or away from the camera (front and back
views), its box height following the ground line's perspective (walks of 3 to 7 s, gaps
of 1 to 4 s, both shrunk in proportion in scenes shorter than 20 s). People overlap one
another and a fixed occluder per camera (a pole or a low wall); ``visibility`` is the
fraction of the box that neither a nearer person's box nor the occluder covers. Each
camera has its own colour cast, background and noise. numpy, Pillow and PyAV (imported
here only to encode). Deterministic by seed (the encoder's bytes may differ between
FFmpeg builds; the ground truth does not).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from iaunet.core.errors import IAUnetError
from iaunet.train.data.synth import CANVAS_H, CANVAS_W, VIEWS, Camera, _background, _identities, _Painter, _person

VIDEO_CODEC = "mpeg4"          # FFmpeg's own encoder: in every PyAV wheel (libx264 is not)
VIDEO_BITRATE = 4_000_000
DEFAULT_FRAME_SIZE = (480, 272)  # width, height (mpeg4 wants even sizes)
WALK_PHASES = 8                # poses per walking cycle, drawn once per (identity, view)
KEY = (255, 0, 255)            # sprite background, made transparent
GAP_SECONDS = (1.0, 4.0)       # between one camera's exit and the next camera's entry
CROSS_SECONDS = (3.0, 7.0)     # how long a walk through a view takes
FULL_SCENE = 20.0              # seconds; shorter scenes shrink walks and gaps in proportion
NOISE_FIELDS = 6               # precomputed sensor-noise frames cycled per camera


@dataclass
class Visit:
    """One identity's walk through one camera's view."""
    identity: int
    camera: int
    start: float                 # seconds; may be negative (already in view when the video starts)
    duration: float
    path: tuple                  # (x0, g0, x1, g1): foot x and ground-line fraction at start and end
    view: str
    track: int = 0               # per-camera ground-truth id, set when the camera's visits are sorted


@dataclass
class Frame:
    """One person in one frame: box (x, y, w, h) in 0-based pixels, drawing order by depth."""
    visit: Visit
    box: tuple
    phase: int
    visibility: float = 1.0


@dataclass
class SceneSpec:
    cameras: int = 3
    seconds: float = 20.0
    fps: int = 25
    identities: int = 12
    seed: int = 0
    frame_size: tuple = DEFAULT_FRAME_SIZE
    tracker: dict = field(default_factory=lambda: dict(jitter=0.03, miss=0.04, miss_occluded=0.5,
                                                       fragment=0.15, switch=0.1))


def plan_visits(spec: SceneSpec, rng) -> list:
    """Every identity's visits, in camera order chosen at random, separated by gaps."""
    visits, scale = [], min(1.0, spec.seconds / FULL_SCENE)
    for identity in range(spec.identities):
        t = float(rng.uniform(-0.5, 0.5) * CROSS_SECONDS[1] * scale + rng.uniform(0, 0.6) * spec.seconds)
        order = rng.permutation(spec.cameras)[:int(rng.integers(min(2, spec.cameras), spec.cameras + 1))]
        for cam in order:
            if t >= spec.seconds:
                break
            duration = float(rng.uniform(*CROSS_SECONDS)) * scale
            visits.append(Visit(identity, int(cam), t, duration, *_walk(rng)))
            t += duration + float(rng.uniform(*GAP_SECONDS)) * scale
    return visits


def _walk(rng) -> tuple:
    if rng.random() < 0.65:  # across the view
        g = float(rng.uniform(0.55, 0.95))
        left = rng.random() < 0.5
        path = (-0.15, g, 1.15, g + float(rng.uniform(-0.05, 0.05)))
        return (path if left else (path[2], path[3], path[0], path[1])), ("right" if left else "left")
    x, towards = float(rng.uniform(0.2, 0.8)), rng.random() < 0.5
    path = (x, 0.45, x + float(rng.uniform(-0.3, 0.3)), 1.25)
    return (path if towards else (path[2], path[3], path[0], path[1])), ("front" if towards else "back")


def _box(visit: Visit, t: float, size: tuple) -> tuple:
    """The person's box at time t (0-based pixels; may reach outside the frame)."""
    W, H = size
    a = (t - visit.start) / visit.duration
    x0, g0, x1, g1 = visit.path
    foot_x, ground = (x0 + a * (x1 - x0)) * W, g0 + a * (g1 - g0)
    h = H * (0.25 + 0.6 * (ground - 0.4))  # nearer the bottom of the view, taller
    w = h * CANVAS_W / CANVAS_H
    return (foot_x - w / 2, ground * H - h, w, h)


def frame_people(visits: list, camera: int, frame: int, spec: SceneSpec) -> list:
    """The people in ``camera`` at ``frame`` (0-based), farthest first, with visibilities."""
    t = frame / spec.fps
    W, H = spec.frame_size
    people = []
    for v in visits:
        if v.camera == camera and v.start <= t <= v.start + v.duration:
            box = _box(v, t, spec.frame_size)
            if box[0] + box[2] > 0 and box[0] < W and box[1] + box[3] > 0 and box[1] < H:
                phase = int((t - v.start) * 2.0 * WALK_PHASES) % WALK_PHASES  # two strides a second
                people.append(Frame(v, box, phase))
    people.sort(key=lambda p: p.box[1] + p.box[3])  # foot line: nearer people are drawn later
    return people


def _visibility(people: list, occluder: tuple) -> None:
    """Fraction of each box covered neither by a nearer person's box nor the occluder (sampled on a grid)."""
    gy, gx = np.meshgrid(np.linspace(0.02, 0.98, 16), np.linspace(0.02, 0.98, 8), indexing="ij")
    for i, p in enumerate(people):
        x, y, w, h = p.box
        px, py = x + gx * w, y + gy * h
        covered = _inside(px, py, occluder)
        for q in people[i + 1:]:
            covered |= _inside(px, py, q.box)
        p.visibility = float(1 - covered.mean())


def _inside(px, py, box) -> np.ndarray:
    x, y, w, h = box
    return (px >= x) & (px < x + w) & (py >= y) & (py < y + h)


class _Sprites:
    """Each identity drawn once per (view, walking phase) on a key colour, as RGBA."""

    def __init__(self, people, rng):
        self.people, self.cache, self.seed = people, {}, int(rng.integers(2 ** 31))

    def get(self, identity: int, view: str, phase: int) -> Image.Image:
        key = (identity, view, phase)
        if key not in self.cache:
            p = _Painter(KEY)
            _person(p, self.people[identity], view, 2 * np.pi * phase / WALK_PHASES,
                    np.random.default_rng((self.seed, identity, VIEWS.index(view), phase)))
            rgb = np.asarray(p.img)
            alpha = np.where((rgb == KEY).all(axis=2), 0, 255).astype(np.uint8)
            self.cache[key] = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        return self.cache[key]


def _camera_backdrop(cam: Camera, size: tuple, rng) -> tuple:
    """(background image, occluder box): the camera's clutter drawn at its frame size."""
    p = _Painter(cam.background)
    _background(p, cam, rng)
    W, H = size
    backdrop = p.img.resize(size, Image.BILINEAR)
    if rng.random() < 0.5:  # a pole
        w = W * float(rng.uniform(0.03, 0.06))
        occluder = (float(rng.uniform(0.2, 0.8)) * W, 0.0, w, float(H))
    else:  # a low wall in the foreground
        occluder = (float(rng.uniform(0.0, 0.5)) * W, H * float(rng.uniform(0.72, 0.8)), W * 0.35, float(H))
    return backdrop, occluder, tuple(int(v * 0.6) for v in cam.background)


def _render(backdrop, occluder, occ_colour, people, sprites, cam: Camera, noise) -> np.ndarray:
    img = backdrop.copy()
    for p in people:
        x, y, w, h = p.box
        sprite = sprites.get(p.visit.identity, p.visit.view, p.phase)
        size = (max(1, round(w)), max(1, round(h)))
        img.paste(sprite.resize(size, Image.BILINEAR), (round(x), round(y)), sprite.resize(size, Image.BILINEAR))
    ox, oy, ow, oh = occluder
    img.paste(occ_colour, (round(ox), round(oy), round(ox + ow), round(oy + oh)))
    arr = np.asarray(img, dtype=np.float32) * (cam.gain * cam.brightness).astype(np.float32) + noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def tracker_output(gt_rows: list, rng, options: dict, frames: int) -> tuple:
    """A tracker's rows made from ground-truth rows (frame, id, x, y, w, h, visibility):
    boxes jittered, some boxes missed (more when occluded), some tracks cut in two (a new
    id after the cut), some pairs of tracks that meet swapping ids there. Returns
    (rows (frame, id, x, y, w, h, conf), {tracker id: gt id whose boxes it holds most})."""
    by_track = {}
    for row in gt_rows:
        by_track.setdefault(row[1], []).append(row)
    owner = {gt: gt for gt in by_track}  # the tracker id each gt row carries, per gt track and from which frame
    cuts = {}
    next_id = max(by_track, default=0) + 1
    for gt, rows in by_track.items():
        if len(rows) > 20 and rng.random() < options["fragment"]:
            cuts[gt] = [(0, gt), (rows[int(rng.integers(len(rows) // 4, 3 * len(rows) // 4))][0], next_id)]
            next_id += 1
        else:
            cuts[gt] = [(0, gt)]
    _switch_ids(by_track, cuts, rng, options["switch"])
    out, holds = [], {}
    for gt, rows in by_track.items():
        for frame, _, x, y, w, h, vis in rows:
            if rng.random() < options["miss"] + (options["miss_occluded"] if vis < 0.4 else 0):
                continue
            tid = [tid for start, tid in cuts[gt] if frame >= start][-1]
            j = options["jitter"] * h
            x, y = x + rng.normal(0, j / 2), y + rng.normal(0, j / 2)
            w, h = max(2.0, w * (1 + rng.normal(0, options["jitter"]))), max(4.0, h * (1 + rng.normal(0, options["jitter"])))
            out.append((frame, tid, x, y, w, h, float(np.clip(0.55 + 0.45 * vis - rng.uniform(0, 0.1), 0.05, 1))))
            holds.setdefault(tid, {}).setdefault(gt, 0)
            holds[tid][gt] += 1
    out.sort(key=lambda r: (r[0], r[1]))
    return out, {tid: max(counts, key=counts.get) for tid, counts in holds.items()}


def _switch_ids(by_track: dict, cuts: dict, rng, rate: float) -> None:
    """Two tracks present in the same frame swap their tracker ids from that frame on."""
    ids = sorted(by_track)
    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1:]:
            shared = sorted({r[0] for r in by_track[a]} & {r[0] for r in by_track[b]})
            if len(shared) > 10 and rng.random() < rate and len(cuts[a]) == 1 and len(cuts[b]) == 1:
                frame = shared[len(shared) // 2]
                cuts[a].append((frame, cuts[b][0][1]))
                cuts[b].append((frame, cuts[a][0][1]))
                return  # at most one switch per camera: "a few"


def _mot_line(values) -> str:
    return ",".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)


def generate_scenes(out, spec: SceneSpec | None = None) -> dict:
    """Write the scene's videos, MOT files and ``identities.json`` into ``out``; returns a summary."""
    spec = spec or SceneSpec()
    if spec.frame_size[0] % 2 or spec.frame_size[1] % 2:
        raise IAUnetError(f"frame size {spec.frame_size[0]}x{spec.frame_size[1]} must be even in both dimensions "
                          f"(the {VIDEO_CODEC} encoder's 4:2:0 chroma)")
    root = Path(out)
    rng = np.random.default_rng(spec.seed)
    cams = [Camera.draw(rng) for _ in range(spec.cameras)]
    sprites = _Sprites(_identities(spec.identities, rng), rng)
    visits = plan_visits(spec, rng)
    frames = int(round(spec.seconds * spec.fps))
    identities = {"cameras": [], "gt_tracks": {}, "tracker_tracks": {}, "seed": spec.seed}
    summary = {"cameras": spec.cameras, "seconds": spec.seconds, "fps": spec.fps, "frames": frames,
               "identities": spec.identities, "frame_size": list(spec.frame_size), "codec": VIDEO_CODEC,
               "seed": spec.seed, "gt_tracks": 0, "tracker_tracks": 0, "gt_boxes": 0}
    for c, cam in enumerate(cams):
        name = f"cam{c + 1}"
        mine = sorted((v for v in visits if v.camera == c), key=lambda v: v.start)
        gt_rows = _write_camera(root / f"{name}.mp4", spec, cam, mine, visits, c, sprites, rng, frames)
        rows, held = tracker_output(gt_rows, rng, spec.tracker, frames)
        (root / f"{name}.gt.txt").write_text("".join(
            _mot_line((f + 1, tid, x + 1, y + 1, w, h, 1, 1, vis)) + "\n" for f, tid, x, y, w, h, vis in gt_rows))
        (root / f"{name}.tracks.txt").write_text("".join(
            _mot_line((f + 1, tid, x + 1, y + 1, w, h, conf, -1, -1, -1)) + "\n" for f, tid, x, y, w, h, conf in rows))
        gt_identity = {v.track: v.identity for v in mine if v.track}
        identities["cameras"].append(name)
        identities["gt_tracks"][name] = {str(k): gt_identity[k] for k in sorted(gt_identity)}
        identities["tracker_tracks"][name] = {str(k): gt_identity[held[k]] for k in sorted(held)}
        summary["gt_tracks"] += len(gt_identity)
        summary["tracker_tracks"] += len(held)
        summary["gt_boxes"] += len(gt_rows)
    (root / "identities.json").write_text(json.dumps(identities, indent=1) + "\n")
    (root / "scenes.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_camera(path, spec, cam, mine, visits, c, sprites, rng, frames) -> list:
    """Render and encode one camera; returns its ground-truth rows (0-based frame and pixels)."""
    import av
    backdrop, occluder, occ_colour = _camera_backdrop(cam, spec.frame_size, rng)
    noise = [rng.normal(0, 3.0, (*spec.frame_size[::-1], 3)).astype(np.float32) for _ in range(NOISE_FIELDS)]
    seen, rows = [], []
    with av.open(str(path), "w") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=spec.fps)
        stream.width, stream.height = spec.frame_size
        stream.pix_fmt, stream.bit_rate = "yuv420p", VIDEO_BITRATE
        for f in range(frames):
            people = frame_people(visits, c, f, spec)
            _visibility(people, occluder)
            for p in people:
                if not p.visit.track:
                    seen.append(p.visit)
                    p.visit.track = len(seen)
                rows.append((f, p.visit.track, *map(float, p.box), round(p.visibility, 3)))
            image = _render(backdrop, occluder, occ_colour, people, sprites, cam, noise[f % NOISE_FIELDS])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows
