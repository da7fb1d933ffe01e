"""iaunet embed, search and bench, run in-process as a user runs them (their bad input is in
tests/test_bad_inputs.py)."""
import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli as run
from iaunet.runtime.gallery import Gallery




def test_embed_outputs_give_evaluations_map(capsys, tmp_path, image_checkpoint, image_onnx, market_synth):
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.data.loaders import eval_loader
    from iaunet.train.metrics import distance_matrix, rank_metrics
    from iaunet.train.runner import TorchRunner
    from iaunet.train.trainer import extract_features
    for split in ("query", "bounding_box_test"):
        code, out, err = run(capsys, "embed", market_synth / split, "-m", image_onnx, "-o", tmp_path / f"{split}.npz")
        assert code == 0 and "ids and cameras from the file names" in out, err
    q, g = Gallery.load(tmp_path / "query.npz"), Gallery.load(tmp_path / "bounding_box_test.npz")
    data = open_dataset(market_synth)
    assert len(q) == len(data.query) and len(g) == len(data.gallery)  # junk left out, as evaluation does
    ours = distance_matrix(q.embeddings, g.embeddings)
    model, config = load_checkpoint(image_checkpoint)
    runner = TorchRunner(model, config, "cpu")
    qf, q_ids, q_cams = extract_features(runner, eval_loader(data.query, config, False))
    gf, g_ids, g_cams = extract_features(runner, eval_loader(data.gallery, config, False))
    np.testing.assert_array_equal(q_ids, q.ids)
    np.testing.assert_array_equal(g_ids, g.ids)
    theirs = distance_matrix(qf, gf)
    apart = np.abs(ours - theirs).max()
    assert apart < 1e-4  # ONNX Runtime and PyTorch agree to their rounding
    mine = rank_metrics(ours, q.ids, g.ids, q.cameras, g.cameras)
    ref = rank_metrics(theirs, q_ids, g_ids, q_cams, g_cams)
    assert abs(100 * mine["mAP"] - 100 * ref["mAP"]) < 0.1
    # rank-1 may differ only by queries whose two nearest valid gallery images are closer than
    # that rounding (this untrained model puts many within 1e-5)
    valid = ~((q_ids[:, None] == g_ids[None]) & (q_cams[:, None] == g_cams[None]))
    nearest = np.sort(np.where(valid, theirs, np.inf), axis=1)[:, :2]
    unsure = int((nearest[:, 1] - nearest[:, 0] <= 2 * apart).sum())
    assert abs(mine["cmc"][0] - ref["cmc"][0]) <= unsure / len(q) + 1e-12


