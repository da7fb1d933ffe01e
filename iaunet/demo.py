"""``iaunet demo``: the whole pipeline on the machine it finds, with no arguments.

synth -> train (small configuration, evaluated along the way) -> eval -> export (plugin
mode, checked against PyTorch) -> FP16 and INT8 variants (sensitivity measured) -> parity
of every variant -> TensorRT engines where TensorRT loads (else the command a Jetson user
runs) -> embed + search through the runtime on the best backend present -> three synthetic
cameras through the camera stream (``iaunet cameras``' job) -> bench against
PyTorch eager -> a Jetson Orin bundle with its parity kit -> ``iaunet verify`` of that bundle on
this machine -> ``report.html`` / ``report.md``
(``iaunet.report``), all in one folder, every figure in ``demo.json``. Top layer: imports
every stage.

The folder is built under a temporary name beside the destination and renamed into
place when complete, so an error or Ctrl-C leaves the destination as it was. An existing
destination is replaced only when every file in it is listed in its ``demo.json``
(a previous demo's own files); otherwise the demo refuses, naming the first foreign file.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.files import check_parent_folder, make_temporary_folder, write_json
from iaunet.core.log import get_logger

DEFAULT_OUTPUT = "iaunet-demo"
MANIFEST = "demo.json"
log = get_logger("demo")


def check_replaceable(out: Path) -> None:
    """Refuse a destination that holds anything but a previous demo's own files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise IAUnetError(f"output {out} is a file; expected a folder for the demo")
    if not any(out.iterdir()):
        return
    if not (out / MANIFEST).is_file():  # refused before walking it: -o / must not read the whole disk
        raise IAUnetError(f"{out} exists and is not a previous demo folder (no {MANIFEST} in it); pass -o with a "
                          "new folder")
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    try:
        owned = set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise IAUnetError(f"{out} exists and is not a previous demo folder (no readable {MANIFEST} listing its "
                          "files); pass -o with a new folder") from None
    foreign = [p for p in present if p not in owned and p != MANIFEST]
    if foreign:
        raise IAUnetError(f"{out} holds {foreign[0]}, which the previous demo did not write; refusing to replace "
                          "the folder (move that file, or pass -o with a new folder)")


@contextlib.contextmanager
def _working_dir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_demo(output=DEFAULT_OUTPUT, identities: int = 120, epochs: int = 20, seed: int = 0) -> int:
    out = Path(output).absolute()
    check_replaceable(out)
    check_parent_folder(out)  # the demo is built beside its destination
    build = make_temporary_folder(out)
    try:
        with _working_dir(build):
            code, summary = _pipeline(Path("."), identities, epochs, seed)
        summary["files"] = sorted(str(p.relative_to(build)) for p in build.rglob("*") if not p.is_dir())
        write_json(build / MANIFEST, summary)
        _swap_into_place(build, out)
    finally:
        if build.exists():
            shutil.rmtree(build)
    print(f"outputs in {output}/: report.html (open it in a browser), report.md, {MANIFEST}, and every stage's files")
    return code


def _swap_into_place(build: Path, out: Path) -> None:
    if out.exists():
        old = make_temporary_folder(out, ".old")
        os.replace(out, old / "previous")
        os.replace(build, out)
        shutil.rmtree(old)
    else:
        os.replace(build, out)


# INT8 of the demo's small model: FP16 outside the Q/DQ, each layer's sensitivity measured,
# and the most sensitive layers moved to FP16 if held-out training images need it to reach
# the target. Calibration: minmax. Measured on this model (parity on query + gallery, FP16
# outside the Q/DQ, `iaunet calib` then `iaunet parity`): minmax mean cosine 0.9927, min
# 0.9753, mAP -0.25 (held-out mean 0.9929: no layer moved); percentile 99.99 with the
# fallback: min 0.9501, a hair above the gate; entropy (TensorRT's KL threshold): even with
# 14 layers in FP16 (held-out mean 0.9955) the min cosine stays 0.92: its clipping hurts a
# few query images that no mean over held-out images sees.
DEMO_INT8_METHOD = "minmax"
DEMO_INT8_TARGET = 0.99
DEMO_MAX_FP16_LAYERS = 10 ** 6  # as many as the target needs: other --identities/--epochs/--seed must not fail it


