"""A lesion the clinician adds by a click, segmented and measured like a detected one.

    lesion = measure_at(scan, face, bary)   # Lesion, or None when nothing stands out there

The texture around the clicked point (a window of WINDOW_MM on the skin) goes through the
classical detector (bodymap.detect.classical.ContrastDetector, the one `bodymap analyze` runs),
and the blob under the click (its mask holds the clicked texel, or its centre lies within its
radius of it) is measured by bodymap.lesions.LesionMeasurer: outline, diameter, area, colour,
every measure of bodymap.measures. When the detector finds no blob there (a faint lesion), the
texture around the click is segmented directly in a box of the size the clinician gave, and
kept when it stands out from the skin (contrast >= MIN_CONTRAST_DE) and holds the click; else
None, and bodymap.session.manual_lesion records the clinician's diameter.

Only the faces within 0.75 x WINDOW_MM (30 mm) of the click are rasterised (a local atlas, not
the whole texture), so a click costs 0.6-0.9 s on the loaded 2-core development machine. A
lesion cut by a UV seam is measured on the side of the click.
"""
from __future__ import annotations

import numpy as np

# Side of the texture window searched around the click, mm on the skin (lesions up to ~20 mm).
WINDOW_MM = 40.0
# The faintest lesion kept by the direct segmentation (CIE76 Delta E between lesion and skin).
MIN_CONTRAST_DE = 4.0


def _local_image(scan, point: np.ndarray, radius_mm: float):
    """A TextureImage of scan whose atlas holds only the faces within radius_mm of point."""
    from bodymap.lesions import TextureImage
    from bodymap.project import rasterize_uv

    centres = scan.vertices[scan.faces].mean(1)
    sub = np.nonzero(np.linalg.norm(centres - point, axis=1) <= radius_mm)[0]
    atlas = rasterize_uv(scan.uv[sub], scan.texture.shape[:2])
    atlas.face = sub[atlas.face].astype(atlas.face.dtype)
    return TextureImage(scan, atlas)


def measure_at(scan, face: int, bary, diameter_mm: float = 3.0, detector=None):
    """The lesion at surface point (face, bary (3,)) of a textured scan (mm), segmented and
    measured like a detected one (see the module's docstring); diameter_mm: the clinician's
    size, the box of the direct segmentation when the detector finds nothing. Returns a Lesion
    (id 1, source 'manual', confidence 1) or None when nothing stands out there."""
    from bodymap.detect import Boxes, get_detector
    from bodymap.lesions import LesionMeasurer
    from bodymap.scan import uv_to_pixel

    if scan.texture is None or scan.uv is None:
        return None
    bary = np.clip(np.asarray(bary, np.float64), 0, None)
    bary = bary / max(bary.sum(), 1e-12)
    point = scan.points_from_barycentric(np.array([face]), bary[None])[0]
    img = _local_image(scan, point, 0.75 * WINDOW_MM)
    x, y = uv_to_pixel(scan.uv_from_barycentric(np.array([face]), bary[None]), scan.texture.shape)[0]
    H, W = scan.texture.shape[:2]
    texel = float(scan.texel_density[face])
    texel = texel if np.isfinite(texel) and texel > 0 else 0.5
    half = int(np.ceil(0.5 * WINDOW_MM / texel))
    X0, Y0 = max(0, int(round(x)) - half), max(0, int(round(y)) - half)
    X1, Y1 = min(W, int(round(x)) + half + 1), min(H, int(round(y)) + half + 1)
    det = detector or get_detector("classical")
    boxes = det.detect(scan.texture[Y0:Y1, X0:X1], img.inside[Y0:Y1, X0:X1]).shifted(X0, Y0)
    pick = _box_under(boxes, x, y)
    meas = LesionMeasurer(scan)
    if pick is not None:
        one = Boxes(boxes.xyxy[pick:pick + 1], np.ones(1, np.float32),
                    [boxes.masks[pick]] if boxes.masks is not None else None)
        found = meas.measure(img, one, getattr(det, "name", "classical"), source="manual")
        if found:
            return _finish(found[0])
    # nothing the detector calls a lesion: segment the clinician's box directly
    r = max(1.5, 0.5 * diameter_mm / texel)
    found = meas.measure(img, Boxes(np.array([[x - r, y - r, x + r, y + r]], np.float32), np.ones(1, np.float32)),
                         "clinician", source="manual")
    if found:
        l = found[0]
        near = np.linalg.norm(np.subtract(l.point_mm, point)) <= max(0.5 * l.diameter_mm, 2 * texel)
        stands_out = float(np.linalg.norm(np.subtract(l.colour_lab, l.skin_lab))) >= MIN_CONTRAST_DE
        if near and stands_out and l.diameter_mm <= 4 * max(diameter_mm, 3.0):
            return _finish(l)
    return None


def _box_under(boxes, x: float, y: float) -> int | None:
    """Index of the box whose mask holds texel (x, y) (column, row), else of the box whose
    centre is nearest within its own radius (+1 texel); None when there is none."""
    if not len(boxes):
        return None
    xi, yi = int(round(x)), int(round(y))
    if boxes.masks is not None:
        for k, (b, m) in enumerate(zip(boxes.xyxy, boxes.masks)):
            bx, by = int(round(b[0])), int(round(b[1]))
            if 0 <= yi - by < m.shape[0] and 0 <= xi - bx < m.shape[1] and m[yi - by, xi - bx]:
                return k
    c = np.c_[(boxes.xyxy[:, 0] + boxes.xyxy[:, 2]) / 2, (boxes.xyxy[:, 1] + boxes.xyxy[:, 3]) / 2]
    d = np.hypot(c[:, 0] - x, c[:, 1] - y)
    r = 0.5 * np.maximum(boxes.xyxy[:, 2] - boxes.xyxy[:, 0], boxes.xyxy[:, 3] - boxes.xyxy[:, 1]) + 1.0
    k = int(np.argmin(d - r))
    return k if d[k] <= r[k] else None


def _finish(l):
    """A measured lesion marked as the clinician's."""
    l.id, l.confidence, l.source = 1, 1.0, "manual"
    l.detector = f"clinician ({l.detector})" if l.detector and l.detector != "clinician" else "clinician"
    return l
