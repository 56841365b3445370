"""Skin textures painted in UV space from 3D fields, so colour never breaks at a UV seam.

Every texel of the atlas knows the base-mesh face it lies in and its barycentric coordinates
(``UVAtlas``), hence its 3D position on any body of the anny family. Colour fields (mottling,
veins, region tints) are functions of the texel's position on the *template* body, so they are
identical on both sides of a seam and across visits; pores are per-texel noise.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from bodymap.scan import uv_to_pixel

# Typical constitutive skin colours (sRGB) for Fitzpatrick types I-VI, from light to dark.
FITZPATRICK_SRGB = {
    1: (247, 219, 203),
    2: (236, 196, 168),
    3: (216, 168, 132),
    4: (182, 130, 94),
    5: (130, 88, 61),
    6: (82, 56, 42),
}


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear RGB, same shape."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB in [0, 1], same shape (clipped)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


@dataclasses.dataclass
class UVAtlas:
    """Texels covered by a UV layout, each with its face and barycentric coordinates.

    size : texture side in texels (square atlas)
    uv : (m, 3, 2) the layout it was rasterised from
    flat : (k,) int64 flat indices (row * size + col) of covered texels
    face : (k,) int32 face of each covered texel
    bary : (k, 3) float32 barycentric coordinates of the texel centre in that face
    order, offsets : texels grouped by face: texels of face f are flat[order[offsets[f]:offsets[f+1]]]
    """

    size: int
    uv: np.ndarray
    flat: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    order: np.ndarray
    offsets: np.ndarray

    def positions(self, vertices: np.ndarray, faces: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        """3D positions of covered texels on a body. vertices (n, 3) mm; returns (k, 3) float32."""
        f = self.face if sel is None else self.face[sel]
        b = self.bary if sel is None else self.bary[sel]
        tri = vertices[faces[f]].astype(np.float32)
        return np.einsum("kj,kjd->kd", b, tri)

    def texels_of_faces(self, face_ids: np.ndarray) -> np.ndarray:
        """Indices (into flat/face/bary) of the texels of the given faces. Returns (t,) int64."""
        parts = [self.order[self.offsets[f]:self.offsets[f + 1]] for f in np.unique(face_ids)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def rasterize_uv(uv: np.ndarray, size: int) -> UVAtlas:
    """Rasterise a UV layout. uv : (m, 3, 2) per face corner, origin bottom-left. size : texels.

    Uses PIL to draw each triangle with its face id (fast, C), then computes exact barycentric
    coordinates of each texel centre in its face.
    """
    m = len(uv)
    px = uv_to_pixel(uv, (size, size))  # (m, 3, 2) x=col, y=row, texel centres at integers
    img = Image.new("I", (size, size), -1)
    draw = ImageDraw.Draw(img)
    # PIL puts pixel centres at integer coordinates too; polygon() includes boundary texels.
    for i, tri in enumerate(px.tolist()):
        draw.polygon([tuple(p) for p in tri], fill=i, outline=i)
    fid = np.asarray(img, dtype=np.int32).ravel()
    flat = np.flatnonzero(fid >= 0)
    face = fid[flat]
    rows, cols = np.divmod(flat, size)
    # barycentric of (col, row) in triangle px[face]
    a, b, c = px[face, 0], px[face, 1], px[face, 2]
    v0, v1 = b - a, c - a
    v2 = np.stack([cols, rows], axis=1).astype(np.float64) - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = np.stack([1 - l1 - l2, l1, l2], axis=1)
    # boundary texels lie slightly outside their triangle: clamp back onto it
    bary = np.clip(bary, 0.0, 1.0)
    bary /= bary.sum(1, keepdims=True)
    order = np.argsort(face, kind="stable")
    offsets = np.searchsorted(face[order], np.arange(m + 1))
    return UVAtlas(size, np.asarray(uv, np.float32), flat.astype(np.int64), face.astype(np.int32), bary.astype(np.float32), order, offsets)


class NoiseField:
    """Smooth random 3D scalar field (value noise on a grid, cubic interpolation), ~N(0, 1).

    bounds : (2, 3) mm box to cover; scale : feature size in mm.
    """

    def __init__(self, rng: np.random.Generator, bounds: np.ndarray, scale: float):
        lo = np.asarray(bounds[0], dtype=np.float64) - 2 * scale
        hi = np.asarray(bounds[1], dtype=np.float64) + 2 * scale
        shape = np.maximum(np.ceil((hi - lo) / scale).astype(int) + 1, 4)
        self.lo, self.scale = lo, scale
        g = rng.standard_normal(tuple(shape)).astype(np.float32)
        # cubic B-spline prefilter keeps amplitude about unit after interpolation smoothing
        self.coef = ndimage.spline_filter(g, order=3)
        self.norm = 1.0 / max(float(self._eval_raw(rng.uniform(lo + 2 * scale, hi - 2 * scale, (4000, 3))).std()), 1e-6)

    def _eval_raw(self, p: np.ndarray) -> np.ndarray:
        q = ((np.asarray(p, dtype=np.float64) - self.lo) / self.scale).T
        return ndimage.map_coordinates(self.coef, q, order=3, prefilter=False, mode="nearest")

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """p : (k, 3) mm. Returns (k,) float32."""
        return (self._eval_raw(p) * self.norm).astype(np.float32)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at e0 to 1 at e1 (elementwise)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def fill_gutter(img: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Copy each uncovered texel from its nearest covered texel, so bilinear sampling and
    slightly extrapolated UVs at chart borders never pick up background.

    img : (H, W, C); covered : (H, W) bool. Returns a new array.
    """
    idx = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return img[idx[0], idx[1]]


@functools.lru_cache(maxsize=4)
def _segmentation_labels(root: str, size: int) -> tuple[np.ndarray, dict[str, tuple[int, int, int]]]:
    """anny's UV body-part segmentation image resized to size x size (nearest)."""
    import yaml

    from pathlib import Path

    colors = yaml.safe_load(open(Path(root) / "segmentation" / "body_parts_segmentation.yaml"))["colors"]
    im = Image.open(Path(root) / "segmentation" / "body_parts_segmentation.png").convert("RGB")
    im = im.resize((size, size), Image.NEAREST)
    return np.asarray(im), {k: tuple(v) for k, v in colors.items()}
