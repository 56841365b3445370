"""Colour: sRGB <-> CIELAB (D65) and colour differences, for lesion colour and contrast."""
from __future__ import annotations

import numpy as np

_M = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]], np.float32)  # linear sRGB -> XYZ (D65)
_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear RGB, same shape, float32."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100, a*, b*) of sRGB colours. rgb (..., 3) uint8 or float in [0, 1];
    returns (..., 3) float32."""
    c = np.asarray(rgb)
    lin = srgb_to_linear(c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c)
    xyz = (lin @ _M.T) / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], -1).astype(np.float32)


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIE76 colour difference of (..., 3) Lab arrays (broadcasting); returns (...,) float."""
    return np.linalg.norm(np.asarray(lab1, np.float64) - np.asarray(lab2, np.float64), axis=-1)


def lesion_contrast(lab: np.ndarray, skin_lab: np.ndarray) -> np.ndarray:
    """How much each pixel stands out from the skin around it as a lesion would: darker, redder
    or browner. lab (..., 3) and skin_lab (..., 3) or (3,); returns (...,) float32 (Delta E units).

    Only darkening counts for L* (a pale patch or a highlight is not a lesion), relative to the
    skin's own lightness (scaled to L* = 50): the same pigment darkens dark skin by fewer L*
    units. a* and b* count both ways, b* halved (shading and yellowish scale shift b* without
    pigment).
    """
    lab = np.asarray(lab, np.float32)
    skin = np.asarray(skin_lab, np.float32)
    d = lab - skin
    dark = np.maximum(-d[..., 0], 0.0) * (50.0 / np.maximum(skin[..., 0], 20.0))
    return np.sqrt(dark ** 2 + d[..., 1] ** 2 + (0.5 * d[..., 2]) ** 2)
