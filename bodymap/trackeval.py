"""Scoring tracking against truth: synthetic visit pairs (truth.json) or any pair of lesion
lists whose ids say which lesion is which (e.g. FAUST with lesions placed at chosen vertices).

Figures (the issue's): share of persistent lesions matched to the right partner; precision and
recall of "new" and "missing"; geodesic distance on scan 1 between each persistent visit-2
lesion's mapped position and its true visit-1 position (median, share within 10 mm).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodymap.geodesic import SurfaceGeodesics
from bodymap.lesions import Lesion, LesionSet


# Visit pairs in the poses a clinic meets (bodymap.anatomy.poses), for the tracking benchmark and
# the confidence calibration: both visits off the A-pose, arms and trunk moved between them
CLINIC_POSE_PAIRS = [("arms-crossed", "hands-on-hips"), ("bent-forward", "arms-raised"), ("seated", "arms-down"),
                     ("hands-on-head", "a-pose"), ("kneeling", "arms-forward"), ("hands-to-face", "random")]


def truth_lesion_set(vdir: str | Path, min_diameter_mm: float = 0.0) -> LesionSet:
    """The true lesions of a synthetic visit that are on the scan, as a LesionSet with the true
    ids (the same lesion keeps its id across visits); colour unknown."""
    from bodymap.synth.truth import read_visit_truth

    truth, _ = read_visit_truth(vdir)
    out = []
    for r in truth["lesions"]:
        if not r["on_scan"] or r["diameter_mm"] < min_diameter_mm:
            continue
        out.append(Lesion(id=int(r["id"]), point_mm=list(r["point_mm"]), face=int(r["scan_face"]),
                          bary=list(r["scan_bary"]), normal=list(r["normal"]), diameter_mm=float(r["diameter_mm"]),
                          area_mm2=float(r["area_mm2"]), colour_lab=[], skin_lab=[], contrast_de=0.0, confidence=1.0,
                          source="truth"))
    return LesionSet(out, scan=str(Path(vdir) / "scan.obj"), detector="truth")


def _pr(pred: set, true: set) -> tuple[float, float]:
    tp = len(pred & true)
    return (tp / len(pred) if pred else 1.0), (tp / len(true) if true else 1.0)


def score_tracking(tracking, lesions1: LesionSet, lesions2: LesionSet, geo1: SurfaceGeodesics,
                   truth: dict | None = None) -> dict:
    """Figures of a tracking run against the truth: truth {id2: id1} of the persistent lesions,
    or None when the ids are the truth (same id = same lesion). geo1: geodesics of scan 1 (for
    the localisation error). JSON-ready dict; pair_confidence / pair_correct list every
    proposed pair's confidence and whether it was right (for calibration)."""
    ids1 = {l.id for l in lesions1.lesions}
    ids2 = {l.id for l in lesions2.lesions}
    if truth is None:
        truth = {i: i for i in ids1 & ids2}
    persistent = sorted(truth)  # visit-2 ids of the persistent lesions
    partner = tracking.partner()
    correct = sum(partner.get(j) == truth[j] for j in persistent)
    new_p, new_r = _pr({n.id2 for n in tracking.new}, ids2 - set(truth))
    mis_p, mis_r = _pr({n.id1 for n in tracking.missing}, ids1 - set(truth.values()))
    # localisation: mapped visit-2 point vs the same lesion's true point on scan 1
    order2 = {l.id: k for k, l in enumerate(lesions2.lesions)}
    by1 = {l.id: l for l in lesions1.lesions}
    k = np.array([order2[i] for i in persistent], np.int64)
    err = np.full(len(k), np.inf)
    if len(k):
        f1 = np.array([by1[truth[j]].face for j in persistent])
        b1 = np.array([by1[truth[j]].bary for j in persistent], np.float64)
        d = geo1.between(tracking.mapped_face[k], tracking.mapped_bary[k], f1, b1, limit_mm=150.0)
        err = np.diagonal(d).copy()
    fin = err[np.isfinite(err)]
    return {"persistent": len(persistent), "correct": int(correct),
            "match_accuracy": correct / max(len(persistent), 1),
            "new_true": len(ids2 - set(truth)), "new_found": len(tracking.new), "new_precision": new_p,
            "new_recall": new_r, "missing_true": len(ids1 - set(truth.values())),
            "missing_found": len(tracking.missing),
            "pair_confidence": [float(p.confidence) for p in tracking.pairs],
            "pair_correct": [bool(truth.get(p.id2) == p.id1) for p in tracking.pairs],
            "missing_precision": mis_p, "missing_recall": mis_r,
            "localisation_median_mm": float(np.median(err)) if len(err) else float("nan"),
            "localisation_within_10mm": float(np.mean(err <= 10.0)) if len(err) else float("nan"),
            "localisation_p95_mm": float(np.percentile(fin, 95)) if len(fin) else float("nan"),
            "errors_mm": [round(float(e), 2) for e in err]}


