"""Is this mesh a body? A plausibility check run in about a second, before any registration.

    check_body(scan) -> BodyCheck   (raises ScanError, one line, for a mesh that is not a body)

Registration fits a whole body model for tens of seconds to minutes: a one-triangle file, a
cube, a 500-face model, two people in one file or a body in inches must be refused (or, for
inches, detected) before that, with a reason a user can act on. What is measured (all cheap):

- face count: a body scan has tens of thousands of faces; a few hundred cannot carry lesions;
- size: largest extent 250-3000 mm (load_scan has applied the units), and not flat (the
  smallest bounding-box side at least 4 % of the largest);
- surface area against size: area / (largest extent)^2 is about 0.5-0.8 for a whole body and up
  to about 1.2 for a head or trunk alone, whatever the scale; a flat sheet or a line is far
  below, a closed box or a ball (6 and 3.1) far above;
- connected pieces (vertices welded by position first, so a "triangle soup" is one piece): two
  large pieces of similar size are two bodies (or a body and its turntable) in one file;
- proportions, for a body whose size read in centimetres is a small child (under 1 m): an adult's
  head (about 11 % of the height long, against 15-20 % for a child under 1 m) says the file is
  in inches (see ``end_ratio`` and ``looks_like_inches``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bodymap.scan import Scan, ScanError

# Fewer faces than this cannot be a body scan a lesion map can be made on (a coarse scan of a
# whole body has >= 10,000; FAUST's registrations 13,776).
MIN_FACES = 1000
# area / largest extent^2: whole bodies measured 0.45-0.8 (synthetic A-pose and raised arms, FAUST,
# SMPL), a trunk or head alone up to ~1.3; a ball is 3.1, a box 6, a flat sheet < 0.1.
AREA_RATIO = (0.15, 2.2)
# Thinner than this share of its length is a sheet, not a body (a thin adult seen sideways is
# ~0.1 as deep as tall; a hand ~0.15 as thick as long).
MIN_THICKNESS = 0.04
# A second piece this large (share of the largest's area) and this long (share of the whole
# mesh's extent) is a second body (or a turntable), not a detached finger or noise.
SECOND_PIECE_AREA = 0.25
SECOND_PIECE_EXTENT = 0.4
# Read in cm, a whole body under this height (mm) is a toddler or an adult in inches.
INCH_SUSPECT_MM = (250.0, 1000.0)
# end_ratio at or below this is an adult's head (adults measured <= 0.125, children under 1 m >= 0.155).
ADULT_END_RATIO = 0.135


@dataclasses.dataclass
class BodyCheck:
    """What check_body measured. extent_mm (3,) bounding box sides, largest first; area_m2;
    area_ratio = area / largest extent^2; pieces: (area share, extent share) of each piece
    holding >= 1 % of the surface, largest first; end_ratio: the narrower end's width over the
    height (see end_ratio; measured only for bodies read as cm under 1 m); warnings."""

    faces: int
    extent_mm: tuple
    area_m2: float
    area_ratio: float
    pieces: list
    end_ratio: float | None = None
    warnings: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _principal_extents(v: np.ndarray) -> tuple[float, float]:
    """(smallest, largest) extent mm along the principal axes of the vertices (v (n, 3) mm; a
    sample of at most 50k), so a flat sheet is flat whatever its orientation."""
    if len(v) > 50_000:
        v = v[np.random.default_rng(0).choice(len(v), 50_000, replace=False)]
    c = v - v.mean(0)
    _, _, axes = np.linalg.svd(c, full_matrices=False)
    e = np.ptp(c @ axes.T, axis=0)
    return float(e.min()), float(e.max())


def _pieces(v: np.ndarray, f: np.ndarray, areas: np.ndarray) -> list[tuple[float, float]]:
    """(area share, extent share) of the mesh's connected pieces holding >= 1 % of the area,
    largest first. Vertices at the same position (to 0.01 mm) are one vertex, so split seams
    and triangle soups do not count as pieces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q = np.round(v * 100.0).astype(np.int64)
    _, weld = np.unique(q, axis=0, return_inverse=True)
    weld = weld.ravel()
    n = int(weld.max()) + 1
    fw = weld[f]
    rows = np.concatenate([fw[:, 0], fw[:, 1]])
    cols = np.concatenate([fw[:, 1], fw[:, 2]])
    g = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    k, comp = connected_components(g, directed=False)
    fc = comp[fw[:, 0]]
    area = np.bincount(fc, weights=areas, minlength=k)
    total = area.sum()
    size = float(np.ptp(v, axis=0).max()) or 1.0
    out = []
    for c in np.argsort(-area):
        if area[c] < 0.01 * total:
            break
        pts = v[f[fc == c].ravel()]
        out.append((round(float(area[c] / total), 4), round(float(np.ptp(pts, axis=0).max() / size), 3)))
    return out


