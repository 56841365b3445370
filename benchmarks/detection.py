"""Detection benchmark: lesions found on synthetic scans not used while developing.

    python benchmarks/detection.py [--faces 300000] [--texture 4096] [--lesions 300] [--types 1 2 3 4 5 6]
                                   [--sexes female male] [--fast] [--detector classical|yolo]

One new patient per Fitzpatrick type and sex (seeds 9600 + type for women, 9610 + type for men:
held out; the detector was developed on seeds 101, 104, 1601-1606 and the sample SYN00102, and
seeds 9001-9006 of the earlier table were looked at before this code changed, so they are
development data now), 300k faces, 4096 texture, 300 lesions of which 12 are placed beside lips,
nipples and nails (--beside; the generator alone keeps lesions off them by a margin). Each scan is analysed by the CLI
in a child process (wall time and peak memory of that process; with --fast, detection runs in
this process and the anatomy comes from the synthetic truth's template correspondence instead of
registration), the lesion table is scored against the truth (bodymap.detect.evaluate), and a
1024 x 1024 view of the scan is rendered with all buffers.

Besides recall and precision, per patient:
- false positives by site (palm, sole, back of hand, back of foot, lips, nipple, nail, eye,
  other skin), where each false detection lies on the body (from the truth correspondence);
- lesions next to non-skin structures: true lesions whose border lies within --near mm of lips,
  nipples or nails (truth tissue map), found (a counted lesion), suppressed (covered by a
  suppressed candidate: merged into an areola or lip patch, or dropped as off skin) or missed;
- suppressed candidates by reason.
"""
import argparse
import collections
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bodymap, not an installed one

from bodymap.detect.evaluate import SITE_CLASSES, match, non_skin_gap, score_detections, truth_site_class  # noqa: E402
from bodymap.lesions import LesionSet  # noqa: E402
from bodymap.synth.patient import SynthOptions  # noqa: E402
from bodymap.synth.truth import read_visit_truth  # noqa: E402


def beside_structures(n: int, vertices: np.ndarray, faces: np.ndarray, face_allowed: np.ndarray,
                      rng: np.random.Generator, first_id: int, avoid: list) -> list:
    """n more lesions (the generator's types and frequencies, at most 8 mm) placed beside lips,
    nipples and nails in turn: the border 1-5 mm from the structure's painted edge, no face
    of a structure under the lesion's centre, clear of every other lesion. vertices (v, 3) mm
    and faces (m, 3) of the visit-1 body (template topology)."""
    from scipy.spatial import cKDTree

    from bodymap.anatomy.template import NON_SKIN_KINDS, non_skin_kind
    from bodymap.synth.lesions import LESION_TYPES, LesionSpec

    kind = non_skin_kind()
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    bad = cKDTree(tri[~face_allowed].mean(1))
    names = list(LESION_TYPES)
    freq = np.array([LESION_TYPES[t]["freq"] for t in names])
    placed = [(np.asarray(p), r) for p, r in avoid]
    out = []
    edges = {}
    for name in ("nipple", "lips", "nail"):
        edges[name] = cKDTree(_border_points(vertices, faces, kind == NON_SKIN_KINDS.index(name)))
    for k in range(n):
        target = ("nipple", "lips", "nail")[k % 3]
        tv = edges[target]
        near_f = np.flatnonzero(face_allowed & (tv.query(tri.mean(1))[0] < 20.0))
        for _ in range(200):
            t = names[int(rng.choice(len(names), p=freq / freq.sum()))]
            lo, hi = LESION_TYPES[t]["d"]
            d = float(np.exp(rng.uniform(np.log(lo), np.log(min(hi, 8.0)))))
            f = int(rng.choice(near_f, p=area[near_f] / area[near_f].sum()))
            r1, r2 = rng.random(2)
            bary = np.array([1 - np.sqrt(r1), np.sqrt(r1) * (1 - r2), np.sqrt(r1) * r2])
            p = bary @ tri[f]
            gap = tv.query(p)[0] - d / 2
            if not 1.0 <= gap <= 5.0 or bad.query(p)[0] < d / 2 + 0.5:
                continue
            if any(np.linalg.norm(q - p) < 1.45 * (d / 2 + rq) + 2.0 for q, rq in placed):
                continue
            placed.append((p, d / 2))
            out.append(LesionSpec(id=first_id + len(out), type=t, base_face=f, base_bary=tuple(float(x) for x in bary),
                                  diameter_mm=round(d, 3), aspect=round(float(rng.uniform(0.7, 1.0)), 3),
                                  angle=round(float(rng.uniform(0, np.pi)), 4),
                                  darkness=round(float(rng.uniform(0.8, 1.25)), 3), seed=int(rng.integers(0, 2**31 - 1))))
            break
    return out


