"""Model benchmark: held-out scores with 95% intervals, speed and file sizes of the shipped models.

    python benchmarks/models.py [--only diagnosis synthetic kind earfind ear macro] [--json OUT.json]

A thin script: each section is a ``benchmark()`` of a bodymap.models module (a JSON-ready dict)
and its ``benchmark_text(result)`` (the printed report). Sections:

- diagnosis (bodymap.models.diagnosis): the shipped models B (image + site) and A (image),
  trained on HAM10000: its held-out lesions (balanced accuracy, per class, melanoma AUC and
  sensitivity at specificity 0.80, McNemar B vs A), ISIC 2017 melanoma vs rest (never trained
  on), PAD-UFES-20 clinical photos per class (a domain shift); 300 crops diagnosed with
  Grad-CAM and test-time augmentation;
- synthetic: the synthetic-trained A and B (kept by name) on 2000 held-out synthetic crops;
- kind (bodymap.models.photokind): dermoscopy vs clinical on HAM10000 / ISIC 2017 / PAD-UFES-20
  photos never trained on;
- earfind (bodymap.models.earfind): ears found on held-out synthetic head photos (ear-pixel
  precision and recall) and on real photos without an ear;
- ear (bodymap.models.earseg, the 12 regions on close-ups) and macro (bodymap.models.macro).

The real data sets are read from ../shared/external (absent: those parts are skipped).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bodymap, not an installed one

# section -> (module, benchmark function, text function)
SECTIONS = {"diagnosis": ("bodymap.models.diagnosis", "benchmark", "benchmark_text"),
            "synthetic": ("bodymap.models.diagnosis", "benchmark_synthetic", "benchmark_synthetic_text"),
            "kind": ("bodymap.models.photokind", "benchmark", "benchmark_text"),
            "earfind": ("bodymap.models.earfind", "benchmark", "benchmark_text"),
            "ear": ("bodymap.models.earseg", "benchmark", "benchmark_text"),
            "macro": ("bodymap.models.macro", "benchmark", "benchmark_text")}


def checkpoint_sizes() -> dict:
    """MB of every file shipped in bodymap/data (checkpoints, the YOLO detector, template labels)
    and their sum."""
    data = Path(__file__).resolve().parent.parent / "bodymap" / "data"
    sizes = {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(data.iterdir()) if p.is_file()}
    return {"files_mb": sizes, "total_mb": round(sum(sizes.values()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--json", help="also write all results here")
    ap.add_argument("--record", action="store_true", help="write the photo-kind and ear-locator figures on real "
                                                          "photos and the ear U-Net's held-out close-up scores into "
                                                          "their shipped checkpoints (shown with predictions)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"# models benchmark, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    results = {}
    for name in args.only:
        mod_name, fn, text = SECTIONS[name]
        mod = importlib.import_module(mod_name)
        t0 = time.perf_counter()
        res = getattr(mod, fn)()
        res["benchmark_seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        print(f"\n## {name} ({res['benchmark_seconds']:.0f} s)")
        print(getattr(mod, text)(res))
        sys.stdout.flush()
    sizes = checkpoint_sizes()
    results["checkpoints"] = sizes
    print("\n## shipped checkpoints (all files in bodymap/data; target: together < 60 MB)")
    for k, v in sizes["files_mb"].items():
        print(f"{k:<32}{v:>8.2f} MB")
    print(f"{'total':<32}{sizes['total_mb']:>8.2f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.record:
        record(results)
    return 0


def record(results: dict) -> None:
    """Held-out figures measured here, stored in the shipped checkpoints (their cards show them)."""
    from bodymap.models.checkpoint import record_metrics

    if "kind" in results:
        from bodymap.models.photokind import DEFAULT_PATH

        record_metrics(DEFAULT_PATH, "photokind", {"held_out": {**results["kind"]["overall"],
                                                                "sets": results["kind"]["sets"],
                                                                "synthetic": results["kind"]["synthetic"]}})
        print(f"recorded in {DEFAULT_PATH}")
    if "earfind" in results:
        from bodymap.models.earfind import DEFAULT_PATH

        r = results["earfind"]
        record_metrics(DEFAULT_PATH, "earfind", {"held_out_pipeline": {k: v for k, v in r["synthetic"].items()
                                                                       if k != "data"},
                                                 "real_photos": r["real"]})
        print(f"recorded in {DEFAULT_PATH}")
    if "ear" in results:
        from bodymap.models.earseg import DEFAULT_PATH

        r = results["ear"]
        record_metrics(DEFAULT_PATH, "earseg", {"held_out": {k: r[k] for k in ("images", "classes", "bootstrap", "mean_ear",
                                                                              "mean_all", "data") if k in r},
                                                "held_out_note": f"seed {r['data']['seed']}, scored by benchmarks/models.py "
                                                                 "--record as photo mode predicts (its settings in arch)"})
        print(f"recorded in {DEFAULT_PATH}")


if __name__ == "__main__":
    sys.exit(main())
