"""The demo's report: ``report.html`` (one static page, every image inlined, nothing
fetched) and ``report.md`` (the same content, images beside it), from the summary the
demo keeps in ``demo.json``. Draws the pipeline picture and the training curves; the
other plots are the stages' own (parity, INT8 sensitivity, search grid, benchmark).

Every number cell of the HTML tables carries ``data-key``, the path of its value in
``demo.json`` (``trained.mAP``, ``parity.2.min_cosine``): the browser test reads them
back and compares. Top layer: imports only the core and matplotlib.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from iaunet.core.files import atomic_output

PICTURES = {  # file under the demo folder -> caption
    "pipeline.png": "The pipeline: each stage's outputs, sizes and time",
    "training.png": "Training: loss per epoch, mAP per evaluation",
    "parity/parity_cosine.png": "Per-sample cosine to PyTorch",
    "parity/parity_cmc.png": "CMC of PyTorch and every variant",
    "model.int8.sensitivity.png": "INT8 sensitivity per layer and the fallback",
    "search/grid.png": "Queries (black) and their top-5 from the runtime: green same person, red another",
    "bench/bench.png": "Samples per second, ONNX Runtime against PyTorch eager",
    "cameras/latency.png": "Camera stream: latency from a frame's arrival to its crops' embeddings",
    "cameras/timeline.png": "Identities across cameras: each identity's tracks against time, one colour per camera",
    "cameras/frames/cam1.jpg": "A frame of cam1 with the tracker's boxes labelled by global identity",
}
EVAL_METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def fmt(value, digits: int = 4) -> str:
    """How the report writes a number: the browser test reads it back and checks it equals
    the demo.json value to the digits shown."""
    if isinstance(value, bool) or value is None:
        return {True: "pass", False: "FAIL", None: "-"}[value]
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def write_report(folder: Path, summary: dict) -> None:
    folder = Path(folder)
    _pipeline_picture(summary["stages"], folder / "pipeline.png")
    _training_picture(summary["history"], folder / "training.png")
    sections = _sections(summary)
    with atomic_output(folder / "report.md") as tmp:
        Path(tmp).write_text(_markdown(sections))
    with atomic_output(folder / "report.html") as tmp:
        Path(tmp).write_text(_html(sections, folder))


# -- content, shared by both formats: (title, paragraphs, tables, pictures) -----------------

def _sections(s: dict) -> list:
    machine = s["machine"]
    trt = f"TensorRT {machine['tensorrt']}" if machine["tensorrt"] else "no TensorRT"
    int8, rt, bench = s["int8"], s["runtime"], s["bench"]
    moved = (f"{len(int8['fp16_layers'])} layer(s) moved to FP16 ({int8['fp16_flops_share']:.1%} of FLOPs)"
             if int8["fp16_layers"] else "no layer had to leave INT8")
    return [
        ("Pipeline", [f"Ran on {machine['cores']} CPU core(s), {machine['cpu']}, Python {machine['python']}, {trt}."],
         [_stage_table(s["stages"])], ["pipeline.png"]),
        ("Training and evaluation", ["Rank-k and mAP on the synthetic query and gallery splits, untrained beside "
                                     "trained."], [_eval_table(s)], ["training.png"]),
        ("Accuracy parity", ["Every variant against the PyTorch checkpoint on query + gallery, judged by the gates."],
         [_parity_table(s["parity"])], ["parity/parity_cosine.png", "parity/parity_cmc.png"]),
        ("INT8 sensitivity", [f"{int8['method']} calibration, FP16 outside the Q/DQ; held-out mean cosine to FP32 "
                              f"{fmt(int8['held_out_mean_cosine'])} against the target {int8['target']}: {moved}. "
                              f"Most sensitive: {', '.join(int8['most_sensitive']) or '-'}."],
         [], ["model.int8.sensitivity.png"]),
        ("Search", [f"{rt['model']} on {rt['backend']}: {rt['queries']} queries against {rt['gallery']} gallery "
                    f"images; the top match is the same person for {rt['top1_same_id']:.1%} (a plain search counts "
                    "same-camera matches, which the rank-1 protocol above leaves out). The first "
                    f"{rt['grid_queries']} queries:"], [], ["search/grid.png"]),
        ("Cameras", [f"{s['cameras']['cameras']} synthetic cameras of {s['cameras']['seconds']:g} s (25 fps) and "
                     "a tracker's boxes through the camera stream (`iaunet cameras`, its defaults), unpaced, one "
                     "inference worker for every camera; cross-camera rank-1 of the track embeddings "
                     f"{s['cameras']['rank1']:.1%}. Batch sizes: " +
                     ", ".join(f"{k}: {v}" for k, v in s["cameras"]["batch_size_histogram"].items()) + "."],
         [_cameras_table(s["cameras"])], ["cameras/latency.png"]),
        ("Identities across cameras", [_identities_text(s["cameras"]["identities"])], [],
         ["cameras/timeline.png"] + (["cameras/frames/cam1.jpg"] if "frames/cam1.jpg" in
                                     s["cameras"]["identities"]["frames"] else [])),
        ("Benchmark", [f"Medians over {bench['repeats']} calls per row, one run; CPU peak "
                       f"({bench['peak_estimate']}): {fmt(bench['cpu_peak_gflops'], 0)} GFLOP/s. "
                       "Samples/s against PyTorch eager: " +
                       ", ".join(f"{k} {r:.2f}x" for k, r in bench["vs_pytorch"].items()) + "."],
         [_bench_table(bench)], ["bench/bench.png"]),
        ("Jetson bundle", [f"`{s['bundle']['path']}`: {s['bundle']['files']} files for {s['bundle']['target']} "
                           f"(plugin route {s['bundle']['route']}), with a README, a manifest of hashes and "
                           + (f"a parity kit of {s['bundle']['kit']['size']} held-out images (references from "
                              f"{s['bundle']['kit']['reference']})." if s["bundle"].get("kit") else "no parity kit.")],
         [], []),
        ("Verify on this machine", [f"`{s['verify']['command']}`: every variant of the bundle built where TensorRT "
                                    "is, checked against the bundle's kit and benched; "
                                    + ("every row passes or was not run." if s["verify"]["passed"] else
                                       "a row FAILS.")], [_verify_table(s["verify"])], []),
        ("Not run on this machine", ["Nothing: every stage ran here."] if not s["not_run"] else [],
         [_not_run_table(s["not_run"])] if s["not_run"] else [], []),
    ]


def _cell(value, key: str | None = None, digits: int = 4) -> tuple:
    return (fmt(value, digits) if not isinstance(value, str) else value, key)


def _stage_table(stages) -> tuple:
    rows = [[_cell(st["stage"]), _cell(", ".join(f"{o['path']} ({_size(o['bytes'])})" for o in st["outputs"]) or "-"),
             _cell(st["seconds"], f"stages.{i}.seconds", 1)] for i, st in enumerate(stages)]
    return ["stage", "outputs", "seconds"], rows


def _eval_table(s) -> tuple:
    rows = [[_cell(name)] + [_cell(s[name][m], f"{name}.{m}") for m in EVAL_METRICS] for name in ("untrained", "trained")]
    return ["model", "rank-1", "rank-5", "rank-10", "mAP", "mINP"], rows


def _parity_table(rows) -> tuple:
    out = []
    for i, r in enumerate(rows):
        gate = "reference" if i == 0 else ("pass" if r["passed"] else "FAIL: " + ", ".join(r["failures"]))
        out.append([_cell(r["name"]), _cell(r["precision"]), _cell(r["mean_cosine"], f"parity.{i}.mean_cosine", 6),
                    _cell(r["min_cosine"], f"parity.{i}.min_cosine", 6), _cell(r["rank1"], f"parity.{i}.rank1", 2),
                    _cell(r["mAP"], f"parity.{i}.mAP", 2), _cell(r["delta_map"], f"parity.{i}.delta_map", 2),
                    _cell(gate), _cell(", ".join(f"{k} {v}" for k, v in r["gate"].items()) or "-")])
    return ["variant", "precision", "mean cos", "min cos", "rank-1", "mAP", "Δ mAP", "verdict", "gate"], out


def _bench_table(bench) -> tuple:
    rows = [[_cell(t["backend"]), _cell(t["batch"], f"bench.timings.{i}.batch"), _cell(t["kind"]),
             _cell(t["p50_ms"], f"bench.timings.{i}.p50_ms", 2),
             _cell(t["samples_per_s"], f"bench.timings.{i}.samples_per_s", 1)]
            for i, t in enumerate(bench["timings"])]
    return ["backend", "batch", "kind", "p50 ms", "samples/s"], rows


def _mime(picture: str) -> str:
    return "jpeg" if picture.endswith(".jpg") else "png"


def _identities_text(ids) -> str:
    return (f"The camera stream's tracks matched into identities as they ended (`iaunet cameras`' default local "
            f"store, threshold {ids['threshold']:g}): {ids['tracks']} tracks into {ids['identities']} identities, "
            f"{ids['cross_camera_identities']} seen by more than one camera. Scored against the scene's ground "
            f"truth with TrackEval over all cameras with global ids: IDF1 {fmt(ids['IDF1'], 3)}, IDP "
            f"{fmt(ids['IDP'], 3)}, IDR {fmt(ids['IDR'], 3)}; track-level cross-camera rank-1 "
            f"{fmt(ids['rank1'], 3)}, mAP {fmt(ids['mAP'], 3)}.")


def _cameras_table(cams) -> tuple:
    rows = [[_cell(name)] + [_cell(c[k], f"cameras.per_camera.{name}.{k}", 1) for k in
                             ("frames", "boxes_seen", "crops_embedded", "crops_dropped", "p99_ms")]
            for name, c in cams["per_camera"].items()]
    o = cams["overall"]
    rows.append([_cell("all")] + [_cell(o[k], f"cameras.overall.{k}") for k in
                                  ("frames", "boxes_seen", "crops_embedded", "crops_dropped")] +
                [_cell(cams["latency_ms"]["p99"], "cameras.latency_ms.p99", 1)])
    return ["camera", "frames", "boxes", "crops embedded", "dropped", "p99 ms"], rows
def _verify_table(verify) -> tuple:
    batches = sorted({b["batch"] for r in verify["rows"] for b in r["bench"]})
    rows = []
    for i, r in enumerate(verify["rows"]):
        p, key = r["parity"] or {}, f"verify.rows.{i}"
        cells = [_cell(r["variant"]), _cell(r["backend"]), _cell(r["status"])]
        cells += [_cell(p[k], f"{key}.parity.{k}", d) if k in p else _cell("-")
                  for k, d in (("mean_cosine", 6), ("min_cosine", 6), ("rank1", 2), ("delta_map", 2))]
        bench = {b["batch"]: j for j, b in enumerate(r["bench"])}
        for b in batches:
            j = bench.get(b)
            cells += [_cell(r["bench"][j][k], f"{key}.bench.{j}.{k}", d) if j is not None else _cell("-")
                      for k, d in (("p50_ms", 2), ("p99_ms", 2), ("samples_per_s", 1))]
        cells.append(_cell("; ".join(x for x in (r["reason"], r["triage"]) if x) or "-"))
        rows.append(cells)
    head = ["variant", "backend", "verdict", "mean cos", "min cos", "rank-1", "Δ mAP"]
    head += [f"{what} b{b}" for b in batches for what in ("p50 ms", "p99 ms", "samples/s")] + ["why"]
    return head, rows


def _not_run_table(rows) -> tuple:
    return ["what", "why", "run it where it can"], [[_cell(r["what"]), _cell(r["why"]), _cell(r["run"])] for r in rows]


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


# -- formats ---------------------------------------------------------------------------------

def _markdown(sections) -> str:
    lines = ["# IAUnet demo report", ""]
    for title, paragraphs, tables, pictures in sections:
        lines += [f"## {title}", ""]
        for text in paragraphs:
            lines += [text, ""]
        for header, rows in tables:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(text.replace("|", "\\|") for text, _ in row) + " |" for row in rows]
            lines.append("")
        for picture in pictures:
            lines += [f"![{PICTURES[picture]}]({picture})", ""]
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td[data-key]{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:0 0 1.5em}img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.9em}
code{background:#f3f3f3;padding:0 .2em}"""