class _Stages:
    """Each stage's time and output files, for the report's pipeline picture."""

    def __init__(self):
        self.done = []

    @contextlib.contextmanager
    def run(self, number: int, name: str, what: str, *outputs: str):
        log.info("%d/%d %s: %s", number, STAGE_COUNT, name, what)
        start = time.perf_counter()
        yield
        self.done.append({"stage": name, "seconds": round(time.perf_counter() - start, 1),
                          "outputs": [_size_of(Path(o)) for o in outputs if Path(o).exists()]})


def _size_of(path: Path) -> dict:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return {"path": str(path) + ("/" if path.is_dir() else ""), "files": len(files),
            "bytes": sum(f.stat().st_size for f in files)}


STAGE_COUNT = 13
CAMERAS, CAMERA_SECONDS = 3, 20.0
VERIFY_OUTPUT, VERIFY_REPEATS = "verify", 10
BENCH_BATCHES, BENCH_REPEATS = [1, 8], 10
SEARCH_TOP_K, REPORT_QUERIES = 5, 8


def _pipeline(out: Path, identities: int, epochs: int, seed: int) -> tuple:
    """Run the stages in ``out``; returns (exit code, the summary for the manifest)."""
    import torch

    from iaunet.calib.fp16 import convert_fp16
    from iaunet.calib import CALIBRATION_SAMPLES
    from iaunet.calib.int8 import HELD_OUT, MIN_HELD_OUT, quantize_int8, sensitivity_plot_path
    from iaunet.calib.parity import run_parity
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.data.synth import generate_market
    from iaunet.train.options import TrainOptions
    from iaunet.train.trainer import evaluate, main

    stages, data, summary = _Stages(), out / "data", {"machine": _machine()}
    with stages.run(1, "synth", f"{identities} identities", "data"):
        generate_market(data, identities=identities, cameras=4, seed=seed)
    with stages.run(2, "train", f"iaunet_r18 at 64x32 for {epochs} epochs", "train"):
        checkpoint = main(TrainOptions(**demo_train_options(out, epochs, seed)))
    with stages.run(3, "eval", "untrained baseline and trained model"):
        model, config = load_checkpoint(checkpoint)
        dataset = open_dataset(data)
        torch.manual_seed(seed)
        summary["untrained"] = _short(evaluate(untrained_copy(config), dataset, torch.device("cpu"), config))
        summary["trained"] = _short(evaluate(model, dataset, torch.device("cpu"), config))
    summary["history"] = json.loads((out / "train" / "history.json").read_text())
    with stages.run(4, "export", "plugin mode, checked against PyTorch", "model.onnx"):
        report = export_checkpoint(checkpoint, out / "model.onnx", "plugin", data=data)
    summary["export"] = {"nodes_traced": report.traced_nodes, "nodes": sum(report.nodes.values()),
                         "plugin_nodes": report.plugin_nodes,
                         "parity": {str(b): vars(p) for b, p in report.parity.items()}}
    samples = max(MIN_HELD_OUT, min(CALIBRATION_SAMPLES, len(dataset.train) - HELD_OUT))
    with stages.run(5, "fp16 + int8", f"{DEMO_INT8_METHOD} calibration, target mean cosine {DEMO_INT8_TARGET}",
                    "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx", "model.int8.calib",
                    str(sensitivity_plot_path(out / "model.int8.onnx"))):
        records = {"fp16": convert_fp16(report.path, out / "model.fp16.onnx", data),
                   "int8": quantize_int8(report.path, out / "model.int8.onnx", data, method=DEMO_INT8_METHOD,
                                         samples=samples, cache_dir=out / "calib-cache", target_cosine=DEMO_INT8_TARGET,
                                         max_fp16_layers=DEMO_MAX_FP16_LAYERS)}
        for name, record in records.items():
            write_json(out / f"model.{name}.json", record)
    summary["int8"] = _int8_summary(records["int8"])
    variants = [report.path, out / "model.fp16.onnx", out / "model.int8.onnx"]
    with stages.run(6, "parity", "every variant against PyTorch on query + gallery", "parity"):
        results, _ = run_parity(checkpoint, data, variants, out / "parity")
    summary["parity"] = [_parity_row(r) for r in results]
    with stages.run(7, "engines", "TensorRT engines where TensorRT is present", "engines"):
        summary["engines"] = _engines(out, variants[1:], summary["machine"]["tensorrt"])
    with stages.run(8, "embed + search", "gallery and queries through the runtime", "search"):
        summary["runtime"] = _search(out, data, summary["engines"])
    with stages.run(9, "cameras", f"{CAMERAS} synthetic cameras, {CAMERA_SECONDS:g} s, through the camera stream",
                    "cameras"):
        summary["cameras"] = _cameras(out)
    with stages.run(10, "bench", "ONNX Runtime against PyTorch eager", "bench"):
        summary["bench"] = _bench(out, checkpoint, summary["engines"]["built"])
    with stages.run(11, "bundle", "a Jetson Orin bundle (TensorRT 10.3, JetPack 6) with its parity kit", "bundle-orin"):
        summary["bundle"] = _bundle(out, checkpoint, data)
    with stages.run(12, "verify", "the bundle on this machine: build, parity against its kit, bench", "verify"):
        summary["verify"] = _verify(out)
    with stages.run(13, "report", "report.html and report.md", "report.html", "report.md"):
        summary["stages"] = stages.done
        summary["not_run"] = _not_run(summary)
        from iaunet.report import write_report
        write_report(out, summary)
    _print_summary(summary, report)
    return (0 if all(r.passed for r in results) and summary["verify"]["passed"] else 2), summary


