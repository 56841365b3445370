"""Synthetic skin lesions: types, site-dependent sampling, and painting at true physical size.

A lesion is painted in the texture by evaluating its shape in the tangent plane of the body at
its centre, at the 3D position of every texel near it (texels of all faces within reach,
whatever UV chart they belong to). Size is therefore exact in millimetres on the body surface,
whatever the UV stretch, and a lesion that straddles a UV seam is painted on both sides
consistently.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from bodymap.anatomy.body import PARTS
from bodymap.project import UVAtlas, face_adjacency, surface_patch
from bodymap.synth.texture import smoothstep, srgb_to_linear

# type -> (diameter range mm, global frequency, relative density by body part)
# Site preferences follow the usual predilection sites: nevi and angiomas on the trunk,
# lentigines on sun-exposed face, forearms and backs of hands, keratoses on trunk and face.
LESION_TYPES: dict[str, dict] = {
    "common_nevus": dict(d=(1.0, 7.0), freq=0.50,
                         site=dict(trunk=1.0, head=0.5, neck=0.6, arm=0.8, hand=0.2, leg=0.7, foot=0.2)),
    "atypical_nevus": dict(d=(4.0, 12.0), freq=0.12,
                           site=dict(trunk=1.5, head=0.2, neck=0.3, arm=0.5, hand=0.05, leg=0.6, foot=0.05)),
    "melanoma": dict(d=(5.0, 15.0), freq=0.04,
                     site=dict(trunk=1.2, head=0.8, neck=0.5, arm=0.6, hand=0.1, leg=1.0, foot=0.2)),
    "seborrheic_keratosis": dict(d=(4.0, 15.0), freq=0.12,
                                 site=dict(trunk=1.5, head=1.0, neck=0.8, arm=0.4, hand=0.1, leg=0.3, foot=0.05)),
    "solar_lentigo": dict(d=(3.0, 15.0), freq=0.12,
                          site=dict(trunk=0.4, head=1.5, neck=0.8, arm=1.2, hand=2.0, leg=0.2, foot=0.1)),
    "angioma": dict(d=(1.0, 5.0), freq=0.10,
                    site=dict(trunk=1.5, head=0.2, neck=0.3, arm=0.6, hand=0.05, leg=0.3, foot=0.05)),
}
# Confounders: painted, recorded in the truth, but not lesions a detector should report.
CONFOUNDER_TYPES: dict[str, dict] = {
    "freckle": dict(d=(1.0, 3.0), freq=1.0,
                    site=dict(trunk=0.6, head=2.0, neck=0.8, arm=1.0, hand=0.5, leg=0.1, foot=0.0)),
}
ALL_TYPES = {**LESION_TYPES, **CONFOUNDER_TYPES}


@dataclasses.dataclass
class LesionSpec:
    """One lesion of a patient, fixed across visits apart from growth and darkening.

    Location is given on the body model (base face + barycentric), hence on every visit.
    diameter_mm is the nominal longest diameter; aspect (minor / major) in (0, 1].
    """

    id: int
    type: str
    base_face: int
    base_bary: tuple[float, float, float]
    diameter_mm: float
    aspect: float
    angle: float  # radians, major axis direction in the tangent plane
    darkness: float  # pigment strength multiplier (1 = typical)
    seed: int  # shape details (border, internal pattern) are drawn from this

    @property
    def is_lesion(self) -> bool:
        return self.type in LESION_TYPES

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["base_bary"] = [round(float(x), 6) for x in self.base_bary]
        d["is_lesion"] = self.is_lesion
        return d


def sample_lesions(
    n: int,
    vertices: np.ndarray,
    faces: np.ndarray,
    face_parts: np.ndarray,
    face_allowed: np.ndarray,
    rng: np.random.Generator,
    first_id: int = 1,
    types: dict[str, dict] = LESION_TYPES,
    avoid: list[tuple[np.ndarray, float]] | None = None,
) -> list[LesionSpec]:
    """Draw n lesions on a body, site-dependent by type, never overlapping.

    vertices (n, 3) mm / faces (m, 3): the body the sizes refer to; face_parts : (m,) part index;
    face_allowed : (m,) bool (skin that may carry lesions); avoid : existing (point mm,
    radius mm) to keep clear of. Returns LesionSpecs with ids first_id, first_id + 1, ...
    """
    names = list(types)
    freq = np.array([types[t]["freq"] for t in names], dtype=np.float64)
    freq /= freq.sum()
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) * face_allowed
    placed_p: list[np.ndarray] = [p for p, _ in (avoid or [])]
    placed_r: list[float] = [r for _, r in (avoid or [])]
    out: list[LesionSpec] = []
    tree, tree_n = None, 0
    bad = ~np.asarray(face_allowed, bool)
    forbidden = cKDTree(tri[bad].mean(1)) if bad.any() else None
    max_r = max(max(types[t]["d"][1] for t in names) / 2, max(placed_r, default=0.0))
    attempts = 0
    while len(out) < n and attempts < 50 * n + 100:
        attempts += 1
        t = names[int(rng.choice(len(names), p=freq))]
        site = np.array([types[t]["site"].get(p, 0.0) for p in PARTS])
        w = area * site[face_parts]
        if w.sum() <= 0:
            continue
        f = int(rng.choice(len(w), p=w / w.sum()))
        r1, r2 = rng.random(2)
        s = np.sqrt(r1)
        bary = np.array([1 - s, s * (1 - r2), s * r2])
        p = bary @ tri[f]
        lo, hi = types[t]["d"]
        # log-uniform sizes: small lesions are more common than large ones
        d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        r = d / 2
        if placed_p:
            if tree is None or tree_n != len(placed_p):
                tree, tree_n = cKDTree(np.array(placed_p)), len(placed_p)
            near = tree.query_ball_point(p, 1.45 * (r + max_r) + 2.0)
            # a clear gap that scales with size: soft, irregular borders (and growth by the
            # next visit) stay apart, so each lesion can be measured on its own
            if any(np.linalg.norm(placed_p[j] - p) < 1.45 * (r + placed_r[j]) + 2.0 for j in near):
                continue
        # the whole lesion on plain skin: not across lips, nipples, nails or eyes
        if forbidden is not None and forbidden.query(p)[0] < 1.4 * r + 2.0:
            continue
        placed_p.append(p)
        placed_r.append(r)
        out.append(LesionSpec(
            id=first_id + len(out), type=t, base_face=f, base_bary=tuple(float(x) for x in bary),
            diameter_mm=round(d, 3), aspect=round(float(rng.uniform(0.7, 1.0)), 3),
            angle=round(float(rng.uniform(0, np.pi)), 4), darkness=round(float(rng.uniform(0.8, 1.25)), 3),
            seed=int(rng.integers(0, 2**31 - 1))))
    return out


def _tangent_frame(n: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    t1 = np.cross(n, a)
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(n, t1)
    c, s = np.cos(angle), np.sin(angle)
    return c * t1 + s * t2, -s * t1 + c * t2


class _Pattern:
    """Cheap smooth 2D noise in lesion coordinates (sum of random plane waves), ~[-1, 1]."""

    def __init__(self, rng: np.random.Generator, scale_mm: float, waves: int = 6):
        ang = rng.uniform(0, 2 * np.pi, waves)
        freq = rng.uniform(0.6, 1.6, waves) * 2 * np.pi / scale_mm
        self.k = np.stack([np.cos(ang), np.sin(ang)], 1) * freq[:, None]
        self.ph = rng.uniform(0, 2 * np.pi, waves)
        self.norm = np.sqrt(2.0 / waves)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (np.sin(np.outer(x, self.k[:, 0]) + np.outer(y, self.k[:, 1]) + self.ph).sum(1) * self.norm)


# Border irregularity (harmonic amplitude) and edge softness (fraction of the radius) per type.
_IRREGULAR = {"common_nevus": 0.03, "atypical_nevus": 0.09, "melanoma": 0.16, "seborrheic_keratosis": 0.06,
              "solar_lentigo": 0.10, "angioma": 0.02, "freckle": 0.08}
_SOFT = {"common_nevus": 0.10, "atypical_nevus": 0.28, "melanoma": 0.18, "seborrheic_keratosis": 0.07,
         "solar_lentigo": 0.22, "angioma": 0.10, "freckle": 0.35}


def _border_harmonics(les: LesionSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and phases (6,) of the border's harmonics k = 2..7, drawn first from the lesion's rng."""
    amps, phases = np.zeros(6), np.zeros(6)
    for i, k in enumerate(range(2, 8)):
        amps[i] = _IRREGULAR[les.type] * rng.normal(0, 1) / k
        phases[i] = rng.uniform(0, 2 * np.pi)
    return amps, phases


