"""Times `bodymap synth` at full-scan settings and prints the figures.

    python benchmarks/synth.py [--faces 300000] [--texture 4096] [--lesions 300] [--visits 2]

Target (issue 2): under 3 minutes on 2 cores for 300k faces, 4096 texture, 300 lesions, 2 visits.
"""
import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--texture", type=int, default=4096)
    p.add_argument("--lesions", type=int, default=300)
    p.add_argument("--visits", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "bodymap.cli", "synth", out, "--seed", str(a.seed), "--faces", str(a.faces),
               "--texture", str(a.texture), "--lesions", str(a.lesions), "--visits", str(a.visits), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"synth: {a.faces} faces, {a.texture}^2 texture, {a.lesions} lesions, {a.visits} visits")
    print(f"wall time: {wall:.1f} s (target < 180 s); peak memory {peak:.0f} MB; output {size:.0f} MB")


if __name__ == "__main__":
    main()