def _border_points(vertices: np.ndarray, faces: np.ndarray, inside: np.ndarray, t: float = 0.55) -> np.ndarray:
    """(k, 3) points along the edge of a structure given by its vertices inside (v,) bool: the
    painter blends its colour by the barycentric interpolation of inside, and the tissue ends
    where that falls to about a half, t of the way out along each edge that leaves it."""
    f = faces[inside[faces].any(1) & ~inside[faces].all(1)]
    pts = []
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        va, vb = f[:, a], f[:, b]
        leave = inside[va] != inside[vb]
        i, o = np.where(inside[va], va, vb)[leave], np.where(inside[va], vb, va)[leave]
        pts.append(vertices[i] + t * (vertices[o] - vertices[i]))
    p = np.concatenate(pts) if pts else np.zeros((0, 3))
    # and between the two crossings of each face, so the edge is sampled every millimetre or so
    tree_pts = [p]
    for fa in f:
        cross = []
        for a, b in ((0, 1), (1, 2), (2, 0)):
            if inside[fa[a]] != inside[fa[b]]:
                i, o = (fa[a], fa[b]) if inside[fa[a]] else (fa[b], fa[a])
                cross.append(vertices[i] + t * (vertices[o] - vertices[i]))
        if len(cross) == 2:
            tree_pts.append(cross[0] + np.linspace(0, 1, 12)[:, None] * (cross[1] - cross[0]))
    return np.concatenate(tree_pts)


def synthesize_with_lesions_beside(seed: int, opts: SynthOptions, out: Path, n_beside: int) -> Path:
    """synthesize_patient, with n_beside of its lesions placed beside lips, nipples and nails
    (the generator itself keeps lesions off them by a margin). Returns the visit-1 folder."""
    import bodymap.synth.patient as patient

    original = patient.sample_lesions

    def sample(n, vertices, faces, fparts, face_allowed, rng, first_id=1, types=None, avoid=None):
        if types is not None or first_id != 1 or n_beside <= 0:  # freckles, later visits: as they were
            return original(n, vertices, faces, fparts, face_allowed, rng, first_id=first_id,
                            **({"types": types} if types is not None else {}), avoid=avoid)
        extra = beside_structures(n_beside, vertices, faces, face_allowed, rng, first_id, avoid or [])
        rest = original(n - len(extra), vertices, faces, fparts, face_allowed, rng, first_id=first_id + len(extra),
                        avoid=[(patient.LesionPainter.centre_of(l, vertices, faces), l.diameter_mm / 2) for l in extra])
        return extra + rest

    patient.sample_lesions = sample
    try:
        return patient.synthesize_patient(seed, opts, out)[0]
    finally:
        patient.sample_lesions = original


def render_time(scan_path: Path) -> float:
    """Seconds for one 1024 x 1024 view with all buffers (BVH built beforehand, as in the app)."""
    from bodymap.io import load_scan
    from renderers import RaycastRenderer
    from renderers.camera import body_view

    scan = load_scan(scan_path)
    r = RaycastRenderer(scan)
    cam = body_view(scan.bounds, 30.0, 10.0, 1024, 1024)
    r.render(cam)  # warm-up
    t0 = time.perf_counter()
    r.render(cam)
    return time.perf_counter() - t0


def detector(a: argparse.Namespace):
    """The detector the options name (YOLO with --weights / --conf when given)."""
    from bodymap.detect import get_detector

    kw = {}
    if a.detector == "yolo":
        kw = {k: v for k, v in (("weights", a.weights), ("conf", a.conf)) if v is not None}
    return get_detector(a.detector, **kw)


