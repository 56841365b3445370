"""Registration time: `register(scan)` on each scan given, one after the other, in this process.

    python benchmarks/registration.py [SCAN ...] [--repeat N] [--steps 400]
    OMP_NUM_THREADS=1 python benchmarks/registration.py ...     # as a batch worker runs it

Without scans: FAUST tr_reg_000..003 from ../shared/external (real bodies; 001 and 003 need the
pose search and a second fit of the arms). Prints each registration's wall time (the body model
is loaded and anny's skinning kernel built before the first, so the times are the fit's), its
verdict and what it took (pose search, second fit). Target (issue 14): < 20 s for a 300k-face
scan on 2 idle cores. Record results in docs/benchmarks.md with the machine they ran on.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bodymap, not an installed one

EXTERNAL = Path(__file__).resolve().parents[1].parent / "shared" / "external"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scans", nargs="*", help="mesh files (default: FAUST tr_reg_000..003)")
    p.add_argument("--repeat", type=int, default=1, help="register each scan this many times")
    p.add_argument("--steps", type=int, default=400, help="fitting steps (bodymap analyze: 400)")
    a = p.parse_args()
    paths = [Path(s) for s in a.scans] or [EXTERNAL / "faust_fundcg" / f"tr_reg_{k:03d}.off" for k in range(4)]
    missing = [s for s in paths if not s.exists()]
    if missing:
        raise SystemExit(f"no such scan: {missing[0]} (FAUST lives in ../shared/external; or give scans)")

    from bodymap.anatomy.body import body_model
    from bodymap.anatomy.register import register
    from bodymap.io import load_scan
    from bodymap.memory import reuse_freed_memory

    reuse_freed_memory()
    body_model()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')}", flush=True)
    for path in paths:
        scan = load_scan(path)
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            c = register(scan, steps=a.steps)
            dt = time.perf_counter() - t0
            q, info = c.info["quality"], c.info
            took = [f"pose search ({info['pose_search']['best']}, kept)" if info["pose_search"].get("kept") else
                    "pose search (not kept)" if info["pose_search"] else "",
                    f"second fit ({info['arms_mended'].get('pulled')})" if info["arms_mended"].get("kept") else
                    "second fit tried" if info["arms_mended"] else ""]
            print(f"{path.name}: {dt:.1f} s, {scan.n_faces} faces; fit {q['verdict']} (model within 10 mm "
                  f"{q['model_within_10mm']:.3f}); {', '.join(t for t in took if t) or 'standing start only'}",
                  flush=True)


if __name__ == "__main__":
    main()
