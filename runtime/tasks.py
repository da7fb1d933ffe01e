"""The runtime's jobs as the ``iaunet`` command runs them: embed image files into a
gallery file, search a gallery with query images, draw the matches as a grid.

Every output is checked before the model is opened and written through a temporary
name. Ids and cameras come from Market-1501-style file names when every file has one
(junk images, id -1, are left out as evaluation leaves them out); otherwise they are
unknown (-1).
"""
from __future__ import annotations


from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core import file_kinds
from iaunet.core.files import atomic_output, atomic_outputs, check_distinct_outputs, check_output_path, json_text
from iaunet.core.log import get_logger
from iaunet.core.names import parse_market_name
from iaunet.core.progress import Progress
from iaunet.runtime.embedder import Embedder
from iaunet.runtime.gallery import UNKNOWN, Gallery

log = get_logger("runtime")
THUMB = (64, 128)          # grid thumbnail (width, height)
FRAME = 4                  # grid match frame, pixels
SHOWN_QUERIES = 20        # queries drawn in the grid and printed on the terminal (all are in --json)
SHOWN_MATCHES = 10        # matches per query printed on the terminal


def labels(paths, keep_junk: bool = False) -> tuple[list, np.ndarray, np.ndarray]:
    """(kept paths, ids, cameras): parsed from Market-style names when all have one,
    junk (-1) dropped unless ``keep_junk``; else every path with unknown ids and cameras."""
    parsed = [parse_market_name(Path(p).name) for p in paths]
    if not paths or any(p is None for p in parsed):
        return list(paths), np.full(len(paths), UNKNOWN), np.full(len(paths), UNKNOWN)
    kept = [(path, pid, cam) for path, (pid, cam) in zip(paths, parsed) if keep_junk or pid != -1]
    return [k[0] for k in kept], np.array([k[1] for k in kept], np.int64), np.array([k[2] for k in kept], np.int64)


def embed_paths(embedder: Embedder, paths, what: str, skip_bad: bool = False):
    """(embeddings, indices of the paths embedded); with ``skip_bad``, unreadable files are
    counted and left out instead of stopping the run."""
    bad = []
    bar = Progress(len(paths), what, "img")

    def skipped(index, error):
        bad.append(index)
        log.debug("skipped %s", error)
        bar.update(1)
    try:
        emb = embedder.embed(paths, progress=bar.update, on_error=skipped if skip_bad else None)
    except BaseException:
        bar.abandon()
        raise
    bar.close()
    if bad:
        log.info("%d unreadable image(s) skipped (first: %s)", len(bad), paths[bad[0]])
    skipped_indices = set(bad)
    return emb, [i for i in range(len(paths)) if i not in skipped_indices]


def embed_files(model, paths, output, backend="auto", batch=None, threads=None, skip_bad=False, folders=()) -> dict:
    """Embed image files into the gallery file ``output``; returns a summary. ``folders``:
    the image folders the files came from (an output inside one is refused)."""
    output = check_output_path(output, inputs=[model, *paths, *folders], kind=file_kinds.GALLERY)
    kept, ids, cams = labels(paths)
    if not kept:
        raise IAUnetError("every image is junk (id -1); nothing to embed")
    with Embedder.open(model, backend, batch, threads) as embedder:
        emb, good = embed_paths(embedder, kept, "embedding", skip_bad)
        gallery = Gallery(emb.shape[1], embedder.model_id)
        gallery.add(emb, ids[good], cams[good], paths=[str(kept[i]) for i in good])
        gallery.save(output)
        return {"images": len(good), "skipped": len(kept) - len(good), "junk_left_out": len(paths) - len(kept),
                "dim": gallery.dim, "backend": embedder.backend, "output": str(output),
                "labelled": bool((ids != UNKNOWN).any())}