def _machine() -> dict:
    import platform
    from iaunet.runtime.runners import usable_cores
    return {"cpu": platform.processor() or platform.machine(), "cores": usable_cores(),
            "python": platform.python_version(), "tensorrt": _tensorrt_version()}


def _tensorrt_version() -> str | None:
    from iaunet.runtime.trt_runner import import_tensorrt
    try:
        return import_tensorrt().__version__
    except IAUnetError:
        return None


def _int8_summary(record: dict) -> dict:
    fallback = record.get("fallback") or {}
    return {"method": record["method"], "target": fallback.get("target_mean_cosine"),
            "held_out_mean_cosine": record["mean_cosine_vs_fp32"], "int8_layers": record["int8_layers"],
            "fp16_layers": fallback.get("fp16_layers", []), "fp16_flops_share": fallback.get("fp16_flops_share", 0.0),
            "most_sensitive": [e["layer"] for e in fallback.get("sensitivity", [])[:3]]}


def _parity_row(r) -> dict:
    return {"name": r.name, "precision": r.precision, "mean_cosine": r.mean_cosine, "min_cosine": r.min_cosine,
            "rank1": r.rank1, "mAP": r.mAP, "delta_rank1": r.delta_rank1, "delta_map": r.delta_map,
            "passed": r.passed, "failures": r.failures, "gate": r.gate}


def _engines(out: Path, variants, version: str | None) -> dict:
    """Build FP16 and INT8 engines when TensorRT ``version`` is here; otherwise say what a
    Jetson user runs."""
    if version is None:
        log.info("TensorRT is not installed here: no engines built. A Jetson user builds them on the device from "
                 "bundle-orin/ (its README.md has the commands)")
        return {"built": [], "tensorrt": None, "why": "TensorRT is not installed on this machine"}
    from iaunet.engines.builder import build_engine
    built, failed = [], []
    (out / "engines").mkdir()
    for variant in variants:
        engine = out / "engines" / (variant.stem + ".engine")
        try:
            build_engine(variant, engine, cache_dir=out / "engine-cache")
            built.append(str(engine))
        except IAUnetError as exc:  # one variant the builder refuses does not stop the demo
            log.info("engine for %s not built: %s", variant.name, exc)
            failed.append(f"{variant.name}: {exc}")
    return {"built": built, "tensorrt": version, "why": "; ".join(failed) or None}


def _search(out: Path, data: Path, engines: dict) -> dict:
    """Embed the gallery split and search it with the query split, on the best backend present."""
    from iaunet.runtime.tasks import draw_grid, embed_files, search_files
    model = engines["built"][0] if engines["built"] else out / "model.onnx"
    (out / "search").mkdir()
    gallery = sorted((data / "bounding_box_test").glob("*.jpg"))
    queries = sorted((data / "query").glob("*.jpg"))
    embedded = embed_files(model, gallery, out / "search" / "gallery.npz")
    log.info("runtime: %s on %s", Path(model).name, embedded["backend"])
    results = search_files(model, out / "search" / "gallery.npz", queries, k=SEARCH_TOP_K,
                           json_path=out / "search" / "search.json")
    draw_grid(results[:REPORT_QUERIES], out / "search" / "grid.png")
    top1 = [r["matches"][0]["id"] == r["id"] for r in results if r["matches"]]
    return {"model": Path(model).name, "backend": embedded["backend"], "gallery": embedded["images"],
            "queries": len(results), "top1_same_id": sum(top1) / max(len(top1), 1), "k": SEARCH_TOP_K,
            "grid_queries": min(REPORT_QUERIES, len(results))}


