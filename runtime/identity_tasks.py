"""``iaunet cameras``' identities: the camera stream's tracks matched as they end (and
long tracks every ``match_every`` seconds) through ``identities.IdentityMatcher``, and
the files that show the result.

- ``IdentityRun(store, options)`` is called by ``camera_tasks.run_cameras`` with each
  batch of ended tracks and the stream (``on_tracks``); it matches them and records each
  final track's identity.
- ``write_identity_outputs``: ``OUT/camK.txt`` (the tracker's rows, MOT format, with the
  global identity in the id column; rows of tracks that got no embedding are left out),
  ``OUT/identities.json`` (each identity's cameras, time span and tracks),
  ``OUT/timeline.png`` (identities against time, one colour per camera) and a few
  ``OUT/frames/*.jpg`` (per camera the frame with most labelled boxes). Every file is
  written under a temporary name and renamed.
"""
from __future__ import annotations

from pathlib import Path

from iaunet.core.files import atomic_output, write_json
from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Track

IDENTITY_OUTPUTS = ("identities.json", "timeline.png")   # and camK.txt, frames/camK.jpg
FRAMES_SHOWN = 4          # cameras with a labelled frame in OUT/frames
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


class IdentityRun:
    """Matches the stream's tracks into identities; ``assigned`` holds this run's final tracks."""

    def __init__(self, store, options: MatchOptions | None = None, offset: float = 0.0):
        self.matcher = IdentityMatcher(store, options)
        self.options, self.offset = self.matcher.options, offset
        self.assigned: list = []          # (Track, identity)
        self.unembedded = 0
        self.provisional = 0
        self._matched_at: dict = {}       # key -> track's last time when it was last matched provisionally

    def __call__(self, results: list, stream=None) -> None:
        for result in results:
            if result.embedding is None:
                self.unembedded += 1
                continue
            track = Track.from_result(result, self.offset)
            self._matched_at.pop(track.key, None)
            self.assigned.append((track, self.matcher.match(track)))
        if stream is not None and self.options.match_every > 0:
            self._long_tracks(stream)

    def _long_tracks(self, stream) -> None:
        every = self.options.match_every
        for result in stream.open_tracks():
            track = Track.from_result(result, self.offset)
            since = self._matched_at.get(track.key, track.first)
            if track.last - since >= every:
                self.matcher.match(track, final=False)
                self._matched_at[track.key] = track.last
                self.provisional += 1

    def summary(self) -> dict:
        ids = {i for _, i in self.assigned}
        return {"tracks": len(self.assigned), "identities": len(ids), "tracks_without_embedding": self.unembedded,
                "provisional_matches": self.provisional}


def identity_table(assigned: list) -> dict:
    """{identity: {cameras, first, last, tracks}} in identity order."""
    table = {}
    for track, identity in sorted(assigned, key=lambda a: (a[1], a[0].first, a[0].camera)):
        entry = table.setdefault(identity, {"identity": identity, "cameras": [], "first": track.first,
                                            "last": track.last, "tracks": []})
        if track.camera not in entry["cameras"]:
            entry["cameras"].append(track.camera)
        entry["first"], entry["last"] = min(entry["first"], track.first), max(entry["last"], track.last)
        entry["tracks"].append({"camera": track.camera, "track_id": track.track_id, "first_frame": track.first_frame,
                                "last_frame": track.last_frame, "first": round(track.first, 3),
                                "last": round(track.last, 3)})
    return table


def global_rows(rows: dict, camera: str, assigned: list) -> list:
    """The tracker's rows of one camera ({frame: (boxes, ids)}, 0-based boxes) as MOT
    lines with the global identity of the track segment each belongs to."""
    segments = {}
    for track, identity in assigned:
        if track.camera == camera:
            segments.setdefault(track.track_id, []).append((track.first_frame, track.last_frame, identity))
    lines = []
    for frame, (boxes, ids) in rows.items():
        for (x, y, w, h), tid in zip(boxes.tolist(), ids.tolist()):
            identity = next((g for a, b, g in segments.get(tid, ()) if a <= frame <= b), None)
            if identity is not None:
                lines.append(f"{frame},{identity},{x + 1:.2f},{y + 1:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n")
    return lines


def write_identity_outputs(out, names, videos, track_rows, run: IdentityRun, store_desc: str) -> dict:
    """camK.txt per camera, identities.json, timeline.png, frames/*.jpg; returns the summary."""
    out = Path(out)
    table = identity_table(run.assigned)
    labelled = {}
    for name, rows in zip(names, track_rows):
        lines = global_rows(rows, name, run.assigned)
        with atomic_output(out / f"{name}.txt") as tmp:
            Path(tmp).write_text("".join(lines))
        labelled[name] = lines
    summary = run.summary() | {"store": store_desc, "threshold": run.options.threshold,
                               "window": run.options.window, "match_every": run.options.match_every,
                               "representatives": run.options.representatives,
                               "cross_camera_identities": sum(len(e["cameras"]) > 1 for e in table.values())}
    write_json(out / "identities.json", summary | {"identities": list(table.values())})
    plot_timeline(table, names, out / "timeline.png")
    (out / "frames").mkdir(exist_ok=True)
    summary["frames"] = draw_frames(out / "frames", names, videos, labelled)
    return summary


def plot_timeline(table: dict, names, path) -> None:
    """One row per identity, a bar per track from its first to its last time, coloured by camera."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    entries = sorted(table.values(), key=lambda e: e["first"])
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.22 * len(entries) + 1)))
    for row, entry in enumerate(entries):
        for t in entry["tracks"]:
            ax.barh(row, max(t["last"] - t["first"], 0.05), left=t["first"], height=0.7,
                    color=colours.get(t["camera"], "grey"))
    ax.set_yticks(range(len(entries)), [str(e["identity"]) for e in entries], fontsize=7)
    ax.set(xlabel="seconds", ylabel="identity", title=f"{len(entries)} identities across {len(names)} cameras")
    ax.legend(handles=[matplotlib.patches.Patch(color=c, label=n) for n, c in colours.items()], fontsize=8,
              loc="upper right")
    ax.invert_yaxis()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def draw_frames(folder: Path, names, videos, labelled: dict) -> list:
    """Per camera (up to FRAMES_SHOWN), the frame with the most labelled boxes, boxes drawn
    and labelled with their identity; returns the files written (relative names)."""
    from PIL import Image, ImageDraw
    from iaunet.runtime.camera_tasks import video_frames
    written = []
    for name, video in list(zip(names, videos))[:FRAMES_SHOWN]:
        per_frame = {}
        for line in labelled[name]:
            f, g, x, y, w, h = line.split(",")[:6]
            per_frame.setdefault(int(f), []).append((int(g), float(x) - 1, float(y) - 1, float(w), float(h)))
        if not per_frame:
            continue
        best = min(per_frame, key=lambda f: (-len(per_frame[f]), f))
        image = next((img for index, _, img in video_frames(video, {}) if index >= best), None)
        if image is None:
            continue
        pic = Image.fromarray(image)
        draw = ImageDraw.Draw(pic)
        for g, x, y, w, h in per_frame[best]:
            colour = PALETTE[g % len(PALETTE)]
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
            draw.rectangle([x, max(0, y - 12), x + 8 + 7 * len(str(g)), max(0, y - 12) + 12], fill=colour)
            draw.text((x + 3, max(0, y - 12)), str(g), fill="white")
        rel = f"frames/{name}.jpg"
        with atomic_output(folder.parent / rel) as tmp:
            pic.save(tmp, format="JPEG", quality=90)
        written.append(rel)
    return written

