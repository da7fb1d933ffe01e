"""The camera stream's figures against a naive loop (``python -m iaunet.camera_bench``).

On synthetic scenes (``iaunet synth --scenes``; 3 cameras, 20 s, 25 fps, 480x272 unless
``--scenes DIR`` is given), for each model (a randomised-BN IAUnet, as the tests build, or
a trained ``--checkpoint``; exported to ONNX and run on ONNX Runtime):

- **naive**: every box of every frame cropped and embedded, one batch per frame, a track's
  embedding the re-normalised mean of all its crops; cameras one after another;
- **stream**: ``iaunet cameras`` with its defaults, in a child process that reports its
  own peak resident memory (``VmHWM``);
- crops embedded and end-to-end seconds of each (decoding included, model loading not);
- track-level cross-camera rank-1 of each: every tracker track queries the tracks of the
  other cameras, its identity the one most of its boxes belong to (``identities.json``);
  both over the tracks both embedded;
- how many 25 fps cameras ``--realtime`` holds (the scene's videos repeated as more
  cameras, ``--realtime-seconds`` each): no drops, p99 latency within ``--max-delay-ms``
  plus one full batch's inference time;
- with ``--load``: eight cameras at twice real time for 30 s with ``--on-full drop``:
  the queue's peak, resident memory over the run, and drops against what is missing.

Top layer: imports torch (to build the models) and every stage.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {"iaunet_r18": (128, 64), "iaunet_r50": (256, 128)}


def build_model(name: str, height: int, width: int, folder: Path) -> Path:
    """A randomised-BN model (the IAU blocks active; ``randomise_batchnorm``), exported."""
    import torch
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train import create_model, save_checkpoint
    from iaunet.train.models import randomise_batchnorm
    torch.manual_seed(0)
    model = randomise_batchnorm(create_model(name, num_classes=8, height=height, width=width))
    checkpoint = save_checkpoint(folder / f"{name}.pt", model)
    return export_checkpoint(checkpoint, folder / f"{name}.onnx", "plugin", parity_batches=(1,)).path


def model_from_checkpoint(checkpoint: Path, folder: Path) -> tuple:
    """(name, (height, width), ONNX path): a trained checkpoint, exported as ``build_model`` exports."""
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.checkpoint import load_checkpoint
    _, config = load_checkpoint(checkpoint)
    onnx = export_checkpoint(checkpoint, folder / f"{config.name}-trained.onnx", "plugin", parity_batches=(1,)).path
    return config.name, (config.height, config.width), onnx


def naive_loop(model: Path, videos, track_files) -> dict:
    """Every box of every frame embedded, one batch per frame: {(camera, track): embedding}, crops, seconds."""
    from iaunet.runtime.camera_tasks import camera_names, read_tracks, video_frames
    from iaunet.runtime.cameras import crop_box
    from iaunet.runtime.embedder import Embedder
    from iaunet.runtime.images import to_sample
    sums, crops = {}, 0
    with Embedder.open(model, backend="onnxruntime-cpu") as embedder:
        start = time.perf_counter()
        for name, video, path in zip(camera_names(videos), videos, track_files):
            tracks = read_tracks(path)
            for index, _, frame in video_frames(video, {}):
                if index not in tracks:
                    continue
                boxes, ids = tracks[index]
                samples, keys = [], []
                for box, tid in zip(boxes, ids.tolist()):
                    crop, _ = crop_box(frame, box)
                    if crop is not None:
                        samples.append(to_sample(np.ascontiguousarray(crop), embedder.card))
                        keys.append((name, tid))
                if samples:
                    out = embedder.runner.infer(np.stack(samples))
                    out /= np.linalg.norm(out, axis=1, keepdims=True)
                    crops += len(samples)
                    for key, emb in zip(keys, out):
                        sums[key] = sums.get(key, 0) + emb
        seconds = time.perf_counter() - start
    return {"embeddings": {k: v / np.linalg.norm(v) for k, v in sums.items()}, "crops": crops, "seconds": seconds}


def stream_run(model: Path, videos, track_files, out: Path, extra=()) -> dict:
    """``iaunet cameras`` in a child process: its stats, embeddings and peak RSS (MiB)."""
    peak_file = out.parent / f".{out.name}.peak"
    cmd = [sys.executable, "-c", CHILD, str(peak_file), "cameras", *map(str, videos), "--tracks",
           *map(str, track_files), "-m", str(model), "-o", str(out), "--backend", "onnxruntime-cpu", *map(str, extra)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 2):
        raise SystemExit(f"iaunet cameras failed: {done.stderr.strip()}")
    peak = float(peak_file.read_text()) if peak_file.exists() else None
    stats = json.loads((out / "stats.json").read_text())
    with np.load(out / "tracks.npz") as npz:
        embeddings = {(str(c), int(t)): e for c, t, e in zip(npz["cameras"], npz["track_ids"], npz["embeddings"])}
    return {"stats": stats, "embeddings": embeddings, "peak_rss_mib": peak,
            "command": "iaunet " + " ".join(cmd[4:])}


# The child runs ``iaunet`` and writes its own peak resident memory (VmHWM). Not the
# parent's RUSAGE_CHILDREN: Linux carries a child's high-water mark across exec, so that
# counts the benchmark's own memory (torch, the naive loop's session) as the child's.
CHILD = "import sys; from iaunet.camera_bench import child_main; sys.exit(child_main())"


def child_main() -> int:
    """``python -c CHILD PEAK_FILE ARGS...``: ``iaunet ARGS``, then this process's peak RSS
    in MiB written to PEAK_FILE."""
    from iaunet.cli import main
    try:
        return main(sys.argv[2:])
    finally:
        Path(sys.argv[1]).write_text(str(peak_rss_mib()))


def peak_rss_mib() -> float:
    """This process's peak resident memory since its exec (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cross_camera_rank1(embeddings: dict, identity: dict, keys) -> float:
    """Each track's nearest track in another camera: the fraction with the same identity,
    over the tracks whose identity some other camera's track has."""
    keys = sorted(keys)
    feats = np.stack([embeddings[k] for k in keys])
    sims = feats @ feats.T
    hits = total = 0
    for i, (cam, tid) in enumerate(keys):
        others = [j for j, k in enumerate(keys) if k[0] != cam]
        if not any(identity[keys[j]] == identity[(cam, tid)] for j in others):
            continue
        best = max(others, key=lambda j: sims[i, j])
        hits += identity[keys[best]] == identity[(cam, tid)]
        total += 1
    return hits / max(total, 1)


