"""Choose how the shipped ear locator searches photos, on development data, and score it once
on the held-out renders; both are written into the checkpoint (weights unchanged).

    python scripts/tune_ear_locator.py [--checkpoint bodymap/data/ear_locator.pt] \
        --negatives ../shared/external/ham10000/metadata.csv ../shared/external/pad_ufes20/metadata.csv

See bodymap.models.earfind.retune (tried: INFERENCE_CHOICES). Renders are cached in out/models/cache.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bodymap.models.earfind import DEFAULT_PATH, retune  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_PATH))
    ap.add_argument("--negatives", nargs="+", required=True, help="ISIC-style CSVs of photos without ears")
    ap.add_argument("--cache", default=str(ROOT / "out" / "models" / "cache"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    out = retune(a.checkpoint, a.negatives, a.cache, command=" ".join(["python", *sys.argv]))
    print(json.dumps({k: v for k, v in out.items() if k != "held_out"}, indent=1))
    print("held-out:", json.dumps({k: v for k, v in out["held_out"].items() if k != "data"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
