"""Anatomy benchmark: registration and labels on synthetic scans not used while developing.

    python benchmarks/anatomy.py [--faces 300000] [--quick]

New seeds, unseen phenotypes (a child, a heavy body, an older man, a random adult), unseen random
poses, remeshed with noise and holes; one scan is turned to y-up. Prints per-scan figures and
the pooled result against the targets of issue 3.
"""
import argparse
import os
import platform
import tempfile
import time

import numpy as np

from bodymap.anatomy.evaluate import score
from bodymap.anatomy.labels import label_scan
from bodymap.anatomy.template import load_template
from bodymap.io import load_scan
from bodymap.scan import Scan
from bodymap.synth.body import BodySpec
from bodymap.synth.patient import SynthOptions, synthesize_patient
from bodymap.synth.truth import read_visit_truth

CASES = [  # (seed, body, poses, y-up)
    (7001, BodySpec(sex="female", age_years=8.0, height=0.5, weight=0.5), ("random",), False),
    (7002, BodySpec(sex="male", age_years=45.0, weight=0.95, muscle=0.3), ("arms-down",), False),
    (7003, BodySpec(sex="male", age_years=78.0, height=0.3, weight=0.6), ("random",), True),
    (7004, None, ("arms-raised",), False),
    (7005, BodySpec(sex="female", age_years=29.0, height=0.9, weight=0.2, muscle=0.7), ("random",), False),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--quick", action="store_true", help="three cases only")
    p.add_argument("--seeds", type=int, nargs="+", help="only these cases")
    a = p.parse_args()
    template = load_template()
    rows, times = [], []
    cases = CASES[:3] if a.quick else CASES
    if a.seeds:
        cases = [c for c in CASES if c[0] in a.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        for seed, body, poses, y_up in cases:
            opts = SynthOptions(n_lesions=20, texture_size=512, target_faces=a.faces, visits=1, poses=poses, body=body)
            vdir = synthesize_patient(seed, opts, tmp)[0]
            scan = load_scan(vdir / "scan.obj")
            if y_up:  # as some scanners write it: y up, facing +z
                R = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
                scan = Scan(scan.vertices @ R.T, scan.faces, scan.uv, scan.texture, meta=scan.meta)
            truth, arrays = read_visit_truth(vdir)
            t0 = time.perf_counter()
            corr, labels = label_scan(scan)
            dt = time.perf_counter() - t0
            s = score(corr, labels, arrays["vertex_template_face"], arrays["vertex_template_bary"], template)
            times.append(dt)
            rows.append(s)
            b = truth["body"]
            print(f"seed {seed}: {b['sex']} {b['age_years']:.0f} y, weight {b['weight']:.2f}, pose {truth['pose']}"
                  f"{', y-up' if y_up else ''}; {scan.n_faces} faces; label {dt:.1f} s; "
                  f"L1 {s['level1']:.3f} L2 {s['level2']:.3f} side {s['laterality']:.3f} "
                  f"ear {s['ear']:.3f} ({s['ear_vertices']} v); corr median {s['corr_median_mm']:.1f} mm "
                  f"p95 {s['corr_p95_mm']:.1f} mm; coarse scan-to-body {corr.info['coarse_scan_to_body_mm']} mm"
                  f"{', partial' if corr.info['partial_scan'] else ''}", flush=True)
    w = np.array([r["vertices"] for r in rows], float)
    we = np.array([r["ear_vertices"] for r in rows], float)
    pooled = lambda k, wt: float(np.sum([r[k] * x for r, x in zip(rows, wt)]) / wt.sum())  # noqa: E731
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"pooled over {len(rows)} scans: level 1 {pooled('level1', w):.3f} (target >= 0.97), "
          f"level 2 {pooled('level2', w):.3f} (>= 0.93), ear {pooled('ear', we):.3f} (>= 0.85), "
          f"laterality {pooled('laterality', w):.3f}")
    print(f"correspondence: worst median {max(r['corr_median_mm'] for r in rows):.1f} mm (target < 8), "
          f"worst p95 {max(r['corr_p95_mm'] for r in rows):.1f} mm (< 25)")
    print(f"label time: max {max(times):.1f} s, mean {np.mean(times):.1f} s (target < 60 s at 300k faces)")


if __name__ == "__main__":
    main()
