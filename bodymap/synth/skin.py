"""Constitutive skin: tone by Fitzpatrick type, mottling, pores, veins, body hair, and the
non-skin tissue a dermatologist would not count as skin surface (lips, nipples, nails, eyes).

Works on the texels of a ``UVAtlas``: colours are (k, 3) float32 linear RGB, one row per
covered texel. Tissue labels (``TISSUE``) travel with the truth so detectors can be scored on
skin only.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from bodymap.anatomy.body import PARTS
from bodymap.project import UVAtlas
from bodymap.synth.texture import (FITZPATRICK_SRGB, NoiseField, smoothstep,
                                   srgb_to_linear)

# Tissue label per texel, stored in the truth's tissue map (uint8). 0 means "not on the mesh".
TISSUE = {"background": 0, "skin": 1, "lips": 2, "nipple": 3, "nail": 4, "eye": 5, "hair": 6}


@dataclasses.dataclass
class SkinSpec:
    """Appearance of a patient's skin."""

    fitzpatrick: int = 3  # 1..6
    freckles: bool = False
    hair_density: float = 0.3  # 0 (none) .. 1 (very hairy)
    veins: bool = True
    tone_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-patient shift, linear RGB

    @classmethod
    def random(cls, rng: np.random.Generator, sex: str = "female", fitzpatrick: int | None = None) -> "SkinSpec":
        """Random appearance; freckles are common in types I-II, body hair depends on sex."""
        fz = int(fitzpatrick) if fitzpatrick else int(rng.integers(1, 7))
        return cls(
            fitzpatrick=fz,
            freckles=bool(rng.random() < {1: 0.6, 2: 0.4, 3: 0.15}.get(fz, 0.03)),
            hair_density=float(np.clip(rng.normal(0.55 if sex == "male" else 0.12, 0.15), 0.0, 1.0)),
            veins=fz <= 4,
            tone_jitter=tuple(float(x) for x in rng.normal(0, 0.012, 3)),
        )


def _texel_parts(atlas: UVAtlas, faces: np.ndarray, vparts: np.ndarray) -> np.ndarray:
    """Coarse body part of each texel: the part of its face's nearest corner. Returns (k,) int8."""
    corner = atlas.bary.argmax(1)
    return vparts[faces[atlas.face, corner]]


