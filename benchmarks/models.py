"""Model benchmark: held-out scores with 95% intervals, speed and file sizes of the shipped models.

    python benchmarks/models.py [--only diagnosis ear macro] [--json OUT.json]

A thin script: each section is ``bodymap.models.<module>.benchmark()`` (a JSON-ready dict) and
``benchmark_text(result)`` (the printed report). Sections:

- diagnosis (bodymap.models.diagnosis): models A (image) and B (image + site) on 2000 held-out
  synthetic crops (seed 9600; training used seed 600), per-class precision / sensitivity with
  95% bootstrap intervals, confusion matrices, McNemar A vs B; 300 crops diagnosed with Grad-CAM;
- ear (bodymap.models.earseg) and macro (bodymap.models.macro): see those modules.

Results are kept in docs/benchmarks.md.
"""
import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

SECTIONS = {"diagnosis": "bodymap.models.diagnosis", "ear": "bodymap.models.earseg", "macro": "bodymap.models.macro"}


def checkpoint_sizes() -> dict:
    """MB of each shipped BodyMap checkpoint in bodymap/data (not the YOLO detector) and their sum."""
    from bodymap.models.checkpoint import CheckpointError, load_checkpoint

    data = Path(__file__).resolve().parent.parent / "bodymap" / "data"
    sizes = {}
    for p in sorted(data.glob("*.pt")):
        try:
            load_checkpoint(p, "?")
        except CheckpointError as e:
            if "not a BodyMap checkpoint" in str(e):
                continue
        sizes[p.name] = round(p.stat().st_size / 1e6, 2)
    return {"files_mb": sizes, "total_mb": round(sum(sizes.values()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--json", help="also write all results here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"# models benchmark, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    results = {}
    for name in args.only:
        mod = importlib.import_module(SECTIONS[name])
        if not hasattr(mod, "benchmark"):
            print(f"\n## {name}: no benchmark() in {SECTIONS[name]} yet")
            continue
        t0 = time.perf_counter()
        res = mod.benchmark()
        res["benchmark_seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        print(f"\n## {name}")
        print(mod.benchmark_text(res) if hasattr(mod, "benchmark_text") else json.dumps(res, indent=1))
        sys.stdout.flush()
    sizes = checkpoint_sizes()
    results["checkpoints"] = sizes
    print("\n## shipped checkpoints")
    for k, v in sizes["files_mb"].items():
        print(f"{k:<32}{v:>8.2f} MB")
    print(f"{'total':<32}{sizes['total_mb']:>8.2f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