def end_ratio(v: np.ndarray) -> float:
    """How wide a standing body's narrower end is, as a share of its height: the largest
    horizontal extent of the slab 4-8 % below each end (the up axis: the longer of y and z), the
    smaller of the two ends. At the head end of an adult that is the head's length: measured
    0.10-0.125 of the height (synthetic adults 18-85, FAUST, SMPL); a child under 1 m has a
    bigger head for its size: 0.155-0.20 (synthetic 1-5 years); the feet end (two feet, or
    shins) measured >= 0.14; raised hands make an end wide. v (n, 3) mm. inf when an end is empty.
    """
    ext = np.ptp(v, axis=0)
    up = 2 if ext[2] >= ext[1] else 1
    H = max(float(ext[up]), 1e-9)
    side = [a for a in range(3) if a != up]
    out = []
    for sign in (1.0, -1.0):
        h = sign * v[:, up]
        h = (h - h.min()) / H
        slab = v[(h > 0.92) & (h < 0.96)][:, side]
        if len(slab) < 10:
            out.append(np.inf)
            continue
        lo, hi = np.percentile(slab, [1, 99], axis=0)
        out.append(float((hi - lo).max() / H))
    return min(out)


def looks_like_inches(scan: Scan, chk: "BodyCheck | None" = None) -> bool:
    """A body whose units were detected as cm, under 1 m tall read so, with an adult's head for
    its height (end_ratio <= ADULT_END_RATIO): more likely an adult in an inch file than a
    toddler (whose head is 15-20 % of its height)."""
    if scan.meta.units != "cm":
        return False
    lo, hi = INCH_SUSPECT_MM
    if not lo <= scan.height_mm <= hi:
        return False
    r = chk.end_ratio if chk is not None and chk.end_ratio is not None else end_ratio(scan.vertices)
    return r <= ADULT_END_RATIO


def check_body(scan: Scan) -> BodyCheck:
    """Measure how body-like scan (mm) is and raise ScanError (naming the file and what is
    wrong, with what to do) when it cannot be a body scan. Returns the BodyCheck (its warnings:
    things worth saying that do not stop the work). Takes well under a second at 300k faces."""
    src = scan.meta.source or None
    f = scan.faces
    ext = tuple(sorted((round(float(x), 1) for x in np.ptp(scan.vertices, axis=0)), reverse=True))
    size = ext[0]
    area = float(scan.face_areas.sum())
    ratio = area / max(size * size, 1e-9)
    if len(f) < MIN_FACES:
        raise ScanError(src, f"only {len(f)} face{'' if len(f) == 1 else 's'}: not a body scan (a body scan has tens of thousands; at least "
                             f"{MIN_FACES} are needed to map lesions)")
    scan.check_body_size()
    thick, long_ = _principal_extents(scan.vertices)
    if thick < MIN_THICKNESS * long_:
        raise ScanError(src, f"not a body: it is flat ({thick:.3g} mm thick for {long_:.0f} mm long; a body is at least "
                             f"{100 * MIN_THICKNESS:.0f}% as thick as it is long)")
    if not AREA_RATIO[0] <= ratio <= AREA_RATIO[1]:
        what = ("a closed box or ball" if ratio > AREA_RATIO[1] else "a flat sheet, a strip or a line")
        raise ScanError(src, f"not a body: its surface ({area / 1e6:.3g} m2) is {ratio:.2f} times the square of its "
                             f"largest extent ({size:.0f} mm); a body's is {AREA_RATIO[0]}-{AREA_RATIO[1]} "
                             f"(this looks like {what})")
    pieces = _pieces(scan.vertices, f, scan.face_areas)
    chk = BodyCheck(len(f), ext, round(area / 1e6, 4), round(ratio, 3), pieces)
    big = [p for p in pieces[1:] if p[0] >= SECOND_PIECE_AREA * pieces[0][0] and p[1] >= SECOND_PIECE_EXTENT]
    if big:
        shares = ", ".join(f"{100 * p[0]:.0f}%" for p in [pieces[0], *big])
        raise ScanError(src, f"the file holds {1 + len(big)} separate large pieces ({shares} of the surface): two "
                             "bodies (or a body and a turntable or floor) in one file; give one body per file")
    if scan.meta.units == "cm" and INCH_SUSPECT_MM[0] <= scan.height_mm <= INCH_SUSPECT_MM[1]:
        chk.end_ratio = round(end_ratio(scan.vertices), 3)
        if looks_like_inches(scan, chk):
            raise ScanError(src, f"read as centimetres this body is {scan.height_mm:.0f} mm tall but has an adult's "
                                 f"proportions (head {100 * chk.end_ratio:.0f}% of its height; a small child's is 15-20%): "
                                 f"the file is probably in inches ({scan.height_mm / 10:.1f} units = "
                                 f"{scan.height_mm / 10 * 25.4:.0f} mm); pass --units in (or --units cm for a child)")
    if len(pieces) > 1 and pieces[0][0] < 0.9:
        chk.warnings.append(f"the mesh has {len(pieces)} separate pieces; the largest holds "
                            f"{100 * pieces[0][0]:.0f}% of the surface")
    return chk
