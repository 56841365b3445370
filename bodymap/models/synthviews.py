"""Photograph-like renders of synthetic bodies for training the ear and macro-anatomy models.

A body of the anny family (random phenotype, hence random ear shape) gets a per-vertex skin
colour (Fitzpatrick I-VI, mottling, redder ears, optional scalp hair), is ray cast with the
project's RaycastRenderer (which also gives the face-id and barycentric buffers the exact label
masks come from), shaded with a random light, composited over a random non-skin background,
and finished with camera-like noise, blur and colour casts.

Everything is a function of a numpy Generator, so a seed gives the same images anywhere.
"""
from __future__ import annotations

import functools

import numpy as np

FITZPATRICK_SRGB = {1: (247, 219, 203), 2: (236, 196, 168), 3: (216, 168, 132),
                    4: (182, 130, 94), 5: (130, 88, 61), 6: (82, 56, 42)}
_HAIR_SRGB = ((30, 22, 18), (70, 45, 28), (120, 80, 45), (190, 160, 110), (150, 150, 150), (110, 40, 20))


@functools.lru_cache(maxsize=1)
def _template():
    from bodymap.anatomy.template import load_template

    return load_template()


def random_body(rng: np.random.Generator) -> np.ndarray:
    """Vertices (13718, 3) mm of a random phenotype (ages 4-85, either sex) in a random pose."""
    from bodymap.anatomy.body import BodySpec, body_model, pose_rotations

    spec = BodySpec.random(rng, adult=bool(rng.random() < 0.85))
    rot = pose_rotations("random", rng) if rng.random() < 0.7 else None
    return body_model().vertices(spec, rot)


def _fourier_field(points: np.ndarray, rng: np.random.Generator, scale_mm: float, k: int = 12) -> np.ndarray:
    """A smooth random field in about [-1, 1] at points (n, 3) mm with feature size scale_mm."""
    w = rng.normal(0, 1.0 / scale_mm, (k, 3))
    ph = rng.uniform(0, 2 * np.pi, k)
    return np.sin(points @ w.T + ph).sum(1) / np.sqrt(k / 2)


