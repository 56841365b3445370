"""Per-lesion measures a total-body photography (TBP) system reports: the ``tbp_lv_*`` columns of
the ISIC 2024 SLICE-3D data, computed on BodyMap's mesh in millimetres.

Input is what ``bodymap.lesions.LesionMeasurer`` has after segmenting a lesion in an image pinned
to the surface (the texture, a rendered view): each pixel's contrast relative to the lesion's
own (1 on the border), its 3D point, its CIELAB colour, and a ring of skin around the lesion.
Everything is measured on the lesion's tangent plane at its centre, the plane the synthetic
generator defines sizes on:

- shape: the border (contrast = 1) is traced in image space by marching squares, each vertex
  placed on the surface between the two pixels it lies between (``image_outline``: sub-texel,
  whatever the UV stretch), and projected on the plane; area, perimeter and second moments
  (eccentricity) come from that outline, the longest and shortest (Feret) diameters from its
  projections, symmetry from mirroring the filled outline about axes 5 degrees apart;
- colour: means and spreads of L*, a*, b*, chroma and hue inside the lesion and in the ring.

``MEASURES`` lists every measure (key in ``Lesion.measures``, unit, SLICE-3D column, definition);
docs/measures.md is the long form. ``body_positions`` adds the position in the body frame (the
template's: z up, facing -y, subject's left = +x, mm) through the registration.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

# Grid cells across the lesion window for the sub-texel outline (cost grows with its square).
GRID_PX = 48
# Symmetry is tested about axes this many degrees apart (SLICE-3D reports angles in 5-degree steps).
SYMMETRY_STEP_DEG = 5


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure: key in Lesion.measures, unit, the SLICE-3D column it fills, definition."""

    key: str
    unit: str
    column: str
    text: str


MEASURES: tuple[Measure, ...] = (
    Measure("area_mm2", "mm2", "tbp_lv_areaMM2", "area inside the sub-texel outline on the tangent plane"),
    Measure("perimeter_mm", "mm", "tbp_lv_perimeterMM", "length of the sub-texel outline on the tangent plane"),
    Measure("area_perim_ratio", "1", "tbp_lv_area_perim_ratio",
            "perimeter^2 / area (4 pi = 12.57 for a circle; larger for jagged or elongated borders)"),
    Measure("major_axis_mm", "mm", "", "longest (Feret) diameter of the outline"),
    Measure("minor_axis_mm", "mm", "tbp_lv_minorAxisMM", "shortest (Feret) diameter: the outline's smallest width"),
    Measure("eccentricity", "1", "tbp_lv_eccentricity",
            "sqrt(1 - l2 / l1) of the outline's second moments l1 >= l2 (0 circle, -> 1 a line)"),
    Measure("border_irregularity", "1", "",
            "perimeter / (2 sqrt(pi area)): 1 for a circle, larger for jagged or elongated borders"),
    Measure("norm_border", "0-10", "tbp_lv_norm_border",
            "BodyMap's 0-10 scale: mean of s(border_irregularity - 1, 0.05) and s(symm_2axis, 0.15), "
            "s(x, k) = 10 x / (x + k)"),
    Measure("L", "1", "tbp_lv_L", "mean CIELAB L* inside the lesion"),
    Measure("A", "1", "tbp_lv_A", "mean CIELAB a* inside the lesion"),
    Measure("B", "1", "tbp_lv_B", "mean CIELAB b* inside the lesion"),
    Measure("C", "1", "tbp_lv_C", "chroma sqrt(A^2 + B^2) inside the lesion"),
    Measure("H", "deg", "tbp_lv_H", "hue angle atan2(B, A) inside the lesion, 0-360 degrees"),
    Measure("Lext", "1", "tbp_lv_Lext", "mean L* of the ring of skin around the lesion"),
    Measure("Aext", "1", "tbp_lv_Aext", "mean a* of the ring"),
    Measure("Bext", "1", "tbp_lv_Bext", "mean b* of the ring"),
    Measure("Cext", "1", "tbp_lv_Cext", "chroma of the ring"),
    Measure("Hext", "deg", "tbp_lv_Hext", "hue angle of the ring"),
    Measure("deltaL", "1", "tbp_lv_deltaL", "L - Lext (negative: darker than the skin)"),
    Measure("deltaA", "1", "tbp_lv_deltaA", "A - Aext"),
    Measure("deltaB", "1", "tbp_lv_deltaB", "B - Bext"),
    Measure("deltaLB", "1", "tbp_lv_deltaLB", "sqrt(deltaL^2 + deltaB^2): contrast of the mean colours in the L*b* plane"),
    Measure("deltaLBnorm", "1", "tbp_lv_deltaLBnorm",
            "mean over the lesion's texels of their L*b* distance to the ring's mean colour"),
    Measure("stdL", "1", "tbp_lv_stdL", "standard deviation of L* inside the lesion"),
    Measure("stdLExt", "1", "tbp_lv_stdLExt", "standard deviation of L* in the ring"),
    Measure("color_std_mean", "1", "tbp_lv_color_std_mean", "mean of the standard deviations of L*, a*, b* inside"),
    Measure("radial_color_std_max", "1", "tbp_lv_radial_color_std_max",
            "largest colour spread (RMS Delta E to the ring's mean) among 4 concentric rings of the lesion"),
    Measure("norm_color", "0-10", "tbp_lv_norm_color",
            "BodyMap's 0-10 scale: mean of s(color_std_mean, 5) and s(radial_color_std_max, 5)"),
    Measure("symm_2axis", "1", "tbp_lv_symm_2axis",
            "share of the lesion not covered by its mirror image about the axis perpendicular to its most "
            "symmetric axis (0 symmetric about two axes)"),
    Measure("symm_2axis_angle", "deg", "tbp_lv_symm_2axis_angle",
            "angle of the most symmetric axis, 0-175 in 5-degree steps, from the scan's up (z) axis "
            "projected on the tangent plane, counter-clockwise seen from outside"),
    Measure("x_mm", "mm", "tbp_lv_x", "position in the body frame (template: subject's left = +x)"),
    Measure("y_mm", "mm", "tbp_lv_y", "position in the body frame (template: back = +y)"),
    Measure("z_mm", "mm", "tbp_lv_z", "position in the body frame (template: up = +z, floor at 0)"),
)
MEASURE_KEYS: tuple[str, ...] = tuple(m.key for m in MEASURES)
BODY_KEYS = ("x_mm", "y_mm", "z_mm")


