"""A second look before a lesion is called new or missing.

    second_look(tracking, visit1, visit2) -> record of the lesions recovered (added in place)

A lesion the detector missed on one visit comes back from tracking as "new" on the other (or
its partner as "missing"). Before either is said, BodyMap looks where the lesion should be on
the other scan: a visit-2 lesion called new at its mapped point on scan 1 (the tracking's
constellation-refined position, ``Tracking.mapped_face`` / ``mapped_bary``); a visit-1 lesion
called missing at its place on scan 2 (through both registrations' template positions, moved by
the mean offset of nearby pairs, as tracking moves visit-2 lesions). There, on the other scan's
texture, a window of at least ``window_mm`` (several lesion diameters) is searched by the
classical contrast detector at lower thresholds, and the boxes are measured as every detection
is (``LesionMeasurer`` on the scan's ``TextureImage``: face, barycentric, diameter, area,
colour, measures). A candidate is taken when it lies within max(gate_mm, the lesion's diameter)
of the expected point, its size is plausible for the lesion that led to it, it is on skin, and
no lesion or suppressed candidate of that visit is already there (a suppressed candidate is
recorded, with its reason, rather than found again). Taken candidates join that visit's
LesionSet (new ids above ``info['max_id']``, source "second look", a note naming the lesion of
the other visit that led to it); ``bodymap.pipeline.track_visits`` then tracks again, so the
pair is made (or not) by the normal path, reviews respected.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from bodymap.scan import Scan, uv_to_pixel

Progress = Callable[[str, float], None]
SOURCE = "second look"


@dataclasses.dataclass
class SecondLookOptions:
    """window_mm / window_diameters: the searched window's side on the body is the larger of
    window_mm and window_diameters x the lesion's diameter (mm), and at least min_window_px
    texels (the detector needs skin around a lesion to know the skin's colour); gate_mm: a candidate's centre
    lies within max(gate_mm, the lesion's diameter) of the expected point (mm, 3D); size_ratio:
    its diameter within [1 / size_ratio, size_ratio] x the lesion's, or within size_slack_mm of
    it; low / high / k_low / k_high: the contrast detector's thresholds (lower than a whole-scan
    detection's 5 / 8 / 3 / 5: here only one place is searched, so a faint spot is no flood of
    false lesions); neighbour_mm: pairs this close (scan 1) move a missing lesion's template
    mapping by their offset."""

    window_mm: float = 30.0
    window_diameters: float = 5.0
    min_window_px: int = 48
    gate_mm: float = 8.0
    size_ratio: float = 2.0
    size_slack_mm: float = 1.0
    low: float = 3.0
    high: float = 5.0
    k_low: float = 2.0
    k_high: float = 3.0
    neighbour_mm: float = 60.0


def second_look(tracking, visit1, visit2, options: SecondLookOptions | None = None,
                progress: Progress | None = None) -> dict:
    """Look for each lesion tracking called new (visit 2) on scan 1 and for each it called
    missing (visit 1) on scan 2, and add what is found to visit1.lesions / visit2.lesions (in
    place). visit1, visit2: bodymap.track.Visit with their correspondences (tracking set them).
    Returns {"visit1": [...], "visit2": [...], "suppressed": [...]}: per visit the lesions added
    ({"id", "from_id", "distance_mm", "diameter_mm"}: from_id is the lesion of the other visit
    that led to it) and the places where a suppressed candidate already lay."""
    o = options or SecondLookOptions()
    say = progress or (lambda s, f: None)
    out = {"visit1": [], "visit2": [], "suppressed": []}
    by2 = {l.id: l for l in visit2.lesions.lesions}
    by1 = {l.id: l for l in visit1.lesions.lesions}
    new = [n.id2 for n in tracking.new if n.id2 in by2 and not n.reviewed]
    missing = [m.id1 for m in tracking.missing if m.id1 in by1]
    # visit-2 lesions called new: their constellation-refined point on scan 1
    pos2 = {int(i): k for k, i in enumerate(tracking.info.get("ids2", []))}
    look1 = [(by2[j], int(tracking.mapped_face[pos2[j]]), np.asarray(tracking.mapped_bary[pos2[j]], np.float64))
             for j in new if j in pos2]
    say("second look on scan 1", 0.0)
    if look1 and visit1.scan.texture is not None:
        out["visit1"] = _look_on(visit1, look1, o, out["suppressed"], 1)
    say("second look on scan 2", 0.5)
    if missing and visit2.scan.texture is not None:
        face, bary = place_on_scan2(tracking, visit1, visit2, [by1[i] for i in missing], o)
        look2 = [(by1[i], int(f), b) for i, f, b in zip(missing, face, bary) if f >= 0]
        out["visit2"] = _look_on(visit2, look2, o, out["suppressed"], 2)
    say("done", 1.0)
    return out


def place_on_scan2(tracking, visit1, visit2, lesions: list, o: SecondLookOptions) -> tuple[np.ndarray, np.ndarray]:
    """Where visit-1 lesions (Lesion list) lie on scan 2: their closest point on scan 2 laid onto
    scan 1 by the tracking's pair map (Tracking.pair_points; through the template when the
    tracking has none: read from a file), moved by the Gaussian-weighted mean offset (mapped
    point to partner) of the tracking's pairs within neighbour_mm on scan 1, snapped to scan 2.
    Returns face (k,) (-1 where scan 2 has a hole there) and bary (k, 3)."""
    from bodymap.track import _snap, map_between, template_positions

    s1, s2 = visit1.scan, visit2.scan
    if tracking.pair_points is not None and len(tracking.pair_points) == s2.n_vertices:
        tp1, tp2 = s1.vertices, tracking.pair_points  # both scans in scan 1's space
    else:
        tp1, tp2 = template_positions(s1, visit1.correspondence), template_positions(s2, visit2.correspondence)
    f = np.array([l.face for l in lesions], np.int64)
    b = np.array([l.bary for l in lesions], np.float64).reshape(-1, 3)
    mf, mb, gap = map_between(tp1, s1.faces, f, b, tp2, s2) if len(f) else (f, b, np.zeros(0))
    m = s2.points_from_barycentric(mf, mb)
    by1 = {l.id: l for l in visit1.lesions.lesions}
    by2 = {l.id: l for l in visit2.lesions.lesions}
    pairs = [(by1[p.id1], by2[p.id2]) for p in tracking.pairs if p.id1 in by1 and p.id2 in by2]
    if pairs:
        pf = np.array([a.face for a, _ in pairs], np.int64)
        pb = np.array([a.bary for a, _ in pairs], np.float64)
        qf, qb, _ = map_between(tp1, s1.faces, pf, pb, tp2, s2)
        off = np.array([c.point_mm for _, c in pairs], np.float64) - s2.points_from_barycentric(qf, qb)  # (P, 3)
        d = np.linalg.norm(np.array([l.point_mm for l in lesions], np.float64)[:, None]
                           - np.array([a.point_mm for a, _ in pairs], np.float64)[None], axis=2)  # (k, P) on scan 1
        w = np.exp(-0.5 * (d / (0.5 * o.neighbour_mm)) ** 2) * (d <= o.neighbour_mm)
        m = m + (w @ off) / (w.sum(1, keepdims=True) + 1e-9) * (w.sum(1, keepdims=True) > 0)
        mf, mb = _snap(s2, m)
    mf = np.where(gap > 30.0, -1, mf)  # no scan-2 surface near the point (a hole)
    return mf, mb


def _look_on(visit, looks: list, o: SecondLookOptions, suppressed_log: list, k: int) -> list[dict]:
    """Search visit's texture at each (lesion of the other visit, face, bary) of looks; add the
    candidates taken to visit.lesions. Returns the records of the lesions added."""
    from bodymap.detect.classical import ContrastDetector
    from bodymap.lesions import LesionMeasurer, TextureImage
    
    scan, ls = visit.scan, visit.lesions
    det = ContrastDetector(low=o.low, high=o.high, k_low=o.k_low, k_high=o.k_high)
    windows = [_window(scan, face, bary, lesion.diameter_mm, o) for lesion, face, bary in looks]
    img = TextureImage(scan, partial_atlas(scan, [w for w in windows if w is not None]))
    meas = LesionMeasurer(scan)
    taken: list = []
    records = []
    for (lesion, face, bary), win in zip(looks, windows):
        expect = scan.points_from_barycentric([face], bary[None])[0]
        sup = [l for l in ls.suppressed
               if np.linalg.norm(np.asarray(l.point_mm) - expect) <= max(o.gate_mm, lesion.diameter_mm)]
        if sup:  # already there, not counted for a reason: say so, find nothing new
            suppressed_log.append({"visit": k, "id": sup[0].id, "reason": sup[0].suppressed, "from_id": lesion.id})
            continue
        cand = _candidates(scan, img, meas, det, win) if win is not None else []
        best = None
        for c in cand:
            dist = float(np.linalg.norm(np.asarray(c.point_mm) - expect))
            if dist > max(o.gate_mm, lesion.diameter_mm) or not _plausible(c.diameter_mm, lesion.diameter_mm, o):
                continue
            if any(np.linalg.norm(np.asarray(l.point_mm) - np.asarray(c.point_mm)) <= max(3.0, 0.5 * l.diameter_mm)
                   for l in ls.all + taken):
                continue  # that is an existing lesion, found again
            if best is None or dist < best[1]:
                best = (c, dist)
        if best is None:
            continue
        c, dist = best
        c.note = f"second look: where visit-{3 - k} lesion {lesion.id} should be"
        taken.append(c)
        records.append({"id": None, "from_id": int(lesion.id), "distance_mm": round(dist, 2),
                        "diameter_mm": round(float(c.diameter_mm), 2)})
    kept = _locate(visit, taken)
    next_id = max([int(ls.info.get("max_id", 0))] + [l.id for l in ls.all]) + 1
    out = []
    for c, r in zip(taken, records):
        if c not in kept:
            continue
        c.id, r["id"] = next_id, next_id
        next_id += 1
        ls.lesions.append(c)
        out.append(r)
    if out:
        ls.info["max_id"] = next_id - 1
    return out


def _window(scan: Scan, face: int, bary: np.ndarray, diameter_mm: float, o: SecondLookOptions):
    """The texture window (x0, y0, x1, y1) pixels searched around surface point (face, bary
    (3,)): max(window_mm, window_diameters x diameter_mm) on the body, through the face's texel
    size, at least min_window_px; None where the face has no texture."""
    texel = float(scan.texel_density[face])
    if not np.isfinite(texel) or texel <= 0:
        return None
    uv = scan.uv_from_barycentric(np.array([face]), bary[None])
    x, y = uv_to_pixel(uv, scan.texture.shape)[0]
    half = max(0.5 * max(o.window_mm, o.window_diameters * diameter_mm) / texel, 0.5 * o.min_window_px)
    H, W = scan.texture.shape[:2]
    X0, Y0 = int(max(0, np.floor(x - half))), int(max(0, np.floor(y - half)))
    X1, Y1 = int(min(W, np.ceil(x + half) + 1)), int(min(H, np.ceil(y + half) + 1))
    return (X0, Y0, X1, Y1) if X1 - X0 >= 4 and Y1 - Y0 >= 4 else None


def partial_atlas(scan: Scan, windows: list, margin: float = 0.5):
    """The scan's UV atlas (bodymap.project.UVAtlas, as texel_atlas gives) over the given texture
    windows (x0, y0, x1, y1) only, each grown by margin x its size (the measurer's ring of skin
    reaches past a box): only the faces whose UV triangle meets a window are rasterised, so a
    few windows cost milliseconds instead of the whole texture's seconds."""
    from bodymap.project import UVAtlas, rasterize_uv

    h, w = scan.texture.shape[:2]
    px = uv_to_pixel(scan.uv, (h, w))  # (m, 3, 2) x, y
    lo, hi = px.min(1), px.max(1)
    sel = np.zeros(scan.n_faces, bool)
    for x0, y0, x1, y1 in windows:
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        sel |= (hi[:, 0] >= x0 - mx) & (lo[:, 0] <= x1 + mx) & (hi[:, 1] >= y0 - my) & (lo[:, 1] <= y1 + my)
    faces = np.flatnonzero(sel)
    a = rasterize_uv(scan.uv[faces], (h, w))
    return UVAtlas(a.size, scan.uv, a.flat, faces[a.face].astype(np.int32), a.bary, width=a.width)


