"""The comparison body map: both visits from the front and the back, every lesion circled and
numbered by its status (matched, grown, uncertain, new, missing: colours and labels from
bodymap.records.STYLES, as in the GUI), so a clinician sees at a glance what changed and where.
Matched lesions carry the visit-1 number on both visits; new lesions are numbered N<visit-2 id>."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bodymap.atomic import atomic_write
from bodymap.records import STYLES, counts, markers
from bodymap.scan import Scan


def font(size: int = 12):
    """A font with the status markers' glyphs ('↑'): DejaVu Sans (matplotlib ships it), else PIL's default."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _marks(tracking) -> tuple[dict, dict]:
    """{visit-1 id: (label, rgb)}, {visit-2 id: (label, rgb)} (bodymap.records.markers)."""
    c1, l1, c2, l2 = markers(tracking)
    return {i: (l1[i], c1[i]) for i in c1}, {i: (l2[i], c2[i]) for i in c2}


def visible_lesions(lesions, cam, depth: np.ndarray):
    """The lesions seen in one rendered view: yields (lesion, x, y, radius) in pixels for each
    lesion of the LesionSet inside the image and not hidden (its depth within 15 mm of the depth
    buffer (h, w) mm); radius covers the lesion's diameter (at least 4 px)."""
    if not len(lesions):
        return
    height, width = depth.shape
    pts = lesions.points
    z = (pts @ cam.R.T + cam.t)[:, 2]
    uv = cam.project(pts)
    px_per_mm = cam.K[0, 0] / np.maximum(z, 1.0)
    for l, (x, y), zz, s in zip(lesions.lesions, uv, z, px_per_mm):
        xi, yi = int(x), int(y)
        if not (0 <= xi < width and 0 <= yi < height):
            continue
        if not np.isfinite(depth[yi, xi]) or abs(depth[yi, xi] - zz) > 15.0:
            continue  # on the other side of the body, or hidden
        yield l, float(x), float(y), max(4.0, 0.5 * l.diameter_mm * s + 2)


def _panel(scan: Scan, lesions, marks: dict, azimuth: float, width: int, height: int,
           frame: np.ndarray | None = None) -> Image.Image:
    """One rendered view with the visible lesions circled and numbered; marks {lesion id:
    (label, rgb)} (lesions not in it are left out); frame (3, 3): the upright body's axes in
    the scan's coordinates (bodymap.anatomy.labels.view_frame; None: the scan's own)."""
    from renderers import RaycastRenderer
    from renderers.camera import framed_body_view

    cam = framed_body_view(scan.vertices, azimuth, 5.0, width, height, frame)
    r = RaycastRenderer(scan).render(cam)
    img = Image.fromarray(r.rgb)
    d = ImageDraw.Draw(img)
    f = font(11)
    for l, x, y, rad in visible_lesions(lesions, cam, r.depth):
        if l.id not in marks:
            continue
        label, col = marks[l.id]
        d.ellipse([x - rad, y - rad, x + rad, y + rad], outline=col, width=2)
        d.text((x + rad + 1, y - rad - 2), label, fill=col, font=f)
    return img


def change_map(scan1: Scan, lesions1, scan2: Scan, lesions2, tracking, width: int = 360, height: int = 720,
               titles: tuple[str, str] = ("visit 1", "visit 2"), frames: tuple = (None, None)) -> Image.Image:
    """The comparison page: visit 1 front and back, visit 2 front and back, legend and counts.
    lesions1/2: LesionSets; tracking: bodymap.track.Tracking of visit 2 against visit 1;
    frames: each scan's upright axes (3, 3) or None (_panel)."""
    m1, m2 = _marks(tracking)
    panels = [(_panel(scan1, lesions1, m1, a, width, height, frames[0]), f"{titles[0]} {side}")
              for a, side in ((0.0, "front"), (180.0, "back"))]
    panels += [(_panel(scan2, lesions2, m2, a, width, height, frames[1]), f"{titles[1]} {side}")
               for a, side in ((0.0, "front"), (180.0, "back"))]
    top, bottom = 22, 46
    page = Image.new("RGB", (width * 4, height + top + bottom), "white")
    d = ImageDraw.Draw(page)
    for k, (img, title) in enumerate(panels):
        page.paste(img, (k * width, top))
        d.text((k * width + 8, 5), title, fill="black")
    n = counts(tracking)
    x, f = 8, font(11)
    for status, style in STYLES.items():
        d.ellipse([x, height + top + 14, x + 12, height + top + 26], outline=style.rgb, width=2)
        text = f"{status.value} ({n[status]})"
        d.text((x + 18, height + top + 13), text, fill="black", font=f)
        x += 30 + int(d.textlength(text, font=f))
    return page


def write_change_map(scan1: Scan, lesions1, scan2: Scan, lesions2, tracking, path: str | Path,
                     frames: tuple = (None, None)) -> Path:
    """Write change_map(...) as a PNG; returns the path."""
    path = Path(path)
    page = change_map(scan1, lesions1, scan2, lesions2, tracking, frames=frames)
    with atomic_write(path) as tmp:
        page.save(tmp)
    return path
