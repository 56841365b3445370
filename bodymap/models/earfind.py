"""Ear localisation: is there an ear in a photograph, and where?

The ear-region U-Net (``earseg``) was trained on tight ear close-ups; on any other photo it
paints skin as ear. So a photo is first searched for ears by a separate detector that sees the
whole photo with its context (heads, faces, hair, necks, shoulders, other body regions,
backgrounds, real skin photographs), and only a found ear is cut out and segmented into the 12
regions:

    loc = EarLocator.load()                      # bodymap/data/ear_locator.pt
    found = loc.find(photo)                      # EarSearch(found, boxes, scores, mask, peak, prob)
    res = find_and_segment(photo, loc, EarSegmenter.load())   # labels (H, W) 0..12, 0 off the ears

The locator is an ultralytics YOLOv8 detector (``build_model``: the yolov8 layout at a width
of 1/8, 0.9 M parameters, one class "ear", random init) run on the photo at ``INPUT`` px on its
long side. Ears are small in a portrait (about 20 px across at 256 px); a box detector with
stride-8 outputs sees them where the earlier small U-Net at 128 px lost them. An ear is found
where a box scores at least ``conf`` (set on development data, stored in the checkpoint).
The checkpoint is a BodyMap checkpoint (weights only, no pickled code), built and decoded here.

Training data (``render_head_dataset``, ``write_yolo_dataset``, ``train_locator``):
photograph-like renders of random anny bodies (``synthviews``): heads from every side at
150-900 mm across (portraits, profiles, head and shoulders, upper bodies), ear close-ups of every
size, and views of other body regions and of the face without ears; exact ear boxes from the
labelled template. Each render is put once on a background (synthetic, or a real skin
photograph) and its skin takes the fine texture of a real skin photograph (so real-photo
texture is no clue for "no ear"); real skin photographs from the training parts of HAM10000
and PAD-UFES-20 are added as images without an ear (except those taken of the ear itself).
ultralytics adds its own augmentation (mosaic, scale, rotation, mirror, colour).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.models.base import LoadedModel
from bodymap.models.preprocess import as_rgb, to_tensor

TASK = "earfind"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "ear_locator.pt"
# the yolov8 layout (ultralytics' yolov8.yaml) at depth 0.33 and width 0.125: 0.9 M parameters,
# 1.8 MB in fp16 (all shipped checkpoints together must stay under 60 MB)
ARCH = {"name": "YOLOv8", "depth": 0.33, "width": 0.125, "max_channels": 1024}
NORMALISATION = {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # YOLO: RGB in 0..1
INPUT = 256  # the photo's long side for the locator, pixels
# held out: seed 9111 scored the first weights at 256 px, 9121 them searched at 320 px + mirror,
# 9131 a second training round (not shipped) and the first weights beside it; each is
# development data now. 9141 scored the third round, shipped (docs/benchmarks.md); then the
# labels were kept to the found box (find_and_segment), so 9151 held the figures; 9161 scored
# the region U-Net trained on photo mode's crops too (stop 52) beside the one before; 9171 the
# U-Net with test-time mirror images beside without (stop 53); 9181 the U-Net's sixth round
# beside its fifth, 9191 its seventh beside the sixth (stop 53), and 9191 holds the figures now;
# a next draw starts at 9201
HELD_OUT = {"seed": 9191, "bodies": 24, "views": 12, "size": 256}
DEV = {"seed": 9102, "bodies": 16, "views": 12, "size": 256}
EAR_SITE = "head_neck/head/ear"
CROP_FILL = 0.8  # a found ear fills this share of the square crop given to the region U-Net
NMS_IOU = 0.5
PAD_VALUE = 114 / 255  # ultralytics' letterbox grey
Progress = Callable[[str, float], None]


def yolo_config(arch: dict = ARCH) -> dict:
    """The ultralytics model description with one class and the scale of ``arch`` (depth,
    width, max_channels): its layers are ``arch["layers"]`` when given (a checkpoint stores
    them, so it does not depend on the installed ultralytics' yolov8.yaml), else yolov8.yaml's
    backbone and head."""
    from bodymap.detect.yolo import _quiet_ultralytics

    _quiet_ultralytics()  # offline, and Pillow's own Image.open back (ultralytics swaps it)
    from ultralytics.nn.tasks import yaml_model_load

    if arch.get("name") != "YOLOv8":
        raise ValueError(f"unsupported ear-locator architecture {arch}")
    if arch.get("layers"):
        cfg = {"backbone": arch["layers"]["backbone"], "head": arch["layers"]["head"]}
    else:
        cfg = {k: v for k, v in yaml_model_load("yolov8n.yaml").items() if k not in ("yaml_file", "scales", "scale")}
    cfg.update(nc=1, scales={"t": [float(arch["depth"]), float(arch["width"]), int(arch["max_channels"])]}, scale="t")
    return cfg


def build_model(arch: dict = ARCH):
    """The locator network with random weights: an ultralytics DetectionModel of
    ``yolo_config(arch)``. In eval mode, forward (B, 3, H, W) in 0..1, H and W multiples of 32
    -> a tuple whose first item is (B, 5, A): box centre x, y, width, height (input pixels) and
    ear score (0..1) for each of A anchor points."""
    from bodymap.detect.yolo import _quiet_ultralytics

    _quiet_ultralytics()  # offline, and Pillow's own Image.open back (ultralytics swaps it)
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(yolo_config(arch), nc=1, verbose=False)


# ---------------------------------------------------------------- synthetic head photographs

def _head_frame(V: np.ndarray, t) -> tuple[np.ndarray, np.ndarray, dict]:
    """Head centre (3,), up direction (3,) and each ear's vertex indices {+1: left, -1: right}."""
    from bodymap.taxonomy import SITE_INDEX

    head_codes = ("head_neck/head", "head_neck/head/face", "head_neck/head/scalp", "head_neck/head/ear")
    head = np.isin(t.site, [SITE_INDEX[c] for c in head_codes])
    neck = t.site == SITE_INDEX["head_neck/neck"]
    hc = V[head].mean(0)
    up = hc - V[neck].mean(0)
    up /= np.linalg.norm(up)
    ears = {s: np.flatnonzero((t.ear > 0) & (np.sign(t.vertices[:, 0]) == s)) for s in (1, -1)}
    return hc, up, ears


def _rotate(v: np.ndarray, axis: np.ndarray, ang: float) -> np.ndarray:
    """v (3,) turned by ang radians about the unit axis (Rodrigues)."""
    return v * np.cos(ang) + np.cross(axis, v) * np.sin(ang) + axis * np.dot(axis, v) * (1 - np.cos(ang))


def head_camera(V: np.ndarray, t, rng: np.random.Generator, size: int, kind: str | None = None):
    """A random photographer's camera around a body, mostly at its head. kind (random when
    None): "head" (a portrait from any side, 150-900 mm across: face, profile, back of the head,
    head and shoulders, upper body), "ear" (an ear close-up, the ear 25-110% of the frame, or a
    part of it), "face" (a close-up of the face from the front, 70-160 mm: no ear or an ear at
    the edge), "body" (another region: arm, hand, trunk, leg, foot; 60-700 mm). Returns
    (Camera, kind)."""
    from bodymap.taxonomy import SITE_INDEX
    from renderers.camera import Camera

    hc, up, ears = _head_frame(V, t)
    kind = kind or str(rng.choice(["head", "head", "head", "ear", "face", "body"]))
    # the body faces -y: the face direction is -y made perpendicular to up
    front = np.array([0.0, -1.0, 0.0]) - np.dot([0.0, -1.0, 0.0], up) * up
    front /= np.linalg.norm(front)
    roll = np.deg2rad(rng.uniform(-20, 20))
    if kind == "head":
        az = rng.uniform(0, 2 * np.pi)
        el = np.deg2rad(rng.uniform(-25, 35))
        d = _rotate(front, up, az)
        d = d * np.cos(el) + up * np.sin(el)
        field = float(np.exp(rng.uniform(np.log(150), np.log(900))))
        target = hc + rng.uniform(-0.25, 0.25) * field * np.cross(up, d) + (rng.uniform(-0.3, 0.2) * field) * up
    elif kind == "ear":
        s = int(rng.choice([1, -1]))
        P = V[ears[s]]
        c = P.mean(0)
        radius = float(np.linalg.norm(P - c, axis=1).max())
        side = c - hc
        side -= np.dot(side, up) * up
        side /= np.linalg.norm(side)
        d = _rotate(side, up, np.deg2rad(rng.uniform(-45, 45)))
        d = d * np.cos(np.deg2rad(rng.uniform(-30, 30))) + up * np.sin(np.deg2rad(rng.uniform(-30, 30)))
        d /= np.linalg.norm(d)
        fill = float(np.exp(rng.uniform(np.log(0.25), np.log(1.6))))  # > 1: a part of the ear
        field = 2 * radius / fill
        target = c + rng.uniform(-0.25, 0.25, 3) * field
    elif kind == "face":
        d = _rotate(front, up, np.deg2rad(rng.uniform(-35, 35)))
        field = float(rng.uniform(70, 160))
        target = hc + front * 80 + rng.uniform(-0.3, 0.3, 3) * field
    else:
        parts = [SITE_INDEX[c] for c in ("upper_extremity/forearm", "upper_extremity/hand", "trunk/anterior",
                                         "trunk/posterior", "lower_extremity/thigh", "lower_extremity/foot",
                                         "upper_extremity/upper_arm", "head_neck/neck")]
        cand = np.flatnonzero(np.isin(t.site, parts))
        v = int(rng.choice(cand)) if len(cand) else int(rng.integers(len(V)))
        target = V[v]
        d = target - V.mean(0)
        d -= np.dot(d, up) * up * 0.5
        d = d / max(np.linalg.norm(d), 1e-9) + rng.normal(0, 0.4, 3)
        d /= np.linalg.norm(d)
        field = float(np.exp(rng.uniform(np.log(60), np.log(700))))
    fov = rng.uniform(25, 50)
    dist = 0.5 * field / np.tan(np.deg2rad(fov) / 2)
    cam_up = _rotate(up, -d, roll)
    return Camera.look_at(target + dist * d, target, up=cam_up, fov_deg=fov, width=size, height=size), kind


def render_head_dataset(n_bodies: int, views: int, size: int = INPUT, seed: int = 0,
                        progress: Progress | None = None) -> dict:
    """``views`` head-camera renders of each of ``n_bodies`` random bodies (body i from the
    generator seeded (seed, i): two seeds never share a body or a camera), on a black
    background, lit but not finished (compositing and camera effects are applied per use).

    Returns {"images": (N, size, size, 3) uint8 lit body, "body": (N, size, size) bool (pixels
    of the body), "ear": (N, size, size) bool (ear pixels), "regions": (N, size, size) uint8
    (the 12 ear regions, indices into taxonomy.EAR_REGIONS), "kinds": (N,) str, "description"}."""
    from bodymap.models.eardata import data_hash
    from bodymap.models.synthviews import BodyRenderer, _template, random_body, shade, skin_colours

    t = _template()
    say = progress or (lambda s, f: None)
    imgs, bodies, regions, kinds = [], [], [], []
    for i in range(n_bodies):
        rng = np.random.default_rng([seed, i])
        V = random_body(rng)
        br = BodyRenderer(V, skin_colours(rng))
        for _ in range(views):
            cam, kind = head_camera(V, t, rng, size)
            r = br.renderer.render(cam, ambient=1.0, background=(0, 0, 0))
            lit = shade(r.rgb, r.normal, cam.forward, rng)
            imgs.append(np.clip(np.where(r.mask[..., None], lit, 0), 0, 255).astype(np.uint8))
            bodies.append(r.mask.copy())
            regions.append(br.vertex_label_image(r, t.ear).astype(np.uint8))
            kinds.append(kind)
        say(f"rendering heads (body {i + 1}/{n_bodies})", (i + 1) / n_bodies)
    images, body, region = np.stack(imgs), np.stack(bodies), np.stack(regions)
    ear = region > 0
    ks = np.array(kinds)
    return {"images": images, "body": body, "ear": ear, "regions": region, "kinds": ks,
            "description": {"source": "synthetic head photographs (anny bodies, labelled template)", "seed": seed,
                            "bodies": n_bodies, "views": views, "images": len(images), "size": size,
                            "kinds": {k: int((ks == k).sum()) for k in sorted(set(kinds))},
                            "with_ear": int((ear.reshape(len(ear), -1).mean(1) > 0).sum()),
                            "sha256": data_hash(images, ear)}}


def cached_head_dataset(cache: Path, n_bodies: int, views: int, size: int, seed: int,
                        progress: Progress | None = None) -> dict:
    """render_head_dataset stored as cache/heads_<seed>_<bodies>x<views>_<size>.npz (compressed) and reused."""
    from bodymap.models.training import cached_dataset

    return cached_dataset(cache, "heads", n_bodies, views, size, seed, render_head_dataset, progress, compress=True)


# ---------------------------------------------------------------- training

class Pools:
    """What training images are composed from, prepared once: ``real`` (n, S, S, 3) uint8 real
    skin photos, their fine texture ``tex`` (n, S, S) float16 (luminance over a blurred copy,
    clipped to 0.7-1.3) and ``bg`` (m, s, s, 3) uint8 synthetic backgrounds (synthviews.background)."""

    def __init__(self, real: np.ndarray | None, size: int, n_bg: int = 600, seed: int = 0):
        from scipy import ndimage

        from bodymap.models.synthviews import background

        rng = np.random.default_rng([seed, 77])
        self.real = real if real is not None else np.zeros((0, 8, 8, 3), np.uint8)
        tex = []
        for im in self.real:
            lum = im.astype(np.float32).mean(2) + 8.0
            tex.append(np.clip(lum / ndimage.gaussian_filter(lum, 6.0), 0.7, 1.3).astype(np.float16))
        self.tex = np.stack(tex) if tex else np.zeros((0, 8, 8), np.float16)
        self.bg = np.stack([background(size, size, rng) for _ in range(n_bg)])


def _window(a: np.ndarray, rng: np.random.Generator, size: int, lo: float = 0.4) -> np.ndarray:
    """A random square window (lo-100% of the side) of a square array (S, S[, 3]), turned by a
    quarter turn and mirrored at random, resized to size (bilinear)."""
    from PIL import Image

    h = a.shape[0]
    s = int(rng.integers(int(lo * h), h + 1))
    y0, x0 = (int(v) for v in rng.integers(0, h - s + 1, 2))
    w = np.rot90(a[y0:y0 + s, x0:x0 + s], int(rng.integers(4)))
    if rng.random() < 0.5:
        w = w[:, ::-1]
    w = np.ascontiguousarray(w)
    if w.dtype == np.uint8:
        return np.asarray(Image.fromarray(w).resize((size, size), Image.BILINEAR))
    return np.asarray(Image.fromarray(w.astype(np.float32)).resize((size, size), Image.BILINEAR))


def compose(render: np.ndarray, body: np.ndarray, rng: np.random.Generator, pools: Pools | None = None,
            p_real_bg: float = 0.4, p_texture: float = 0.7) -> np.ndarray:
    """A training photograph from a lit render (s, s, 3) uint8 and its body mask (s, s): the body
    on a synthetic background or (``p_real_bg``) on a window of a real photo, its skin
    modulated (``p_texture``) by the fine texture of a real skin photo, then camera effects
    (synthviews.finish). Without ``pools``, a fresh synthetic background. -> (s, s, 3) uint8."""
    from bodymap.models.synthviews import background, finish

    s = render.shape[0]
    img = render.astype(np.float32)
    have_real = pools is not None and len(pools.real)
    if have_real and rng.random() < p_texture:
        tex = _window(pools.tex[int(rng.integers(len(pools.tex)))], rng, s, 0.3) ** rng.uniform(0.5, 1.2)
        img = img * tex[..., None]
    if have_real and rng.random() < p_real_bg:
        bg = _window(pools.real[int(rng.integers(len(pools.real)))], rng, s)
    elif pools is not None and len(pools.bg):
        bg = _window(pools.bg[int(rng.integers(len(pools.bg)))], rng, s, 0.6)
    else:
        bg = background(s, s, rng)
    img = np.where(body[..., None], img, bg.astype(np.float32))
    return finish(img, rng)


def ear_boxes(ear: np.ndarray, min_px: int = 20) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), pixels, x1/y1 exclusive, of the ears in an ear mask (H, W) bool:
    its connected parts (joined across gaps of 2 px: hair or a fold can split an ear) with at
    least ``min_px`` ear pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(ndimage.binary_dilation(ear, iterations=2))
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        m = (lab[sl] == i) & ear[sl]
        if m.sum() < min_px:
            continue
        ys, xs = np.nonzero(m)
        out.append((int(xs.min() + sl[1].start), int(ys.min() + sl[0].start),
                    int(xs.max() + sl[1].start + 1), int(ys.max() + sl[0].start + 1)))
    return out


