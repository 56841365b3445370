"""Scoring detected lesions against synthetic truth (or any reference list of 3D lesions).

A hit: a detection within max(3 mm, the true lesion's radius) of a true lesion, one-to-one
(Hungarian assignment on distance). Detections that hit a confounder (a freckle) or nothing are
false positives; those that hit a true lesion below the size of interest are neither counted
for nor against precision's "lesions of interest" but are true lesions all the same.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match(det_points: np.ndarray, true_points: np.ndarray, true_diameters: np.ndarray,
          min_gate_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of detections (k, 3) mm to truth (t, 3) mm with diameters (t,) mm.
    Returns (det_index, true_index) int arrays of the pairs within the gate max(3, radius)."""
    if len(det_points) == 0 or len(true_points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    d = np.linalg.norm(det_points[:, None] - true_points[None], axis=2)
    gate = np.maximum(min_gate_mm, 0.5 * np.asarray(true_diameters))[None]
    cost = np.where(d <= gate, d, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < 1e6
    return r[ok], c[ok]


def score_detections(det_points: np.ndarray, det_diameters: np.ndarray, truth: dict,
                     min_diameter_mm: float = 2.0) -> dict:
    """Detection figures of one scan. det_points (k, 3) mm, det_diameters (k,) mm; truth: a
    truth.json record (lesions and confounders with point_mm, diameter_mm, on_scan).

    Returns counts and rates: recall of lesions >= min_diameter_mm and below it, precision
    (detections on any true lesion / all), false positives on confounders, diameter errors.
    """
    les = [r for r in truth["lesions"] if r["on_scan"]]
    conf = [r for r in truth.get("confounders", []) if r["on_scan"]]
    tp = np.array([r["point_mm"] for r in les], np.float64).reshape(-1, 3)
    td = np.array([r["diameter_mm"] for r in les], np.float64)
    det_points = np.asarray(det_points, np.float64).reshape(-1, 3)
    di, ti = match(det_points, tp, td)
    hit_true = np.zeros(len(les), bool)
    hit_true[ti] = True
    on_lesion = np.zeros(len(det_points), bool)
    on_lesion[di] = True
    # false positives that sit on a freckle
    rest = np.flatnonzero(~on_lesion)
    on_conf = 0
    if len(conf) and len(rest):
        cp = np.array([r["point_mm"] for r in conf], np.float64)
        cd = np.array([r["diameter_mm"] for r in conf], np.float64)
        on_conf = len(match(det_points[rest], cp, cd)[0])
    big = td >= min_diameter_mm
    rel = np.abs(np.asarray(det_diameters)[di] - td[ti]) / td[ti]
    big_pairs = td[ti] >= min_diameter_mm
    n = len(det_points)
    return {
        "detections": n,
        "lesions": len(les), "lesions_big": int(big.sum()), "lesions_small": int((~big).sum()),
        "found_big": int(hit_true[big].sum()), "found_small": int(hit_true[~big].sum()),
        "recall_big": float(hit_true[big].mean()) if big.any() else float("nan"),
        "recall_small": float(hit_true[~big].mean()) if (~big).any() else float("nan"),
        "true_positives": int(on_lesion.sum()), "false_positives": int(n - on_lesion.sum()),
        "fp_on_confounders": int(on_conf),
        "precision": float(on_lesion.mean()) if n else float("nan"),
        "diameter_rel_errors": rel[big_pairs].tolist(),
        "missed_big": [les[i]["id"] for i in np.flatnonzero(big & ~hit_true)],
    }


# Where a point lies on a synthetic body, for the benchmark's false-positive breakdown.
SITE_CLASSES = ("palm", "sole", "back of hand", "back of foot", "lips", "nipple", "nail", "eye", "other skin")


def truth_site_class(scan_faces: np.ndarray, faces: np.ndarray, bary: np.ndarray, truth_arrays: dict) -> list[str]:
    """Where each surface point of a synthetic scan lies, one of SITE_CLASSES, from the truth's
    scan-vertex -> template correspondence (no registration). scan_faces (m, 3) of the scan;
    faces (k,) + bary (k, 3): the points; truth_arrays: read_visit_truth's arrays."""
    from bodymap.anatomy.template import NON_SKIN_KINDS, non_skin_kind
    from bodymap.anatomy.body import PARTS, body_model, landmark_weights, vertex_parts

    faces = np.asarray(faces, np.int64).reshape(-1)
    if len(faces) == 0:
        return []
    bm = body_model()
    corner = scan_faces[faces, np.argmax(np.asarray(bary).reshape(-1, 3), axis=1)]
    tf = truth_arrays["vertex_template_face"][corner]
    tb = truth_arrays["vertex_template_bary"][corner]
    tv = bm.faces[tf, np.argmax(tb, axis=1)]
    kind = non_skin_kind()[tv]
    part = vertex_parts(bm)[tv]
    ps = landmark_weights(bm)["palm_sole"][tv] > 0.5
    out = []
    for k, p, s in zip(kind, part, ps):
        if k:
            out.append(NON_SKIN_KINDS[k])
        elif PARTS[p] == "hand":
            out.append("palm" if s else "back of hand")
        elif PARTS[p] == "foot":
            out.append("sole" if s else "back of foot")
        else:
            out.append("other skin")
    return out


def non_skin_gap(scan, tissue: np.ndarray, points: np.ndarray, kinds=("lips", "nipple", "nail")) -> tuple[np.ndarray, list[str]]:
    """Distance (mm) from each point (k, 3) to the nearest texel of non-skin tissue in a synthetic
    scan's truth tissue map (H, W) uint8 (bodymap.synth.skin.TISSUE), and that tissue's name."""
    from scipy.spatial import cKDTree

    from bodymap.project import texel_atlas
    from bodymap.synth.skin import TISSUE

    at = texel_atlas(scan)
    n = len(at.flat) if at.n_inside is None else at.n_inside
    lab = tissue.reshape(-1)[at.flat[:n]]
    codes = np.array([TISSUE[k] for k in kinds])
    sel = np.isin(lab, codes)
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if not sel.any() or not len(points):
        return np.full(len(points), np.inf), [""] * len(points)
    P = np.einsum("kj,kjd->kd", at.bary[:n][sel].astype(np.float64), scan.vertices[scan.faces[at.face[:n][sel]]])
    d, i = cKDTree(P).query(points)
    names = {v: k for k, v in TISSUE.items()}
    return d, [names[int(x)] for x in lab[sel][i]]