def _html(sections, folder: Path) -> str:
    body = ["<h1>IAUnet demo report</h1>"]
    for title, paragraphs, tables, pictures in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [f"<p>{_inline_code(text)}</p>" for text in paragraphs]
        for header, rows in tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = ["".join(f'<td data-key="{key}">{html.escape(text)}</td>' if key else f"<td>{html.escape(text)}</td>"
                             for text, key in row) for row in rows]
            body.append(f"<table><tr>{head}</tr>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>")
        for picture in pictures:
            data = base64.b64encode((folder / picture).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(PICTURES[picture])}" '
                        f'src="data:image/{_mime(picture)};base64,{data}">'
                        f"<figcaption>{html.escape(PICTURES[picture])}</figcaption></figure>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>IAUnet demo report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def _inline_code(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# -- pictures --------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _pipeline_picture(stages, path: Path) -> None:
    """One box per stage, in order, with its time and outputs; arrows between them."""
    plt = _pyplot()
    per_row = 4
    rows = (len(stages) + per_row - 1) // per_row
    fig, ax = plt.subplots(figsize=(12, 2.1 * rows))
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows, 0)
    ax.axis("off")
    for i, st in enumerate(stages):
        x, y = i % per_row, -(i // per_row)
        outputs = "\n".join(f"{o['path']} {_size(o['bytes'])}" for o in st["outputs"][:3]) or "(no files)"
        ax.add_patch(plt.Rectangle((x + 0.05, y - 0.9), 0.8, 0.8, facecolor="#eef4fb", edgecolor="#4a7ab5"))
        ax.text(x + 0.45, y - 0.2, f"{i + 1}. {st['stage']}  ({st['seconds']:.0f} s)", ha="center", fontsize=9,
                weight="bold")
        ax.text(x + 0.45, y - 0.55, outputs, ha="center", va="center", fontsize=7, family="monospace")
        if i + 1 < len(stages) and x + 1 < per_row:
            ax.annotate("", (x + 1.05, y - 0.5), (x + 0.85, y - 0.5), arrowprops={"arrowstyle": "->"})
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _training_picture(history, path: Path) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    epochs = [h["epoch"] for h in history]
    left.plot(epochs, [h["loss"] for h in history], marker=".")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    evals = [(h["epoch"], h["eval"]["mAP"], h["eval"]["rank1"]) for h in history if "eval" in h]
    if evals:
        right.plot([e[0] for e in evals], [e[1] for e in evals], marker="o", label="mAP")
        right.plot([e[0] for e in evals], [e[2] for e in evals], marker="s", label="rank-1")
        right.legend()
    right.set_xlabel("epoch")
    right.set_ylabel("query / gallery")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
