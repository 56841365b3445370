"""Robustness figures (issue 16): the plausibility check on bodies and non-bodies, and the
hostile-input corpus as a table.

    python benchmarks/robustness.py bodycheck   # end_ratio and check time per body (samples, FAUST,
                                                #   SMPL, anny ages 1-70), the inches threshold
    python benchmarks/robustness.py hostile     # runs tests/test_hostile.py, prints the markdown table
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bodycheck() -> None:
    import numpy as np

    from bodymap.bodycheck import ADULT_END_RATIO, check_body, end_ratio
    from bodymap.io import load_scan

    ext = ROOT.parent / "shared" / "external"
    files = sorted((ROOT / "sample_meshes").glob("*/*/scan.obj")) + sorted((ext / "faust_fundcg").glob("*.off")) \
        + sorted((ext / "human_ccby_odedstein").glob("*.obj"))
    print("| body | faces | height mm | area / extent^2 | end_ratio | check s |\n|---|---|---|---|---|---|")
    for f in files:
        s = load_scan(f)
        t0 = time.perf_counter()
        c = check_body(s)
        dt = time.perf_counter() - t0
        print(f"| {'/'.join(f.parts[-3:])} | {s.n_faces} | {s.height_mm:.0f} | {c.area_ratio:.2f} | "
              f"{end_ratio(s.vertices):.3f} | {dt:.2f} |")
    from bodymap.anatomy.body import BodySpec, body_model

    bm = body_model()
    print("\n| anny body | height mm | end_ratio |\n|---|---|---|")
    for age in (1, 2, 3, 5, 12, 35, 70):
        for sex in ("female", "male"):
            v = bm.vertices(BodySpec(sex=sex, age_years=age))
            print(f"| {sex}, {age} y | {np.ptp(v[:, 2]):.0f} | {end_ratio(v):.3f} |")
    print(f"\nadult head when end_ratio <= {ADULT_END_RATIO} (checked for bodies read as cm under 1 m)\n\n")


def hostile() -> None:
    with tempfile.TemporaryDirectory() as d:
        table = Path(d) / "table.jsonl"
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" /
                            "test_hostile.py")], cwd=ROOT, env={**os.environ, "BODYMAP_HOSTILE_TABLE": str(table)},
                           capture_output=True, text=True)
        print(r.stdout.strip().splitlines()[-1])
        rows = [json.loads(line) for line in table.read_text().splitlines()] if table.exists() else []
    print("\n| case | outcome | s | message |\n|---|---|---|---|")
    for x in rows:
        msg = x["message"].replace("|", "\\|")
        print(f"| {x['case']} | {x['outcome']} | {x['seconds']:.2f} | {msg[:160]} |")
    n_err = sum(x["outcome"].startswith("error") for x in rows)
    print(f"\n{len(rows)} cases: {n_err} clear one-line errors, {len(rows) - n_err} handled; "
          f"slowest {max((x['seconds'] for x in rows), default=0):.1f} s")


if __name__ == "__main__":
    {"bodycheck": bodycheck, "hostile": hostile}[sys.argv[1] if len(sys.argv) > 1 else "hostile"]()
