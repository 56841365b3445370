"""Training data for the ear-segmentation U-Net.

Synthetic: ear close-ups of random anny bodies (the ear's shape follows the phenotype) with
random skin, hair, light, background and camera (side, azimuth, elevation, roll, distance,
field of view); the mask of each pixel is the template ear label (bodymap.taxonomy.EAR_REGIONS)
of the nearest corner of the face the ray hit, so masks are exact.

User data: a folder with ``images/`` and ``masks/`` holding files of the same stem; a mask is a
single-channel PNG of label indices 0-12, or an RGB PNG in the taxonomy's ear colours.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.taxonomy import EAR_COLOURS, EAR_REGIONS

Progress = Callable[[str, float], None]


def ear_camera(vertices: np.ndarray, ear_vertices: np.ndarray, side: int, rng: np.random.Generator, size: int):
    """A random close-up camera of one ear. vertices (n, 3) mm; ear_vertices (k,) indices of
    that ear; side +1 (subject's left, +x) or -1. Looks roughly along -side*x (lateral view)
    within +-35 degrees azimuth and +-25 elevation, rolled +-25 degrees, the ear filling
    70-105% of the half-frame, off-centre by up to a fifth of the frame."""
    from renderers.camera import Camera

    P = vertices[ear_vertices]
    c = P.mean(0)
    radius = float(np.linalg.norm(P - c, axis=1).max())
    az = np.deg2rad(rng.uniform(-35, 35))
    el = np.deg2rad(rng.uniform(-25, 25))
    # direction from the ear to the camera: lateral, turned about z (az) and tilted (el)
    lateral = np.array([side * np.cos(az) * np.cos(el), -np.sin(az) * np.cos(el), np.sin(el)])
    lateral /= np.linalg.norm(lateral)
    fov = rng.uniform(20, 45)
    fill = rng.uniform(0.7, 1.05)
    dist = radius / fill / np.tan(np.deg2rad(fov) / 2)
    roll = np.deg2rad(rng.uniform(-25, 25))
    fwd = -lateral
    up0 = np.array([0.0, 0.0, 1.0])
    # roll: rotate the up vector about the viewing axis (Rodrigues)
    up = up0 * np.cos(roll) + np.cross(fwd, up0) * np.sin(roll) + fwd * np.dot(fwd, up0) * (1 - np.cos(roll))
    shift = rng.uniform(-0.2, 0.2, 3) * radius / fill
    target = c + shift - np.dot(shift, fwd) * fwd
    return Camera.look_at(target + dist * lateral, target, up=up, fov_deg=fov, width=size, height=size)


def render_ear_dataset(n_bodies: int, views_per_ear: int, size: int = 128, seed: int = 0,
                       progress: Progress | None = None) -> dict:
    """Render ``n_bodies`` random bodies x 2 ears x ``views_per_ear`` close-ups.

    Body i uses the generator seeded (seed, i), so two seeds never share a body, phenotype or
    camera draw. Returns {"images": (N, size, size, 3) uint8, "masks": (N, size, size) uint8
    (indices into EAR_REGIONS), "description": dict with counts and a sha256 of the arrays}.
    """
    from bodymap.models.synthviews import BodyRenderer, _template, random_body, skin_colours

    t = _template()
    say = progress or (lambda s, f: None)
    imgs, masks = [], []
    for i in range(n_bodies):
        rng = np.random.default_rng([seed, i])
        V = random_body(rng)
        br = BodyRenderer(V, skin_colours(rng))
        for side in (1, -1):
            ear = np.flatnonzero((t.ear > 0) & (np.sign(t.vertices[:, 0]) == side))
            for _ in range(views_per_ear):
                cam = ear_camera(V, ear, side, rng, size)
                img, r = br.render(cam, rng)
                imgs.append(img)
                masks.append(br.vertex_label_image(r, t.ear).astype(np.uint8))
        say(f"rendering ears (body {i + 1}/{n_bodies})", (i + 1) / n_bodies)
    images, masks_a = np.stack(imgs), np.stack(masks)
    return {"images": images, "masks": masks_a,
            "description": {"source": "synthetic ear close-ups (anny bodies, labelled template)",
                            "seed": seed, "bodies": n_bodies, "views_per_ear": views_per_ear,
                            "images": len(images), "size": size,
                            "pixels_per_class": np.bincount(masks_a.ravel(), minlength=len(EAR_REGIONS)).tolist(),
                            "sha256": data_hash(images, masks_a)}}


def data_hash(images: np.ndarray, masks: np.ndarray) -> str:
    """sha256 hex of the image and mask arrays' bytes (their shapes included)."""
    h = hashlib.sha256()
    for a in (images, masks):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cached_ear_dataset(cache: Path, n_bodies: int, views_per_ear: int, size: int, seed: int,
                       progress: Progress | None = None) -> dict:
    """render_ear_dataset, stored as cache/ears_<seed>_<bodies>x<views>_<size>.npz and reused."""
    from bodymap.models.training import cached_dataset

    return cached_dataset(cache, "ears", n_bodies, views_per_ear, size, seed, render_ear_dataset, progress)


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def mask_from_rgb(rgb: np.ndarray, path: str | Path = "mask") -> np.ndarray:
    """(h, w) uint8 ear labels from an RGB mask painted in taxonomy.EAR_COLOURS (exact colours).
    Raises ValueError naming ``path`` when a pixel has a colour that is no ear region's."""
    cols = np.array(EAR_COLOURS, np.int32)
    flat = rgb.reshape(-1, 3).astype(np.int32)
    key = flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]
    ckey = cols[:, 0] * 65536 + cols[:, 1] * 256 + cols[:, 2]
    order = np.argsort(ckey)
    pos = np.clip(np.searchsorted(ckey[order], key), 0, len(ckey) - 1)
    ok = ckey[order][pos] == key
    if not ok.all():
        bad = flat[np.flatnonzero(~ok)[0]]
        raise ValueError(f"{path}: colour {tuple(int(x) for x in bad)} is not an ear-region colour "
                         "(use label indices 0-12 or the taxonomy EAR_COLOURS)")
    return order[pos].astype(np.uint8).reshape(rgb.shape[:2])


