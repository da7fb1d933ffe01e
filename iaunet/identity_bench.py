"""Identities across cameras, measured (``python -m iaunet.identity_bench -o DIR``).

- **IDF1 against the matching threshold.** Synthetic scenes (``iaunet synth --scenes``
  defaults: 3 cameras, 20 s) of seeds ``--seeds`` (100-102: never scored by the tests),
  the tracker's noisy ``camK.tracks.txt`` through the camera stream once per model, then
  the tracks (``tracks.npz``, in the order they ended) matched at each threshold through
  a fresh local store and scored with TrackEval as ``iaunet cameras --gt`` scores them.
  Models: the demo's (iaunet_r18 at 64x32 trained as ``iaunet demo`` trains it, unless
  ``--demo-model`` names its ONNX) and an iaunet_r50 at 256x128 with randomised BN (as
  ``camera_bench`` builds it: untrained). Writes ``idf1_threshold.png`` and ``.json``;
  the threshold with the best mean IDF1 of the demo's model is the default's source.
- **Matching time per track as the store grows**: 10^3, 10^4, 10^5 stored embeddings
  (random unit vectors of the demo model's dimension, 8 per identity, all inside the
  window so the search reads every representative), local and Milvus Lite, median over
  ``--queries`` new tracks (Milvus Lite: fewer as it grows, at least 3; each match stored
  and flushed, as in a run). One run.

Top layer: trains and exports with torch.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.99, 0.05))
SIZES = (1_000, 10_000, 100_000)


def demo_model(work: Path) -> Path:
    from iaunet.demo import demo_train_options
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.data.synth import generate_market
    from iaunet.train.options import TrainOptions
    from iaunet.train.trainer import main
    generate_market(work / "data", identities=120, cameras=4, seed=0)
    checkpoint = main(TrainOptions(**demo_train_options(work, 20, 0) | {"progress": False}))
    return export_checkpoint(checkpoint, work / "demo.onnx", "plugin").path


def scene_tracks(model: Path, scene: Path, out: Path) -> list:
    """The scene's tracker files through ``iaunet cameras``' job: Tracks in the order they ended."""
    from iaunet.runtime.camera_tasks import run_cameras
    from iaunet.runtime.identities import Track
    names = json.loads((scene / "identities.json").read_text())["cameras"]
    if not (out / "tracks.npz").exists():   # a rerun of the bench reuses the stream's tracks
        run_cameras([scene / f"{n}.mp4" for n in names], [scene / f"{n}.tracks.txt" for n in names], model, out,
                    backend="onnxruntime-cpu")
    with np.load(out / "tracks.npz") as npz:
        tracks = [Track(str(c), int(t), float(a), float(b), e, int(fa), int(fb)) for c, t, a, b, e, fa, fb in zip(
            npz["cameras"], npz["track_ids"], npz["first_time"], npz["last_time"], npz["embeddings"],
            npz["first_frame"], npz["last_frame"])]
    return sorted(tracks, key=lambda t: (t.last, t.key))


def idf1_at(tracks: list, threshold: float, scene: Path, out: Path) -> dict:
    """Match ``tracks`` at ``threshold`` into a fresh local store; TrackEval's IDF1 on the scene."""
    from iaunet.identity_score import identity_metrics, sequence
    from iaunet.runtime.camera_tasks import read_tracks
    from iaunet.runtime.identities import IdentityMatcher, MatchOptions
    from iaunet.runtime.identity_store import LocalStore
    from iaunet.runtime.identity_tasks import global_rows
    names = json.loads((scene / "identities.json").read_text())["cameras"]
    store_dir = Path(tempfile.mkdtemp(dir=out))
    with LocalStore(store_dir / "s", tracks[0].embedding.shape[0]) as store:
        m = IdentityMatcher(store, MatchOptions(threshold=threshold))
        assigned = [(t, m.match(t)) for t in tracks]
    shutil.rmtree(store_dir)
    for n in names:
        (out / f"{n}.txt").write_text("".join(global_rows(read_tracks(scene / f"{n}.tracks.txt"), n, assigned)))
    return identity_metrics(sequence(scene, out, names)) | {"identities": len({i for _, i in assigned})}