def test_search_ranks_and_draws(capsys, tmp_path, image_onnx, market_synth):
    assert run(capsys, "embed", market_synth / "bounding_box_test", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    queries = sorted((market_synth / "query").glob("*.jpg"))[:3]
    code, out, err = run(capsys, "search", *queries, "-m", image_onnx, "--gallery", tmp_path / "g.npz",
                         "--top-k", 4, "--grid", tmp_path / "grid.png", "--json", tmp_path / "m.json")
    assert code == 0, err
    results = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["query"] for r in results] == [str(q) for q in queries]
    for r in results:
        scores = [m["score"] for m in r["matches"]]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    from PIL import Image
    from iaunet.runtime.tasks import FRAME, THUMB
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (THUMB[0] * 5 + THUMB[0] // 4, 3 * THUMB[1])  # a row per query, the query and 4 matches
        colours = set()
        for row, r in enumerate(results):  # the market names give ids: green frame same id, red another
            assert grid.getpixel((FRAME // 2, row * THUMB[1] + FRAME // 2)) == (0, 0, 0)  # the query's frame
            for col, m in enumerate(r["matches"]):
                x, y = THUMB[0] // 4 + THUMB[0] * (col + 1) + FRAME // 2, row * THUMB[1] + THUMB[1] // 2
                want = (0, 170, 0) if m["id"] == r["id"] else (210, 0, 0)
                assert grid.getpixel((x, y)) == want, (row, col, m["id"], r["id"])
                colours.add(want)
        assert len(colours) == 2  # both kinds of frame were checked
    assert out.count("\n") >= 3 and queries[0].name in out


def test_search_skips_unreadable_queries_when_asked(capsys, tmp_path, image_onnx, market_synth):
    assert run(capsys, "embed", market_synth / "bounding_box_test", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    queries = tmp_path / "q"
    shutil.copytree(market_synth / "query", queries)
    files = sorted(queries.glob("*.jpg"))[:3]
    files[0].write_bytes(b"junk")
    code, _, err = run(capsys, "search", *files, "-m", image_onnx, "--gallery", tmp_path / "g.npz")
    assert code == 1 and str(files[0]) in err
    code, _, err = run(capsys, "search", *files, "-m", image_onnx, "--gallery", tmp_path / "g.npz", "--skip-bad",
                       "--json", tmp_path / "m.json")
    assert code == 0, err
    results = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["query"] for r in results] == [str(f) for f in files[1:]]


def test_skip_bad_says_when_every_image_was_unreadable(capsys, tmp_path, image_onnx):
    (tmp_path / "images").mkdir()  # the gallery goes beside the image folder: inside it is refused
    for i in range(2):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(b"junk")
    code, _, err = run(capsys, "embed", tmp_path / "images", "-m", image_onnx, "-o", tmp_path / "g.npz", "--skip-bad")
    assert code == 1 and "all 2 images were unreadable" in err and not (tmp_path / "g.npz").exists()


def test_the_terminal_says_what_it_leaves_out():
    from iaunet.runtime.tasks import SHOWN_MATCHES, SHOWN_QUERIES, describe
    matches = [{"path": f"g/{j}.jpg", "id": j % 2, "score": 1 - j / 100} for j in range(SHOWN_MATCHES + 2)]
    results = [{"query": f"q/{i}.jpg", "id": 0, "matches": matches} for i in range(SHOWN_QUERIES + 3)]
    lines = describe(results)
    assert len(lines) == SHOWN_QUERIES + 1 and lines[-1] == "... 3 more queries (all with --json)"
    assert lines[0].startswith("0.jpg: 0.jpg 1.000 ✓, 1.jpg 0.990 ✗") and lines[0].endswith(", ... 2 more")
    assert lines[0].count("✓") + lines[0].count("✗") == SHOWN_MATCHES
    few = describe(results[:2], "m.json")
    assert len(few) == 3 and few[-1] == f"(matches beyond the first {SHOWN_MATCHES}: all in m.json)"
    empty = describe([{"query": "q/0.jpg", "id": 0, "matches": []}])
    assert empty == ["0.jpg: no match above the threshold"]


def test_bench_writes_figures_and_a_plot(capsys, tmp_path, image_onnx, image_checkpoint):
    from iaunet.export.flops import count_flops
    code, out, err = run(capsys, "bench", image_onnx, "--checkpoint", image_checkpoint, "--batch", "1,2",
                         "--repeats", 3, "-o", tmp_path / "b")
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    kinds = {(t["backend"].split()[-1], t["batch"], t["kind"]) for t in record["timings"]}
    for batch in (1, 2):
        assert {("onnxruntime-cpu", batch, "model"), ("onnxruntime-cpu", batch, "bare session"),
                ("onnxruntime-cpu", batch, "end-to-end"), ("(cpu)", batch, "model")} <= kinds
    flops = count_flops(image_onnx)
    for t in record["timings"]:
        assert t["p99_ms"] >= t["p50_ms"] > 0 and t["peak_rss_mb"] > 50
        if t["kind"] == "model":
            assert t["gflops_per_s"] == pytest.approx(flops * t["batch"] / (t["p50_ms"] / 1e3) / 1e9, rel=1e-6)
    assert record["cpu_peak_gflops"] > 1 and "matmul" in record["peak_estimate"]
    torch_rows = {t["batch"]: t for t in record["timings"] if t["backend"] == "pytorch eager fp32 (cpu)"}
    for t in (t for t in record["timings"] if t["device"] == "cpu"):  # a GPU machine adds GPU rows
        expected = t["samples_per_s"] / torch_rows[t["batch"]]["samples_per_s"] if t["kind"] != "end-to-end" else None
        assert t["vs_pytorch"] == pytest.approx(expected)
    assert (tmp_path / "b" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vs torch" in out and "1.00x" in out
    assert record["no_tensorrt_rows"].startswith("no TensorRT rows: ") and record["no_tensorrt_rows"] in out


def test_skip_bad_counts_unreadable_images(capsys, tmp_path, image_onnx, market_synth):
    images = tmp_path / "imgs"
    shutil.copytree(market_synth / "query", images)
    files = sorted(images.glob("*.jpg"))
    files[1].write_bytes(b"junk")
    code, out, err = run(capsys, "embed", images, "-m", image_onnx, "-o", tmp_path / "g.npz", "--skip-bad")
    assert code == 0 and "1 unreadable skipped" in out, err
    g = Gallery.load(tmp_path / "g.npz")
    assert len(g) == len(files) - 1 and str(files[1]) not in set(g.paths)


# -- inputs that lie, images, identity (issues 25 and 29): fixtures of their own

def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_rerun_with_the_same_weights_is_the_same_model(capsys, tmp_path, image_checkpoint, image_onnx, market_synth):
    """The demo's rerun with the same seed: same weights, another checkpoint file (its own
    timings). Its export searches the first run's gallery."""
    import torch
    from iaunet.export.exporter import export_checkpoint
    raw = torch.load(image_checkpoint, weights_only=True)
    raw["epoch_seconds"] = [1.25, 1.5]  # what a second run records differently
    torch.save(raw, tmp_path / "rerun.pt")
    rerun = export_checkpoint(tmp_path / "rerun.pt", tmp_path / "rerun.onnx", "plugin", parity_batches=(1,)).path
    assert run(capsys, "embed", market_synth / "bounding_box_test", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    query = sorted((market_synth / "query").glob("*.jpg"))[0]
    code, out, err = run(capsys, "search", query, "-m", rerun, "--gallery", tmp_path / "g.npz", "--top-k", 2)
    assert code == 0 and query.name in out, err


def test_a_gallery_named_by_the_checkpoint_file_still_serves_with_a_note(capsys, tmp_path, image_checkpoint,
                                                                        image_onnx, market_synth, iaunet_notes):
    from iaunet.core.files import sha256_file
    assert run(capsys, "embed", market_synth / "query", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    old = Gallery.load(tmp_path / "g.npz")
    old.model_id = sha256_file(image_checkpoint)  # as 'iaunet embed' wrote it before model ids named the weights
    old.save(tmp_path / "old.npz")
    query = sorted((market_synth / "query").glob("*.jpg"))[0]
    code, out, err = run(capsys, "search", query, "-m", image_onnx, "--gallery", tmp_path / "old.npz")
    assert code == 0 and any("names its model by the checkpoint file's SHA-256" in n for n in iaunet_notes), err
    old.model_id = "ab" * 32
    old.save(tmp_path / "other.npz")
    code, _, err = run(capsys, "search", query, "-m", image_onnx, "--gallery", tmp_path / "other.npz")
    assert code == 1 and "model abababababab was expected" in _one_line(err)


def test_zeroed_weights_are_refused_by_embed_and_search(capsys, tmp_path, image_onnx, market_synth):
    from tests.runtime.test_embedder import _zero_weights
    rotten = _zero_weights(image_onnx, tmp_path / "rotten.onnx")
    assert run(capsys, "embed", market_synth / "query", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    query = sorted((market_synth / "query").glob("*.jpg"))[0]
    for argv in (["embed", query, "-o", tmp_path / "r.npz"], ["search", query, "--gallery", tmp_path / "g.npz"]):
        code, _, err = run(capsys, *argv, "-m", rotten)
        assert code == 1 and "rotten.onnx is corrupted: its weights do not match" in _one_line(err)
    assert not (tmp_path / "r.npz").exists()


@pytest.fixture
def bad_images(tmp_path, market_synth):
    """A folder of three good crops, a decompression bomb, an oversized ICC profile and a symlink loop."""
    from tests.runtime.test_images import bomb_png, iccp_png
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in sorted((market_synth / "query").glob("*.jpg"))[:3]:
        shutil.copyfile(path, folder / path.name)
    bomb_png(folder / "zz_bomb.png")
    iccp_png(folder / "zz_iccp.png")
    (folder / "zz_loop.jpg").symlink_to("zz_loop.jpg")
    return folder


def test_unreadable_images_are_one_line_or_skipped(capsys, tmp_path, image_onnx, bad_images):
    for name in ("zz_bomb.png", "zz_iccp.png", "zz_loop.jpg"):
        code, _, err = run(capsys, "embed", bad_images / name, "-m", image_onnx, "-o", tmp_path / "g.npz")
        assert code == 1 and name in _one_line(err)
    code, _, err = run(capsys, "embed", bad_images, "-m", image_onnx, "-o", tmp_path / "g.npz")
    assert code == 1 and "zz_bomb.png" in _one_line(err)
    code, out, err = run(capsys, "embed", bad_images, "-m", image_onnx, "-o", tmp_path / "g.npz", "--skip-bad")
    assert code == 0 and "3 unreadable skipped" in out, err
    assert len(Gallery.load(tmp_path / "g.npz")) == 3


def test_a_file_named_twice_is_embedded_once(capsys, tmp_path, image_onnx, market_synth, iaunet_notes):
    query = sorted((market_synth / "query").glob("*.jpg"))[0]
    code, out, err = run(capsys, "embed", query, query, "-m", image_onnx, "-o", tmp_path / "g.npz")
    assert code == 0 and "embedded 1 images" in out, err
    assert any("1 image(s) named more than once, read once" in note for note in iaunet_notes)
    assert list(Gallery.load(tmp_path / "g.npz").paths) == [str(query)]


def test_a_query_named_as_junk_is_searched(capsys, tmp_path, image_onnx, market_synth):
    assert run(capsys, "embed", market_synth / "bounding_box_test", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    good = sorted((market_synth / "query").glob("*.jpg"))[0]
    junk = tmp_path / "-1_c1s1_000001_00.jpg"
    shutil.copyfile(good, junk)
    code, _, err = run(capsys, "search", good, junk, "-m", image_onnx, "--gallery", tmp_path / "g.npz",
                       "--json", tmp_path / "m.json")
    assert code == 0, err
    results = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["query"] for r in results] == [str(good), str(junk)] and results[1]["matches"]


@contextlib.contextmanager
def unprivileged():
    """Root reads every file whatever its mode: as root, run as 'nobody' (the effective ids
    only, so root takes them back after)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_permission_denied_says_so_for_images_models_and_galleries(capsys, tmp_path, image_onnx, market_synth):
    import tempfile
    assert run(capsys, "embed", market_synth / "query", "-m", image_onnx, "-o", tmp_path / "g.npz")[0] == 0
    work = Path(tempfile.mkdtemp(prefix="iaunet-perm-"))
    try:
        work.chmod(0o777)
        good = sorted((market_synth / "query").glob("*.jpg"))[0]
        for name, source in (("ok.jpg", good), ("locked.jpg", good), ("model.onnx", image_onnx),
                             ("locked.onnx", image_onnx), ("g.npz", tmp_path / "g.npz"),
                             ("locked.npz", tmp_path / "g.npz")):
            shutil.copyfile(source, work / name)
        cases = [(["embed", work / "locked.jpg", "-m", work / "model.onnx", "-o", work / "a.npz"], "image", "jpg"),
                 (["embed", work / "ok.jpg", "-m", work / "locked.onnx", "-o", work / "b.npz"], "model", "onnx"),
                 (["search", work / "ok.jpg", "-m", work / "model.onnx", "--gallery", work / "locked.npz"],
                  "gallery", "npz")]
        for argv, _, _ in cases:  # readable, they work (and every module they import is loaded)
            assert run(capsys, *argv)[0] == 0
        for name in ("locked.jpg", "locked.onnx", "locked.npz"):
            (work / name).chmod(0o000)
        with unprivileged():
            results = [run(capsys, *argv) for argv, _, _ in cases]
    finally:
        shutil.rmtree(work)
    for (code, _, err), (_, what, suffix) in zip(results, cases):
        assert code == 1 and f"cannot read {what} {work / ('locked.' + suffix)} (permission denied)" in _one_line(err)


def test_bench_checks_every_model_and_backend_before_timing(capsys, tmp_path, image_onnx, monkeypatch):
    from iaunet.runtime import perf_figures
    from iaunet.runtime.embedder import read_card
    from iaunet.runtime.engine_card import sidecar_path
    timed = []
    monkeypatch.setattr(perf_figures, "bench_runner", lambda *a, **k: timed.append(a[1]) or [])
    engine = tmp_path / "some.engine"
    engine.write_bytes(b"ftrt" + bytes(60))
    sidecar_path(engine).write_text(json.dumps({
        "format": 1, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": 87,
        "precision": "fp32", "profile": {}, "plugin_route": "python", "plugins": [], "onnx_sha256": "",
        "toolkit_version": "0.1.0", "metadata": read_card(image_onnx).props}))
    for backends, words in ((["onnxruntime-cpu"], "some.engine is a TensorRT engine; it runs only on the 'tensorrt'"),
                            (["onnxruntime-cpu", "tensorrt"], f"{image_onnx.name} is an ONNX file; build an engine")):
        argv = ["bench", image_onnx, engine, "--repeats", 3, "--batch", 1, "-o", tmp_path / "b"]
        code, _, err = run(capsys, *argv, *[a for b in backends for a in ("--backend", b)])
        assert code == 1 and words in _one_line(err) and timed == []
    assert not (tmp_path / "b" / "bench.json").exists()
