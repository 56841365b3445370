"""A classical lesion detector that needs no weights: blobs of colour contrast to the skin around.

Route: CIELAB; the local skin colour by normalised convolution over the skin mask (at a quarter
resolution: skin colour varies slowly), twice, the second time without the candidates of the
first so large lesions do not tint their own background; contrast = how much darker, redder or
browner each pixel is (``bodymap.colour.lesion_contrast``); hysteresis thresholds scaled to the
skin's own texture noise; connected components, dropping hair-like (long and thin) ones.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from bodymap.colour import lesion_contrast, srgb_to_lab
from bodymap.detect import Boxes


def local_skin_colour(lab: np.ndarray, mask: np.ndarray, sigma_px: float, factor: int = 4) -> np.ndarray:
    """Slowly varying skin colour: Gaussian normalised convolution of lab (h, w, 3) over mask
    (h, w) bool with width sigma_px (pixels), computed at 1/factor resolution. Returns (h, w, 3)."""
    h, w = mask.shape
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    m = np.zeros((H, W), np.float32)
    m[:h, :w] = mask
    v = np.zeros((H, W, 3), np.float32)
    v[:h, :w] = lab * mask[..., None]
    # block sums at low resolution, then a Gaussian there
    ms = m.reshape(H // factor, factor, W // factor, factor).sum((1, 3))
    vs = v.reshape(H // factor, factor, W // factor, factor, 3).sum((1, 3))
    s = sigma_px / factor
    den = ndimage.gaussian_filter(ms, s, mode="constant")
    num = np.stack([ndimage.gaussian_filter(vs[..., k], s, mode="constant") for k in range(3)], -1)
    low = num / np.maximum(den, 1e-6)[..., None]
    # where no skin lies within reach, take the tile's overall skin colour
    fallback = lab[mask].mean(0) if mask.any() else np.zeros(3, np.float32)
    low[den < 1e-3] = fallback
    up = np.repeat(np.repeat(low, factor, 0), factor, 1)[:h, :w]
    return up.astype(np.float32)


@dataclasses.dataclass
class ContrastDetector:
    """Multi-threshold contrast-blob detector (see module docstring).

    low, high : hysteresis thresholds on contrast (Delta E), each at least k_low / k_high times
    the skin's robust contrast noise; min_area_px : smallest blob; bg_sigma_px : width of the
    skin-colour estimate (wider than the largest lesion expected, in pixels).
    """

    low: float = 5.0
    high: float = 8.0
    k_low: float = 3.0
    k_high: float = 5.0
    min_area_px: int = 4
    bg_sigma_px: float = 24.0
    max_elongation: float = 5.0
    tile: int = 2048
    overlap: int = 128
    name: str = "classical"

    def contrast(self, lab: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(h, w) float32 lesion contrast of an image (h, w, 3) CIELAB against its local skin."""
        bg = local_skin_colour(lab, mask, self.bg_sigma_px)
        c = lesion_contrast(lab, bg)
        cand = ndimage.binary_dilation((c > self.low) & mask, iterations=3)
        bg = local_skin_colour(lab, mask & ~cand, self.bg_sigma_px)
        c = lesion_contrast(lab, bg)
        c = ndimage.gaussian_filter(c, 0.7)  # texture grain and pores are finer than any lesion
        c[~mask] = 0.0
        return c

    def detect(self, image: np.ndarray, mask: np.ndarray) -> Boxes:
        """Boxes of lesion-like blobs in image (h, w, 3) uint8 within mask (h, w) bool."""
        mask = np.asarray(mask, bool)
        if mask.sum() < 16:
            return Boxes.empty()
        lab = srgb_to_lab(image)
        c = self.contrast(lab, mask)
        vals = c[mask]
        noise = 1.4826 * np.median(np.abs(vals - np.median(vals)))
        lo, hi = max(self.low, self.k_low * noise), max(self.high, self.k_high * noise)
        lab_img, n = ndimage.label(c > lo, structure=np.ones((3, 3)))
        if n == 0:
            return Boxes.empty()
        idx = np.arange(1, n + 1)
        peak = ndimage.maximum(c, lab_img, idx)
        area = ndimage.sum_labels(np.ones_like(c), lab_img, idx)
        slices = ndimage.find_objects(lab_img)
        boxes, scores = [], []
        for k in np.flatnonzero((peak > hi) & (area >= self.min_area_px)):
            sl = slices[k]
            comp = lab_img[sl] == k + 1
            if _elongation(comp) > self.max_elongation:  # a hair, a crease, a vein
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            if not _surrounded(lab, mask, lab_img, k + 1, (y0, y1, x0, x1), lo):
                continue  # the dark side of an edge between skins of two tones (palm, sole)
            boxes.append((x0, y0, x1, y1))
            # confidence: how far the blob's peak clears the high threshold
            scores.append(1.0 - np.exp(-(peak[k] - 0.5 * hi) / hi))
        if not boxes:
            return Boxes.empty()
        return Boxes(np.array(boxes, np.float32), np.clip(np.array(scores, np.float32), 0.0, 1.0))


def _elongation(comp: np.ndarray) -> float:
    """Ratio of the principal axes (>= 1) of a binary blob (h, w) bool."""
    ys, xs = np.nonzero(comp)
    if len(xs) < 5:
        return 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # + a pixel's own extent
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(ev[1] / max(ev[0], 1e-9)))


def _surrounded(lab: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int, box: tuple[int, int, int, int],
                level: float, sectors: int = 8) -> bool:
    """Whether blob k of labels (h, w) stands out from the skin on (nearly) every side: the
    blob's core colour against the median skin colour in each of `sectors` directions of a ring
    around it. lab (h, w, 3); mask (h, w) bool; box (y0, y1, x0, x1); level: contrast needed."""
    y0, y1, x0, x1 = box
    m = max(3, (max(y1 - y0, x1 - x0) + 1) // 2)
    Y0, Y1, X0, X1 = max(0, y0 - m), min(mask.shape[0], y1 + m), max(0, x0 - m), min(mask.shape[1], x1 + m)
    comp = labels[Y0:Y1, X0:X1] == k
    ring = mask[Y0:Y1, X0:X1] & ~ndimage.binary_dilation(comp, iterations=2)
    if ring.sum() < sectors:
        return True  # too little skin around to judge (a blob at a chart's edge): keep it
    w = lab[Y0:Y1, X0:X1]
    core = np.median(w[comp], axis=0)
    yy, xx = np.nonzero(comp)
    cy, cx = yy.mean(), xx.mean()
    ry, rx = np.nonzero(ring)
    sec = ((np.arctan2(ry - cy, rx - cx) + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    ring_lab = w[ring]
    ok = total = 0
    for j in range(sectors):
        sel = sec == j
        if sel.sum() < 2:
            continue
        total += 1
        ok += lesion_contrast(core, np.median(ring_lab[sel], axis=0)) >= 0.5 * level
    return total == 0 or ok >= 0.75 * total
