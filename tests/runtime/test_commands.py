"""iaunet embed, search and bench, run in-process as a user runs them (their bad input is in
tests/test_bad_inputs.py)."""
import json
import shutil

import pytest

from iaunet.cli import main
from iaunet.runtime.gallery import Gallery


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_outputs_give_evaluations_map(capsys, tmp_path, image_checkpoint, image_onnx, market_synth):
    from iaunet.train.checkpoint import load_checkpoint
    from iaunet.train.data.datasets import open_dataset
    from iaunet.train.metrics import distance_matrix, rank_metrics
    from iaunet.train.trainer import evaluate
    for split in ("query", "bounding_box_test"):
        code, out, err = run(capsys, "embed", market_synth / split, "-m", image_onnx, "-o", tmp_path / f"{split}.npz")
        assert code == 0 and "ids and cameras from the file names" in out, err
    q, g = Gallery.load(tmp_path / "query.npz"), Gallery.load(tmp_path / "bounding_box_test.npz")
    data = open_dataset(market_synth)
    assert len(q) == len(data.query) and len(g) == len(data.gallery)  # junk left out, as evaluation does
    ours = rank_metrics(distance_matrix(q.embeddings, g.embeddings), q.ids, g.ids, q.cameras, g.cameras)
    model, config = load_checkpoint(image_checkpoint)
    theirs = evaluate(model, data, "cpu", config)
    assert abs(100 * ours["mAP"] - 100 * theirs["mAP"]) < 0.1 and ours["cmc"][0] == pytest.approx(theirs["rank1"])


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