def search_files(model, gallery_path, queries, k=10, threshold=None, backend="auto", batch=None, threads=None,
                 grid=None, json_path=None, skip_bad=False, folders=()) -> list[dict]:
    """Rank the gallery for each query image; optionally draw ``grid`` and write ``json_path``
    (both or neither). With ``skip_bad``, unreadable queries are counted and left out instead
    of stopping the run. ``folders``: the query folders (an output inside one is refused: a
    grid there would be a query next time)."""
    check_distinct_outputs(grid, json_path)
    inputs = [model, gallery_path, *queries, *folders]
    outputs = {p: check_output_path(p, inputs=inputs, kind=kind)
               for p, kind in ((grid, file_kinds.IMAGE), (json_path, file_kinds.MATCHES)) if p}
    gallery = Gallery.load(gallery_path)
    kept, q_ids, _ = labels(queries, keep_junk=True)  # a user's query is searched whatever its name says
    with Embedder.open(model, backend, batch, threads, expect_model=gallery.model_id or None) as embedder:
        card = embedder.card
        if gallery.model_id and gallery.model_id != card.model_id and card.matches(gallery.model_id):
            log.info("note: gallery %s names its model by the checkpoint file's SHA-256 (written before model ids "
                     "named the weights); it matches this model's checkpoint. Embed it again to carry the model id",
                     gallery_path)
        gallery.check_model(gallery.model_id if card.matches(gallery.model_id) else card.model_id,
                            card.embedding_dim)
        emb, good = embed_paths(embedder, kept, "queries", skip_bad)
    matches = gallery.search(emb, k, threshold)
    results = [{"query": str(kept[q]), "id": int(q_ids[q]),
                "matches": [{"path": str(gallery.paths[j]), "id": int(gallery.ids[j]), "score": float(s)}
                            for j, s in zip(matches.indices[i], matches.scores[i]) if j >= 0]}
               for i, q in enumerate(good)]
    with atomic_outputs(*outputs) as temps:
        written = dict(zip(outputs, temps))
        if json_path:
            Path(written[json_path]).write_text(json_text({"gallery": str(gallery_path), "k": k,
                                                           "threshold": threshold, "results": results}))
        if grid:
            draw_grid(results, written[grid])
    return results


def _thumb(path, colour=None):
    from PIL import Image, ImageOps
    from iaunet.core.preprocess import load_image
    try:
        img = load_image(path).resize(THUMB)
    except IAUnetError:
        img = Image.new("RGB", THUMB, (128, 128, 128))
    return ImageOps.expand(img.resize((THUMB[0] - 2 * FRAME, THUMB[1] - 2 * FRAME)), FRAME, colour or (255, 255, 255))


def draw_grid(results, path) -> None:
    """Each query (black frame) beside its matches: green frame same id, red another id,
    white when ids are unknown."""
    from PIL import Image
    rows = results[:SHOWN_QUERIES]
    if len(results) > len(rows):
        log.info("the grid draws the first %d of %d queries", len(rows), len(results))
    k = max((len(r["matches"]) for r in rows), default=0)
    gap = THUMB[0] // 4
    canvas = Image.new("RGB", (THUMB[0] * (k + 1) + gap, THUMB[1] * len(rows)), (255, 255, 255))
    for row, result in enumerate(rows):
        canvas.paste(_thumb(result["query"], (0, 0, 0)), (0, row * THUMB[1]))
        for col, match in enumerate(result["matches"]):
            known = result["id"] != UNKNOWN and match["id"] != UNKNOWN
            colour = ((0, 170, 0) if match["id"] == result["id"] else (210, 0, 0)) if known else None
            canvas.paste(_thumb(match["path"], colour), (gap + THUMB[0] * (col + 1), row * THUMB[1]))
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")


def describe(results, json_path=None) -> list[str]:
    """Lines for the terminal: the first queries' top matches with scores (✓/✗ where ids
    are known), and what was left out, with where to find it."""
    where = f"all in {json_path}" if json_path else "all with --json"
    lines = []
    for result in results[:SHOWN_QUERIES]:
        marks = []
        for m in result["matches"][:SHOWN_MATCHES]:
            tick = "" if UNKNOWN in (result["id"], m["id"]) else (" ✓" if m["id"] == result["id"] else " ✗")
            marks.append(f"{Path(m['path']).name} {m['score']:.3f}{tick}")
        hidden = len(result["matches"]) - len(marks)
        more = f", ... {hidden} more" if hidden > 0 else ""
        lines.append(f"{Path(result['query']).name}: " + (", ".join(marks) or "no match above the threshold") + more)
    if len(results) > SHOWN_QUERIES:
        lines.append(f"... {len(results) - SHOWN_QUERIES} more queries ({where})")
    elif any(len(r["matches"]) > SHOWN_MATCHES for r in results):
        lines.append(f"(matches beyond the first {SHOWN_MATCHES}: {where})")
    return lines