def rank1_queries(identity: dict, keys) -> int:
    """How many of ``keys`` ``cross_camera_rank1`` scores (their identity is in another camera)."""
    return sum(any(identity[o] == identity[k] for o in keys if o[0] != k[0]) for k in keys)


def full_batch_seconds(model: Path, batch: int, repeats: int = 5) -> float:
    from iaunet.runtime.embedder import Embedder
    with Embedder.open(model, backend="onnxruntime-cpu") as embedder:
        x = np.random.default_rng(0).uniform(0, 255, (batch, *embedder.card.sample_shape)).astype(np.float32)
        embedder.runner.infer(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            embedder.runner.infer(x)
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def realtime_capacity(model: Path, videos, track_files, work: Path, seconds: float, fps: int) -> dict:
    """The most cameras --realtime holds: no drops and p99 within max delay + one batch."""
    from iaunet.runtime.cameras import StreamOptions
    d = StreamOptions()
    budget_ms = d.max_delay_ms + 1000 * full_batch_seconds(model, d.batch)
    trials, held = [], 0
    for n in (1, 2, 3, 4, 6, 8, 12, 16):
        vids = [videos[k % len(videos)] for k in range(n)]
        tracks = [track_files[k % len(track_files)] for k in range(n)]
        run = stream_run(model, vids, tracks, work / f"rt{n}",
                         ["--realtime", "--on-full", "drop", "--max-frames", int(seconds * fps)])
        o = run["stats"]["overall"]
        ok = o["crops_dropped"] == 0 and (o["latency_ms"]["p99"] or 0) <= budget_ms
        trials.append({"cameras": n, "dropped": o["crops_dropped"], "p99_ms": o["latency_ms"]["p99"], "held": ok})
        print(f"  --realtime {n:2d} cameras: dropped {o['crops_dropped']}, p99 {o['latency_ms']['p99']} ms "
              f"(budget {budget_ms:.0f} ms) -> {'held' if ok else 'not held'}", flush=True)
        if not ok:
            break
        held = n
    return {"cameras_held": held, "budget_ms": round(budget_ms, 1), "trials": trials}


def load_run(model: Path, scenes: Path, work: Path) -> dict:
    """Eight cameras at twice real time for 30 s (videos of at least 30 s), dropping when full."""
    names = json.loads((scenes / "identities.json").read_text())["cameras"]
    vids = [scenes / f"{names[k % len(names)]}.mp4" for k in range(8)]
    tracks = [scenes / f"{names[k % len(names)]}.tracks.txt" for k in range(8)]
    from iaunet.runtime.camera_tasks import run_cameras
    from iaunet.runtime.cameras import StreamOptions
    samples, stop = [], []

    def sample_rss():
        page = resource.getpagesize()
        while not stop:
            with open("/proc/self/statm") as f:
                samples.append((time.perf_counter(), int(f.read().split()[1]) * page / 2 ** 20))
            time.sleep(0.5)
    import threading
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    stats = run_cameras(vids, tracks, model, work / "load", StreamOptions(on_full="drop"), realtime=2.0,
                        backend="onnxruntime-cpu")
    stop.append(1)
    with np.load(work / "load" / "tracks.npz") as npz:
        missing = int(npz["crops_taken"].sum() - npz["crops_embedded"].sum())
    o = stats["overall"]
    rss = [r for _, r in samples]
    return {"seconds": o["seconds"], "frames": o["frames"], "queue_peak": o["queue_peak"], "queue_size": o["queue_size"],
            "dropped": o["crops_dropped"], "missing_from_output": missing,
            "tracks_without_embedding": o["tracks_without_embedding"],
            "rss_mib_first_quarter_max": round(max(rss[:max(1, len(rss) // 4)]), 1), "rss_mib_max": round(max(rss), 1),
            "latency_ms": o["latency_ms"]}


def bench_model(name: str, size: tuple, scenes: Path, work: Path, realtime_seconds: float,
                model: Path | None = None) -> dict:
    """One model's row; ``model``: an exported trained checkpoint (else a randomised-BN one is built)."""
    ids = json.loads((scenes / "identities.json").read_text())
    cams = ids["cameras"]
    identity = {(c, int(t)): g for c in cams for t, g in ids["tracker_tracks"][c].items()}
    videos = [scenes / f"{c}.mp4" for c in cams]
    tracks = [scenes / f"{c}.tracks.txt" for c in cams]
    fps = json.loads((scenes / "scenes.json").read_text())["fps"]
    trained = model is not None
    model = model or build_model(name, *size, work)
    print(f"{name} {size[0]}x{size[1]} ({'trained' if trained else 'randomised BN'}): naive loop ...", flush=True)
    naive = naive_loop(model, videos, tracks)
    print(f"{name}: stream ...", flush=True)
    ours = stream_run(model, videos, tracks, work / f"{name}-stream")
    both = set(naive["embeddings"]) & set(ours["embeddings"])
    o = ours["stats"]["overall"]
    row = {"model": name, "size": f"{size[0]}x{size[1]}", "trained": trained,
           "naive": {"crops": naive["crops"], "seconds": round(naive["seconds"], 2),
                     "rank1": cross_camera_rank1(naive["embeddings"], identity, both)},
           "stream": {"crops": o["crops_embedded"], "seconds": o["seconds"],
                      "rank1": cross_camera_rank1(ours["embeddings"], identity, both),
                      "latency_ms": o["latency_ms"], "peak_rss_mib": ours["peak_rss_mib"],
                      "command": ours["command"]},
           "tracks_compared": len(both), "tracks_naive": len(naive["embeddings"]),
           "queries": rank1_queries(identity, both)}
    row["crops_ratio"] = round(naive["crops"] / max(o["crops_embedded"], 1), 2)
    row["speedup"] = round(naive["seconds"] / o["seconds"], 2)
    row["rank1_delta"] = round(row["stream"]["rank1"] - row["naive"]["rank1"], 4)
    print(json.dumps(row), flush=True)
    if realtime_seconds:
        row["realtime"] = realtime_capacity(model, videos, tracks, work, realtime_seconds, fps)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iaunet.camera_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="iaunet_r18", help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--checkpoint", help="a trained checkpoint to benchmark instead of --models' randomised-BN ones")
    parser.add_argument("--scenes", help="a folder from 'iaunet synth --scenes' (default: 3 cameras, 20 s, made here)")
    parser.add_argument("--realtime-seconds", type=float, default=8.0, help="seconds per --realtime trial (0: skip)")
    parser.add_argument("--load", action="store_true", help="also 8 cameras at twice real time for 30 s")
    parser.add_argument("-o", "--output", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    from iaunet.core.log import configure
    configure(False)
    with tempfile.TemporaryDirectory(prefix="iaunet-camera-bench-") as tmp:
        work = Path(tmp)
        scenes = Path(args.scenes) if args.scenes else work / "scenes"
        if not args.scenes:
            from iaunet.train.data.scenes import SceneSpec, generate_scenes
            scenes.mkdir()
            generate_scenes(scenes, SceneSpec(seconds=30.0 if args.load else 20.0))
        if args.checkpoint:
            name, size, onnx = model_from_checkpoint(Path(args.checkpoint), work)
            rows = [bench_model(name, size, scenes, work, args.realtime_seconds, onnx)]
        else:
            rows = [bench_model(m, MODELS[m], scenes, work, args.realtime_seconds) for m in args.models.split(",")]
        result = {"rows": rows}
        if args.load:
            result["load"] = load_run(onnx if args.checkpoint else work / f"{args.models.split(',')[0]}.onnx",
                                      scenes, work)
            print("load:", json.dumps(result["load"]), flush=True)
    if args.output:
        from iaunet.core.files import write_json
        write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
