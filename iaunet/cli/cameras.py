"""``iaunet cameras``: arguments only; the work is in ``iaunet.runtime.camera_tasks`` (and the
stream in ``iaunet.runtime.cameras``, whose ``StreamOptions`` holds every default)."""
from __future__ import annotations

import dataclasses

from iaunet.cli import args as common
from iaunet.core.validate import COUNT, FRACTION, NON_NEGATIVE_FLOAT, Bounded

EXIT_CAMERA_FAILED = 2   # outputs written, but a camera reported an error


def add_commands(sub):
    from iaunet.cli.runtime import _model_options
    from iaunet.runtime.cameras import ON_FULL, StreamOptions
    d = StreamOptions()
    p = common.command(sub, "cameras", "videos and a tracker's boxes in, one embedding per track out, crops "
                                       "batched across cameras")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (or URLs) FFmpeg opens, through PyAV")
    p.add_argument("--tracks", nargs="+", required=True, metavar="TRACKS",
                   help="one MOT text file per video, in the same order (frame,id,x,y,w,h,conf,..., 1-based)")
    _model_options(p)
    p.add_argument("--every", type=COUNT, default=d.every, help="frames between a track's embedded crops")
    p.add_argument("--min-height", type=COUNT, default=d.min_height, help="pixels a clipped box must be tall")
    p.add_argument("--min-inside", type=FRACTION, default=d.min_inside, help="fraction of a box inside the frame")
    p.add_argument("--max-overlap", type=FRACTION, default=d.max_overlap,
                   help="largest fraction of a box one other box of its frame may cover (1: no check)")
    p.add_argument("--track-timeout", type=COUNT, default=d.track_timeout,
                   help="frames a track may be absent before it ends")
    p.add_argument("--max-delay-ms", type=NON_NEGATIVE_FLOAT, default=d.max_delay_ms,
                   help="run a batch when its oldest crop has waited this long")
    p.add_argument("--queue-size", type=Bounded(int, 1, 1 << 20), default=d.queue_size,
                   help="crops waiting for inference, at most (at least --batch)")
    p.add_argument("--on-full", choices=ON_FULL, default=d.on_full,
                   help="when the queue is full: block the camera, or drop the oldest crop (counted)")
    p.add_argument("--clip-ring", type=COUNT, default=d.clip_ring, help="video models: crops kept per track for its clip")
    p.add_argument("--realtime", action="store_true", help="pace each camera at its video's frame rate, as a live "
                                                           "camera would")
    p.add_argument("--max-frames", type=COUNT, help="stop each camera after this many frames")
    common.output(p, "report folder (created if missing; tracks.npz, stats.json and latency.png in it are replaced)")
    p.set_defaults(func=run_cameras)


def stream_options(args):
    from iaunet.runtime.cameras import StreamOptions
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StreamOptions)
             if getattr(args, f.name, None) is not None}
    return StreamOptions(**given)


def run_cameras(args):
    from iaunet.core.files import check_report_folder
    from iaunet.runtime.camera_tasks import run_cameras as run
    options = stream_options(args)
    out = check_report_folder(args.output, inputs=list(args.videos) + list(args.tracks))
    _refuse_outputs_over_inputs(out, list(args.videos) + list(args.tracks) + [args.model])
    try:
        stats = run(args.videos, args.tracks, args.model, out, options, 1.0 if args.realtime else 0.0, args.backend,
                    args.threads, args.max_frames)
    except KeyboardInterrupt:
        print(f"interrupted: what was processed is in {out} (marked incomplete)")
        raise
    total = stats["overall"]
    lat = total["latency_ms"]
    print(f"{len(stats['cameras'])} cameras, {total['frames']} frames, {total['tracks']} tracks: "
          f"{total['crops_embedded']} of {total['boxes_seen']} boxes embedded, {total['crops_dropped']} dropped; "
          f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; {total['crops_per_second']} crops/s -> {out}")
    for name, camera in stats["cameras"].items():
        if camera.get("note"):
            print(f"camera {name}: {camera['note']}")
    for name, error in stats["errors"].items():
        print(f"camera {name}: {error}")
    return EXIT_CAMERA_FAILED if stats["errors"] else 0


def _refuse_outputs_over_inputs(out, inputs) -> None:
    """The report's files may go beside the inputs, never over one of them."""
    from pathlib import Path
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.camera_tasks import OUTPUTS
    sources = {Path(i).resolve() for i in inputs if "://" not in str(i)}
    for name in OUTPUTS:
        if (Path(out) / name).resolve() in sources:
            raise IAUnetError(f"output {Path(out) / name} is one of the inputs; expected another -o folder")