def _border(phi: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Relative border radius at polar angle phi (in the aspect-normalised frame), >= 0.5."""
    b = np.ones_like(phi)
    for i, k in enumerate(range(2, 8)):
        b += amps[i] * np.cos(k * phi + phases[i])
    return np.maximum(b, 0.5)


def _unit_outline(les: LesionSpec, amps: np.ndarray, phases: np.ndarray, n: int) -> np.ndarray:
    """Border (n, 2) of the lesion's shape at unit scale, x along the major axis."""
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    b = _border(phi, amps, phases)
    return np.stack([b * np.cos(phi), les.aspect * b * np.sin(phi)], axis=1)


def _radius(les: LesionSpec, amps: np.ndarray, phases: np.ndarray) -> float:
    """Scale r (mm) of the unit border that makes its longest (Feret) diameter les.diameter_mm."""
    unit = _unit_outline(les, amps, phases, 360)
    hull = unit[ConvexHull(unit).vertices]  # the longest chord joins two hull vertices
    feret = np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1).max())
    return les.diameter_mm / feret


def lesion_outline(les: LesionSpec, n: int = 360) -> np.ndarray:
    """The lesion's border (the alpha = 0.5 contour): (n, 2) mm in its tangent plane, x along the
    major axis. Its longest diameter (Feret diameter) is les.diameter_mm."""
    amps, phases = _border_harmonics(les, np.random.default_rng(les.seed))
    return _unit_outline(les, amps, phases, n) * _radius(les, amps, phases)