def analyse_fast(vdir: Path, out: Path, detector) -> None:
    """Detection + locate_lesions in this process, the anatomy from the truth correspondence
    (what registration would give, without its minutes); writes out/lesions.json."""
    from bodymap.anatomy.labels import transfer_labels
    from bodymap.anatomy.register import Correspondence
    from bodymap.anatomy.template import load_template
    from bodymap.io import load_scan
    from bodymap.pipeline import detect_lesions, locate_lesions

    scan = load_scan(vdir / "scan.obj")
    _, arr = read_visit_truth(vdir)
    n = scan.n_vertices
    corr = Correspondence(arr["vertex_template_face"].astype(np.int64), arr["vertex_template_bary"],
                          np.zeros(n, np.float32), np.zeros((0, 3)), {"from": "synthetic truth"})
    t0 = time.perf_counter()
    ls = detect_lesions(scan, detector)
    ls.info["timings"] = {"detection_s": round(time.perf_counter() - t0, 2)}
    locate_lesions(ls, scan, corr, transfer_labels(corr, load_template()))
    out.mkdir(parents=True, exist_ok=True)
    ls.save_json(out / "lesions.json")


def near_non_skin(scan_path: Path, truth: dict, arrays: dict, ls: LesionSet, near_mm: float) -> dict:
    """True lesions whose border lies within near_mm of lips, nipples or nails: how many were
    found (matched to a counted lesion), suppressed (inside or at a suppressed candidate) or
    missed, with the ids and tissue of those not found."""
    from bodymap.io import load_scan

    les = [r for r in truth["lesions"] if r["on_scan"]]
    tp = np.array([r["point_mm"] for r in les], np.float64).reshape(-1, 3)
    td = np.array([r["diameter_mm"] for r in les], np.float64)
    gap, kind = non_skin_gap(load_scan(scan_path), arrays["tissue"], tp)
    near = np.flatnonzero(gap - td / 2 <= near_mm)
    _, ti = match(ls.points, tp, td)
    found = set(ti.tolist())
    sup = getattr(ls, "suppressed", [])
    sp = np.array([l.point_mm for l in sup], np.float64).reshape(-1, 3)
    sr = np.array([max(3.0, l.diameter_mm / 2) for l in sup])
    out = {"near": int(len(near)), "found": 0, "suppressed": 0, "missed": 0, "not_found": []}
    for i in near:
        if i in found:
            out["found"] += 1
            continue
        covered = len(sp) and (np.linalg.norm(sp - tp[i], axis=1) <= sr).any()
        out["suppressed" if covered else "missed"] += 1
        out["not_found"].append({"id": les[i]["id"], "diameter_mm": les[i]["diameter_mm"], "next_to": kind[i],
                                 "gap_mm": round(float(gap[i] - td[i] / 2), 1),
                                 "status": "suppressed" if covered else "missed"})
    return out