def load_mask(path: str | Path) -> np.ndarray:
    """(h, w) uint8 labels 0-12 from a mask file (label PNG or colour PNG). ValueError names the
    file when it cannot be read or holds values outside 0-12."""
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{path}: cannot read the mask ({e})") from None
    if im.mode in ("RGB", "RGBA"):
        a = np.asarray(im.convert("RGB"))
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all() and a.max() < len(EAR_REGIONS):
            return a[..., 0].astype(np.uint8)
        return mask_from_rgb(a, path)
    a = np.asarray(im.convert("L") if im.mode not in ("L", "P", "I", "I;16") else im)
    if a.max() >= len(EAR_REGIONS) or a.min() < 0:
        raise ValueError(f"{path}: mask values {int(a.min())}..{int(a.max())}; labels must be 0-{len(EAR_REGIONS) - 1}")
    return a.astype(np.uint8)


def load_ear_folder(folder: str | Path, size: int) -> dict:
    """A user's photos and masks: folder/images/<stem>.<ext> and folder/masks/<stem>.png.

    Every image must have a mask of the same width and height. Images are resized to
    (size, size) (bilinear), masks likewise (nearest). Returns the same dict as
    render_ear_dataset. ValueError names the folder or file at fault.
    """
    from PIL import Image

    folder = Path(folder)
    idir, mdir = folder / "images", folder / "masks"
    for d in (idir, mdir):
        if not d.is_dir():
            raise ValueError(f"{folder}: no {d.name}/ folder (expected images/ and masks/ with matching file names)")
    images = sorted(p for p in idir.iterdir() if p.suffix.lower() in _IMAGE_EXT)
    if not images:
        raise ValueError(f"{idir}: no images ({', '.join(_IMAGE_EXT)})")
    masks = {p.stem: p for p in mdir.iterdir() if p.suffix.lower() in _IMAGE_EXT}
    imgs, ms = [], []
    for p in images:
        if p.stem not in masks:
            raise ValueError(f"{p}: no mask {mdir / (p.stem + '.png')}")
        try:
            im = Image.open(p).convert("RGB")
        except Exception as e:
            raise ValueError(f"{p}: cannot read the image ({e})") from None
        m = load_mask(masks[p.stem])
        if m.shape != (im.height, im.width):
            raise ValueError(f"{masks[p.stem]}: mask is {m.shape[1]}x{m.shape[0]} but its image {p.name} is "
                             f"{im.width}x{im.height}")
        imgs.append(np.asarray(im.resize((size, size), Image.BILINEAR)))
        ms.append(np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)))
    images_a, masks_a = np.stack(imgs), np.stack(ms)
    return {"images": images_a, "masks": masks_a,
            "description": {"source": f"user folder {folder}", "images": len(images_a), "size": size,
                            "pixels_per_class": np.bincount(masks_a.ravel(), minlength=len(EAR_REGIONS)).tolist(),
                            "sha256": data_hash(images_a, masks_a)}}