def paint_skin(
    atlas: UVAtlas,
    template_vertices: np.ndarray,
    faces: np.ndarray,
    vparts: np.ndarray,
    landmarks: dict[str, np.ndarray],
    eye_texels: np.ndarray,
    spec: SkinSpec,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the constitutive skin of one patient.

    atlas : texels of the UV layout; template_vertices : (n, 3) mm template body (fields are
    evaluated there so both visits and both sides of a seam agree); vparts : (n,) part index
    per vertex; landmarks : per-vertex weights from ``body.landmark_weights``;
    eye_texels : (k,) bool, texels of the eyeballs.
    Returns colours (k, 3) float32 linear RGB and tissue labels (k,) uint8.
    """
    if spec.fitzpatrick not in FITZPATRICK_SRGB:
        raise ValueError(f"Fitzpatrick type must be 1..6, got {spec.fitzpatrick}")
    k = len(atlas.flat)
    P = atlas.positions(template_vertices, faces)  # (k, 3) mm on the template
    bounds = np.stack([template_vertices.min(0), template_vertices.max(0)])
    parts = _texel_parts(atlas, faces, vparts)

    def lw(name: str) -> np.ndarray:  # landmark weight interpolated to texels
        return np.einsum("kj,kj->k", atlas.bary, landmarks[name][faces[atlas.face]])

    base = srgb_to_linear(np.array(FITZPATRICK_SRGB[spec.fitzpatrick]) / 255.0) + np.array(spec.tone_jitter)
    col = np.tile(base.astype(np.float32), (k, 1))

    # low-frequency mottling (lightness and redness), medium blotches
    n_big = NoiseField(rng, bounds, 70.0)(P)
    n_mid = NoiseField(rng, bounds, 18.0)(P)
    n_red = NoiseField(rng, bounds, 35.0)(P)
    col *= (1.0 + 0.045 * n_big + 0.025 * n_mid)[:, None]
    redness = 0.03 * n_red + 0.02
    col *= np.stack([1 + redness, 1 - 0.5 * redness, 1 - 0.6 * redness], 1)

    # region tints: redder face and hands/feet, darker knees/elbows would need joints; keep simple
    face_part = parts == PARTS.index("head")
    col[face_part] *= np.array([1.04, 0.97, 0.96], np.float32)
    acral = np.isin(parts, [PARTS.index("hand"), PARTS.index("foot")])
    col[acral] *= np.array([1.03, 0.98, 0.97], np.float32)
    # palms and soles carry little melanin: much lighter on dark skin
    ps = smoothstep(0.2, 0.8, lw("palm_sole"))
    light = srgb_to_linear(np.array([0.93, 0.78, 0.70]))
    mix = ps * (0.15 + 0.12 * spec.fitzpatrick)
    col = col * (1 - mix[:, None]) + light * mix[:, None] * (0.85 + 0.15 * (base / base.max()))

    # veins: ridges of a 3D noise field, visible through thin fair skin
    if spec.veins:
        nv = NoiseField(rng, bounds, 28.0)(P)
        where = np.isin(parts, [PARTS.index(p) for p in ("arm", "hand", "trunk", "leg", "foot")])
        vein = np.exp(-(nv / 0.07) ** 2) * where * (0.10 if spec.fitzpatrick <= 2 else 0.06)
        col *= 1 - vein[:, None] * np.array([0.55, 0.35, -0.05], np.float32)

    # pores and fine texture: per-texel noise
    col *= (1.0 + rng.normal(0, 0.018, k).astype(np.float32))[:, None]

    tissue = np.full(k, TISSUE["skin"], np.uint8)
    # lips
    lips = smoothstep(0.25, 0.75, lw("lips"))
    lip_col = col * np.array([0.95, 0.62, 0.62], np.float32) * (0.95 if spec.fitzpatrick < 4 else 0.75)
    col = col * (1 - lips[:, None]) + lip_col * lips[:, None]
    tissue[lips > 0.5] = TISSUE["lips"]
    # nipples / areolae: darker, redder
    nip = smoothstep(0.15, 0.6, lw("nipple"))
    col = col * (1 - nip[:, None]) + col * np.array([0.62, 0.45, 0.42], np.float32) * nip[:, None]
    tissue[nip > 0.5] = TISSUE["nipple"]
    # nails: pinkish translucent white with a lighter free edge
    nail = smoothstep(0.3, 0.7, lw("nail"))
    nail_col = srgb_to_linear(np.array([0.93, 0.80, 0.78]))
    col = col * (1 - 0.75 * nail[:, None]) + nail_col * 0.75 * nail[:, None]
    tissue[nail > 0.5] = TISSUE["nail"]
    # eyes: sclera with an iris towards the front (-y) of each eyeball
    if eye_texels.any():
        e = np.flatnonzero(eye_texels)
        front = -(P[e, 1] - P[e, 1].min())  # 0 at the most anterior texel
        sclera = srgb_to_linear(np.array([0.92, 0.90, 0.86]))
        iris = srgb_to_linear(np.array(rng.choice([[0.35, 0.22, 0.12], [0.30, 0.42, 0.55], [0.40, 0.45, 0.30]])))
        col[e] = sclera
        col[e[front > -4.5]] = iris
        col[e[front > -1.6]] = srgb_to_linear(np.array([0.05, 0.05, 0.05]))
        tissue[e] = TISSUE["eye"]
    return np.clip(col, 0, 1).astype(np.float32), tissue


def draw_hair(
    image: np.ndarray,
    atlas: UVAtlas,
    template_vertices: np.ndarray,
    faces: np.ndarray,
    vparts: np.ndarray,
    tissue_img: np.ndarray,
    spec: SkinSpec,
    rng: np.random.Generator,
    texel_mm: np.ndarray,
) -> int:
    """Draw body-hair strands into ``image`` (H, W, 3) float32 linear RGB, in place.

    Strands follow the body's downward direction mapped into UV by each face's affine map,
    3-8 mm long, on arms, legs and (with high density) trunk. texel_mm : (m,) mm per texel per
    face. Returns the number of strands drawn.
    """
    if spec.hair_density <= 0.01:
        return 0
    size = atlas.size
    parts = _texel_parts(atlas, faces, vparts)
    allowed = {PARTS.index("arm"): 1.0, PARTS.index("leg"): 1.0, PARTS.index("hand"): 0.15,
               PARTS.index("trunk"): max(0.0, spec.hair_density - 0.4) * 1.5, PARTS.index("foot"): 0.1}
    w = np.zeros(len(parts))
    for p, a in allowed.items():
        w[parts == p] = a
    # per-texel density: about 1 strand per 25 mm^2 on a hairy forearm
    tex_area = texel_mm[atlas.face] ** 2
    expected = w * tex_area * spec.hair_density / 25.0
    total = int(rng.poisson(expected.sum()))
    if total == 0:
        return 0
    pick = rng.choice(len(parts), size=total, p=expected / expected.sum())
    f = atlas.face[pick]
    tri3 = template_vertices[faces[f]]
    from bodymap.scan import uv_to_pixel  # local: keep the module's imports light

    rows, cols = np.divmod(atlas.flat[pick], size)
    # affine map 3D -> pixel for each face from its UVs
    uvp = uv_to_pixel(atlas.uv[f], (size, size))
    e1, e2 = tri3[:, 1] - tri3[:, 0], tri3[:, 2] - tri3[:, 0]
    d1, d2 = uvp[:, 1] - uvp[:, 0], uvp[:, 2] - uvp[:, 0]
    g = np.array([0.0, 0.0, -1.0]) + rng.normal(0, 0.35, (total, 3))
    # least squares g = a e1 + b e2 (2x2 normal equations, vectorised over strands)
    G = np.stack([e1, e2], 2)  # (t, 3, 2)
    GtG = np.einsum("tki,tkj->tij", G, G)
    Gtg = np.einsum("tki,tk->ti", G, g)
    det = GtG[:, 0, 0] * GtG[:, 1, 1] - GtG[:, 0, 1] ** 2
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    a = (GtG[:, 1, 1] * Gtg[:, 0] - GtG[:, 0, 1] * Gtg[:, 1]) / det
    b = (GtG[:, 0, 0] * Gtg[:, 1] - GtG[:, 0, 1] * Gtg[:, 0]) / det
    dpx = a[:, None] * d1 + b[:, None] * d2  # pixel displacement per unit g (mm)
    length_mm = rng.uniform(3, 8, total)
    gl = np.linalg.norm(a[:, None] * e1 + b[:, None] * e2, axis=1)
    dpx *= (length_mm / np.maximum(gl, 1e-6))[:, None]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    # a hair (~0.07 mm) is far thinner than a texel (~0.5 mm): draw it as a faint line whose
    # opacity is its share of the texel
    tex_w = float(np.median(texel_mm[atlas.face[pick]]))
    strength = np.clip(rng.uniform(0.06, 0.12, total) / max(tex_w, 0.05) * 255 * 1.5, 10, 200).astype(int)
    for x, y, dx, dy, s in zip(cols.tolist(), rows.tolist(), dpx[:, 0].tolist(), dpx[:, 1].tolist(), strength.tolist()):
        # a slightly curved strand: two segments
        mx, my = x + 0.5 * dx + 0.08 * dy, y + 0.5 * dy - 0.08 * dx
        draw.line([(x, y), (mx, my), (x + dx, y + dy)], fill=s, width=1)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    alpha *= tissue_img == TISSUE["skin"]
    hair_col = srgb_to_linear(np.array([0.10, 0.07, 0.05] if spec.fitzpatrick > 2 else [0.28, 0.20, 0.13]))
    image *= 1 - alpha[..., None]
    image += alpha[..., None] * hair_col
    return total
