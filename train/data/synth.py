"""Synthetic re-ID data: drawn people seen by several cameras, in the Market-1501 or
MARS layout, with four part masks per crop. numpy and Pillow only; deterministic by seed.

An identity is a body (build, skin, hair) dressed in clothing colours and textures,
with accessories (backpack, hat, handbag). Some identities are look-alikes that share
their upper or lower clothing with another identity. Each image draws the person in a
walking pose from a front, back or side view (which changes what is visible: the face,
the backpack, the chest logo), then a camera applies its own colour cast, blur,
resolution and background clutter; occluders and detector-box jitter are added per crop.

Masks are written as one-channel PNG label maps beside the images
(``masks/<split>/<image stem>.png``): 0 background, 1 head, 2 upper body (with arms and
backpack), 3 lower body, 4 shoes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT_H, OUT_W = 128, 64          # Market-1501 crop size
CANVAS_H, CANVAS_W = 256, 128   # drawn at 2x, then reduced (anti-aliasing)
HEAD, UPPER, LOWER, SHOES = 1, 2, 3, 4

PALETTE = np.array([
    (200, 30, 30), (30, 60, 180), (30, 140, 50), (230, 200, 40), (240, 240, 240),
    (25, 25, 25), (120, 120, 120), (130, 70, 30), (230, 120, 20), (120, 40, 150),
    (240, 150, 180), (40, 180, 190), (100, 110, 40), (20, 30, 80), (170, 150, 110)])
SKIN = np.array([(250, 215, 185), (225, 180, 140), (190, 140, 100), (140, 95, 60), (95, 65, 40)])
HAIR = np.array([(20, 15, 10), (70, 45, 25), (150, 110, 60), (200, 190, 160), (120, 30, 20)])
TEXTURES = ("plain", "hstripes", "vstripes", "checks", "dots")
VIEWS = ("front", "back", "left", "right")


def _colour(rng, palette=PALETTE, jitter=12):
    base = palette[rng.integers(len(palette))].astype(int)
    return tuple(int(v) for v in np.clip(base + rng.integers(-jitter, jitter + 1, 3), 0, 255))


@dataclass
class Identity:
    """What stays the same for one person across cameras."""
    height: float
    girth: float
    skin: tuple
    hair: tuple
    long_hair: bool
    upper: tuple
    upper2: tuple
    texture: str
    long_sleeves: bool
    lower_kind: str
    lower: tuple
    shoes: tuple
    backpack: tuple | None
    hat: tuple | None
    handbag: tuple | None
    logo: bool

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Identity":
        return cls(height=float(rng.uniform(0.88, 1.0)), girth=float(rng.uniform(0.85, 1.15)),
                   skin=_colour(rng, SKIN, 8), hair=_colour(rng, HAIR, 8), long_hair=bool(rng.random() < 0.35),
                   upper=_colour(rng), upper2=_colour(rng), texture=TEXTURES[rng.integers(len(TEXTURES))],
                   long_sleeves=bool(rng.random() < 0.5),
                   lower_kind=("trousers", "shorts", "skirt")[rng.choice(3, p=[0.6, 0.25, 0.15])],
                   lower=_colour(rng), shoes=_colour(rng, jitter=20),
                   backpack=_colour(rng) if rng.random() < 0.35 else None,
                   hat=_colour(rng) if rng.random() < 0.2 else None,
                   handbag=_colour(rng) if rng.random() < 0.2 else None,
                   logo=bool(rng.random() < 0.4))

    def look_alike(self, other: "Identity", rng) -> "Identity":
        """Copy the upper or the lower clothing of ``other`` (hard negatives)."""
        if rng.random() < 0.5:
            self.upper, self.upper2, self.texture = other.upper, other.upper2, other.texture
        else:
            self.lower, self.lower_kind = other.lower, other.lower_kind
        return self


@dataclass
class Camera:
    """What one camera does to every crop it sees."""
    gain: np.ndarray
    brightness: float
    blur: float
    scale: float
    background: tuple
    clutter: int

    @classmethod
    def draw(cls, rng) -> "Camera":
        return cls(gain=rng.uniform(0.8, 1.2, 3), brightness=float(rng.uniform(0.75, 1.15)),
                   blur=float(rng.uniform(0.0, 1.2)), scale=float(rng.uniform(0.45, 1.0)),
                   background=_muted(_colour(rng, jitter=40), (128, 128, 128), 0.55),
                   clutter=int(rng.integers(2, 9)))


class _Painter:
    """Draws on the RGB canvas and the label map with one call per shape."""

    def __init__(self, background):
        self.img = Image.new("RGB", (CANVAS_W, CANVAS_H), background)
        self.lab = Image.new("L", (CANVAS_W, CANVAS_H), 0)
        self.d, self.m = ImageDraw.Draw(self.img), ImageDraw.Draw(self.lab)

    def poly(self, pts, colour, label):
        self.d.polygon(pts, fill=colour)
        if label is not None:
            self.m.polygon(pts, fill=label)

    def ellipse(self, box, colour, label):
        self.d.ellipse(box, fill=colour)
        if label is not None:
            self.m.ellipse(box, fill=label)

    def limb(self, p0, p1, width, colour, label):
        self.d.line([p0, p1], fill=colour, width=width)
        if label is not None:
            self.m.line([p0, p1], fill=label, width=width)

    def texture(self, pts, person: Identity, rng):
        """Overlay the identity's texture inside polygon ``pts``."""
        if person.texture == "plain":
            return
        layer = Image.new("RGB", self.img.size, person.upper2)
        clip = Image.new("L", self.img.size, 0)
        ImageDraw.Draw(clip).polygon(pts, fill=255)
        pattern = Image.new("L", self.img.size, 0)
        pd = ImageDraw.Draw(pattern)
        step = 12
        if person.texture == "hstripes":
            for y in range(0, CANVAS_H, step):
                pd.rectangle([0, y, CANVAS_W, y + step // 2 - 1], fill=255)
        elif person.texture == "vstripes":
            for x in range(0, CANVAS_W, step):
                pd.rectangle([x, 0, x + step // 2 - 1, CANVAS_H], fill=255)
        elif person.texture == "checks":
            for y in range(0, CANVAS_H, step):
                for x in range((y // step % 2) * step, CANVAS_W, 2 * step):
                    pd.rectangle([x, y, x + step - 1, y + step - 1], fill=255)
        else:  # dots
            for y in range(4, CANVAS_H, step):
                for x in range(4 + (y // step % 2) * 6, CANVAS_W, step):
                    pd.ellipse([x, y, x + 5, y + 5], fill=255)
        mask = Image.fromarray(np.minimum(np.asarray(clip), np.asarray(pattern)))
        self.img.paste(layer, (0, 0), mask)


def _muted(colour, towards, amount):
    return tuple(int(a * (1 - amount) + b * amount) for a, b in zip(colour, towards))


def _background(p: _Painter, cam: Camera, rng):
    floor = tuple(int(v * 0.7) for v in cam.background)
    p.d.rectangle([0, int(CANVAS_H * rng.uniform(0.75, 0.9)), CANVAS_W, CANVAS_H], fill=floor)
    for _ in range(cam.clutter):
        x0, y0 = rng.integers(-20, CANVAS_W), rng.integers(-20, CANVAS_H)
        w, h = rng.integers(6, 60), rng.integers(6, 120)
        shape = p.d.rectangle if rng.random() < 0.6 else p.d.ellipse
        shape([x0, y0, x0 + w, y0 + h], fill=_muted(_colour(rng, jitter=50), cam.background, 0.6))


def _person(p: _Painter, person: Identity, view: str, phase: float, rng):
    cx = CANVAS_W / 2 + rng.uniform(-3, 3)
    s = person.height
    side = view in ("left", "right")
    half = (19 if side else 31) * person.girth
    top = CANVAS_H * (1 - s) * 0.5 + 4
    y = lambda v: top + v * s * 1.02  # noqa: E731  (body coordinates, 0..240)
    swing = np.sin(phase) * (16 if side else 6)
    facing = -1 if view == "left" else 1
    # legs and lower body
    hip, knee, foot = y(130), y(180), y(222)
    legs = [(cx - half * 0.45, -swing), (cx + half * 0.45, swing)] if not side else \
           [(cx - 3, -swing), (cx + 3, swing)]
    for lx, dx in legs:
        kx, fx = lx + dx * 0.5, lx + dx
        thigh = person.lower if person.lower_kind != "skirt" else person.skin
        shin = person.lower if person.lower_kind == "trousers" else person.skin
        p.limb((lx, hip), (kx, knee), 13, thigh, LOWER)
        p.limb((kx, knee), (fx, foot), 11, shin, LOWER)
        p.ellipse([fx - 8 + facing * 3 * side, foot - 4, fx + 8 + facing * 3 * side, foot + 9], person.shoes, SHOES)
    if person.lower_kind == "skirt":
        p.poly([(cx - half, hip - 4), (cx + half, hip - 4), (cx + half * 1.5, y(172)), (cx - half * 1.5, y(172))],
               person.lower, LOWER)
    else:
        p.poly([(cx - half, hip - 6), (cx + half, hip - 6), (cx + half * 0.9, hip + 14), (cx - half * 0.9, hip + 14)],
               person.lower, LOWER)
    # torso and arms
    shoulder, waist = y(58), y(134)
    torso = [(cx - half * 1.05, shoulder), (cx + half * 1.05, shoulder), (cx + half * 0.9, waist), (cx - half * 0.9, waist)]
    p.poly(torso, person.upper, UPPER)
    p.texture(torso, person, rng)
    if view == "front" and person.logo:
        p.d.rectangle([cx - 7, y(75), cx + 7, y(88)], fill=person.upper2)
    arm_x = [cx - half * 1.05 - 4, cx + half * 1.05 + 4] if not side else [cx]
    for i, ax in enumerate(arm_x):
        dx = swing * (1 if i == 0 else -1) * 0.8
        elbow, hand = (ax + dx * 0.5, y(100)), (ax + dx, y(132))
        p.limb((ax, shoulder + 4), elbow, 10, person.upper, UPPER)
        p.limb(elbow, hand, 9, person.upper if person.long_sleeves else person.skin, UPPER)
    # accessories on the torso
    if person.backpack:
        if view == "back":
            p.poly([(cx - half * 0.8, y(64)), (cx + half * 0.8, y(64)), (cx + half * 0.8, y(118)), (cx - half * 0.8, y(118))],
                   person.backpack, UPPER)
        elif side:
            bx = cx - facing * (half + 9)
            p.poly([(bx - 8, y(62)), (bx + 8, y(62)), (bx + 8, y(116)), (bx - 8, y(116))], person.backpack, UPPER)
        else:
            for sx in (cx - half * 0.6, cx + half * 0.6):
                p.limb((sx, shoulder), (sx, y(100)), 4, person.backpack, UPPER)
    if person.handbag and view != "back":
        hx = cx + half + 10 if view != "left" else cx - half - 10
        p.d.rectangle([hx - 8, y(118), hx + 8, y(138)], fill=person.handbag)
    # head
    hw = 18 if not side else 16
    head = [cx - hw, y(12), cx + hw, y(54)]
    p.ellipse(head, person.skin if view != "back" else person.hair, HEAD)
    if view != "back":
        hair_box = [cx - hw, y(10), cx + hw, y(30)] if not side else \
                   [cx - hw + facing * -4, y(10), cx + hw + facing * -4, y(36)]
        p.ellipse(hair_box, person.hair, HEAD)
    if person.long_hair and view != "front":
        p.poly([(cx - hw, y(30)), (cx + hw, y(30)), (cx + hw, y(70)), (cx - hw, y(70))], person.hair, HEAD)
    if person.hat:
        p.poly([(cx - hw - 2, y(22)), (cx + hw + 2, y(22)), (cx + hw - 2, y(6)), (cx - hw + 2, y(6))], person.hat, HEAD)


def _occlude(p: _Painter, rng):
    """A pole, a car bonnet or a passer-by covering part of the crop."""
    kind = rng.integers(3)
    if kind == 0:
        x = rng.integers(20, CANVAS_W - 30)
        box = [x, 0, x + rng.integers(10, 24), CANVAS_H]
    elif kind == 1:
        box = [0, int(CANVAS_H * rng.uniform(0.55, 0.75)), CANVAS_W, CANVAS_H]
    else:
        x = rng.choice([-40, CANVAS_W - 40])
        box = [x, int(CANVAS_H * 0.2), x + 70, CANVAS_H]
    p.d.rectangle(box, fill=_colour(rng, jitter=40))
    p.m.rectangle(box, fill=0)


def _camera_effects(img: Image.Image, cam: Camera, rng) -> Image.Image:
    small = (max(8, int(OUT_W * cam.scale)), max(16, int(OUT_H * cam.scale)))
    img = img.resize(small, Image.BILINEAR).resize((OUT_W, OUT_H), Image.BILINEAR)
    if cam.blur > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur))
    arr = np.asarray(img, dtype=np.float32) * cam.gain * cam.brightness * rng.uniform(0.85, 1.15)
    arr += rng.normal(0, 4.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render(person: Identity, cam: Camera, rng, view=None, phase=None, occlude=None):
    """One crop: returns (RGB 128x64 image, label map 128x64)."""
    view = view or VIEWS[rng.integers(len(VIEWS))]
    phase = rng.uniform(0, 2 * np.pi) if phase is None else phase
    p = _Painter(cam.background)
    _background(p, cam, rng)
    _person(p, person, view, phase, rng)
    if occlude if occlude is not None else rng.random() < 0.15:
        _occlude(p, rng)
    # detector-box jitter: a slightly shifted, scaled box around the person
    sc = rng.uniform(0.92, 1.08)
    bw, bh = CANVAS_W * sc, CANVAS_H * sc
    x0 = (CANVAS_W - bw) / 2 + rng.uniform(-10, 10)
    y0 = (CANVAS_H - bh) / 2 + rng.uniform(-12, 12)
    box = (x0, y0, x0 + bw, y0 + bh)
    img = p.img.transform((CANVAS_W, CANVAS_H), Image.EXTENT, box, Image.BILINEAR, fillcolor=cam.background)
    lab = p.lab.transform((CANVAS_W, CANVAS_H), Image.EXTENT, box, Image.NEAREST, fillcolor=0)
    img = img.resize((OUT_W, OUT_H), Image.LANCZOS)
    lab = lab.resize((OUT_W, OUT_H), Image.NEAREST)
    return _camera_effects(img, cam, rng), lab


def _identities(n: int, rng) -> list[Identity]:
    people = []
    for _ in range(n):
        person = Identity.draw(rng)
        if people and rng.random() < 0.35:
            person.look_alike(people[rng.integers(len(people))], rng)
        people.append(person)
    return people


def _save(img, lab, root: Path, rel: str):
    out = root / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, quality=92)
    mask = (root / "masks" / rel).with_suffix(".png")
    mask.parent.mkdir(parents=True, exist_ok=True)
    lab.save(mask)


def _cameras_for(rng, cameras: int) -> np.ndarray:
    return np.sort(rng.choice(cameras, size=int(rng.integers(2, min(cameras, 4) + 1)), replace=False))


def generate_market(out, identities=100, cameras=4, seed=0, images_per_camera=(2, 5),
                    distractors=20, junk=10) -> dict:
    """Write a Market-1501-layout set; the first half of the identities train, the rest test.

    Each test identity has one query per camera it is seen in and the rest of its crops
    in the gallery; distractors (``0000``) and junk (``-1``) join the gallery.
    """
    root = Path(out)
    rng = np.random.default_rng(seed)
    cams = [Camera.draw(rng) for _ in range(cameras)]
    people = _identities(identities, rng)
    n_train = identities // 2
    counts = {"bounding_box_train": 0, "query": 0, "bounding_box_test": 0}
    frame = 0
    for pid, person in enumerate(people, start=1):
        train = pid <= n_train
        for c in _cameras_for(rng, cameras):
            n = int(rng.integers(images_per_camera[0], images_per_camera[1] + 1)) + (0 if train else 1)
            for k in range(n):
                frame += 1
                split = "bounding_box_train" if train else ("query" if k == 0 else "bounding_box_test")
                img, lab = render(person, cams[c], rng)
                _save(img, lab, root, f"{split}/{pid:04d}_c{c + 1}s1_{frame:06d}_00.jpg")
                counts[split] += 1
    for i in range(distractors + junk):
        c = int(rng.integers(cameras))
        frame += 1
        pid = "0000" if i < distractors else "-1"
        p = _Painter(cams[c].background)
        _background(p, cams[c], rng)
        if i >= distractors:  # junk: a sliver of a person, mostly background
            _person(p, Identity.draw(rng), "front", 0.0, rng)
            p.img = p.img.crop((0, 0, CANVAS_W // 3, CANVAS_H // 3)).resize((CANVAS_W, CANVAS_H))
        img = _camera_effects(p.img.resize((OUT_W, OUT_H)), cams[c], rng)
        _save(img, Image.new("L", (OUT_W, OUT_H), 0), root, f"bounding_box_test/{pid}_c{c + 1}s1_{frame:06d}_00.jpg")
        counts["bounding_box_test"] += 1
    info = {"layout": "market1501", "identities": identities, "cameras": cameras, "seed": seed, "images": counts}
    (root / "synth.json").write_text(json.dumps(info, indent=2))
    return info


def generate_mars(out, identities=60, cameras=4, seed=0, tracklet_len=(8, 16)) -> dict:
    """Write a MARS-layout video set: one tracklet per (identity, camera) it is seen in."""
    from scipy.io import savemat

    root = Path(out)
    rng = np.random.default_rng(seed)
    cams = [Camera.draw(rng) for _ in range(cameras)]
    people = _identities(identities, rng)
    n_train = identities // 2
    names = {"train": [], "test": []}
    tracks = {"train": [], "test": []}
    query = []
    for pid, person in enumerate(people, start=1):
        split = "train" if pid <= n_train else "test"
        for t, c in enumerate(_cameras_for(rng, cameras), start=1):
            view = VIEWS[rng.integers(len(VIEWS))]
            phase, step = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.8)
            start = len(names[split]) + 1
            for f in range(int(rng.integers(tracklet_len[0], tracklet_len[1] + 1))):
                img, lab = render(person, cams[c], rng, view=view, phase=phase + f * step)
                name = f"{pid:04d}C{c + 1}T{t:04d}F{f + 1:03d}.jpg"
                _save(img, lab, root, f"bbox_{split}/{pid:04d}/{name}")
                names[split].append(name)
            tracks[split].append([start, len(names[split]), pid, c + 1])
            if split == "test" and t == 1:
                query.append(len(tracks["test"]))
    info_dir = root / "info"
    info_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (info_dir / f"{split}_name.txt").write_text("\n".join(names[split]) + "\n")
        savemat(info_dir / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(tracks[split], dtype=np.float64)})
    savemat(info_dir / "query_IDX.mat", {"query_IDX": np.array(query, dtype=np.float64)})
    info = {"layout": "mars", "identities": identities, "cameras": cameras, "seed": seed,
            "tracklets": {k: len(v) for k, v in tracks.items()}, "queries": len(query)}
    (root / "synth.json").write_text(json.dumps(info, indent=2))
    return info