def tangent_frame(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors e1, e2 (3,) spanning the plane perpendicular to normal (3,): e1 is the scan's
    +z projected on the plane (+y where the normal is within ~25 degrees of z)."""
    n = np.asarray(normal, np.float64)
    n = n / max(np.linalg.norm(n), 1e-12)
    up = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = up - (up @ n) * n
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(n, e1)


def polygon_moments(loops: list[np.ndarray]) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Area, perimeter, centroid (2,) and central second-moment matrix (2, 2) (per unit area) of
    the region bounded by closed loops (each (n, 2), not nested, either orientation)."""
    A = P = 0.0
    S = np.zeros(2)
    M = np.zeros(3)  # integrals of x^2, xy, y^2
    for pts in loops:
        x, y = pts[:, 0], pts[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cr = x * y1 - x1 * y
        sgn = 1.0 if cr.sum() >= 0 else -1.0  # every loop counted as positive area
        cr = cr * sgn
        A += cr.sum() / 2
        P += np.hypot(x1 - x, y1 - y).sum()
        S += [((x + x1) * cr).sum() / 6, ((y + y1) * cr).sum() / 6]
        M += [((x * x + x * x1 + x1 * x1) * cr).sum() / 12,
              ((x * y1 + 2 * x * y + 2 * x1 * y1 + x1 * y) * cr).sum() / 24,
              ((y * y + y * y1 + y1 * y1) * cr).sum() / 12]
    if A <= 0:
        return 0.0, float(P), np.zeros(2), np.zeros((2, 2))
    c = S / A
    cov = np.array([[M[0] / A - c[0] ** 2, M[1] / A - c[0] * c[1]],
                    [M[1] / A - c[0] * c[1], M[2] / A - c[1] ** 2]])
    return float(A), float(P), c, cov


def feret(points: np.ndarray, step_deg: float = 1.0) -> tuple[float, float]:
    """Longest and shortest widths (the Feret diameters) of a 2D point set (k, 2), from its
    projections on directions step_deg apart (relative error below 1 - cos(step_deg / 2))."""
    if len(points) < 2:
        return 0.0, 0.0
    a = np.deg2rad(np.arange(0.0, 180.0, step_deg))
    proj = points @ np.stack([np.cos(a), np.sin(a)])  # (k, directions)
    widths = proj.max(0) - proj.min(0)
    return float(widths.max()), float(widths.min())


def eccentricity(cov: np.ndarray) -> float:
    """sqrt(1 - l2 / l1) of a 2x2 second-moment matrix's eigenvalues l1 >= l2."""
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(max(0.0, 1.0 - ev[0] / ev[1]))) if ev[1] > 0 else 0.0


def _scale(x: float, k: float) -> float:
    """BodyMap's 0-10 scale: 10 x / (x + k) (5 at x = k)."""
    x = max(float(x), 0.0)
    return 10.0 * x / (x + k)


def symmetry(mask: np.ndarray, step_deg: int = SYMMETRY_STEP_DEG) -> tuple[float, float]:
    """Two-axis asymmetry of a filled shape (H, W) bool on a square grid (rows = e2, cols = e1).

    For each axis through the shape's centroid (0 to 180 degrees from the column axis, step_deg
    apart), the share of the shape's cells whose mirror image lies outside the shape. The most
    symmetric axis is the one with the smallest share (searched every 2 steps, then refined
    around the best). Returns (share about the perpendicular axis, angle of the most symmetric
    axis in degrees)."""
    rr, cc = np.nonzero(mask)
    if len(rr) < 3:
        return 0.0, 0.0
    cy, cx = rr.mean(), cc.mean()
    y, x = rr - cy, cc - cx
    H, W = mask.shape

    def shares(angles: np.ndarray) -> np.ndarray:
        a = np.deg2rad(angles)[:, None]
        c2, s2 = np.cos(2 * a), np.sin(2 * a)  # mirror about the axis at angle a
        i = np.rint(cy + s2 * x - c2 * y).astype(np.int32)
        j = np.rint(cx + c2 * x + s2 * y).astype(np.int32)
        ok = (i >= 0) & (i < H) & (j >= 0) & (j < W)
        hit = mask[np.clip(i, 0, H - 1), np.clip(j, 0, W - 1)] & ok
        return 1.0 - hit.mean(1)

    coarse = np.arange(0, 180, 2 * step_deg)
    best = coarse[int(np.argmin(shares(coarse)))]
    fine = (best + np.array([-step_deg, 0, step_deg])) % 180
    sf = shares(fine)
    angle = float(fine[int(np.argmin(sf))])
    return float(shares(np.array([(angle + 90) % 180]))[0]), angle


def image_outline(rel: np.ndarray, keep: np.ndarray, pos: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A lesion's border traced in image space and lifted to the surface.

    rel (h, w): each pixel's contrast relative to the segmentation level (> 1 inside); keep
    (h, w) bool: the lesion's pixels (filled); pos (h, w, 3) mm: each pixel's surface point, NaN
    where the pixel shows no surface (off the mesh, another UV chart). The iso-line rel = 1
    around keep is traced (marching squares: every vertex lies between two neighbouring pixels)
    and each vertex placed on the surface between those two pixels' points. Returns loops: a
    list of (points (n, 3) mm, valid (n,) bool) where valid[i] says whether the segment from
    vertex i to i + 1 is true border; segments with an end at a pixel that shows no surface
    (a UV seam or the image's edge cutting the lesion) close the loop but are not border."""
    import contourpy

    f = np.where(ndimage.binary_dilation(keep, iterations=2), rel, 0.0).astype(np.float64)
    f[keep] = np.maximum(f[keep], 1.0 + 1e-6)  # holes and other blobs have no border here
    f = np.pad(f, 1)  # the window's edge lies outside: every loop closes
    P = np.pad(pos.astype(np.float64), ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    gen = contourpy.contour_generator(z=f, line_type=contourpy.LineType.Separate)
    out = []
    for line in gen.lines(1.0):
        line = np.asarray(line, np.float64)
        if len(line) > 1 and abs(line[0] - line[-1]).max() < 1e-9:
            line = line[:-1]
        if len(line) < 3:
            continue
        x, y = line[:, 0], line[:, 1]
        on_col = np.abs(x - np.rint(x)) < 1e-9  # vertical edge: between rows floor(y), floor(y) + 1
        c0 = np.where(on_col, np.rint(x), np.floor(x)).astype(int)
        r0 = np.where(on_col, np.floor(y), np.rint(y)).astype(int)
        t = np.where(on_col, y - r0, x - c0)[:, None]
        r1, c1 = np.minimum(r0 + on_col, f.shape[0] - 1), np.minimum(c0 + ~on_col, f.shape[1] - 1)
        a, b = P[r0, c0], P[r1, c1]
        ok_a, ok_b = np.isfinite(a).all(1), np.isfinite(b).all(1)
        pts = np.where((ok_a & ok_b)[:, None], (1 - t) * a + t * b, np.where(ok_a[:, None], a, b))
        good = ok_a & ok_b
        if not (ok_a | ok_b).all():
            pts, good = pts[ok_a | ok_b], good[ok_a | ok_b]
            if len(pts) < 3:
                continue
        out.append((pts, good & np.roll(good, -1)))
    return out


def shape_measures(loops: list[tuple[np.ndarray, np.ndarray]], centre: np.ndarray, normal: np.ndarray,
                   grid_px: int = GRID_PX) -> tuple[dict, np.ndarray]:
    """Outline measures of one lesion on its tangent plane.

    loops: its border (see image_outline; the loops of all its pieces, e.g. both sides of a UV
    seam); centre (3,) mm and normal (3,): the tangent plane. Returns (measures: area_mm2,
    perimeter_mm (true border segments only), area_perim_ratio, major_axis_mm, minor_axis_mm,
    eccentricity, border_irregularity, symm_2axis, symm_2axis_angle, norm_border; the shape's
    centroid (2,) mm on the plane). Empty measures when the loops enclose no area."""
    from matplotlib.path import Path as MplPath

    if not loops:
        return {}, np.zeros(2)
    e1, e2 = tangent_frame(normal)
    flat = []
    perim = 0.0
    for pts, valid in loops:
        d = pts - centre
        xy = np.stack([d @ e1, d @ e2], 1)
        flat.append(xy)
        seg = np.linalg.norm(np.roll(xy, -1, axis=0) - xy, axis=1)
        perim += float(seg[valid].sum())
    area, _, c, cov = polygon_moments(flat)
    if area <= 0:
        return {}, np.zeros(2)
    allpts = np.concatenate(flat)
    longest, shortest = feret(allpts)
    # the filled outline on a grid, for mirroring
    r = float(np.abs(allpts - c).max()) * 1.05 + 1e-6
    ax = np.linspace(-r, r, grid_px + 1)
    X, Y = np.meshgrid(ax + c[0], ax + c[1])
    q = np.stack([X.ravel(), Y.ravel()], 1)
    mask = np.zeros(len(q), bool)
    for xy in flat:
        mask |= MplPath(xy).contains_points(q)
    s2, angle = symmetry(mask.reshape(X.shape))
    irr = perim / (2 * np.sqrt(np.pi * area))
    out = {
        "area_mm2": area, "perimeter_mm": perim, "area_perim_ratio": perim ** 2 / area,
        "major_axis_mm": longest, "minor_axis_mm": shortest, "eccentricity": eccentricity(cov),
        "border_irregularity": irr, "symm_2axis": s2, "symm_2axis_angle": angle,
        "norm_border": 0.5 * (_scale(irr - 1.0, 0.05) + _scale(s2, 0.15)),
    }
    return out, c


def colour_measures(lab: np.ndarray, xy: np.ndarray, ring_lab: np.ndarray, centre_xy: np.ndarray) -> dict:
    """Colour measures of one lesion. lab (k, 3): CIELAB of its texels; xy (k, 2) mm: their
    tangent-plane positions; ring_lab (r, 3): CIELAB of the ring of skin around it (may be
    empty: the outside values are then NaN); centre_xy (2,) mm: the shape's centroid."""
    lab = np.asarray(lab, np.float64).reshape(-1, 3)
    ring = np.asarray(ring_lab, np.float64).reshape(-1, 3)
    m = lab.mean(0)
    ext = ring.mean(0) if len(ring) else np.full(3, np.nan)
    out = {"L": m[0], "A": m[1], "B": m[2], "C": float(np.hypot(m[1], m[2])), "H": _hue(m),
           "Lext": ext[0], "Aext": ext[1], "Bext": ext[2], "Cext": float(np.hypot(ext[1], ext[2])), "Hext": _hue(ext),
           "stdL": float(lab[:, 0].std()), "stdLExt": float(ring[:, 0].std()) if len(ring) else np.nan,
           "color_std_mean": float(lab.std(0).mean())}
    dL, dA, dB = m - ext
    out.update(deltaL=dL, deltaA=dA, deltaB=dB, deltaLB=float(np.hypot(dL, dB)),
               deltaLBnorm=float(np.hypot(lab[:, 0] - ext[0], lab[:, 2] - ext[2]).mean()))
    # colour spread within concentric rings of the lesion (a lesion darker on one side spreads)
    rad = np.linalg.norm(np.asarray(xy, np.float64) - centre_xy, axis=1)
    k = np.minimum((4 * rad / max(rad.max(), 1e-9)).astype(int), 3)
    spreads = [np.sqrt(((lab[k == i] - lab[k == i].mean(0)) ** 2).sum(1).mean()) for i in range(4) if (k == i).sum() >= 3]
    out["radial_color_std_max"] = float(max(spreads)) if spreads else 0.0
    out["norm_color"] = 0.5 * (_scale(out["color_std_mean"], 5.0) + _scale(out["radial_color_std_max"], 5.0))
    return out


def _hue(lab: np.ndarray) -> float:
    """Hue angle (degrees, 0-360) of a Lab colour (3,)."""
    return float(np.degrees(np.arctan2(lab[2], lab[1])) % 360.0)


def lesion_measures(loops: list[tuple[np.ndarray, np.ndarray]], centre: np.ndarray, normal: np.ndarray,
                    points: np.ndarray, lab: np.ndarray, ring_lab: np.ndarray) -> dict:
    """All measures of one lesion except its body-frame position (see MEASURES), rounded.

    loops: its border (image_outline); centre (3,) mm, normal (3,): the lesion's surface point
    and normal; points (k, 3) mm and lab (k, 3): its texels' surface points and CIELAB colours;
    ring_lab (r, 3): CIELAB of the ring of skin around it."""
    shape, c = shape_measures(loops, centre, normal)
    e1, e2 = tangent_frame(normal)
    d = np.asarray(points, np.float64) - centre
    out = {**shape, **colour_measures(lab, np.stack([d @ e1, d @ e2], 1), ring_lab, c)}
    return {k: (None if not np.isfinite(v) else round(float(v), 4 if abs(v) < 1 else 3)) for k, v in out.items()}


def body_positions(lesions, scan, correspondence, template=None) -> np.ndarray:
    """Positions (k, 3) mm of lesions (Lesion list) in the body frame: each lesion's point taken
    through the registration (correspondence: bodymap.anatomy.register.Correspondence of scan)
    onto the template body (bodymap.anatomy.template.load_template(), or given). Also stored in
    each lesion's measures as x_mm, y_mm, z_mm."""
    if template is None:
        from bodymap.anatomy.template import load_template

        template = load_template()
    if not lesions:
        return np.zeros((0, 3))
    faces = np.array([l.face for l in lesions])
    bary = np.array([l.bary for l in lesions], np.float64)
    corners = scan.faces[faces]  # (k, 3) scan vertices
    tf = correspondence.template_face[corners]
    tb = correspondence.template_bary[corners].astype(np.float64)
    tpts = np.einsum("kcj,kcjd->kcd", tb, template.vertices[template.faces[tf]])  # (k, 3 corners, 3)
    pos = np.einsum("kc,kcd->kd", bary, tpts)
    for l, p in zip(lesions, pos):
        l.measures = {**(l.measures or {}), **{k: round(float(v), 1) for k, v in zip(BODY_KEYS, p)}}
    return pos
