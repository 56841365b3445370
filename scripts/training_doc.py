"""Print the generated part of a training record (docs/training/<model>.md) from a checkpoint.

    python scripts/training_doc.py ear|macro|earfind|photokind|diagnosis [CHECKPOINT] > part.md

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
          "macro": "Macro-anatomy classifier (timm EfficientNet-B2, random init)",
          "earfind": "Ear locator (ultralytics YOLOv8 layout at width 1/8, random init)",
          "photokind": "Photo kind (timm resnet10t at a quarter width, random init)",
          "diagnosis": "Diagnosis model B (image + 128-d site embedding; timm resnet10t at half width, random init)"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=list(TITLES))
    p.add_argument("checkpoint", nargs="?")
    a = p.parse_args()
    from bodymap.models.checkpoint import load_checkpoint

    if a.model == "diagnosis":
        return diagnosis(a.checkpoint)
    table = line = None
    if a.model == "ear":
        from bodymap.models import earseg as mod
        task, table, line = "earseg", mod.score_table, mod.summary_line
    elif a.model == "macro":
        from bodymap.models import macro as mod
        task, table, line = "macro", mod.score_table, mod.summary_line
    elif a.model == "earfind":
        from bodymap.models import earfind as mod
        task = "earfind"
    else:
        from bodymap.models import photokind as mod
        task = "photokind"
    path = Path(a.checkpoint) if a.checkpoint else mod.DEFAULT_PATH
    ck = load_checkpoint(path, task)
    tr, data, ho = ck["training"], ck["data"], ck["metrics"].get("held_out")
    print(f"# {TITLES[a.model]}\n")
    print(f"Shipped as `{_rel(path)}` ({path.stat().st_size / 1e6:.1f} MB, fp16 weights); the last training round ran\n")
    print(f"    {tr['command']}\n")
    print("(earlier rounds, if any, under `resumed_from`), then copied to bodymap/data/.\n")
    print("## Recipe\n\n```json\n" + json.dumps(tr, indent=1) + "\n```\n")
    print(f"Architecture: `{json.dumps(ck['arch'])}`; input {ck['input_size']} px; normalisation "
          f"`{json.dumps(ck['normalisation'])}`.\n")
    print("## Training data\n\n```json\n" + json.dumps(data, indent=1) + "\n```\n")
    if ho and table:
        d = ho["data"]
        print("## Held-out scores (stored in the checkpoint)\n")
        print(f"Data: {d.get('source', '')}, seed {d.get('seed')} (never used in training), "
              f"{d.get('images')} images, sha256 `{d.get('sha256')}`.\n")
        print(table(ho) + "\n")
        print(line(ho) + "\n")
    elif ck["metrics"]:
        print("## Scores stored in the checkpoint\n\n```json\n" + json.dumps(ck["metrics"], indent=1) + "\n```\n")
    print(f"Re-measure: `python benchmarks/models.py --only {a.model if a.model != 'photokind' else 'kind'}`.")


def _rel(path: Path):
    return path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path


def diagnosis(checkpoint: str | None) -> None:
    """The record of a diagnosis model trained on real data (default: the shipped model B)."""
    from bodymap.models.diagnosis import DEFAULT_PATH, melanoma_line
    from bodymap.models.checkpoint import load_checkpoint

    path = Path(checkpoint) if checkpoint else DEFAULT_PATH
    ck = load_checkpoint(path, "diagnosis")
    tr, data, m = ck["training"], ck["data"], ck["metrics"]
    print(f"# {TITLES['diagnosis']}\n")
    print(f"Shipped as `{_rel(path)}` ({path.stat().st_size / 1e6:.1f} MB; fp16 weights, fp32 feature statistics); "
          f"made with model A by\n\n    {tr['command']}\n")
    print(f"Data: {data.get('name')} ({data.get('n')} training images); licence: **{data.get('licence')}**.\n")
    rec = {k: v for k, v in tr.items() if k not in ("log", "history")}
    print("## Recipe\n\n```json\n" + json.dumps(rec, indent=1) + "\n```\n")
    print(f"Architecture: `{json.dumps({k: v for k, v in ck['arch'].items() if k != 'sites'})}`; site vocabulary "
          f"{ck['arch'].get('sites')}; input {ck['input_size']} px.\n")
    print("## Training data and split\n\n```json\n" + json.dumps(data, indent=1) + "\n```\n")
    ho = m.get("held_out")
    if ho:
        print("## Held-out lesions (stored in the checkpoint)\n")
        print(f"{ho['n']} {m.get('held_out_unit')}: balanced accuracy (mean sensitivity) {ho['mean_sensitivity']:.3f} "
              f"[{ho['mean_sensitivity_ci'][0]:.3f}, {ho['mean_sensitivity_ci'][1]:.3f}], accuracy {ho['accuracy']:.3f}; "
              f"melanoma: {melanoma_line(m['melanoma'])}.\n")
        mc = m.get("mcnemar_A_vs_B")
        if mc:
            print(f"McNemar A vs B: b = {mc['b']} (A right, B wrong), c = {mc['c']} (B right, A wrong), "
                  f"p = {mc['p']:.3g} ({mc['method']}).\n")
    print("## Log\n\n```\n" + tr.get("log", "") + "\n```")


if __name__ == "__main__":
    main()