def square_crop(image: np.ndarray, box, fill: float | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The square crop find_and_segment gives the region U-Net for a box (x0, y0, x1, y1) of an
    image (H, W, ...): the box's longer side fills ``fill`` (default CROP_FILL) of the square,
    at least 16 px, centred on the box, mirrored past the image's edges. Returns the crop and
    its (a, b, a + side, b + side) in image pixels (may reach outside the image)."""
    x0, y0, x1, y1 = box
    H, W = image.shape[:2]
    side = max(int(np.ceil(max(x1 - x0, y1 - y0) / (fill or CROP_FILL))), 16)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = max(0, -a, -b, a + side - W, b + side - H)
    widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
    src = np.pad(image, widths, mode="reflect") if pad else image
    return src[b + pad:b + pad + side, a + pad:a + pad + side], (a, b, a + side, b + side)


def locator_crops(heads: dict, seed: int, size: int = 128, decoys: int = 1) -> dict:
    """Training close-ups for the region U-Net as photo mode gives them (find_and_segment): each
    rendered head photo (``render_head_dataset``, with "regions") composed on a background, then
    square crops around its ears' boxes loosened or tightened as a locator's are (each side moved
    by -5 % to +35 % of the ear's size, so the ear spans about 47-89 % of the crop's side), and
    ``decoys`` crops per photo around a box of the body elsewhere (face, hair, neck: what the
    locator's false boxes hold), each labelled with the true regions wherever they lie. Small ears
    come out as the blurred enlargements they are in use. Returns the dict render_ear_dataset
    returns (images (N, size, size, 3) uint8, masks (N, size, size) uint8, description)."""
    from PIL import Image

    from bodymap.models.eardata import data_hash

    if "regions" not in heads:
        raise ValueError("head renders without region labels (rendered before render_head_dataset stored them)")
    rng = np.random.default_rng([seed, 7])
    imgs, masks = [], []

    def add(photo, regions, box):
        crop, _ = square_crop(photo, box)
        lab, _ = square_crop(regions, box)
        imgs.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR)))
        masks.append(np.asarray(Image.fromarray(lab).resize((size, size), Image.NEAREST)))

    for im, body, reg in zip(heads["images"], heads["body"], heads["regions"]):
        photo = compose(im, body, rng)
        s = photo.shape[0]
        for x0, y0, x1, y1 in ear_boxes(reg > 0):
            e = max(x1 - x0, y1 - y0)
            d = rng.uniform(-0.05, 0.35, 4) * e
            add(photo, reg, (x0 - d[0], y0 - d[1], x1 + d[2], y1 + d[3]))
        ys, xs = np.nonzero(body)
        for _ in range(decoys if len(ys) else 0):
            k = int(rng.integers(len(ys)))
            half = rng.uniform(0.04, 0.2) * s
            add(photo, reg, (xs[k] - half, ys[k] - half, xs[k] + half, ys[k] + half))
    images, masks_a = np.stack(imgs), np.stack(masks)
    return {"images": images, "masks": masks_a,
            "description": {"source": "crops of synthetic head photographs around ear boxes and decoy boxes "
                                      "(bodymap.models.earfind.locator_crops)", "heads": heads["description"],
                            "crop_seed": seed, "images": len(images), "size": size, "decoys_per_photo": decoys,
                            "sha256": data_hash(images, masks_a)}}


def write_yolo_dataset(heads: dict, out: Path, negative_paths: list[str], *, seed: int, views: int,
                       n_pool: int = 1500, n_negatives: int = 600, val_bodies: float = 0.1,
                       whole_paths: list[str] = ()) -> dict:
    """An ultralytics data set (out/images/{train,val}, out/labels/{train,val}, out/data.yaml,
    class 0 "ear") from rendered heads (``render_head_dataset``: ``views`` per body) and real
    photos without ears (``negative_paths``, in a seeded order: the first ``n_pool`` lend their
    texture and serve as backgrounds (``Pools``), the next ``n_negatives`` are written whole as
    photos without an ear, aspect kept, long side INPUT; so is every photo of ``whole_paths``
    (photos of the kind photo mode searches, clinical close-ups, given more weight than a share
    of the pool would give them). Each render is composed once
    (``compose``); the last ``val_bodies`` share of the bodies (and every tenth negative) is
    validation. Returns a description with counts and a hash of the labels."""
    import hashlib

    from PIL import Image

    from bodymap.atomic import write_text
    from bodymap.models.diagdata import load_images, load_photos

    S = heads["images"].shape[1]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(negative_paths))
    pool_paths = [negative_paths[i] for i in order[:n_pool]]
    neg_paths = [negative_paths[i] for i in order[n_pool:n_pool + n_negatives]] + list(whole_paths)
    pools = Pools(load_images(pool_paths, int(S * 1.25)) if pool_paths else None, S, seed=seed)
    h = hashlib.sha256()
    counts = {"train": 0, "val": 0, "boxes": 0, "negatives": len(neg_paths)}

    def put(split, name, img, boxes):
        for sub in ("images", "labels"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out / "images" / split / f"{name}.jpg", quality=92)
        hh, ww = img.shape[:2]
        text = "".join(f"0 {(x0 + x1) / 2 / ww:.6f} {(y0 + y1) / 2 / hh:.6f} {(x1 - x0) / ww:.6f} "
                       f"{(y1 - y0) / hh:.6f}\n" for x0, y0, x1, y1 in boxes)
        (out / "labels" / split / f"{name}.txt").write_text(text)
        h.update(f"{split}/{name}\n{text}".encode())
        counts[split] += 1
        counts["boxes"] += len(boxes)

    n_bodies = len(heads["images"]) // views
    first_val = int(round(n_bodies * (1 - val_bodies)))
    for i in range(len(heads["images"])):
        img = compose(heads["images"][i], heads["body"][i], rng, pools)
        put("val" if i // views >= first_val else "train", f"r{i:05d}", img, ear_boxes(heads["ear"][i]))
    for j, p in enumerate(neg_paths):
        put("val" if j % 10 == 0 else "train", f"n{j:05d}", load_photos([p], S)[0], [])
    write_text(out / "data.yaml", f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: ear\n")
    return {**counts, "pool_photos": len(pool_paths), "labels_sha256": h.hexdigest()}


def train_locator(out: str | Path, *, negatives: list | None = None, whole_negatives: list | None = None,
                  bodies: int = 160, views: int = 16,
                  seed: int = 1, epochs: int = 35, batch: int = 16, n_pool: int = 1500, n_negatives: int = 600,
                  threads: int = 2, device: str | None = None, progress: Progress | None = None,
                  command: str = "", cache: str | Path | None = None, imgsz: int = INPUT,
                  resume: str | Path | None = None) -> Path:
    """Train the ear locator from random weights (or, with ``resume``, from that locator
    checkpoint's weights: a further round, its record kept under "resumed_from"); write
    out/ear_locator.pt and out/earfind_train.log.

    Data: ``render_head_dataset(bodies, views, INPUT, seed)`` (cached under ``cache``, default
    out/cache) and the "train" parts (diagdata.split_rows) of the CSVs in ``negatives`` (e.g.
    HAM10000's and PAD-UFES-20's metadata.csv; photos taken of the ear left out) and every
    photo of the "train" parts of ``whole_negatives`` as a photo without an ear, written as an
    ultralytics data set (``write_yolo_dataset``). ultralytics trains ``build_model``'s layout
    for ``epochs`` (AdamW, its augmentation) with photos resized to ``imgsz`` px (the renders are
    INPUT px: a larger ``imgsz`` shows the network small ears as large as a search at that size
    does). Then the score threshold is set on development
    data (held-out bodies of DEV's seed and both lists' CSVs' "dev" parts), the detector scored on the
    held-out renders (HELD_OUT), and both stored in a BodyMap checkpoint."""
    import torch

    from bodymap.detect.yolo import _quiet_ultralytics
    from bodymap.models.checkpoint import pick_device, save_checkpoint
    from bodymap.models.diagdata import split_rows
    from bodymap.models.training import TrainingLog

    settings = {"negatives": [str(c) for c in (negatives or [])], "bodies": bodies, "views": views, "seed": seed,
                "epochs": epochs, "batch": batch, "n_pool": n_pool, "n_negatives": n_negatives, "imgsz": imgsz,
                "resume": str(resume) if resume else None,
                "whole_negatives": [str(c) for c in (whole_negatives or [])]}
    torch.set_num_threads(max(1, threads))
    # absolute: ultralytics puts a relative project folder under its own runs/detect/, where the
    # weights were then not found (a round trained with --out out/earfind7 stopped there)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else out / "cache"
    say = progress or (lambda s, f: None)
    t0 = time.time()
    with TrainingLog(out / "earfind_train.log", command or "train_locator") as log:
        heads = cached_head_dataset(cache, bodies, views, INPUT, seed, progress=lambda s, f: say(s, 0.2 * f))
        log.note(f"renders: {json.dumps(heads['description'])}")
        # photos taken of the ear (site "ear": skin close-ups, but possibly showing its shape) are
        # never used as photos without an ear; they are kept for the evaluation
        neg_rows = [r for c in (negatives or []) for r in split_rows(c, "train") if r["site_code"] != EAR_SITE]
        whole = [r["path"] for c in (whole_negatives or []) for r in split_rows(c, "train") if r["site_code"] != EAR_SITE]
        say("writing the training photos", 0.2)
        data = write_yolo_dataset(heads, out / "yolo_data", [r["path"] for r in neg_rows], seed=seed, views=views,
                                  n_pool=n_pool, n_negatives=n_negatives, whole_paths=whole)
        log.note(f"data set: {json.dumps(data)}")
        _quiet_ultralytics()
        import ultralytics.utils.torch_utils as ut
        import yaml
        from ultralytics import YOLO

        ut.NUM_THREADS = max(1, threads)  # its device selection resets torch to cores - 1 threads (1 here)

        cfg = yolo_config(ARCH)
        start, prev = None, None
        if resume is not None:  # ultralytics takes starting weights as a file of its own format
            start, prev = _ultralytics_start(resume, out / "start_weights.pt")
            cfg = yolo_config(prev["arch"])
            log.note(f"resumed from {resume} (trained by: {prev['training'].get('command')})")
        (out / "ear_yolo.yaml").write_text(yaml.safe_dump(cfg))
        dev = pick_device(device)
        say("training (ultralytics)", 0.3)
        net = YOLO(str(out / "ear_yolo.yaml"), task="detect")
        res = net.train(data=str(out / "yolo_data" / "data.yaml"), epochs=epochs, imgsz=imgsz, batch=batch,
                        device="cpu" if dev.type == "cpu" else 0, workers=0 if dev.type == "cpu" else 4,
                        plots=False, amp=dev.type != "cpu", project=str(out), name="run", exist_ok=True, seed=seed,
                        deterministic=True, verbose=False, pretrained=str(start) if start else False,
                        mosaic=0.5, degrees=15.0,
                        fliplr=0.5, flipud=0.0, hsv_h=0.02, hsv_s=0.4, hsv_v=0.3, scale=0.5, close_mosaic=3)
        validation = {k: round(float(v), 4) for k, v in getattr(res, "results_dict", {}).items()}
        log.note(f"ultralytics validation (best epoch): {json.dumps(validation)}")
        best = torch.load(str(out / "run" / "weights" / "best.pt"), map_location="cpu", weights_only=False)
        state = (best.get("ema") or best["model"]).float().state_dict()
        loc = EarLocator(_checkpoint_dict(state, {}, cfg, input_size=imgsz), dev)
        say("search settings on development data, then held-out scores", 0.85)
        chosen, held_out = _tune_and_score(loc, [*(negatives or []), *(whole_negatives or [])], cache)
        log.note(f"search settings and threshold (dev): {json.dumps(chosen)}")
        metrics = {"held_out": held_out}
        log.note("held-out: " + json.dumps({k: v for k, v in held_out.items() if k != "data"}))
        seconds = time.time() - t0
        training = {"command": command, "epochs": epochs, "batch": batch, "settings": settings,
                    "optimiser": "ultralytics (AdamW, its schedule)", "loss": "ultralytics detection (box, class, DFL)",
                    "augmentation": "composed once on synthetic / real backgrounds with real skin texture; "
                                    "ultralytics mosaic 0.5, scale 0.5, rotation 15 deg, mirror, HSV",
                    "device": str(dev), "threads": threads, "seconds": round(seconds, 1),
                    "from": "random weights" if prev is None else "resumed",
                    "resumed_from": None if prev is None else {k: prev[k] for k in ("path", "training", "metrics", "data")},
                    "validation": validation, "log": "earfind_train.log"}
        path = out / "ear_locator.pt"
        ck = _checkpoint_dict(state, loc.thresholds, cfg, loc.inference, input_size=imgsz)
        save_checkpoint(path, task=TASK, arch=ck["arch"], state_dict=state, classes=ck["classes"],
                        input_size=imgsz, normalisation=NORMALISATION,
                        data={"renders": heads["description"], "real": {**data, "csvs": settings["negatives"],
                                                                        "whole": settings["whole_negatives"],
                                                                        "part": "train"},
                              "name": "synthetic head renders + real skin photos without ears (HAM10000, "
                                      "PAD-UFES-20 training parts)",
                              "licence": "renders: ours; HAM10000 CC BY-NC 4.0, PAD-UFES-20 CC BY 4.0 (negatives)"},
                        metrics=metrics, training=training)
        log.note(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) after {seconds:.0f} s")
    say("done", 1.0)
    return path


def retune(path: str | Path, negatives: list, cache: str | Path, command: str = "") -> dict:
    """Choose how a trained locator searches photos (choose_inference: photo size, mirror
    image, threshold) on development data (DEV renders, the dev parts of the ``negatives``
    CSVs), score it once on HELD_OUT, and write both into the checkpoint at ``path`` (its
    weights unchanged). Returns what was written."""
    from bodymap.models.checkpoint import record_metrics

    loc = EarLocator.load(path)
    chosen, held_out = _tune_and_score(loc, negatives, Path(cache))
    cfg = yolo_config(ARCH)
    # the figures of the earlier settings are gone with them (their held-out set is development data now)
    record_metrics(path, TASK, {"held_out": held_out, "held_out_pipeline": {}, "real_photos": {}},
                   arch={"thresholds": loc.thresholds, "inference": loc.inference,
                         "layers": {"backbone": cfg["backbone"], "head": cfg["head"]}},
                   training={"retuned": {"command": command, "chosen_on": chosen["chosen_on"],
                                         "tried": chosen["tried"]}})
    return {**chosen, "held_out": held_out}


def _tune_and_score(loc: EarLocator, negatives: list, cache: Path) -> tuple[dict, dict]:
    """choose_inference on development data (DEV renders and the "dev" parts of the
    ``negatives`` CSVs, photos taken of the ear left out), then synthetic_scores on HELD_OUT:
    (what was chosen, with "chosen_on"; the held-out scores)."""
    from bodymap.models.diagdata import split_rows

    dv = cached_head_dataset(cache, DEV["bodies"], DEV["views"], DEV["size"], DEV["seed"])
    dev: dict[str, list] = {}  # by data set (its folder's name; two CSVs of one folder are one set)
    for c in negatives:
        dev.setdefault(Path(c).parent.name, []).extend(
            r["path"] for r in split_rows(c, "dev") if r["site_code"] != EAR_SITE)
    chosen = choose_inference(loc, dv, dev)
    chosen["chosen_on"] = (f"renders of seed {DEV['seed']}, real dev-part photos ("
                           + ", ".join(f"{k} {len(v)}" for k, v in dev.items()) + "), at most 1 % found in each")
    ho = cached_head_dataset(cache, HELD_OUT["bodies"], HELD_OUT["views"], HELD_OUT["size"], HELD_OUT["seed"])
    return chosen, synthetic_scores(loc, ho, seed=HELD_OUT["seed"])


def _checkpoint_dict(state_dict: dict, thresholds: dict, cfg: dict | None = None,
                     inference: dict | None = None, input_size: int = INPUT) -> dict:
    """An in-memory checkpoint of the locator (as load_checkpoint returns one); cfg: its
    ``yolo_config`` (built here when not given), whose layer list the checkpoint keeps;
    inference: the search settings (EarLocator.inference; default the input size, no mirror);
    input_size: the photo's long side in training, px."""
    cfg = cfg or yolo_config(ARCH)
    layers = {"backbone": cfg["backbone"], "head": cfg["head"]}
    arch = {**ARCH, "layers": layers, "thresholds": dict(thresholds),
            "inference": dict(inference or {"size": input_size, "mirror": False})}
    return {"arch": arch, "state_dict": state_dict,
            "classes": ["background", "ear"], "input_size": input_size, "normalisation": NORMALISATION}


def _ultralytics_start(path: str | Path, to: Path) -> tuple[Path, dict]:
    """A locator checkpoint's weights written as an ultralytics weights file ``to`` ({"model":
    DetectionModel}, what its trainer's ``pretrained`` reads). Returns (to, {"path", "arch",
    "training", "metrics", "data"} of the checkpoint)."""
    import torch

    from bodymap.models.checkpoint import load_checkpoint

    ck = load_checkpoint(path, TASK)
    model = build_model(ck["arch"])
    model.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    torch.save({"model": model}, to)
    return to, {"path": str(path), "arch": ck["arch"], "training": ck["training"],
                "metrics": ck.get("metrics") or {}, "data": ck.get("data") or {}}


# ---------------------------------------------------------------- inference

@dataclasses.dataclass
class EarSearch:
    """Result of ``EarLocator.find``. found: an ear is in the photo; boxes: (k, 4) int x0, y0, x1,
    y1 of each found ear (photo pixels); scores: (k,) float their detector scores; mask: (H, W)
    bool, pixels of the found ears' boxes; peak: the highest score of any box in the photo (0
    when none), found or not; prob: (H, W) float32, each pixel the highest score of a box over
    it (a coarse view for display)."""

    found: bool
    boxes: np.ndarray
    scores: np.ndarray
    mask: np.ndarray
    peak: float
    prob: np.ndarray


class EarLocator(LoadedModel):
    """A loaded ear-locator checkpoint. Use ``EarLocator.load(path)``. ``thresholds``: the
    decision threshold ``conf`` set on development data (stored in the checkpoint's arch)."""

    TASK = TASK
    DEFAULT_PATH = DEFAULT_PATH
    NAME = "ear locator (YOLOv8 detector)"

    def __init__(self, checkpoint: dict, device=None, model=None):
        super().__init__(checkpoint, device, model)
        arch = self.info.get("arch") or {}
        self.thresholds = dict(arch.get("thresholds") or {})
        # how photos are searched (chosen on development data, choose_inference): the long side
        # the photo is resized to, and whether its mirror image is searched too
        self.inference = {"size": int(self.input_size), "mirror": False, **(arch.get("inference") or {})}

    @classmethod
    def build(cls, checkpoint: dict):
        return build_model(checkpoint["arch"])

    def held_out_line(self) -> str:
        ho = (self.info.get("metrics") or {}).get("held_out_pipeline") or \
            (self.info.get("metrics") or {}).get("held_out") or {}
        if not ho:
            return ""
        line = (f"ear found on {ho['detection_rate']:.3f} of held-out synthetic photos with an ear "
                f"(false finds {ho['false_rate']}), ear pixels precision {ho['pixel_precision']:.2f} / "
                f"recall {ho['pixel_recall']:.2f}")
        # real photos without an ear (benchmarks/models.py --record): how often it is fooled
        real = {k: v for k, v in ((self.info.get("metrics") or {}).get("real_photos") or {}).items()
                if "not of the ear" in k}
        if real:
            line += "; on real photos without an ear, found on " + ", ".join(
                f"{v['rate']:.3f} of {k.split(',')[0]}" for k, v in real.items())
        return line

    def detect(self, image, name: str = "image", conf: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Every ear box of a photo (H, W, 3) uint8 of any size scoring at least ``conf``, as
        the checkpoint's ``inference`` settings search it: its long side resized to
        inference["size"] (aspect kept, antialiased), padded to a multiple of 32 with
        ultralytics' grey, boxes decoded; with inference["mirror"] the mirror image is searched
        too and its boxes mirrored back; overlapping boxes merged (non-maximum suppression, IoU
        0.5). -> boxes (k, 4) float x0, y0, x1, y1 in photo pixels, scores (k,)."""
        from torchvision.ops import nms
        import torch

        rgb = as_rgb(image, name)
        size = int(self.inference["size"])
        b, sc = self._detect(rgb, size, conf)
        if self.inference.get("mirror"):
            bm, scm = self._detect(np.ascontiguousarray(rgb[:, ::-1]), size, conf)
            W = rgb.shape[1]
            b, sc = np.concatenate([b, np.stack([W - bm[:, 2], bm[:, 1], W - bm[:, 0], bm[:, 3]], 1)]), \
                np.concatenate([sc, scm])
            k = nms(torch.as_tensor(b), torch.as_tensor(sc), NMS_IOU).numpy()
            b, sc = b[k], sc[k]
        return b.astype(np.float32).reshape(-1, 4), sc.astype(np.float32)

    def _detect(self, rgb: np.ndarray, size: int, conf: float) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the detector on a photo (H, W, 3) uint8 at long side ``size``: boxes (k, 4)
        in photo pixels and scores (k,), after non-maximum suppression."""
        import torch
        import torch.nn.functional as F
        from torchvision.ops import nms

        H, W = rgb.shape[:2]
        s = size / max(H, W)
        h, w = max(32, round(H * s)), max(32, round(W * s))
        x = to_tensor(rgb[None], self.normalisation)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), value=PAD_VALUE)
        with torch.no_grad():
            y = self.model(x.to(self.device))
        y = (y[0] if isinstance(y, (tuple, list)) else y)[0].float().cpu()  # (5, A)
        keep = y[4] >= conf
        c, sc = y[:4, keep].T, y[4, keep]
        b = torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1)
        k = nms(b, sc, NMS_IOU)
        b = b[k].numpy() * np.array([W / w, H / h, W / w, H / h])  # the resize; padding is right and below
        b = np.clip(b, 0, [W, H, W, H])
        return b.astype(np.float32).reshape(-1, 4), sc[k].numpy().astype(np.float32)

    def find(self, image, name: str = "image") -> EarSearch:
        """Search a photo for ears: boxes scoring at least the checkpoint's ``conf`` (set on
        development data)."""
        boxes, scores = self.detect(image, name)  # detect validates the photo (as_rgb)
        return decide(boxes, scores, np.shape(image)[:2], self.thresholds)


def decide(boxes: np.ndarray, scores: np.ndarray, shape: tuple, thresholds: dict) -> EarSearch:
    """Ears from scored boxes (k, 4) x0, y0, x1, y1 (photo pixels) and scores (k,) of a photo of
    ``shape`` (H, W): the boxes scoring at least thresholds["conf"] (default 0.25), rounded
    outwards to whole pixels."""
    conf = float(thresholds.get("conf", 0.25))
    H, W = int(shape[0]), int(shape[1])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    prob = np.zeros((H, W), np.float32)
    mask = np.zeros((H, W), bool)
    kept = []
    for (x0, y0, x1, y1), sc in sorted(zip(boxes, scores), key=lambda t: t[1]):  # higher scores painted last
        b = [int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))]
        b = [max(0, b[0]), max(0, b[1]), min(W, b[2]), min(H, b[3])]
        if b[2] <= b[0] or b[3] <= b[1]:
            continue
        prob[b[1]:b[3], b[0]:b[2]] = sc
        if sc >= conf:
            mask[b[1]:b[3], b[0]:b[2]] = True
            kept.append((b, sc))
    kept.sort(key=lambda t: -t[1])
    return EarSearch(bool(kept), np.array([b for b, _ in kept], np.int64).reshape(-1, 4),
                     np.array([s for _, s in kept], np.float32), mask,
                     float(scores.max()) if len(scores) else 0.0, prob)


@dataclasses.dataclass
class PhotoEars:
    """Ears found and segmented in a photo. found: any ear; labels (H, W) int 0..12 (0 off the
    found ears); boxes (k, 4) the locator's boxes; crops: [(x0, y0, x1, y1)] square regions
    given to the region U-Net; search: the EarSearch."""

    found: bool
    labels: np.ndarray
    boxes: np.ndarray
    crops: list
    search: EarSearch


def find_and_segment(image, locator: EarLocator, segmenter, name: str = "image") -> PhotoEars:
    """Search a photo (H, W, 3) uint8 for ears (``locator``), then segment each found ear into
    the 12 regions (``segmenter``: an earseg.EarSegmenter) on a square crop around it (the ear
    filling CROP_FILL of it, as in the U-Net's training close-ups). Region labels are kept only
    inside the found ear's box: no ear pixel elsewhere, none at all on a photo without an ear.
    (The box is not grown: grown by 15 % of the ear's size, as the earlier locator's coarse mask
    was, the labels reached skin beside small ears: on development renders, ears <= 5 % of the
    photo, pixel precision 0.760 grown, 0.796 not, recall 0.858 / 0.855.)"""
    rgb = as_rgb(image, name)
    return segment_found(rgb, locator.find(rgb, name), segmenter, name)


def segment_found(image, search: EarSearch, segmenter, name: str = "image") -> PhotoEars:
    """find_and_segment's second half: the ears of ``search`` (the locator's EarSearch of this
    photo (H, W, 3) uint8) segmented into the 12 regions, labels kept inside their boxes."""
    rgb = as_rgb(image, name)
    H, W = rgb.shape[:2]
    labels = np.zeros((H, W), np.int64)
    crops = []
    for box in search.boxes:
        # (at least the 16 px the region U-Net reads: a box of 12 px or less made a smaller crop,
        # the U-Net refused it, and photo mode lost the ear result)
        crop, (a, b, _, _) = square_crop(rgb, box)
        side = crop.shape[0]
        # (the weights' own threshold for such crops, when they carry one: EarSegmenter.crop_ear_prob)
        p = getattr(segmenter, "crop_ear_prob", None)
        lab = segmenter.segment(crop, name) if p is None else segmenter.segment(crop, name, ear_prob=p)
        # back into the photo
        ya, xa = max(b, 0), max(a, 0)
        yb, xb = min(b + side, H), min(a + side, W)
        sub = lab[ya - b:yb - b, xa - a:xa - a + (xb - xa)]
        region = search.mask[ya:yb, xa:xb]
        cur = labels[ya:yb, xa:xb]
        labels[ya:yb, xa:xb] = np.where(region & (sub > 0) & (cur == 0), sub, cur)
        crops.append((a, b, a + side, b + side))
    return PhotoEars(bool((labels > 0).any()), labels, search.boxes, crops, search)


# ---------------------------------------------------------------- scores

def choose_thresholds(loc: EarLocator, dev_heads: dict, dev_negatives: dict | list, max_false: float = 0.01) -> dict:
    """The decision threshold from development data: ``conf`` is the lowest box score in
    0.05..0.95 at which an ear is found on at most ``max_false`` of **each** set of real
    development photos without ears (dev_negatives: {set name: photos (H, W, 3) uint8}, or one
    list) and on at most 2% of the synthetic views without one; the recall on synthetic views
    with an ear is reported. Each set, not their pool: photo mode searches clinical photos and
    never dermoscopy, so HAM10000's 842 dev images must not outvote PAD-UFES-20's 37 clinical
    ones (pooled, a further round of training was given a threshold that found ears on 3 of
    those 37)."""
    sets = dev_negatives if isinstance(dev_negatives, dict) else {"real": dev_negatives}
    neg = {k: np.array([_best_score(loc, im) for im in v]) for k, v in sets.items() if len(v)}
    imgs = _compose_fixed(dev_heads, seed=DEV["seed"])
    syn = np.array([_best_score(loc, im) for im in imgs])
    has = dev_heads["ear"].reshape(len(imgs), -1).mean(1) >= 0.001
    n_real = int(sum(len(v) for v in neg.values()))
    for t in np.round(np.arange(0.05, 0.951, 0.01), 2):
        fp_sets = {k: float((v >= t).mean()) for k, v in neg.items()}
        fp_syn = float((syn[~has] >= t).mean()) if (~has).any() else 0.0
        if all(f <= max_false for f in fp_sets.values()) and fp_syn <= max(max_false, 0.02):
            fp_real = float(sum((v >= t).sum() for v in neg.values()) / n_real) if n_real else 0.0
            return {"conf": float(t), "dev_false_real": round(fp_real, 4),
                    "dev_false_by_set": {k: round(f, 4) for k, f in fp_sets.items()},
                    "dev_false_synthetic": round(fp_syn, 4),
                    "dev_recall_synthetic": round(float((syn[has] >= t).mean()), 4),
                    "dev_real_images": n_real, "dev_synthetic_images": int(len(imgs))}
    return {"conf": 0.95, "note": "no threshold met the false-find limit"}


# the search settings choose_inference tries: the photo's long side, and the mirror image too
INFERENCE_CHOICES = [{"size": 256, "mirror": False}, {"size": 320, "mirror": False}, {"size": 320, "mirror": True},
                     {"size": 352, "mirror": True}, {"size": 384, "mirror": True}]


def choose_inference(loc: EarLocator, dev_heads: dict, dev_negative_paths: dict, max_false: float = 0.01) -> dict:
    """How photos are searched, chosen on development data: of INFERENCE_CHOICES, the one whose
    threshold (choose_thresholds, same false-find limits) finds an ear on the most development
    views with one (ties: the cheaper, earlier choice). Sets loc.inference and loc.thresholds;
    returns {"inference", "thresholds", "tried": [...]}. dev_negative_paths: {set name: photo
    paths}. The real photos are read once, at 512 px long side (what photo mode's photos are at
    least)."""
    from bodymap.models.diagdata import load_photos

    neg = {k: load_photos(v, 512) for k, v in dev_negative_paths.items() if v}
    tried, best = [], None
    for choice in INFERENCE_CHOICES:
        loc.inference = dict(choice)
        th = choose_thresholds(loc, dev_heads, neg, max_false)
        tried.append({**choice, **th})
        if best is None or th.get("dev_recall_synthetic", -1) > best[1].get("dev_recall_synthetic", -1):
            best = (dict(choice), th)
    loc.inference, loc.thresholds = best
    return {"inference": best[0], "thresholds": best[1], "tried": tried}


def _best_score(loc: EarLocator, image: np.ndarray) -> float:
    """The highest ear-box score in a photo (0 when no box scores 0.05)."""
    return float(loc.detect(image)[1].max(initial=0.0))


def _compose_fixed(heads: dict, seed: int) -> np.ndarray:
    """Evaluation photos from renders: each composed once on a fresh synthetic background (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([compose(im, b, rng) for im, b in zip(heads["images"], heads["body"])])


def synthetic_scores(loc: EarLocator, heads: dict, seed: int, segmenter=None, n_boot: int = 1000) -> dict:
    """Scores on rendered head photos (composed on seeded synthetic backgrounds): share of
    photos with an ear (>= 0.1% of the pixels) where one is found ("detection_rate"); share of
    photos without an ear where one is found ("false_rate"); ear-pixel precision and recall of
    the found ears' pixels (the locator's mask, or, with ``segmenter``, find_and_segment's
    labels > 0) pooled over photos, with 95% bootstrap intervals (photos resampled); the same
    on the photos whose ear is at most 5% of the image ("small_ear_*")."""
    imgs = _compose_fixed(heads, seed)
    truth = heads["ear"]
    N = len(imgs)
    share = truth.reshape(N, -1).mean(1)
    found, tp, fp, fn = np.zeros(N, bool), np.zeros(N), np.zeros(N), np.zeros(N)
    for i, im in enumerate(imgs):
        if segmenter is None:
            s = loc.find(im)
            pred, found[i] = s.mask, s.found
        else:
            r = find_and_segment(im, loc, segmenter)
            pred, found[i] = r.labels > 0, r.found
        t = truth[i]
        tp[i], fp[i], fn[i] = (pred & t).sum(), (pred & ~t).sum(), (~pred & t).sum()
    has = share >= 0.001
    rng = np.random.default_rng(0)

    def pr(sel):
        idx = np.flatnonzero(sel)
        if not len(idx):
            return {}
        prec = lambda ii: tp[ii].sum() / max(tp[ii].sum() + fp[ii].sum(), 1)  # noqa: E731
        rec = lambda ii: tp[ii].sum() / max(tp[ii].sum() + fn[ii].sum(), 1)  # noqa: E731
        boots = [rng.choice(idx, len(idx)) for _ in range(n_boot)]
        ci = lambda f: [round(float(np.percentile([f(b) for b in boots], q)), 4) for q in (2.5, 97.5)]  # noqa: E731
        return {"pixel_precision": round(float(prec(idx)), 4), "pixel_precision_ci": ci(prec),
                "pixel_recall": round(float(rec(idx)), 4), "pixel_recall_ci": ci(rec), "pixel_images": int(len(idx))}

    small = has & (share <= 0.05)
    out = {"images": int(N), "with_ear": int(has.sum()), "detection_rate": round(float(found[has].mean()), 4),
           "missed": int((~found[has]).sum()), "false_rate": round(float(found[~has].mean()), 4) if (~has).any() else None,
           **pr(has), "small_ear": pr(small), "data": heads["description"],
           "what": "find_and_segment labels" if segmenter is not None else "locator mask"}
    return out


# ---------------------------------------------------------------- benchmark

EXTERNAL = Path(__file__).resolve().parents[3] / "shared" / "external"


def benchmark(external: str | Path | None = None, cache: str | Path | None = None) -> dict:
    """Figures for benchmarks/models.py: the shipped locator (+ region U-Net) on held-out
    synthetic head photos (HELD_OUT: ear found, ear-pixel precision / recall, small ears), and
    the share of real photos in which an ear is found: HAM10000's and PAD-UFES-20's test parts
    (never trained on; photos taken of the ear listed apart), all of ISIC 2017; by the locator
    alone and by photo mode (which searches only clinical and body-region photos, and shows an ear
    where find_and_segment labels one), with no site
    given and with the data set's site given as a user would (bodymap.photo.searches_ears: a
    clinical close-up of a site outside the head and neck is not searched). Time per photo."""
    from bodymap.models.diagdata import load_images, load_photos, split_rows
    from bodymap.models.earseg import EarSegmenter
    from bodymap.photo import searches_ears

    ext = Path(external) if external else EXTERNAL
    cache = Path(cache) if cache else Path(__file__).resolve().parents[2] / "out" / "models" / "cache"
    loc = EarLocator.load()
    seg = EarSegmenter.load()
    res: dict = {"checkpoint": str(loc.path), "card": loc.card, "thresholds": loc.thresholds}
    ho = cached_head_dataset(cache, HELD_OUT["bodies"], HELD_OUT["views"], HELD_OUT["size"], HELD_OUT["seed"])
    res["synthetic_locator"] = synthetic_scores(loc, ho, seed=HELD_OUT["seed"])
    res["synthetic"] = synthetic_scores(loc, ho, seed=HELD_OUT["seed"], segmenter=seg)
    try:
        from bodymap.models.photokind import PhotoKindClassifier

        kinds = PhotoKindClassifier.load()
    except Exception as e:  # no kind model: the locator alone
        kinds, res["kind_model"] = None, str(e)
    sets = {}
    for name, part, label in (("ham10000", "test", "HAM10000 test part"), ("isic2017", "test", "ISIC 2017 (all)"),
                              ("pad_ufes20", "test", "PAD-UFES-20 test part"), ("pad_ufes20", "all", "PAD-UFES-20")):
        f = ext / name / "metadata.csv"
        if not f.exists():
            continue
        rows = split_rows(f, part)
        if name == "pad_ufes20" and part == "all":  # every photo taken of the ear (the check)
            sets["PAD-UFES-20 photos of the ear (all 7; 6 in the training part, never used there)"] = \
                [r for r in rows if r["site_code"] == EAR_SITE]
            continue
        sets[f"{label}, not of the ear"] = [r for r in rows if r["site_code"] != EAR_SITE]
        if name != "pad_ufes20":
            sets[f"{label}, of the ear"] = [r for r in rows if r["site_code"] == EAR_SITE]
    res["real"] = {}
    t_total, n_total = 0.0, 0
    for label, rows in sets.items():
        if not rows:
            continue
        paths = [r["path"] for r in rows]
        found, via_photo, via_site = [], [], []
        for i in range(0, len(paths), 64):
            ims = load_photos(paths[i:i + 64], 256)  # aspect kept, as photo mode sees them
            ks = kinds.probs(load_images(paths[i:i + 64], 128)).argmax(1) if kinds is not None else None
            for j, im in enumerate(ims):
                t0 = time.perf_counter()
                search = loc.find(im)
                t_total += time.perf_counter() - t0
                n_total += 1
                f_ = search.found
                found.append(f_)
                kind = None if ks is None else kinds.classes[int(ks[j])]
                # photo mode shows an ear where the region U-Net labels some of a found box
                # (find_and_segment), which it does not on every box the locator finds
                shown = f_ and segment_found(im, search, seg).found
                via_photo.append(shown and searches_ears(kind, None))
                via_site.append(shown and searches_ears(kind, rows[i + j]["site_code"]))
        from bodymap.models.metrics import bootstrap_ci

        f_ = np.array(found, float)
        p_, q_ = np.array(via_photo, float), np.array(via_site, float)
        res["real"][label] = {"images": len(f_), "found": int(f_.sum()), "rate": round(float(f_.mean()), 4),
                              "rate_ci": [round(x, 4) for x in bootstrap_ci(np.mean, f_)],
                              "photo_mode_found": int(p_.sum()), "photo_mode_rate": round(float(p_.mean()), 4),
                              "with_site": int(sum(bool(r["site_code"]) for r in rows)),
                              "photo_mode_site_found": int(q_.sum()),
                              "photo_mode_site_rate": round(float(q_.mean()), 4),
                              "photo_mode_site_rate_ci": [round(x, 4) for x in bootstrap_ci(np.mean, q_)]}
    res["ms_per_photo_256"] = round(1000 * t_total / max(n_total, 1), 1)  # long side 256 px
    res["file_mb"] = round(Path(loc.path).stat().st_size / 1e6, 2)
    return res


def benchmark_text(res: dict) -> str:
    """The printed report of ``benchmark``."""
    c = res["card"]
    th = res["thresholds"]
    lines = [f"locator {res['checkpoint']} ({res['file_mb']} MB): trained on {c['trained_on']}; threshold (dev): "
             f"box score >= {th.get('conf')}"]
    for key, what in (("synthetic_locator", "locator mask"), ("synthetic", "locate, then segment (labels > 0)")):
        s = res[key]
        d = s["data"]
        lines.append(f"held-out synthetic head photos ({d['images']} at {d['size']} px, {d['bodies']} bodies of seed "
                     f"{d['seed']}, {s['with_ear']} with an ear), {what}: ear found on {s['detection_rate']:.3f} "
                     f"({s['missed']} missed); found where there is none: {s['false_rate']}; ear pixels precision "
                     f"{_f(s, 'pixel_precision')}, recall {_f(s, 'pixel_recall')}")
        sm = s.get("small_ear") or {}
        if sm:
            lines.append(f"   photos whose ear is at most 5 % of the image ({sm['pixel_images']}): precision "
                         f"{_f(sm, 'pixel_precision')}, recall {_f(sm, 'pixel_recall')}")
    lines.append("real photos (none shows an ear's shape): ear found by the locator / by photo mode (kind gate, "
                 "locator, region labels in the box), no site given / by photo mode with the data set's site given")
    for label, r in res["real"].items():
        site = (f"; site given ({r['with_site']} have one) {r['photo_mode_site_found']} = "
                f"{r['photo_mode_site_rate']:.4f} [{r['photo_mode_site_rate_ci'][0]:.4f}, "
                f"{r['photo_mode_site_rate_ci'][1]:.4f}]" if "photo_mode_site_found" in r else "")
        lines.append(f"   {label}: {r['found']} of {r['images']} = {r['rate']:.4f} [{r['rate_ci'][0]:.4f}, "
                     f"{r['rate_ci'][1]:.4f}]; photo mode {r['photo_mode_found']} = {r['photo_mode_rate']:.4f}{site}")
    lines.append(f"speed: {res['ms_per_photo_256']} ms per photo (locator, 256 px photos)")
    return "\n".join(lines)


def _f(s: dict, key: str) -> str:
    ci = s.get(key + "_ci") or [float("nan")] * 2
    return f"{s[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