def score_end_to_end(tracking, det1: LesionSet, det2: LesionSet, truth1: LesionSet, truth2: LesionSet,
                     min_diameter_mm: float = 2.0) -> dict:
    """End-to-end figure: of the persistent true lesions >= min_diameter_mm (at visit 2), the
    share whose detections on both visits were paired with each other. Detections are linked
    to truth per visit by bodymap.detect.evaluate.match (3D distance <= max(3 mm, radius)).
    Also new / missing precision and recall end to end (every size; see below). det1 / det2:
    the lesion lists the tracking's ids refer to (with any lesions the second look added)."""
    from bodymap.detect.evaluate import match

    def link(det: LesionSet, truth: LesionSet) -> dict:
        di, ti = match(det.points, truth.points, truth.diameters)
        return {truth.lesions[t].id: det.lesions[d].id for d, t in zip(di, ti)}

    l1, l2 = link(det1, truth1), link(det2, truth2)
    ids1 = {l.id for l in truth1.lesions}
    pers = [l.id for l in truth2.lesions if l.id in ids1 and l.diameter_mm >= min_diameter_mm]
    partner = tracking.partner()
    ok = sum(1 for t in pers if t in l1 and t in l2 and partner.get(l2[t]) == l1[t])
    both = sum(1 for t in pers if t in l1 and t in l2)
    # new / missing, end to end: a detection called new is truly new when the true lesion it is
    # (linked as above) is not on scan 1; a true lesion detected on visit 2 and absent from
    # scan 1 should be called new (recall). Detections linked to no true lesion (detector false
    # positives) are counted apart: no tracking can say whether they are new.
    t_of2 = {d: t for t, d in l2.items()}
    t_of1 = {d: t for t, d in l1.items()}
    ids2 = {l.id for l in truth2.lesions}
    new_called = [n.id2 for n in tracking.new]
    mis_called = [m.id1 for m in tracking.missing]
    new_linked = [t_of2[d] for d in new_called if d in t_of2]
    mis_linked = [t_of1[d] for d in mis_called if d in t_of1]
    new_tp = sum(t not in ids1 for t in new_linked)
    mis_tp = sum(t not in ids2 for t in mis_linked)
    new_true = [t for t in l2 if t not in ids1]  # truly new and detected on visit 2
    mis_true = [t for t in l1 if t not in ids2]  # truly gone and detected on visit 1
    return {"persistent_big": len(pers), "detected_both": both, "correct": ok,
            "accuracy": ok / max(len(pers), 1), "accuracy_given_detected": ok / max(both, 1),
            "new_called": len(new_called), "new_linked": len(new_linked), "new_tp": new_tp,
            "new_detected_true": len(new_true), "missing_called": len(mis_called), "missing_linked": len(mis_linked),
            "missing_tp": mis_tp, "missing_detected_true": len(mis_true),
            "new_precision": new_tp / max(len(new_linked), 1), "new_recall": new_tp / max(len(new_true), 1),
            "missing_precision": mis_tp / max(len(mis_linked), 1),
            "missing_recall": mis_tp / max(len(mis_true), 1)}


def shuffled(scan, rng: np.random.Generator):
    """A copy of scan (no texture) with its vertex and face order shuffled, and perm (n,):
    new vertex index of each old vertex. Makes registered meshes (FAUST: same vertex order in
    every pose) look like unrelated scans."""
    from bodymap.scan import Scan, ScanMeta

    n = scan.n_vertices
    order = rng.permutation(n)  # new -> old
    perm = np.empty(n, np.int64)
    perm[order] = np.arange(n)
    faces = perm[scan.faces][rng.permutation(scan.n_faces)]
    meta = ScanMeta(source=f"{scan.meta.source} (shuffled)")
    return Scan(scan.vertices[order], faces, meta=meta, validate=False), perm


