"""Print the generated part of a training record (docs/training/<model>.md) from a checkpoint.

    python scripts/training_doc.py ear|macro [CHECKPOINT] > part.md

Everything printed comes from the checkpoint itself (command, recipe, architecture, training
data and its hash, held-out scores), so the doc cannot drift from the shipped weights; the
narrative sections (rounds, shortfalls) are written by hand below it.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TITLES = {"ear": "Ear segmentation U-Net (smp Unet, ResNet-18 encoder, random init)",
          "macro": "Macro-anatomy classifier (timm EfficientNet-B2, random init)"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=["ear", "macro"])
    p.add_argument("checkpoint", nargs="?")
    a = p.parse_args()
    from bodymap.models.checkpoint import load_checkpoint

    if a.model == "ear":
        from bodymap.models import earseg as mod
        task, table, line = "earseg", mod.score_table, mod.summary_line
    else:
        from bodymap.models import macro as mod
        task, table, line = "macro", mod.score_table, mod.summary_line
    path = Path(a.checkpoint) if a.checkpoint else mod.DEFAULT_PATH
    ck = load_checkpoint(path, task)
    tr, data, ho = ck["training"], ck["data"], ck["metrics"].get("held_out")
    rel = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    print(f"# {TITLES[a.model]}\n")
    print(f"Shipped as `{rel}` ({path.stat().st_size / 1e6:.1f} MB, fp16 weights); the last training round ran\n")
    print(f"    {tr['command']}\n")
    print("(earlier rounds, if any, under `resumed_from`), then copied to bodymap/data/.\n")
    print("## Recipe\n\n```json\n" + json.dumps(tr, indent=1) + "\n```\n")
    print(f"Architecture: `{json.dumps(ck['arch'])}`; input {ck['input_size']} px; normalisation "
          f"`{json.dumps(ck['normalisation'])}`.\n")
    print("## Training data\n\n```json\n" + json.dumps(data, indent=1) + "\n```\n")
    if ho:
        d = ho["data"]
        print("## Held-out scores (stored in the checkpoint)\n")
        print(f"Data: {d.get('source', '')}, seed {d.get('seed')} (never used in training), "
              f"{d.get('images')} images, sha256 `{d.get('sha256')}`.\n")
        print(table(ho) + "\n")
        print(line(ho) + "\n")
    print(f"Re-measure: `bodymap evaluate {a.model}` or `python benchmarks/models.py --only {a.model}`.")


if __name__ == "__main__":
    main()
