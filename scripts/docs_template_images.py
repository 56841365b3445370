"""Renders the labelled template for docs/: body front/back/sides and both ears.

    .venv/bin/python scripts/docs_template_images.py
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bodymap.anatomy.template import load_template
from bodymap.scan import Scan
from bodymap.taxonomy import EAR_COLOURS, EAR_REGIONS, SITES
from renderers import Camera, RaycastRenderer, render_views

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def legend(names, colours, width=260, row=18) -> np.ndarray:
    img = Image.new("RGB", (width, row * len(names) + 8), "white")
    d = ImageDraw.Draw(img)
    for i, (n, c) in enumerate(zip(names, colours)):
        d.rectangle([6, 4 + i * row, 20, 4 + i * row + 12], fill=tuple(c))
        d.text((28, 4 + i * row), n, fill="black")
    return np.asarray(img)


def pad_to(img: np.ndarray, h: int) -> np.ndarray:
    out = np.full((h, img.shape[1], 3), 255, np.uint8)
    out[:img.shape[0]] = img
    return out


def main() -> None:
    t = load_template()
    colours = np.array([s.colour for s in SITES], np.uint8)
    scan = Scan(t.vertices, t.faces, vertex_colors=colours[t.site])
    body = render_views(scan, (0, 180, 90), 360, 720)
    used = sorted(set(t.site.tolist()))
    leg = legend([SITES[i].name for i in used], [SITES[i].colour for i in used])
    H = max(body.shape[0], leg.shape[0])
    Image.fromarray(np.concatenate([pad_to(body, H), pad_to(leg, H)], 1)).save(DOCS / "template_regions.png")

    ecol = np.array(EAR_COLOURS, np.uint8)
    col = colours[t.site].copy()
    on_ear = t.ear > 0
    col[on_ear] = ecol[t.ear[on_ear]]
    r = RaycastRenderer(Scan(t.vertices, t.faces, vertex_colors=col))
    tiles = []
    for sgn in (1, -1):
        idx = np.flatnonzero(on_ear & (np.sign(t.vertices[:, 0]) == sgn))
        c = t.vertices[idx].mean(0)
        eye = c + np.array([sgn * 160.0, 0, 0])
        tiles.append(r.render(Camera.look_at(eye, c, fov_deg=26, width=420, height=420)).rgb)
    leg = legend(EAR_REGIONS, EAR_COLOURS)
    H = max(420, leg.shape[0])
    Image.fromarray(np.concatenate([pad_to(x, H) for x in tiles] + [pad_to(leg, H)], 1)).save(DOCS / "template_ears.png")


if __name__ == "__main__":
    main()