def skin_colours(rng: np.random.Generator, hair: bool | None = None) -> np.ndarray:
    """Per-vertex albedo (13718, 3) uint8 sRGB for the anny topology: a random Fitzpatrick
    tone with mottling, redder ears and face, and (when ``hair``, default random) scalp hair."""
    from bodymap.taxonomy import SITE_INDEX

    t = _template()
    P = t.vertices
    fz = int(rng.integers(1, 7))
    base = np.array(FITZPATRICK_SRGB[fz], np.float64) * rng.uniform(0.9, 1.08, 3)
    col = np.tile(base, (len(P), 1))
    col *= (1 + 0.06 * _fourier_field(P, rng, 60.0) + 0.03 * _fourier_field(P, rng, 15.0))[:, None]
    red = np.clip(0.05 * _fourier_field(P, rng, 30.0) + 0.03, 0, None)
    head = np.isin(t.site, [SITE_INDEX["head_neck/head/face"], SITE_INDEX["head_neck/head/ear"]])
    red = red + head * rng.uniform(0.0, 0.08)
    col *= np.stack([1 + red, 1 - 0.5 * red, 1 - 0.6 * red], 1)
    col *= (1 + rng.normal(0, 0.03, len(P)))[:, None]
    if hair is None:
        hair = bool(rng.random() < 0.6)
    if hair:
        scalp = t.site == SITE_INDEX["head_neck/head/scalp"]
        # the hairline varies: a random smooth field decides how far the hair reaches
        reach = _fourier_field(P, rng, 40.0) > rng.uniform(-1.5, 0.3)
        hc = np.array(_HAIR_SRGB[int(rng.integers(len(_HAIR_SRGB)))], np.float64)
        hv = scalp & reach
        col[hv] = hc * (1 + 0.25 * rng.normal(0, 1, (hv.sum(), 1)))
    return np.clip(col, 0, 255).astype(np.uint8)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random non-skin image (h, w, 3) uint8: solid colour, gradient, smooth noise, stripes or
    checks (cloth), or a mixture; used behind bodies and as the macro model's "other" class."""
    from scipy import ndimage

    kind = int(rng.integers(6))
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 0:
        img = np.broadcast_to(c1, (h, w, 3)).copy()
    elif kind == 1:
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 2:
        s = rng.uniform(2, 20)
        n = ndimage.gaussian_filter(rng.normal(0, 1, (h, w, 3)), (s, s, 0))
        n = (n - n.mean()) / max(n.std(), 1e-9)
        img = 128 + n * rng.uniform(20, 70) + (c1 - 128) * 0.6
    elif kind == 3:
        a = rng.uniform(0, np.pi)
        period = rng.uniform(3, 30)
        t = np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period) > rng.uniform(-0.5, 0.5)
        img = np.where(t[..., None], c1, c2)
    elif kind == 4:
        p = rng.uniform(4, 30)
        t = ((xx // p + yy // p) % 2).astype(bool)
        img = np.where(t[..., None], c1, c2)
    else:  # blurred random shapes (a room, furniture, clothing folds)
        img = np.broadcast_to(c1, (h, w, 3)).copy()
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.uniform(-0.3, 1.0, 2) * (w, h)
            x1, y1 = x0 + rng.uniform(0.1, 0.8) * w, y0 + rng.uniform(0.1, 0.8) * h
            m = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
            img[m] = rng.uniform(0, 255, 3)
        img = ndimage.gaussian_filter(img, (rng.uniform(0, 3), rng.uniform(0, 3), 0))
    img = img + rng.normal(0, rng.uniform(0, 12), (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shade(albedo: np.ndarray, normal: np.ndarray, view_dir: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lit colour (h, w, 3) float in [0, 255]: albedo (h, w, 3) uint8, normal (h, w, 3) unit
    world normals, view_dir (3,) camera forward. A random key light within 70 degrees of the
    camera, ambient light and a weak specular highlight."""
    v = -np.asarray(view_dir, np.float64)
    # light direction: the view direction tilted by a random angle
    axis = np.cross(v, rng.normal(0, 1, 3))
    axis /= max(np.linalg.norm(axis), 1e-9)
    ang = np.deg2rad(rng.uniform(0, 70))
    light = v * np.cos(ang) + np.cross(axis, v) * np.sin(ang)
    amb = rng.uniform(0.25, 0.6)
    ndl = np.clip(normal @ light, 0, None)
    hvec = light + v
    hvec /= np.linalg.norm(hvec)
    spec = rng.uniform(0, 0.25) * np.clip(normal @ hvec, 0, None) ** rng.uniform(8, 40)
    gain = rng.uniform(0.85, 1.25)
    lit = albedo.astype(np.float64) * (amb + (1 - amb) * ndl)[..., None] * gain + 255 * spec[..., None]
    return lit * rng.uniform(0.92, 1.08, 3)  # light colour


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects on (h, w, 3) float/uint8: blur, gamma, contrast, sensor noise. -> uint8."""
    from scipy import ndimage

    x = img.astype(np.float64)
    if rng.random() < 0.4:
        x = ndimage.gaussian_filter(x, (rng.uniform(0.3, 1.2),) * 2 + (0,))
    x = 255 * (np.clip(x, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    m = x.mean()
    x = (x - m) * rng.uniform(0.8, 1.2) + m
    x = x + rng.normal(0, rng.uniform(0.5, 6), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


class BodyRenderer:
    """One coloured body ready to render from many cameras (the ray-casting structure is built
    once). vertices (13718, 3) mm; colours (13718, 3) uint8."""

    def __init__(self, vertices: np.ndarray, colours: np.ndarray):
        from bodymap.scan import Scan
        from renderers.raycast import RaycastRenderer

        t = _template()
        self.vertices = vertices
        self.faces = t.faces
        self.renderer = RaycastRenderer(Scan(vertices, t.faces, vertex_colors=colours))

    def render(self, camera, rng: np.random.Generator, bg: np.ndarray | None = None):
        """Photograph-like image (h, w, 3) uint8 and the raw RenderResult (face_id, bary...)."""
        r = self.renderer.render(camera, ambient=1.0, background=(0, 0, 0))
        if bg is None:
            bg = background(camera.height, camera.width, rng)
        lit = shade(r.rgb, r.normal, camera.forward, rng)
        img = np.where(r.mask[..., None], lit, bg.astype(np.float64))
        return finish(img, rng), r

    def vertex_label_image(self, r, vertex_labels: np.ndarray, fill: int = 0) -> np.ndarray:
        """(h, w) labels: the label of the hit face's nearest corner (largest barycentric),
        ``fill`` where no surface is seen. vertex_labels (13718,) int."""
        out = np.full(r.face_id.shape, fill, np.int64)
        m = r.face_id >= 0
        corner = r.bary[m].argmax(1)
        out[m] = vertex_labels[self.faces[r.face_id[m], corner]]
        return out
