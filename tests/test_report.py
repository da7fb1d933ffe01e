"""The demo's report in a real headless browser: it opens from disk with no server and no
network, every image loads, nothing is logged as an error, and every number cell holds the
value of ``demo.json`` it names."""
import json
import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]


@pytest.fixture(scope="module")
def demo(demo_run):
    """The folder of the session's ``iaunet demo`` run (tests/conftest.py)."""
    out, result = demo_run
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def page(demo):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        seen = {"errors": [], "requests": []}
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto((demo / "report.html").as_uri(), wait_until="load")
        yield page, seen
        browser.close()


def test_report_opens_offline_with_every_image_loaded_and_no_errors(page):
    page, seen = page
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
                           "i.src.slice(0, 23)])")
    assert len(images) >= 7
    inlined = ("data:image/png;base64,", "data:image/jpeg;base64,")  # plots, and the labelled camera frame
    assert all(complete and width > 0 and src.startswith(inlined) for _, complete, width, src in images), images
    assert seen["errors"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]


def _value(summary, key: str):
    for part in key.split("."):
        summary = summary[int(part)] if isinstance(summary, list) else summary[part]
    return summary


def test_every_number_cell_holds_its_demo_json_value(page, demo):
    page, _ = page
    summary = json.loads((demo / "demo.json").read_text())
    cells = page.evaluate("Array.from(document.querySelectorAll('td[data-key]')).map(c => [c.dataset.key, "
                          "c.textContent])")
    keys = {k for k, _ in cells}
    assert {"trained.mAP", "untrained.rank1", "parity.3.min_cosine", "bench.timings.0.p50_ms",
            "verify.rows.0.parity.min_cosine", "verify.rows.0.bench.1.samples_per_s"} <= keys
    assert len(cells) > 40
    for key, text in cells:
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - _value(summary, key)) <= 0.5 * 10 ** -decimals + 1e-12, (key, text)


def test_the_report_says_what_was_not_run_and_the_commands_fit_the_bundle(page, demo):
    page, _ = page
    summary = json.loads((demo / "demo.json").read_text())
    if summary["engines"]["built"]:
        pytest.skip("TensorRT is present: engines were built")
    text = page.inner_text("body")
    build = summary["bundle"]["build"]
    assert "Not run on this machine" in text and build in text and summary["bundle"]["verify"] in text
    assert summary["bundle"]["verify"].startswith("cd bundle-orin && ") and "iaunet verify ." in summary["bundle"]["verify"]
    # verify ran here: one row per variant per backend (an INT8 variant's two layouts are one variant:
    # ONNX Runtime runs X.int8.onnx, TensorRT builds X.int8.trt.onnx), TensorRT rows not run and why
    rows = summary["verify"]["rows"]
    from iaunet.core.graph_io import TENSORRT_SUFFIX, onnxruntime_layout_path
    variants = set(summary["bundle"]["variants"])
    trt_layouts = {v for v in variants if v.endswith(TENSORRT_SUFFIX)}
    portable = {str(onnxruntime_layout_path(v)) for v in trt_layouts}
    assert trt_layouts and portable <= variants, "the bundle holds an INT8 variant in both layouts"
    by_backend = {b: sorted(r["variant"] for r in rows if r["backend"].startswith(b)) for b in ("onnxruntime", "tensorrt")}
    assert summary["verify"]["passed"] and len(rows) == sum(len(v) for v in by_backend.values())
    assert by_backend["onnxruntime"] == sorted(variants - trt_layouts)
    assert by_backend["tensorrt"] == sorted(variants - portable)
    assert all(r["status"] == "pass" for r in rows if r["backend"].startswith("onnxruntime"))
    assert all(r["status"] == "not run" and "TensorRT is not installed" in r["reason"] for r in rows
               if r["backend"] == "tensorrt")
    assert summary["verify"]["command"] in text and (demo / "verify" / "verify.md").is_file()
    # the command names files that are in the bundle
    words = build.split()
    assert words[:4] == ["cd", "bundle-orin", "&&", "iaunet"] and words[4] == "build"
    assert (demo / "bundle-orin" / words[5]).is_file()
    if "--ptx" in words:
        assert (demo / "bundle-orin" / words[words.index("--ptx") + 1] / "manifest.json").is_file()


def test_markdown_holds_the_same_tables_and_its_pictures_exist(demo):
    md = (demo / "report.md").read_text()
    html = (demo / "report.html").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(pictures) >= 7 and all((demo / p).is_file() for p in pictures)
    summary = json.loads((demo / "demo.json").read_text())
    for row in summary["parity"]:
        assert f"{row['min_cosine']:.6f}" in md and f"{row['min_cosine']:.6f}" in html
    assert f"{summary['trained']['mAP']:.4f}" in md