def lesion_status(lesion_id: int, truth: dict, ls: LesionSet) -> str:
    """Whether truth lesion lesion_id is found (the counted lesion matched to it), suppressed (a
    suppressed candidate covers it, with the reason) or missed."""
    les = [r for r in truth["lesions"] if r["on_scan"]]
    k = next((j for j, r in enumerate(les) if r["id"] == lesion_id), None)
    if k is None:
        return "not on this scan"
    r = les[k]
    di, ti = match(ls.points, np.array([x["point_mm"] for x in les]), np.array([x["diameter_mm"] for x in les]))
    what = f"{r['type']} {r['diameter_mm']:.1f} mm: "
    if k in ti:
        l = ls.lesions[int(di[list(ti).index(k)])]
        return what + f"found as lesion {l.id}, {l.diameter_mm:.1f} mm, {(l.region or {}).get('description', '')}"
    for l in getattr(ls, "suppressed", []):
        if np.linalg.norm(np.subtract(l.point_mm, r["point_mm"])) <= max(3.0, l.diameter_mm / 2):
            return what + f"suppressed inside candidate {l.id} ({l.suppressed}, {l.diameter_mm:.1f} mm)"
    return what + "missed"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--texture", type=int, default=4096)
    p.add_argument("--lesions", type=int, default=300)
    p.add_argument("--types", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--sexes", nargs="+", default=["female", "male"], choices=["female", "male"])
    p.add_argument("--detector", default="classical")
    p.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
    p.add_argument("--record", action="store_true", help="store the pooled figures in the YOLO checkpoint")
    p.add_argument("--conf", type=float, help="YOLO score threshold (default: the checkpoint's)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="patients to use instead of the held-out ones, one per type and sex in order "
                        "(e.g. the development seeds 1601 1602 ...)")
    p.add_argument("--fast", action="store_true",
                   help="no registration: the anatomy from the truth correspondence, detection in this process")
    p.add_argument("--near", type=float, default=5.0, help="mm from lips, nipples, nails that count as next to them")
    p.add_argument("--beside", type=int, default=12,
                   help="lesions of each patient placed beside lips, nipples and nails (the rest as the generator places them)")
    p.add_argument("--keep", help="keep the patients and analyses in this folder (reused when there)")
    p.add_argument("--visits", nargs="+", metavar="DIR",
                   help="score these synthetic visit folders (scan.obj + truth) instead of new patients, "
                        "e.g. sample_meshes/SYN00102/visit1 sample_meshes/SYN00102/visit2")
    p.add_argument("--ids", type=int, nargs="+", default=[],
                   help="also say, for these truth lesion ids, whether each was found, suppressed or missed")
    p.add_argument("--sweep", type=float, nargs="+", metavar="T",
                   help="also print pooled figures keeping only lesions with confidence >= each T")
    a = p.parse_args()
    patients = [(f, s) for s in a.sexes for f in a.types] if not a.visits else [(None, None)] * len(a.visits)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.keep) if a.keep else Path(tmp)
        for k, (fitz, sex) in enumerate(patients):
            seed = a.seeds[k] if a.seeds else 9600 + (10 if sex == "male" else 0) + (fitz or 0)
            vdir = work / f"SYN{seed:05d}" / "visit1"
            if a.visits:
                vdir = Path(a.visits[k])
                t = read_visit_truth(vdir)[0]
                fitz, sex, seed = t["skin"]["fitzpatrick"], t["body"]["sex"], t["seed"]
            elif not (vdir / "truth.json").exists():
                from bodymap.anatomy.body import BodySpec

                body = dataclasses.replace(BodySpec.random(np.random.default_rng(seed)), sex=sex)
                opts = SynthOptions(n_lesions=a.lesions, texture_size=a.texture, target_faces=a.faces, visits=1,
                                    fitzpatrick=fitz, body=body)
                vdir = synthesize_with_lesions_beside(seed, opts, work, a.beside)
            out = work / f"out{seed}_{vdir.name}_{a.detector}{'_fast' if a.fast else ''}"
            t0 = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if a.fast:
                analyse_fast(vdir, out, detector(a))
            else:
                cmd = [sys.executable, "-m", "bodymap.cli", "analyze", str(vdir / "scan.obj"), "--out", str(out),
                       "--detector", a.detector, "--quiet"] + (["--weights", a.weights] if a.weights else []) \
                    + (["--conf", str(a.conf)] if a.conf is not None else [])
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            peak_gb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024 ** 2
            ls = LesionSet.load_json(out / "lesions.json")
            truth, arrays = read_visit_truth(vdir)
            s = score_detections(ls.points, ls.diameters, truth)
            conf = np.array([l.confidence for l in ls.lesions])
            s["sweep"] = {t: score_detections(ls.points[conf >= t], ls.diameters[conf >= t], truth)
                          for t in (a.sweep or [])}
            # where the false positives lie
            les = [r for r in truth["lesions"] if r["on_scan"]]
            di, _ = match(ls.points, np.array([r["point_mm"] for r in les]).reshape(-1, 3),
                          np.array([r["diameter_mm"] for r in les]))
            fp = [ls.lesions[i] for i in np.setdiff1d(np.arange(len(ls)), di)]
            from bodymap.io import load_scan

            scan_faces = load_scan(vdir / "scan.obj").faces
            s["fp_sites"] = dict(collections.Counter(truth_site_class(scan_faces, [l.face for l in fp],
                                                                      [l.bary for l in fp], arrays)))
            s["near_non_skin"] = near_non_skin(vdir / "scan.obj", truth, arrays, ls, a.near)
            s["suppressed"] = dict(collections.Counter(l.suppressed for l in getattr(ls, "suppressed", [])))
            for i in a.ids:
                print(f"  {vdir}: truth lesion {i}: {lesion_status(i, truth, ls)}")
            s.update(fitz=fitz, sex=sex, seed=seed, wall_s=wall, peak_gb=peak_gb, timings=ls.info.get("timings", {}),
                     render_s=0.0 if a.fast else render_time(vdir / "scan.obj"))
            rows.append(s)
            rel = np.array(s["diameter_rel_errors"])
            nn = s["near_non_skin"]
            print(f"Fitzpatrick {fitz} {sex} (seed {seed}): {s['detections']} detections; lesions >= 2 mm "
                  f"{s['found_big']}/{s['lesions_big']} recall {s['recall_big']:.3f}; < 2 mm "
                  f"{s['found_small']}/{s['lesions_small']} recall {s['recall_small']:.3f}; precision "
                  f"{s['precision']:.3f} ({s['false_positives']} FP, {s['fp_on_confounders']} on freckles); "
                  f"diameter median abs error {np.median(rel) * 100:.1f}%; next to lips/nipples/nails "
                  f"{nn['near']}: {nn['found']} found, {nn['suppressed']} suppressed, {nn['missed']} missed; "
                  f"FP by site {s['fp_sites']}; suppressed {s['suppressed']}; analyze {wall:.1f} s "
                  f"(anatomy {s['timings'].get('anatomy_s', 0):.1f} s, detection {s['timings'].get('detection_s', 0):.1f} s), "
                  f"peak {peak_gb:.2f} GB; render 1024^2 {s['render_s']:.2f} s", flush=True)
    big = sum(r["lesions_big"] for r in rows)
    small = sum(r["lesions_small"] for r in rows)
    det = sum(r["detections"] for r in rows)
    rel = np.concatenate([r["diameter_rel_errors"] for r in rows])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; detector {a.detector}{'; fast (truth anatomy)' if a.fast else ''}")
    print(f"pooled over {len(rows)} scans: recall >= 2 mm {sum(r['found_big'] for r in rows) / big:.3f} (target >= 0.95), "
          f"precision {sum(r['true_positives'] for r in rows) / det:.3f} (>= 0.90), recall < 2 mm "
          f"{sum(r['found_small'] for r in rows) / max(small, 1):.3f}")
    print(f"diameter: median absolute error {np.median(rel) * 100:.1f}% (target < 15%), "
          f"95th percentile {np.percentile(rel, 95) * 100:.1f}%")
    if not a.fast:
        print(f"analyze: max {max(r['wall_s'] for r in rows):.1f} s (target < 90 s), peak memory max "
              f"{max(r['peak_gb'] for r in rows):.2f} GB (< 8 GB); render 1024^2 max {max(r['render_s'] for r in rows):.2f} s (< 1 s)")
    nn = {k: sum(r["near_non_skin"][k] for r in rows) for k in ("near", "found", "suppressed", "missed")}
    print(f"lesions within {a.near:g} mm of lips, nipples or nails: {nn['near']}; found {nn['found']}, "
          f"suppressed (merged or dropped as off skin) {nn['suppressed']}, missed {nn['missed']}")
    print("false positives per patient by site (palm, sole, back of hand, back of foot):")
    for r in rows:
        print(f"  Fitzpatrick {r['fitz']} {r['sex']}: " + ", ".join(f"{c} {r['fp_sites'].get(c, 0)}" for c in SITE_CLASSES[:4])
              + f"; other {sum(v for c, v in r['fp_sites'].items() if c not in SITE_CLASSES[:4])}")
    for t in a.sweep or []:
        sw = [r["sweep"][t] for r in rows]
        print(f"  confidence >= {t:.2f}: recall >= 2 mm {sum(x['found_big'] for x in sw) / big:.3f}, precision "
              f"{sum(x['true_positives'] for x in sw) / max(sum(x['detections'] for x in sw), 1):.3f}, "
              f"recall < 2 mm {sum(x['found_small'] for x in sw) / max(small, 1):.3f}")
    if a.record and a.detector == "yolo":
        from bodymap.detect.yolo import SHIPPED, record_scores

        record_scores(a.weights or SHIPPED, "benchmarks/detection.py", {
            "date": time.strftime("%Y-%m-%d"), "seeds": [r["seed"] for r in rows], "faces": a.faces,
            "texture": a.texture, "recall_ge_2mm": round(sum(r["found_big"] for r in rows) / big, 4),
            "precision": round(sum(r["true_positives"] for r in rows) / det, 4),
            "recall_lt_2mm": round(sum(r["found_small"] for r in rows) / max(small, 1), 4),
            "diameter_median_abs_error": round(float(np.median(rel)), 4)})
    print(json.dumps([{k: v for k, v in r.items() if k not in ("diameter_rel_errors", "sweep")} for r in rows]))


if __name__ == "__main__":
    main()
