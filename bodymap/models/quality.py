"""Is a photograph good enough to diagnose? Blur, exposure and size, with advice to retake.

Measurements (all on the photo as given, reduced to at most 512 px on its long side so the
figures do not depend on the camera's resolution):

- sharpness: variance of the Laplacian of the grey image (8-bit units^2). Four sharp ISIC lesion
  photos (384 px) measure 7.4-55; the same photos blurred by a Gaussian of 2 px measure 2.1-2.4;
  quantisation noise alone gives about 1.3. Below ``SHARPNESS_MIN`` = 4: blurred.
- brightness: mean luminance 0-255; below 45 too dark, above 215 overexposed.
- clipped_high / clipped_low: share of pixels with all channels >= 250 (burnt out to white) /
  all channels <= 5 (black). Over 15% burnt out: overexposed. One saturated channel is not
  burnt out: fair, pink skin under a dermoscope's light saturates red alone (counting any
  channel called 15 of 150 ISIC 2017 images overexposed; white alone, 3, the palest). Over 50%
  black: too dark (a dermoscope's black corners take about 20%).
- size: (height, width) pixels; under ``MIN_SIDE`` = 128 px on the short side (the diagnosis
  network's input side): too small. HAM10000's 200 x 150 dermoscopy images, on which the shipped
  diagnosis figures are measured, pass (with 200 px every one of them was told to retake).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

SHARPNESS_MIN = 4.0
BRIGHTNESS_MIN, BRIGHTNESS_MAX = 45.0, 215.0
CLIPPED_HIGH_MAX, CLIPPED_LOW_MAX = 0.15, 0.5
MIN_SIDE = 128  # the diagnosis network's input side (bodymap.models.diagnosis: 128 px)
WORK_SIDE = 512


@dataclasses.dataclass
class PhotoQuality:
    """Outcome of ``check_photo``. ok: no problem found; problems: advice, one line each
    ("blurred: retake in focus"); the measurements as described in the module docstring."""

    ok: bool
    problems: list[str]
    sharpness: float
    brightness: float
    clipped_high: float
    clipped_low: float
    size: tuple[int, int]
    path: str | None = None

    @property
    def clipped_fraction(self) -> float:
        """Share of pixels burnt out or black."""
        return self.clipped_high + self.clipped_low

    def to_dict(self) -> dict:
        """JSON-ready record."""
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        d["clipped_fraction"] = round(self.clipped_fraction, 4)
        return d

    def message(self) -> str:
        """One line for the user: 'ok' or the problems joined."""
        where = f"{self.path}: " if self.path else ""
        return where + ("photo quality ok" if self.ok else "; ".join(self.problems))


# Smaller than this a side, a photograph cannot show a lesion (a 1x1 image is not a photo).
MIN_PHOTO_SIDE = 16


def load_photo(path) -> np.ndarray:
    """Read a photograph as (H, W, 3) uint8 RGB (EXIF orientation applied). Raises ValueError
    naming the file when it is missing, empty or not an image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a photo")
    from bodymap.io.common import image_to_rgb8  # 16-bit and float images scaled, not clipped to white

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            a = image_to_rgb8(im)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: refused: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    if min(a.shape[:2]) < MIN_PHOTO_SIDE:
        raise ValueError(f"{path}: the photo is {a.shape[1]}x{a.shape[0]} pixels, too small to show a lesion "
                         f"(at least {MIN_PHOTO_SIDE} pixels a side)")
    return a


def check_photo(image: np.ndarray, path=None) -> PhotoQuality:
    """Check a photograph for blur, exposure and size. image: (H, W, 3) uint8 RGB (grey (H, W)
    and RGBA accepted); path: only used in messages. Returns PhotoQuality; raises ValueError
    (naming path) for an array that is not an image."""
    from PIL import Image
    from scipy import ndimage

    where = f"{path}: " if path else ""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.size == 0:
        raise ValueError(f"{where}not an image: expected (H, W, 3) pixels, got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    a = a[..., :3]
    h, w = a.shape[:2]
    im = Image.fromarray(a)
    if max(h, w) > WORK_SIDE:
        s = WORK_SIDE / max(h, w)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    small = np.asarray(im)
    grey = np.asarray(im.convert("L"), np.float32)
    sharp = float(ndimage.laplace(grey).var()) if min(grey.shape) >= 3 else 0.0
    bright = float(grey.mean())
    high = float((small.min(2) >= 250).mean())  # white, not one saturated channel (module docstring)
    low = float((small.max(2) <= 5).mean())
    problems = []
    if min(h, w) < MIN_SIDE:
        problems.append(f"too small ({w}x{h} px): retake closer or at a higher resolution "
                        f"(at least {MIN_SIDE} px on the short side)")
    if float(grey.std()) < 2.0:
        problems.append("blank: the photo shows no detail; retake it")
    elif sharp < SHARPNESS_MIN:
        problems.append(f"blurred (sharpness {sharp:.1f} < {SHARPNESS_MIN}): retake in focus, holding the camera still")
    if bright < BRIGHTNESS_MIN or low > CLIPPED_LOW_MAX:
        problems.append(f"too dark (brightness {bright:.0f}/255, {100 * low:.0f}% black): retake with more light")
    elif bright > BRIGHTNESS_MAX or high > CLIPPED_HIGH_MAX:
        problems.append(f"overexposed (brightness {bright:.0f}/255, {100 * high:.0f}% burnt out): "
                        "retake with less light or no flash glare")
    return PhotoQuality(ok=not problems, problems=problems, sharpness=round(sharp, 2), brightness=round(bright, 1),
                        clipped_high=round(high, 4), clipped_low=round(low, 4), size=(int(h), int(w)),
                        path=None if path is None else str(path))
