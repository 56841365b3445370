"""Skin textures painted in UV space from 3D fields, so colour never breaks at a UV seam.

Every texel of the atlas knows the base-mesh face it lies in and its barycentric coordinates
(``UVAtlas``), hence its 3D position on any body of the anny family. Colour fields (mottling,
veins, region tints) are functions of the texel's position on the *template* body, so they are
identical on both sides of a seam and across visits; pores are per-texel noise.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from scipy import ndimage

from bodymap.colour import srgb_to_linear  # noqa: F401 - re-exported for the generator


# Typical constitutive skin colours (sRGB) for Fitzpatrick types I-VI, from light to dark.
FITZPATRICK_SRGB = {
    1: (247, 219, 203),
    2: (236, 196, 168),
    3: (216, 168, 132),
    4: (182, 130, 94),
    5: (130, 88, 61),
    6: (82, 56, 42),
}


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB in [0, 1], same shape (clipped)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


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