def threshold_sweep(models: dict, seeds, work: Path) -> dict:
    from iaunet.train.data.scenes import SceneSpec, generate_scenes
    result = {}
    for seed in seeds:
        scene = work / f"scene{seed}"
        if not (scene / "identities.json").exists():
            scene.mkdir(parents=True, exist_ok=True)
            generate_scenes(scene, SceneSpec(seed=seed))
        for name, model in models.items():
            out = work / f"run-{name}-{seed}"
            t0 = time.perf_counter()
            tracks = scene_tracks(model, scene, out)
            rows = {str(t): idf1_at(tracks, t, scene, out) for t in THRESHOLDS}
            result.setdefault(name, {})[str(seed)] = rows
            best = max(rows, key=lambda t: rows[t]["IDF1"])
            print(f"  {name} seed {seed}: {len(tracks)} tracks, best IDF1 {rows[best]['IDF1']:.3f} at {best} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return result


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, seeds in result.items():
        mean = [np.mean([seeds[s][str(t)]["IDF1"] for s in seeds]) for t in THRESHOLDS]
        ax.plot(THRESHOLDS, mean, marker="o", label=f"{name} (mean of {len(seeds)} scenes)")
        for s in seeds:
            ax.plot(THRESHOLDS, [seeds[s][str(t)]["IDF1"] for t in THRESHOLDS], alpha=0.25, color="grey")
    ax.set(xlabel="--threshold (cosine)", ylabel="cross-camera IDF1 (TrackEval)", ylim=(0, 1),
           title="IDF1 against the matching threshold, synthetic scenes, tracker's noisy tracks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def store_timing(dim: int, work: Path, queries: int, stores=("local", "milvus-lite")) -> list:
    """Median seconds per match as the store holds 10^3..10^5 embeddings, local and Milvus Lite."""
    from iaunet.runtime.identities import IdentityMatcher, MatchOptions, Row, Track
    from iaunet.runtime.identity_store import open_store
    rng = np.random.default_rng(0)
    rows = []
    shutil.rmtree(work, ignore_errors=True)   # fresh stores: a killed earlier run's are not measured
    work.mkdir(parents=True)
    for size in SIZES:
        emb = rng.normal(size=(size, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        for kind, spec in (("local", work / f"local{size}"), ("milvus-lite", f"milvus-lite:{work}/m{size}.db")):
            if kind not in stores:
                continue
            with open_store(spec, dim) as store:
                t0 = time.perf_counter()
                for start in range(0, size, 5000):
                    store.put([Row(f"pre/{i}/0.000", 1 + i // 8, f"cam{i % 8}", i, 0.0, 1.0, 0, 25, True, True, 0.0,
                                   100.0, emb[i]) for i in range(start, min(size, start + 5000))])
                    store.flush()
                if hasattr(store, "next_id"):
                    store.next_id = max(store.next_id, size // 8 + 2)
                fill = time.perf_counter() - t0
                m = IdentityMatcher(store, MatchOptions(threshold=0.99))
                times = []
                n = queries if kind == "local" else max(3, min(queries, queries * 1000 // size))  # Milvus Lite is slow
                for q in range(n):
                    e = rng.normal(size=dim).astype(np.float32)
                    t = Track("camq", q, 200.0 + 2 * q, 201.0 + 2 * q, e / np.linalg.norm(e))
                    t0 = time.perf_counter()
                    m.match(t)
                    times.append(time.perf_counter() - t0)
            rows.append({"store": kind, "embeddings": size, "tracks": n,
                         "median_ms": round(1000 * float(np.median(times)), 2),
                         "p90_ms": round(1000 * float(np.percentile(times, 90)), 2), "fill_s": round(fill, 1)})
            print(f"  {kind:12s} {size:>7,} embeddings: {rows[-1]['median_ms']} ms per track (p90 "
                  f"{rows[-1]['p90_ms']}), filled in {fill:.1f} s", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="identity-bench")
    p.add_argument("--demo-model", help="the demo's ONNX (trained here when not given)")
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--stores", nargs="+", default=["local", "milvus-lite"], choices=["local", "milvus-lite"])
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from iaunet.camera_bench import build_model
    from iaunet.runtime.embedder import read_card
    demo = Path(args.demo_model) if args.demo_model else demo_model(out / "demo-train")
    record = {"demo_model": str(demo)}
    if not args.skip_sweep:
        r50 = out / "iaunet_r50.onnx"
        r50 = r50 if r50.exists() else build_model("iaunet_r50", 256, 128, out)
        record["sweep"] = threshold_sweep({"demo r18 (trained)": demo, "r50 (randomised BN)": r50}, args.seeds, out)
        plot_sweep(record["sweep"], out / "idf1_threshold.png")
        (out / "identity_bench.json").write_text(json.dumps(record, indent=1) + "\n")
    if not args.skip_timing:
        record["timing"] = store_timing(read_card(demo).embedding_dim, out / "timing", args.queries, args.stores)
        shutil.rmtree(out / "timing")
    (out / "identity_bench.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