def _cameras(out: Path) -> dict:
    """Synthetic scenes through ``iaunet cameras``' job with its defaults, and the
    cross-camera rank-1 of the track embeddings against the scenes' identities."""
    import numpy as np
    from iaunet.camera_bench import cross_camera_rank1
    from iaunet.runtime.camera_tasks import run_cameras
    from iaunet.train.data.scenes import SceneSpec, generate_scenes
    scenes, folder = out / "cameras" / "scenes", out / "cameras"
    scenes.mkdir(parents=True)
    generate_scenes(scenes, SceneSpec(cameras=CAMERAS, seconds=CAMERA_SECONDS))
    names = [f"cam{k + 1}" for k in range(CAMERAS)]
    identities, store = _identity_run(out / "model.onnx", folder)
    try:
        stats = run_cameras([scenes / f"{n}.mp4" for n in names], [scenes / f"{n}.tracks.txt" for n in names],
                            out / "model.onnx", folder, on_tracks=identities)
    finally:
        store.close()
    ids = json.loads((scenes / "identities.json").read_text())
    identity = {(c, int(t)): g for c in names for t, g in ids["tracker_tracks"][c].items()}
    with np.load(folder / "tracks.npz") as npz:
        embeddings = {(str(c), int(t)): e for c, t, e in zip(npz["cameras"], npz["track_ids"], npz["embeddings"])}
    o = stats["overall"]
    return {"cameras": CAMERAS, "seconds": CAMERA_SECONDS, "overall": {k: o[k] for k in (
                "frames", "boxes_seen", "crops_embedded", "crops_dropped", "tracks", "crops_per_second", "seconds")},
            "latency_ms": o["latency_ms"], "batch_size_histogram": o["batch_size_histogram"],
            "per_camera": {n: {k: stats["cameras"][n][k] for k in ("frames", "boxes_seen", "crops_embedded",
                                                                   "crops_dropped")} | {
                               "p99_ms": stats["cameras"][n]["latency_ms"]["p99"]} for n in names},
            "rank1": cross_camera_rank1(embeddings, identity, embeddings), "errors": stats["errors"],
            "identities": _identity_outputs(folder, scenes, names, identities)}


def _identity_run(model: Path, folder: Path) -> tuple:
    """The matcher ``iaunet cameras`` runs by default: a local store in cameras/store."""
    from iaunet.runtime.embedder import read_card
    from iaunet.runtime.identity_store import LocalStore
    from iaunet.runtime.identity_tasks import IdentityRun
    card = read_card(model)
    store = LocalStore(folder / "store", card.embedding_dim, card.model_id)
    return IdentityRun(store), store


def _identity_outputs(folder: Path, scenes: Path, names: list, identities) -> dict:
    """camK.txt, identities.json, timeline.png, frames/*.jpg, and TrackEval's score against the scene."""
    from iaunet.identity_score import score_run
    from iaunet.runtime.camera_tasks import read_tracks
    from iaunet.runtime.identity_tasks import write_identity_outputs
    summary = write_identity_outputs(folder, names, [scenes / f"{n}.mp4" for n in names],
                                     [read_tracks(scenes / f"{n}.tracks.txt") for n in names], identities,
                                     "folder cameras/store")
    score = score_run(folder, scenes, names)
    return summary | {k: score[k] for k in ("IDF1", "IDP", "IDR", "rank1", "mAP")}


def _bench(out: Path, checkpoint: Path, engines: list) -> dict:
    """ONNX Runtime (and the engines, where built) against PyTorch eager; ratios per backend."""
    from iaunet.model_bench import benchmark
    from iaunet.runtime.perf_figures import is_pytorch
    result = benchmark([out / "model.onnx", *engines], out / "bench", BENCH_BATCHES, BENCH_REPEATS, checkpoint,
                       quiet=True)
    result["repeats"] = BENCH_REPEATS
    result["vs_pytorch"] = {f"{t['backend']} batch {t['batch']}": t["vs_pytorch"] for t in result["timings"]
                            if t["kind"] == "model" and t["vs_pytorch"] and not is_pytorch(t["backend"])}
    return result


