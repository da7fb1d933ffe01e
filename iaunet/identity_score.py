"""Scoring identities across cameras against a synthetic scene's ground truth
(``iaunet cameras ... --gt DIR``, ``OUT/score.json``).

- **IDF1, IDP, IDR across cameras** by TrackEval (``trackeval.metrics.Identity``, the
  field's scorer): every camera's frames are laid one after another as one sequence,
  ground-truth boxes carry their global identity (``identities.json``'s ``gt_tracks``),
  our boxes the global identity of ``OUT/camK.txt``, box similarity is TrackEval's IoU
  (``_BaseDataset._calculate_box_ious``, threshold 0.5), so one identity matched in two
  cameras counts only when it is the same global id in both.
- **Track-level cross-camera rank-1 and mAP**: each embedded tracker track queries the
  tracks of the other cameras (``tracks.npz``), its identity the one most of its boxes
  belong to (``identities.json``'s ``tracker_tracks``); queries whose identity no other
  camera holds are left out.

Top layer: imports trackeval (the ``train`` and ``cameras`` extras install it) and the runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.files import write_json

IOU_THRESHOLD = 0.5


def check_scene(gt, cameras: int) -> Path:
    """A scene folder with identities.json naming at least ``cameras`` cameras and their gt files."""
    gt = Path(gt)
    expected = "expected a folder written by 'iaunet synth --scenes' (identities.json, camK.gt.txt)"
    try:
        ids = json.loads((gt / "identities.json").read_text())
        names = ids["cameras"]
    except (OSError, ValueError, KeyError, TypeError):
        raise IAUnetError(f"--gt {gt}: no readable identities.json; {expected}") from None
    if len(names) < cameras:
        raise IAUnetError(f"--gt {gt} has {len(names)} cameras, this run {cameras}; {expected}")
    missing = [n for n in names[:cameras] if not (gt / f"{n}.gt.txt").is_file()]
    if missing:
        raise IAUnetError(f"--gt {gt}: {missing[0]}.gt.txt not found; {expected}")
    return gt


def _mot(path) -> dict:
    """{frame: [(id, x, y, w, h)]} from a MOT file (1-based pixels kept: IoU does not care)."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            f = line.split(",")
            rows.setdefault(int(float(f[0])), []).append((int(float(f[1])), *map(float, f[2:6])))
    return rows


def sequence(gt_dir, out, names) -> dict:
    """TrackEval's per-sequence data: every camera's frames one after another, global ids."""
    from trackeval.datasets._base_dataset import _BaseDataset
    gt_dir, out = Path(gt_dir), Path(out)
    ids = json.loads((gt_dir / "identities.json").read_text())
    gt_ids, tr_ids, sims, gt_map, tr_map = [], [], [], {}, {}
    for name, gt_name in zip(names, ids["cameras"]):
        global_of = {int(k): int(v) for k, v in ids["gt_tracks"][gt_name].items()}
        gt, ours = _mot(gt_dir / f"{gt_name}.gt.txt"), _mot(out / f"{name}.txt")
        for frame in range(1, max([0, *gt, *ours]) + 1):
            g, t = gt.get(frame, []), ours.get(frame, [])
            gt_ids.append(np.array([gt_map.setdefault(global_of[r[0]], len(gt_map)) for r in g], int))
            tr_ids.append(np.array([tr_map.setdefault(r[0], len(tr_map)) for r in t], int))
            gb = np.array([r[1:] for r in g], float).reshape(-1, 4)
            tb = np.array([r[1:] for r in t], float).reshape(-1, 4)
            sims.append(_BaseDataset._calculate_box_ious(gb, tb, box_format="xywh"))
    return {"num_timesteps": len(gt_ids), "num_gt_ids": len(gt_map), "num_tracker_ids": len(tr_map),
            "num_gt_dets": int(sum(len(g) for g in gt_ids)), "num_tracker_dets": int(sum(len(t) for t in tr_ids)),
            "gt_ids": gt_ids, "tracker_ids": tr_ids, "similarity_scores": sims}


def identity_metrics(data: dict) -> dict:
    """TrackEval's Identity metric (IDF1, IDP, IDR, IDTP, IDFN, IDFP) on one sequence."""
    from trackeval.metrics import Identity
    res = Identity({"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}).eval_sequence(data)
    return {k: (float(v) if k in ("IDF1", "IDP", "IDR") else int(v)) for k, v in res.items()}


def track_retrieval(embeddings: np.ndarray, cameras, identities) -> dict:
    """Cross-camera rank-1 and mAP: each track against the tracks of the other cameras."""
    cameras, identities = np.asarray(cameras), np.asarray(identities)
    sims = embeddings @ embeddings.T
    hits, aps = [], []
    for i in range(len(embeddings)):
        gallery = np.flatnonzero(cameras != cameras[i])
        same = identities[gallery] == identities[i]
        if not same.any():
            continue
        order = np.argsort(-sims[i, gallery], kind="stable")
        good = same[order]
        hits.append(bool(good[0]))
        ranks = np.flatnonzero(good) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return {"rank1": float(np.mean(hits)) if hits else 0.0, "mAP": float(np.mean(aps)) if aps else 0.0,
            "queries": len(hits)}


def score_run(out, gt_dir, names) -> dict:
    """Score ``OUT`` (camK.txt, tracks.npz) against the scene in ``gt_dir``; write OUT/score.json."""
    out, gt_dir = Path(out), Path(gt_dir)
    score = identity_metrics(sequence(gt_dir, out, names))
    ids = json.loads((gt_dir / "identities.json").read_text())
    cam_of = dict(zip(names, ids["cameras"]))
    with np.load(out / "tracks.npz") as npz:
        keep = [i for i, (c, t) in enumerate(zip(npz["cameras"], npz["track_ids"]))
                if str(int(t)) in ids["tracker_tracks"].get(cam_of.get(str(c), ""), {})]
        emb = npz["embeddings"][keep]
        cams = [str(npz["cameras"][i]) for i in keep]
        idents = [ids["tracker_tracks"][cam_of[c]][str(int(npz["track_ids"][i]))] for c, i in zip(cams, keep)]
    score |= track_retrieval(emb, cams, idents)
    score |= {"gt": str(gt_dir), "cameras": list(names), "iou_threshold": IOU_THRESHOLD,
              "scorer": "trackeval.metrics.Identity over all cameras' frames as one sequence, global ids"}
    write_json(out / "score.json", score)
    return score
