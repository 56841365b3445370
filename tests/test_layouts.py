"""Real scan layouts are read and analysed like the samples: a 2:1 texture (2048 x 1024 style),
two textures (the 3DBodyTex / Skin3D layout), UDIM tiles (one image per tile) and a tiled layout
with UVs outside [0, 1]: the same lesions are found and measured on each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bodymap.io import load_scan
from bodymap.pipeline import detect_lesions

H_MM, W_TEX, H_TEX = 1700.0, 1024, 512  # the body's height; the texture is twice as wide as tall


def _body(around: int = 96, along: int = 64):
    """The side wall of an upright elliptic cylinder (mm, 12k well-shaped faces) unwrapped with u
    along the height and v around it, so a 1024 x 512 texture has about square texels
    (1.7 x 1.8 mm). Returns vertices (n, 3), faces (m, 3), per-corner UVs (m, 3, 2)."""
    t = np.linspace(0, 1, around + 1)  # the seam column is repeated: its own UVs
    z = np.linspace(0, 1, along + 1)
    tt, zz = np.meshgrid(t, z)
    v = np.stack([0.1 * H_MM * np.cos(2 * np.pi * tt), 0.07 * H_MM * np.sin(2 * np.pi * tt), H_MM * zz], -1).reshape(-1, 3)
    uvv = np.stack([zz, 0.02 + 0.96 * tt], -1).reshape(-1, 2)
    i = np.arange(len(v)).reshape(along + 1, around + 1)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return v, f, uvv[f]


def _texture(rng) -> tuple[np.ndarray, np.ndarray]:
    """Skin with 14 dark round spots of radius 3-5 texels away from the seams. Returns
    (texture (H_TEX, W_TEX, 3) uint8, spot centres (14, 2) as (col, row))."""
    tex = np.clip(rng.normal((205, 160, 130), 2.0, (H_TEX, W_TEX, 3)), 0, 255)
    yy, xx = np.mgrid[:H_TEX, :W_TEX]
    spots = []
    while len(spots) < 14:
        c = rng.uniform([60, 60], [W_TEX - 60, H_TEX - 60])
        if all(np.hypot(*(c - s)) > 60 for s in spots) and abs(c[0] - W_TEX / 2) > 20:
            spots.append(c)
    for (cx, cy), r in zip(spots, rng.uniform(3, 5, len(spots))):
        tex[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (95, 65, 50)
    return tex.astype(np.uint8), np.array(spots)


def _write_obj(path: Path, v, f, uv, groups: list[tuple[str, np.ndarray]], mtl: dict[str, str]) -> Path:
    """OBJ with per-corner UVs; groups: (material, face indices); mtl: material -> map_Kd."""
    lines = ["mtllib m.mtl\n", "".join("v %.4f %.4f %.4f\n" % tuple(p) for p in v)]
    lines.append("".join("vt %.7f %.7f\n" % tuple(t) for t in uv.reshape(-1, 2)))
    for name, sel in groups:
        lines.append(f"usemtl {name}\n")
        lines.append("".join("f %d/%d %d/%d %d/%d\n" % (f[k, 0] + 1, 3 * k + 1, f[k, 1] + 1, 3 * k + 2, f[k, 2] + 1,
                                                         3 * k + 3) for k in sel))
    path.write_text("".join(lines))
    (path.parent / "m.mtl").write_text("".join(f"newmtl {k}\nmap_Kd {t}\n" for k, t in mtl.items()))
    return path


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same body and lesions in four layouts: name -> OBJ path."""
    d = tmp_path_factory.mktemp("layouts")
    v, f, uv = _body()
    tex, _ = _texture(np.random.default_rng(3))
    out = {}
    # 1. one 1024 x 512 texture (non-square)
    (d / "wide").mkdir()
    Image.fromarray(tex).save(d / "wide" / "skin.png")
    out["non-square texture"] = _write_obj(d / "wide" / "scan.obj", v, f, uv, [("skin", np.arange(len(f)))],
                                           {"skin": "skin.png"})
    # faces by half of the texture (by their centre): the lower and upper body
    left = uv[:, :, 0].mean(1) < 0.5
    lo, hi = np.flatnonzero(left), np.flatnonzero(~left)
    halves = uv.copy()
    halves[lo, :, 0] *= 2
    halves[hi, :, 0] = 2 * halves[hi, :, 0] - 1  # each half's UVs span its own image
    # 2. two textures, one per half (3DBodyTex / Skin3D: several materials, several images)
    (d / "two").mkdir()
    Image.fromarray(tex[:, :W_TEX // 2]).save(d / "two" / "lower.png")
    Image.fromarray(tex[:, W_TEX // 2:]).save(d / "two" / "upper.png")
    out["two textures"] = _write_obj(d / "two" / "scan.obj", v, f, halves, [("lower", lo), ("upper", hi)],
                                     {"lower": "lower.png", "upper": "upper.png"})
    # 3. UDIM: the upper half in tile 1002 (u in [1, 2]), one image per tile
    (d / "udim").mkdir()
    Image.fromarray(tex[:, :W_TEX // 2]).save(d / "udim" / "skin.1001.png")
    Image.fromarray(tex[:, W_TEX // 2:]).save(d / "udim" / "skin.1002.png")
    udim = halves.copy()
    udim[hi, :, 0] += 1.0
    out["UDIM tiles"] = _write_obj(d / "udim" / "scan.obj", v, f, udim, [("skin", np.arange(len(f)))],
                                   {"skin": "skin.<UDIM>.png"})
    # 4. a tiled (repeating) layout: the one texture, UVs moved by whole units
    (d / "tiled").mkdir()
    Image.fromarray(tex).save(d / "tiled" / "skin.png")
    tiled = uv + np.where(left[:, None, None], [[[3.0, -2.0]]], [[[-1.0, 1.0]]])
    out["tiled UVs outside [0, 1]"] = _write_obj(d / "tiled" / "scan.obj", v, f, tiled,
                                                 [("skin", np.arange(len(f)))], {"skin": "skin.png"})
    return out


@pytest.fixture(scope="module")
def reference(layouts):
    s = load_scan(layouts["non-square texture"])
    return s, detect_lesions(s)


def test_a_non_square_texture_is_analysed(reference):
    scan, ls = reference
    assert scan.texture.shape == (H_TEX, W_TEX, 3)
    mm = float(np.nanmedian(scan.texel_density))
    assert 1.5 < mm < 2.0
    assert 12 <= len(ls) <= 16  # 14 spots
    assert all(2 * 2.5 * mm <= l.diameter_mm <= 2 * 6.5 * mm for l in ls.lesions)  # radius 3-5 texels (+ border)


@pytest.mark.parametrize("name", ["two textures", "UDIM tiles", "tiled UVs outside [0, 1]"])
def test_scanner_layouts_give_the_same_lesions(layouts, reference, name):
    scan0, ref = reference
    scan = load_scan(layouts[name])
    assert scan.n_faces == scan0.n_faces and scan.uv.min() >= 0 and scan.uv.max() <= 1
    ls = detect_lesions(scan)
    assert len(ls) == len(ref), (name, len(ls), len(ref))
    d = np.linalg.norm(ls.points[:, None] - ref.points[None], axis=2)
    near = d.argmin(1)
    assert d.min(1).max() < 2.0  # mm: the same places on the body
    np.testing.assert_allclose(ls.diameters, ref.diameters[near], rtol=0.15)