def _bundle(out: Path, checkpoint: Path, data: Path) -> dict:
    from iaunet.engines.bundle import VERIFY_COMMAND, build_bundle, device_commands, install_command
    manifest = build_bundle(out, "orin", "jetson", out / "bundle-orin", cache_dir=out / "kernel-cache",
                            checkpoint=checkpoint, data=data)
    build, bench = device_commands(manifest)
    return {"target": "orin", "path": "bundle-orin/", "route": manifest["plugin_route_on_target"],
            "files": len(manifest["sha256"]), "variants": manifest["variants"], "kit": manifest["kit"],
            "build": f"cd bundle-orin && {build}", "bench": f"cd bundle-orin && {bench}",
            "verify": f"cd bundle-orin && {install_command(manifest)} && {VERIFY_COMMAND}"}


def _verify(out: Path) -> dict:
    """``iaunet verify`` of the bundle here, into its own folder (the bundle stays as shipped)."""
    from iaunet.engines.verify import verify_bundle
    report = verify_bundle(out / "bundle-orin", out / VERIFY_OUTPUT, VERIFY_REPEATS, cache_dir=out / "engine-cache")
    report["command"] = f"iaunet verify bundle-orin -o {VERIFY_OUTPUT} --repeats {VERIFY_REPEATS}"
    return report


def _not_run(summary: dict) -> list:
    rows = []
    if not summary["engines"]["built"]:
        rows.append({"what": "TensorRT engines of every variant: build, parity against the bundle's kit, GPU latency "
                             "and throughput (iaunet verify)", "why": summary["engines"]["why"],
                     "run": "on the Jetson: " + summary["bundle"]["verify"]})
        rows.append({"what": "search on an engine", "why": summary["engines"]["why"],
                     "run": "on the Jetson: " + summary["bundle"]["build"]})
    else:
        rows.append({"what": "engine parity against PyTorch",
                     "why": "the demo times the engines but does not gate them",
                     "run": "iaunet parity train/model.pt " + " ".join(summary["engines"]["built"]) + " --data data"})
    return rows


def _print_summary(summary: dict, report) -> None:
    from iaunet.train.metrics import format_metrics
    print(f"untrained: {format_metrics(summary['untrained'])}")
    print(f"trained:   {format_metrics(summary['trained'])}")
    print(report.summary().splitlines()[0])
    print(report.summary().splitlines()[1])
    for r in summary["parity"][1:]:
        print(f"parity {r['name']:18s} cos mean {r['mean_cosine']:.6f} min {r['min_cosine']:.6f}  "
              f"rank-1 {r['rank1']:.2f} ({r['delta_rank1']:+.2f})  mAP {r['mAP']:.2f} ({r['delta_map']:+.2f})  "
              f"{'pass' if r['passed'] else 'FAIL'}")
    rt = summary["runtime"]
    print(f"search: {rt['queries']} queries against {rt['gallery']} gallery images on {rt['backend']}, "
          f"top-1 same id {rt['top1_same_id']:.1%}")
    cams = summary["cameras"]
    print(f"cameras: {cams['cameras']} x {cams['seconds']:g} s, {cams['overall']['crops_embedded']} of "
          f"{cams['overall']['boxes_seen']} boxes embedded, p99 {cams['latency_ms']['p99']} ms, "
          f"cross-camera track rank-1 {cams['rank1']:.1%}")
    ids = cams["identities"]
    print(f"identities: {ids['tracks']} tracks into {ids['identities']} identities, cross-camera IDF1 "
          f"{ids['IDF1']:.3f} (TrackEval) at threshold {ids['threshold']:g}")
    ratios = ", ".join(f"{k} {r:.2f}x" for k, r in summary["bench"]["vs_pytorch"].items())
    print(f"bench, samples/s against PyTorch eager: {ratios}")
    rows = summary["verify"]["rows"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "FAIL", "not run")}
    print(f"verify bundle-orin: {counts['pass']} row(s) pass, {counts['FAIL']} fail, {counts['not run']} not run "
          f"(verify/verify.md)")


def untrained_copy(config):
    """A freshly initialised model of the same config: the baseline training must beat."""
    from iaunet.train.registry import create_model
    return create_model(config.name, **{k: v for k, v in config.to_dict().items() if k != "name"}).eval()


def demo_train_options(out: Path, epochs: int, seed: int) -> dict:
    """The small CPU configuration the demo and the learning test train: ResNet-18 from
    scratch (no download), so a higher learning rate than the pretrained recipe's 3.5e-4."""
    return dict(data=str(out / "data"), output=str(out / "train"), model="iaunet_r18", epochs=epochs,
                height=64, width=32, batch_size=32, num_instances=4, lr=1e-3, warmup_epochs=2,
                milestones=[max(1, int(epochs * 0.75))], seed=seed, eval_every=max(1, epochs // 4))


def _short(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "cmc"}