def _candidates(scan: Scan, img, meas, det, window: tuple) -> list:
    """Lesions the detector finds in a window (x0, y0, x1, y1) of the texture, measured on the
    scan (LesionMeasurer), source 'second look'."""
    X0, Y0, X1, Y1 = window
    boxes = det.detect(scan.texture[Y0:Y1, X0:X1], img.inside[Y0:Y1, X0:X1])
    if not len(boxes):
        return []
    return meas.measure(img, boxes.shifted(X0, Y0), det.name, source=SOURCE)


def _plausible(d: float, ref: float, o: SecondLookOptions) -> bool:
    """Whether diameter d (mm) may be the same lesion as one of diameter ref (mm) on another visit."""
    return abs(d - ref) <= o.size_slack_mm or (ref / o.size_ratio <= d <= ref * o.size_ratio)


def _locate(visit, lesions: list) -> list:
    """Region, body-frame position and tissue for recovered lesions (as
    bodymap.pipeline.locate_lesions gives every detection); those on lips, nipples, nails or eyes
    are left out. Returns the lesions kept."""
    if not lesions or visit.correspondence is None:
        return list(lesions)
    from bodymap.anatomy.labels import transfer_labels
    from bodymap.anatomy.template import load_template
    from bodymap.lesions import LesionSet
    from bodymap.pipeline import locate_lesions

    ids = [l.id for l in lesions]
    tmp = LesionSet(list(lesions))
    locate_lesions(tmp, visit.scan, visit.correspondence, transfer_labels(visit.correspondence, load_template()))
    for l, i in zip(lesions, ids):
        l.id = i
    return [l for l in lesions if l.on_skin]