def lesion_area_mm2(les: LesionSpec) -> float:
    """Exact area (mm^2) inside the lesion's border (shoelace formula on a fine outline)."""
    x, y = lesion_outline(les, 2048).T
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def lesion_profile(les: LesionSpec, x: np.ndarray, y: np.ndarray, min_edge_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Appearance of a lesion at tangent-plane coordinates (x along the major axis), mm.

    Returns alpha (t,) in [0, 1] (0.5 on the border of lesion_outline), pigment transmission
    (t, 3) applied multiplicatively to the skin, and an overlay (t, 4) RGBA mixed on top.
    """
    rng = np.random.default_rng(les.seed)
    amps, phases = _border_harmonics(les, rng)
    r = _radius(les, amps, phases)
    xr, yr = x / r, y / (r * les.aspect)
    rho0 = np.hypot(xr, yr)
    phi = np.arctan2(yr, xr)
    border = _border(phi, amps, phases)
    rho = rho0 / border
    w = max(_SOFT[les.type], min_edge_mm / r)
    alpha = 1.0 - smoothstep(1.0 - w, 1.0 + w, rho)
    t = len(x)
    pat = _Pattern(rng, max(0.8, 0.35 * r))
    pat2 = _Pattern(rng, max(0.5, 0.2 * r))
    n1, n2 = pat(x, y), pat2(x, y)
    dk = les.darkness
    overlay = np.zeros((t, 4), np.float32)
    center = 1.0 - np.clip(rho, 0, 1)
    if les.type == "common_nevus":
        base = np.array([0.40, 0.26, 0.17]) ** (dk * rng.uniform(0.8, 1.4))
        trans = base[None] ** (1.0 + 0.25 * center[:, None] + 0.08 * n1[:, None])
    elif les.type == "atypical_nevus":
        tan = np.array([0.62, 0.45, 0.33]) ** dk
        dark = np.array([0.30, 0.19, 0.13]) ** dk
        m = smoothstep(0.2, 0.8, center + 0.25 * n1)[:, None]
        trans = tan[None] * (1 - m) + dark[None] * m
        trans = trans ** (1.0 + 0.15 * n2[:, None])
    elif les.type == "melanoma":
        cols = np.array([[0.12, 0.08, 0.07], [0.32, 0.20, 0.14], [0.45, 0.45, 0.55], [0.70, 0.40, 0.38],
                         [0.55, 0.38, 0.28]]) ** dk
        # blotches: pick a colour by the value of a pattern field, asymmetric by construction
        pat3 = _Pattern(rng, max(1.0, 0.5 * r))
        v = 0.5 * n1 + 0.35 * pat3(x, y) + 0.3 * xr * rng.normal(0, 1)
        idx = np.digitize(v, np.quantile(v, [0.25, 0.5, 0.7, 0.85]) if t > 10 else [0, 0, 0, 0])
        trans = cols[idx]
        # regression: whitish-grey veil in part of the lesion
        veil = smoothstep(0.55, 0.9, 0.5 * (n2 + 1)) * 0.45
        overlay[:, :3] = srgb_to_linear(np.array([0.78, 0.76, 0.78]))
        overlay[:, 3] = veil * alpha
    elif les.type == "seborrheic_keratosis":
        base = np.array([0.52, 0.36, 0.24]) ** (dk * rng.uniform(0.8, 1.8))
        trans = base[None] ** (1.0 + 0.3 * n1[:, None])
        cracks = np.exp(-(n2 / 0.12) ** 2) * 0.5  # fissures of the warty surface: lighter lines
        cysts = (pat(x * 3.1, y * 3.1) > 1.2) * 0.6  # milia-like horn cysts
        overlay[:, :3] = srgb_to_linear(np.array([0.80, 0.74, 0.62]))
        overlay[:, 3] = np.maximum(cracks, cysts) * alpha
    elif les.type == "solar_lentigo":
        base = np.array([0.78, 0.64, 0.52]) ** dk
        trans = base[None] ** (1.0 + 0.2 * n1[:, None])
    elif les.type == "angioma":
        base = np.array([[0.80, 0.10, 0.14], [0.55, 0.06, 0.16], [0.45, 0.05, 0.22]])[rng.integers(0, 3)] ** dk
        trans = base[None] ** (1.0 + 0.1 * n1[:, None])
    elif les.type == "freckle":
        base = np.array([0.86, 0.74, 0.63]) ** dk
        trans = base[None] ** (1.0 + 0.2 * n1[:, None])
    else:
        raise ValueError(f"unknown lesion type {les.type!r}")
    return alpha.astype(np.float32), np.clip(trans, 0, 1).astype(np.float32), overlay


class LesionPainter:
    """Paints lesions of one visit into texel colours (k, 3) linear RGB.

    atlas : the texels; vertices (n, 3) mm of this visit's base mesh; faces (m, 3).
    """

    def __init__(self, atlas: UVAtlas, vertices: np.ndarray, faces: np.ndarray):
        self.atlas, self.v, self.f = atlas, vertices, faces
        tri = vertices[faces]
        cr = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.face_area = 0.5 * np.linalg.norm(cr, axis=1)
        self.fn = cr / np.maximum(2 * self.face_area[:, None], 1e-12)
        vn = np.zeros_like(vertices)
        for k in range(3):
            np.add.at(vn, faces[:, k], cr)
        self.vn = vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
        self.centroids = tri.mean(1)
        self.face_radius = np.linalg.norm(tri - self.centroids[:, None], axis=2).max(1)
        # texels dilated into the gutters lie beyond their face: reach must cover them too
        pos = atlas.positions(vertices, faces)
        far = np.linalg.norm(pos - self.centroids[atlas.face].astype(np.float32), axis=1)
        np.maximum.at(self.face_radius, atlas.face, far)
        del pos, far
        self.tree = cKDTree(self.centroids)
        self.adjacency = face_adjacency(faces)
        # texel footprint on the body: mm^2 per texel, per face
        with np.errstate(divide="ignore", invalid="ignore"):
            uvt = atlas.uv * atlas.size
            e1, e2 = uvt[:, 1] - uvt[:, 0], uvt[:, 2] - uvt[:, 0]
            uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
            self.texel_area = np.where(uv_area > 0, self.face_area / uv_area, np.nan)
        self.texel_mm = np.sqrt(self.texel_area)

    @staticmethod
    def centre_of(les: LesionSpec, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """3D centre (3,) mm of a lesion on a body given by vertices (n, 3) and faces (m, 3)."""
        return np.asarray(les.base_bary) @ vertices[faces[les.base_face]]

    def centre(self, les: LesionSpec) -> tuple[np.ndarray, np.ndarray]:
        """3D centre (3,) mm and unit normal (3,) of a lesion on this body."""
        b = np.asarray(les.base_bary)
        idx = self.f[les.base_face]
        p = b @ self.v[idx]
        n = b @ self.vn[idx]
        return p, n / np.linalg.norm(n)

    def paint(self, colours: np.ndarray, label: np.ndarray, les: LesionSpec) -> float:
        """Paint one lesion in place. colours (k, 3) float32; label (k,) int32 lesion id per
        texel where alpha >= 0.5 (0 elsewhere). Returns the painted area in mm^2."""
        c, n = self.centre(les)
        t1, t2 = _tangent_frame(n, les.angle)
        reach = les.diameter_mm * 0.5 * 1.6 + 1.0
        cand = np.asarray(self.tree.query_ball_point(c, reach + self.face_radius.max()), dtype=np.int64)
        cand = cand[np.linalg.norm(self.centroids[cand] - c, axis=1) <= reach + self.face_radius[cand]]
        # only the piece of skin around the lesion: connected to it and facing the same way
        # (not the next finger, the other side of an ear, or the opposite thigh)
        cand = surface_patch(self.adjacency, cand[self.fn[cand] @ n > 0.2], les.base_face)
        sel = self.atlas.texels_of_faces(cand)
        if len(sel) == 0:
            return 0.0
        P = self.atlas.positions(self.v, self.f, sel).astype(np.float64)
        d = P - c
        x, y, h = d @ t1, d @ t2, d @ n
        ok = (np.abs(h) < 0.35 * les.diameter_mm + 2.0) & (np.hypot(x, y) <= reach)
        sel, x, y = sel[ok], x[ok], y[ok]
        if len(sel) == 0:
            return 0.0
        edge = 0.6 * float(np.nanmedian(self.texel_mm[self.atlas.face[sel]]))
        alpha, trans, overlay = lesion_profile(les, x, y, min_edge_mm=edge)
        a = alpha[:, None]
        col = colours[sel]
        col = col * (1 - a + a * trans)
        col = col * (1 - overlay[:, 3:]) + overlay[:, :3] * overlay[:, 3:]
        colours[sel] = col
        inside = alpha >= 0.5
        label[sel[inside]] = les.id
        counted = sel[inside & self.atlas.is_inside(sel)]  # gutter texels repeat the surface
        return float(np.nansum(self.texel_area[self.atlas.face[counted]]))
