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


def score_tracking(tracking, lesions1: LesionSet, lesions2: LesionSet, geo1: SurfaceGeodesics) -> dict:
    """Figures of a tracking run whose lesion ids are the truth (same id = same lesion).
    geo1: geodesics of scan 1 (for the localisation error). JSON-ready dict."""
    ids1 = {l.id for l in lesions1.lesions}
    ids2 = {l.id for l in lesions2.lesions}
    persistent = sorted(ids1 & ids2)
    partner = tracking.partner()
    correct = sum(partner.get(i) == i for i in persistent)
    new_p, new_r = _pr({n["id2"] for n in tracking.new}, ids2 - ids1)
    mis_p, mis_r = _pr({n["id1"] for n in tracking.missing}, ids1 - ids2)
    # localisation: mapped visit-2 point vs the same lesion's true point on scan 1
    order2 = {l.id: k for k, l in enumerate(lesions2.lesions)}
    by1 = {l.id: l for l in lesions1.lesions}
    k = np.array([order2[i] for i in persistent], np.int64)
    err = np.full(len(k), np.inf)
    if len(k):
        f1 = np.array([by1[i].face for i in persistent])
        b1 = np.array([by1[i].bary for i in persistent], np.float64)
        d = geo1.between(tracking.mapped_face[k], tracking.mapped_bary[k], f1, b1, limit_mm=150.0)
        err = np.diagonal(d).copy()
    fin = err[np.isfinite(err)]
    return {"persistent": len(persistent), "correct": int(correct),
            "match_accuracy": correct / max(len(persistent), 1),
            "new_true": len(ids2 - ids1), "new_found": len(tracking.new), "new_precision": new_p, "new_recall": new_r,
            "missing_true": len(ids1 - ids2), "missing_found": len(tracking.missing),
            "missing_precision": mis_p, "missing_recall": mis_r,
            "localisation_median_mm": float(np.median(err)) if len(err) else float("nan"),
            "localisation_within_10mm": float(np.mean(err <= 10.0)) if len(err) else float("nan"),
            "localisation_p95_mm": float(np.percentile(fin, 95)) if len(fin) else float("nan"),
            "errors_mm": [round(float(e), 2) for e in err]}


def score_end_to_end(tracking, det1: LesionSet, det2: LesionSet, truth1: LesionSet, truth2: LesionSet,
                     min_diameter_mm: float = 2.0) -> dict:
    """End-to-end figure: of the persistent true lesions >= min_diameter_mm (at visit 2), the
    share whose detections on both visits were paired with each other. Detections are linked
    to truth per visit by bodymap.detect.evaluate.match (3D distance <= max(3 mm, radius))."""
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
    return {"persistent_big": len(pers), "detected_both": both, "correct": ok,
            "accuracy": ok / max(len(pers), 1), "accuracy_given_detected": ok / max(both, 1)}
