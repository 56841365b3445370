"""Detection benchmark: `bodymap analyze` on synthetic scans not used while developing.

    python benchmarks/detection.py [--faces 300000] [--texture 4096] [--lesions 300] [--types 1 2 3 4 5 6]

One new patient per Fitzpatrick type (seeds 9001-9006; the detector was tuned on seeds 101 and
104), 300k faces, 4096 texture, 300 lesions. Each scan is analysed by the CLI in a child
process (wall time and peak memory of that process), the lesion table is scored against the
truth (bodymap.detect.evaluate), and a 1024 x 1024 view of the scan is rendered with all buffers.
"""
import argparse
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

from bodymap.detect.evaluate import score_detections
from bodymap.lesions import LesionSet
from bodymap.synth.patient import SynthOptions, synthesize_patient
from bodymap.synth.truth import read_visit_truth


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--texture", type=int, default=4096)
    p.add_argument("--lesions", type=int, default=300)
    p.add_argument("--types", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--detector", default="classical")
    p.add_argument("--weights", help="YOLO weights (default: the shipped ones)")
    p.add_argument("--record", action="store_true", help="store the pooled figures in the YOLO checkpoint")
    p.add_argument("--conf", type=float, help="YOLO score threshold (default: the checkpoint's)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="patients to use instead of 9000 + type (e.g. the development seeds 101 104)")
    p.add_argument("--sweep", type=float, nargs="+", metavar="T",
                   help="also print pooled figures keeping only lesions with confidence >= each T")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, fitz in enumerate(a.types):
            seed = a.seeds[k] if a.seeds else 9000 + fitz
            opts = SynthOptions(n_lesions=a.lesions, texture_size=a.texture, target_faces=a.faces, visits=1,
                                fitzpatrick=fitz)
            vdir = synthesize_patient(seed, opts, tmp)[0]
            out = Path(tmp) / f"out{seed}"
            t0 = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            cmd = [sys.executable, "-m", "bodymap.cli", "analyze", str(vdir / "scan.obj"), "--out", str(out),
                   "--detector", a.detector, "--quiet"] + (["--weights", a.weights] if a.weights else []) \
                + (["--conf", str(a.conf)] if a.conf is not None else [])
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            peak_gb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024 ** 2
            ls = LesionSet.load_json(out / "lesions.json")
            truth, _ = read_visit_truth(vdir)
            s = score_detections(ls.points, ls.diameters, truth)
            conf = np.array([l.confidence for l in ls.lesions])
            s["sweep"] = {t: score_detections(ls.points[conf >= t], ls.diameters[conf >= t], truth)
                          for t in (a.sweep or [])}
            s.update(fitz=fitz, seed=seed, wall_s=wall, peak_gb=peak_gb, timings=ls.info.get("timings", {}),
                     render_s=render_time(vdir / "scan.obj"))
            rows.append(s)
            rel = np.array(s["diameter_rel_errors"])
            print(f"Fitzpatrick {fitz} (seed {seed}): {s['detections']} detections; lesions >= 2 mm "
                  f"{s['found_big']}/{s['lesions_big']} recall {s['recall_big']:.3f}; < 2 mm "
                  f"{s['found_small']}/{s['lesions_small']} recall {s['recall_small']:.3f}; precision "
                  f"{s['precision']:.3f} ({s['false_positives']} FP, {s['fp_on_confounders']} on freckles); "
                  f"diameter median abs error {np.median(rel) * 100:.1f}%; analyze {wall:.1f} s "
                  f"(anatomy {s['timings'].get('anatomy_s', 0):.1f} s, detection {s['timings'].get('detection_s', 0):.1f} s), "
                  f"peak {peak_gb:.2f} GB; render 1024^2 {s['render_s']:.2f} s", flush=True)
    big = sum(r["lesions_big"] for r in rows)
    small = sum(r["lesions_small"] for r in rows)
    det = sum(r["detections"] for r in rows)
    rel = np.concatenate([r["diameter_rel_errors"] for r in rows])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; detector {a.detector}")
    print(f"pooled over {len(rows)} scans: recall >= 2 mm {sum(r['found_big'] for r in rows) / big:.3f} (target >= 0.95), "
          f"precision {sum(r['true_positives'] for r in rows) / det:.3f} (>= 0.90), recall < 2 mm "
          f"{sum(r['found_small'] for r in rows) / max(small, 1):.3f}")
    print(f"diameter: median absolute error {np.median(rel) * 100:.1f}% (target < 15%), "
          f"95th percentile {np.percentile(rel, 95) * 100:.1f}%")
    print(f"analyze: max {max(r['wall_s'] for r in rows):.1f} s (target < 90 s), peak memory max "
          f"{max(r['peak_gb'] for r in rows):.2f} GB (< 8 GB); render 1024^2 max {max(r['render_s'] for r in rows):.2f} s (< 1 s)")
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
