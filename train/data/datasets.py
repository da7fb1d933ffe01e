"""Readers for the real re-ID layouts (Market-1501, DukeMTMC-reID, MSMT17, MARS).

Each reader returns a ``ReIDData``: train / query / gallery lists of ``Sample``. An
image sample has one path; a video sample (MARS) has its tracklet's frame paths.
Training identities are relabelled 0..K-1; cameras are 0-based. Junk (identity -1)
is dropped and distractors (identity 0) stay in the gallery, as the standard protocol
(and torchreid) treat them. Part masks written by ``iaunet synth`` are picked up from
``<root>/masks/`` when present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from iaunet.core.errors import IAUnetError
from iaunet.core.names import MARKET_PATTERN, parse_market_name

MARKET_LAYOUT = "<root>/bounding_box_train/, <root>/query/, <root>/bounding_box_test/ with images named PPPP_cC..."
MSMT_LAYOUT = "<root>/train/, <root>/test/, <root>/list_train.txt, list_val.txt, list_query.txt, list_gallery.txt"
MARS_LAYOUT = ("<root>/bbox_train/, <root>/bbox_test/, <root>/info/{train_name.txt, test_name.txt, "
               "tracks_train_info.mat, tracks_test_info.mat, query_IDX.mat}")


@dataclass
class Sample:
    paths: tuple          # one path for an image, the frame paths for a tracklet
    pid: int
    camid: int
    masks: tuple = ()     # label-map paths aligned with ``paths`` (may be empty)


@dataclass
class ReIDData:
    name: str
    root: Path
    train: list = field(default_factory=list)
    query: list = field(default_factory=list)
    gallery: list = field(default_factory=list)
    video: bool = False

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def has_masks(self) -> bool:
        return bool(self.train) and all(s.masks for s in self.train)

    def summary(self) -> str:
        return (f"{self.name}: train {len(self.train)} ({self.num_train_pids} ids), "
                f"query {len(self.query)}, gallery {len(self.gallery)}{' (video)' if self.video else ''}")


def _require(root: Path, parts, layout: str, name: str):
    missing = [p for p in parts if not (root / p).exists()]
    if missing:
        raise IAUnetError(f"{root} is not a {name} folder: missing {', '.join(missing)}; expected {layout}")


def _mask_for(root: Path, image: Path) -> tuple:
    mask = (root / "masks" / image.relative_to(root)).with_suffix(".png")
    return (mask,) if mask.is_file() else ()


def _relabel(samples: list) -> list:
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    for s in samples:
        s.pid = mapping[s.pid]
    return samples


def _read_market_dir(root: Path, sub: str) -> list:
    samples = []
    for path in sorted((root / sub).glob("*.jpg")):
        parsed = parse_market_name(path.name)
        if parsed is None:
            raise IAUnetError(f"image name {path} does not follow {MARKET_PATTERN}")
        pid, cam = parsed
        if pid == -1:
            continue  # junk
        samples.append(Sample((path,), pid, cam, _mask_for(root, path)))
    if not samples:
        raise IAUnetError(f"{root / sub} holds no images; expected .jpg files named {MARKET_PATTERN}")
    return samples


def read_market1501(root, name="market1501") -> ReIDData:
    """Market-1501 and DukeMTMC-reID (same layout and naming)."""
    root = Path(root)
    _require(root, ("bounding_box_train", "query", "bounding_box_test"), MARKET_LAYOUT, name)
    return ReIDData(name, root, _relabel(_read_market_dir(root, "bounding_box_train")),
                    _read_market_dir(root, "query"), _read_market_dir(root, "bounding_box_test"))


def read_dukemtmc(root) -> ReIDData:
    return read_market1501(root, "dukemtmc")


def _read_msmt_list(root: Path, sub: str, list_name: str) -> list:
    samples = []
    for number, line in enumerate((root / list_name).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, pid = line.split()
            cam = int(Path(rel).name.split("_")[2]) - 1
        except (ValueError, IndexError):
            raise IAUnetError(f"{root / list_name}:{number} is not 'PID_DIR/NAME.jpg PID' with camera in NAME") from None
        path = root / sub / rel
        samples.append(Sample((path,), int(pid), cam, _mask_for(root, path)))
    return samples


def read_msmt17(root) -> ReIDData:
    root = Path(root)
    _require(root, ("train", "test", "list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"),
             MSMT_LAYOUT, "msmt17")
    train = _read_msmt_list(root, "train", "list_train.txt") + _read_msmt_list(root, "train", "list_val.txt")
    return ReIDData("msmt17", root, _relabel(train), _read_msmt_list(root, "test", "list_query.txt"),
                    _read_msmt_list(root, "test", "list_gallery.txt"))


def _load_mat(path: Path, key: str):
    from scipy.io import loadmat
    try:
        return loadmat(path)[key]
    except Exception as exc:
        raise IAUnetError(f"{path} is not a MARS info file with {key!r} ({type(exc).__name__})") from None


def _mars_tracks(root: Path, split: str, names: list, info) -> list:
    samples = []
    for start, end, pid, cam in info.astype(int)[:, :4]:
        if pid == -1:
            continue
        frames = names[start - 1:end]
        if not frames:
            raise IAUnetError(f"MARS {split} track {start}-{end} is outside info/{split}_name.txt ({len(names)} names)")
        paths = tuple(root / f"bbox_{split}" / n[:4] / n for n in frames)
        masks = tuple(m for p in paths for m in _mask_for(root, p))
        samples.append(Sample(paths, int(pid), int(cam) - 1, masks if len(masks) == len(paths) else ()))
    return samples


def read_mars(root) -> ReIDData:
    root = Path(root)
    info = ("info/train_name.txt", "info/test_name.txt", "info/tracks_train_info.mat",
            "info/tracks_test_info.mat", "info/query_IDX.mat")
    _require(root, ("bbox_train", "bbox_test") + info, MARS_LAYOUT, "mars")
    names = {s: (root / f"info/{s}_name.txt").read_text().split() for s in ("train", "test")}
    train = _mars_tracks(root, "train", names["train"], _load_mat(root / info[2], "track_train_info"))
    test_info = _load_mat(root / info[3], "track_test_info")
    query_idx = set(_load_mat(root / info[4], "query_IDX").astype(int).ravel() - 1)
    query_rows = [i for i in range(len(test_info)) if i in query_idx]
    gallery_rows = [i for i in range(len(test_info)) if i not in query_idx]
    query = _mars_tracks(root, "test", names["test"], test_info[query_rows])
    gallery = _mars_tracks(root, "test", names["test"], test_info[gallery_rows])
    return ReIDData("mars", root, _relabel(train), query, gallery, video=True)


READERS = {"market1501": read_market1501, "dukemtmc": read_dukemtmc, "msmt17": read_msmt17, "mars": read_mars}


def open_dataset(root, name: str = "auto") -> ReIDData:
    """Read a data set folder; ``auto`` recognises the layout from its folders."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise IAUnetError(f"data folder {root} is a file; expected a data set folder")
    if not root.is_dir():
        raise IAUnetError(f"data folder {root} not found; expected one of the layouts: "
                          f"Market-1501/Duke {MARKET_LAYOUT}; MSMT17 {MSMT_LAYOUT}; MARS {MARS_LAYOUT}")
    if name == "auto":
        if (root / "bbox_train").exists():
            name = "mars"
        elif (root / "list_train.txt").exists():
            name = "msmt17"
        elif (root / "bounding_box_train").exists():
            name = "market1501"
        else:
            raise IAUnetError(f"{root} has no known re-ID layout; expected Market-1501/Duke {MARKET_LAYOUT}, "
                              f"or MSMT17 {MSMT_LAYOUT}, or MARS {MARS_LAYOUT}")
    if name not in READERS:
        raise IAUnetError(f"unknown data set {name!r}; expected one of {sorted(READERS)} or 'auto'")
    return READERS[name](root)