def placed_lesions(scan1, scan2, perm1: np.ndarray, perm2: np.ndarray, n: int, rng: np.random.Generator,
                   new_fraction: float = 0.10, removed_fraction: float = 0.10, grown_fraction: float = 0.12,
                   min_spacing_mm: float = 30.0, shuffle_ids: bool = True) -> tuple[LesionSet, LesionSet, dict]:
    """Lesions placed at chosen vertices of two meshes in dense correspondence (the same
    original vertex index is the same body point), seen through shuffled copies (perm1, perm2
    from `shuffled`). n lesions at visit 1, at least min_spacing_mm apart; some removed, some
    new, some grown at visit 2. Diameters 1.5-8 mm (log-uniform). Visit 2's ids are a random
    relabelling when shuffle_ids (nothing but geometry links the two lists). Returns both
    lesion sets and the truth {id2: id1} of the persistent lesions."""
    n_orig = len(perm1)
    v1 = scan1.vertices[perm1]  # original order
    chosen: list[int] = []
    tree_pts: list[np.ndarray] = []
    n_new = int(round(new_fraction * n))
    for v in rng.permutation(n_orig):
        if tree_pts and np.min(np.linalg.norm(np.array(tree_pts) - v1[v], axis=1)) < min_spacing_mm:
            continue
        chosen.append(int(v))
        tree_pts.append(v1[v])
        if len(chosen) == n + n_new:
            break
    chosen = np.array(chosen)
    diam = np.exp(rng.uniform(np.log(1.5), np.log(8.0), len(chosen)))
    ids = np.arange(1, len(chosen) + 1)
    first = np.arange(n)
    removed = rng.choice(first, int(round(removed_fraction * n)), replace=False)
    second = np.concatenate([np.setdiff1d(first, removed), np.arange(n, len(chosen))])
    grown = rng.random(len(chosen)) < grown_fraction
    diam2 = np.where(grown, diam + rng.uniform(1.0, 3.0, len(chosen)), diam)

    def lesion_set(scan, perm, which, d, source):
        # a face that holds the vertex, with barycentric weight 1 on it
        where = scan.vertex_corners
        out = []
        for k in which:
            vi = int(perm[chosen[k]])
            fi, c = divmod(int(where[vi]), 3)
            bary = [0.0, 0.0, 0.0]
            bary[c] = 1.0
            out.append(Lesion(id=int(ids[k]), point_mm=scan.vertices[vi].tolist(), face=int(fi), bary=bary,
                              normal=[0.0, 0.0, 1.0], diameter_mm=float(d[k]),
                              area_mm2=float(np.pi * d[k] ** 2 / 4), colour_lab=[], skin_lab=[], contrast_de=0.0,
                              confidence=1.0, source=source))
        return LesionSet(out, scan=scan.meta.source, detector="placed")

    L1, L2 = lesion_set(scan1, perm1, first, diam, "placed"), lesion_set(scan2, perm2, second, diam2, "placed")
    relabel = {int(i): int(i) for i in ids}
    if shuffle_ids:
        relabel = dict(zip(ids.tolist(), (1000 + rng.permutation(len(ids))).tolist()))
        for l in L2.lesions:
            l.id = relabel[l.id]
        L2.lesions.sort(key=lambda l: l.id)
    ids1, ids2 = {l.id for l in L1.lesions}, {l.id for l in L2.lesions}
    truth = {relabel[i]: i for i in ids.tolist() if i in ids1 and relabel[i] in ids2}
    return L1, L2, truth


def calibration(confidence, correct, bins: int = 10, confident: float = 0.9) -> dict:
    """How well pair confidences predict correctness. confidence (k,) in [0, 1], correct (k,)
    bool. Expected calibration error over equal-width bins (|mean confidence - accuracy|
    weighted by the bin's share), and the accuracy of the pairs at or above `confident`."""
    c = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    if not len(c):
        return {"pairs": 0, "ece": float("nan"), "confident_share": float("nan"), "confident_accuracy": float("nan")}
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
    ece = sum(abs(c[which == b].mean() - ok[which == b].mean()) * np.mean(which == b)
              for b in range(bins) if np.any(which == b))
    hi = c >= confident
    return {"pairs": int(len(c)), "ece": float(ece), "accuracy": float(ok.mean()),
            "confident_share": float(hi.mean()),
            "confident_accuracy": float(ok[hi].mean()) if hi.any() else float("nan")}
