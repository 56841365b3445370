"""Region maps of a labelled scan: coloured mesh (PLY, GLB), 2D body map (front and back PNG with
a legend) and a UV-space region atlas (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bodymap import taxonomy as tx
from bodymap.anatomy.labels import RegionLabels
from bodymap.atomic import atomic_write
from bodymap.scan import Scan

SITE_COLOURS = np.array([s.colour for s in tx.SITES], np.uint8)
EAR_COLOURS = np.array(tx.EAR_COLOURS, np.uint8)
UNRELIABLE = np.array([60, 60, 60], np.uint8)


def vertex_colours(labels: RegionLabels, ears: bool = True) -> np.ndarray:
    """(n, 3) uint8 colour of each vertex: its site, its ear sub-region on the ear, dark grey
    where the label is unreliable."""
    c = SITE_COLOURS[labels.site].copy()
    if ears:
        on = labels.ear > 0
        c[on] = EAR_COLOURS[labels.ear[on]]
    c[~labels.reliable] = UNRELIABLE
    return c


def legend(labels: RegionLabels, width: int = 240, row: int = 18) -> Image.Image:
    """A legend image listing the sites (and ear regions) present."""
    items = [(tx.SITES[i].name, tx.SITES[i].colour) for i in np.unique(labels.site)]
    items += [(f"ear: {tx.EAR_REGIONS[i]}", tx.EAR_COLOURS[i]) for i in np.unique(labels.ear) if i]
    if (~labels.reliable).any():
        items.append(("unreliable (far from the fitted body)", tuple(UNRELIABLE)))
    img = Image.new("RGB", (width, row * len(items) + 8), "white")
    d = ImageDraw.Draw(img)
    for k, (name, col) in enumerate(items):
        d.rectangle([6, 4 + k * row, 20, 4 + k * row + 12], fill=tuple(int(x) for x in col))
        d.text((28, 4 + k * row), name, fill="black")
    return img


def write_region_maps(scan: Scan, labels: RegionLabels, out_dir: str | Path, stem: str = "regions") -> list[Path]:
    """Write <stem>.ply and <stem>.glb (vertex-coloured mesh), <stem>_bodymap.png (front and
    back views with legend) and, for textured scans, <stem>_atlas.png (UV-space map).
    Returns the paths written."""
    from bodymap.io import save_scan
    from renderers import render_views

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    col = vertex_colours(labels)
    coloured = Scan(scan.vertices, scan.faces, vertex_colors=col, meta=scan.meta)
    paths = [out / f"{stem}.ply", out / f"{stem}.glb"]
    for p in paths:
        save_scan(coloured, p)
    from bodymap.anatomy.labels import view_frame

    # front and back as the body stands, whichever axis the scanner called up
    views = Image.fromarray(render_views(coloured, (0, 180), 420, 840, frame=view_frame(scan.vertices, labels)))
    leg = legend(labels)
    page = Image.new("RGB", (views.width + leg.width, max(views.height, leg.height)), "white")
    page.paste(views, (0, 0))
    page.paste(leg, (views.width, 0))
    paths.append(out / f"{stem}_bodymap.png")
    with atomic_write(paths[-1]) as tmp:
        page.save(tmp)
    if scan.uv is not None:
        from bodymap.project import rasterize_uv

        H, W = scan.texture.shape[:2] if scan.texture is not None else (2048, 2048)
        k = min(1.0, 2048 / max(H, W))  # the texture's proportions, at most 2048 a side
        h, w = max(1, round(H * k)), max(1, round(W * k))
        atlas = rasterize_uv(scan.uv, (h, w))
        f = scan.faces[atlas.face]
        corner = f[np.arange(len(f)), np.argmax(atlas.bary, axis=1)]
        img = np.full((h * w, 3), 255, np.uint8)
        img[atlas.flat] = col[corner]
        paths.append(out / f"{stem}_atlas.png")
        with atomic_write(paths[-1]) as tmp:
            Image.fromarray(img.reshape(h, w, 3)).save(tmp)
    return paths
