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
    common.output(p, "report folder (created if missing; tracks.npz, stats.json, latency.png, camK.txt, "
                     "identities.json, timeline.png, frames/ and score.json in it are replaced)")
    _identity_options(p)
    p.set_defaults(func=run_cameras)


def _identity_options(p):
    from iaunet.runtime.identities import THRESHOLD, MatchOptions
    d = MatchOptions()
    g = p.add_argument_group("identities across cameras")
    g.add_argument("--store", metavar="STORE", help="where identities persist: a folder (default OUT/store), "
                   "milvus://HOST:PORT/COLLECTION, or milvus-lite:PATH.db")
    g.add_argument("--threshold", type=THRESHOLD, default=d.threshold,
                   help="cosine similarity a track needs to join an identity")
    g.add_argument("--window", type=NON_NEGATIVE_FLOAT, default=d.window,
                   help="seconds an identity stays matchable after it was last seen")
    g.add_argument("--match-every", type=NON_NEGATIVE_FLOAT, default=d.match_every,
                   help="seconds between matches of a track still in view (0: only when it ends)")
    g.add_argument("--representatives", type=COUNT, default=d.representatives,
                   help="embeddings kept per identity for matching")
    g.add_argument("--camera-graph", metavar="JSON", help='minimum travel seconds between cameras, '
                   '{"cam1": {"cam2": 4.0}}')
    g.add_argument("--start-time", type=Bounded(float), default=0.0,
                   help="seconds added to the videos' times (e.g. the Unix time they start at) in the store")
    g.add_argument("--gt", metavar="DIR", help="a scene from 'iaunet synth --scenes': score the identities with "
                   "TrackEval (IDF1, IDP, IDR) and track-level rank-1/mAP into OUT/score.json")


def stream_options(args):
    from iaunet.runtime.cameras import StreamOptions
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StreamOptions)
             if getattr(args, f.name, None) is not None}
    return StreamOptions(**given)


def run_cameras(args):
    from iaunet.core.files import check_report_folder
    from iaunet.runtime.camera_tasks import check_inputs, run_cameras as run
    options = stream_options(args)
    out = check_report_folder(args.output, inputs=list(args.videos) + list(args.tracks))
    _refuse_outputs_over_inputs(out, list(args.videos) + list(args.tracks) + [args.model], args.videos)
    check_inputs(args.videos, args.tracks)     # before the store is opened: a bad input creates nothing
    created = not out.exists()
    identities = _open_identities(args, out)   # the store's lock is taken before any work
    try:
        stats = run(args.videos, args.tracks, args.model, out, options, 1.0 if args.realtime else 0.0, args.backend,
                    args.threads, args.max_frames, on_tracks=identities.run)
        ident = identities.finish(out, args.videos, args.tracks)
    except KeyboardInterrupt:
        identities.store.close()
        print(f"interrupted: what was processed is in {out} (marked incomplete)")
        raise
    except BaseException:
        identities.store.close()
        _remove_if_only_store(out, created)
        raise
    total = stats["overall"]
    lat = total["latency_ms"]
    print(f"{len(stats['cameras'])} cameras, {total['frames']} frames, {total['tracks']} tracks: "
          f"{total['crops_embedded']} of {total['boxes_seen']} boxes embedded, {total['crops_dropped']} dropped; "
          f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; {total['crops_per_second']} crops/s -> {out}")
    print(f"{ident['tracks']} tracks matched into {ident['identities']} identities "
          f"({ident['cross_camera_identities']} seen by more than one camera) in {ident['store']}")
    if "score" in ident:
        sc = ident["score"]
        print(f"score against {args.gt}: IDF1 {sc['IDF1']:.3f}, IDP {sc['IDP']:.3f}, IDR {sc['IDR']:.3f}; "
              f"track rank-1 {sc['rank1']:.3f}, mAP {sc['mAP']:.3f} -> {out / 'score.json'}")
    for name, camera in stats["cameras"].items():
        if camera.get("note"):
            print(f"camera {name}: {camera['note']}")
    for name, error in stats["errors"].items():
        print(f"camera {name}: {error}")
    return EXIT_CAMERA_FAILED if stats["errors"] else 0


class _Identities:
    """The identity side of one ``iaunet cameras`` run: store, matcher, outputs, score."""

    def __init__(self, args, store, options):
        from iaunet.runtime.identity_tasks import IdentityRun
        self.args, self.store = args, store
        self.run = IdentityRun(store, options, args.start_time)

    def finish(self, out, videos, track_files) -> dict:
        from iaunet.runtime.camera_tasks import camera_names, read_tracks
        from iaunet.runtime.identity_store import describe_store
        from iaunet.runtime.identity_tasks import write_identity_outputs
        self.store.close()
        names = camera_names(videos)
        summary = write_identity_outputs(out, names, videos, [read_tracks(t) for t in track_files], self.run,
                                         describe_store(self.args.store))
        if self.args.gt:
            from iaunet.identity_score import score_run
            summary["score"] = score_run(out, self.args.gt, names)
        return summary


def _remove_if_only_store(out, created: bool) -> None:
    """A run that failed before writing anything leaves no folder it created for its store."""
    import shutil
    from pathlib import Path
    if created and Path(out).is_dir() and [p.name for p in Path(out).iterdir()] in ([], ["store"]):
        shutil.rmtree(out)


def _open_identities(args, out):
    """Check the identity options and open the store (refused in one line when another
    process writes it), before any work."""
    from pathlib import Path
    from iaunet.runtime.embedder import read_card
    from iaunet.runtime.identities import MatchOptions, read_camera_graph
    from iaunet.runtime.identity_store import open_store
    if args.gt:
        from iaunet.identity_score import check_scene
        check_scene(args.gt, len(args.videos))
    travel = read_camera_graph(args.camera_graph) if args.camera_graph else {}
    options = MatchOptions(args.threshold, args.window, args.match_every, args.representatives, travel)
    card = read_card(args.model)
    created = not Path(out).exists()
    if not args.store:
        args.store = str(Path(out) / "store")
        Path(out).mkdir(exist_ok=True)
    try:
        return _Identities(args, open_store(args.store, card.embedding_dim, card.model_id), options)
    except BaseException:
        _remove_if_only_store(out, created)
        raise


def _refuse_outputs_over_inputs(out, inputs, videos=()) -> None:
    """The report's files may go beside the inputs, never over one of them."""
    from pathlib import Path
    from iaunet.core.errors import IAUnetError
    from iaunet.runtime.camera_tasks import OUTPUTS
    sources = {Path(i).resolve() for i in inputs if "://" not in str(i)}
    from iaunet.runtime.camera_tasks import camera_names
    from iaunet.runtime.identity_tasks import IDENTITY_OUTPUTS
    names = list(OUTPUTS) + list(IDENTITY_OUTPUTS) + ["score.json"] + [f"{n}.txt" for n in camera_names(videos)]
    for name in names:
        if (Path(out) / name).resolve() in sources:
            raise IAUnetError(f"output {Path(out) / name} is one of the inputs; expected another -o folder")
