"""Where the shipped diagnosis model's melanoma score fails: melanoma vs each kind of benign lesion.

    python benchmarks/melanoma_gap.py [--tta 8] [--external ../shared/external]

The diagnosis benchmark (benchmarks/models.py --only diagnosis) gives one melanoma-vs-rest ROC
AUC per data set. This script splits that figure by what the melanomas are compared with, to
say why a model trained on HAM10000 scores 0.82 there and 0.60 on ISIC 2017:

- HAM10000, the held-out lesion part recorded in the checkpoint (per image): melanoma vs
  nevi confirmed by histopathology (excised because they looked suspicious), vs nevi seen at
  follow-up (monitored, never excised), vs benign keratoses;
- ISIC 2017 (every image is of an excised or otherwise confirmed lesion): melanoma vs nevi and
  vs seborrheic keratoses, the latter read from the ISIC 2017 ground-truth CSV in
  ``isic_enhance`` (absent: only melanoma vs rest).

Each comparison is printed for p(mel) and for the score the benchmarks use
(``diagnosis.MELANOMA_SCORE``, the log-odds of melanoma against nevus).

Each AUC comes with a 95% bootstrap interval. Read-only: nothing is trained or tuned here.
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.models.diagdata import load_images, split_rows  # noqa: E402
from bodymap.models.diagnosis import EXTERNAL, MELANOMA_SCORE, DiagnosisModel, melanoma_score  # noqa: E402
from bodymap.models.metrics import bootstrap_ci, roc_auc  # noqa: E402


def auc_line(name: str, mel: np.ndarray, neg: np.ndarray, score: np.ndarray) -> str:
    """'name (n melanomas vs m): AUC [lo, hi]' for melanoma rows ``mel`` against rows ``neg``
    (bool masks (n,)) of the melanoma probabilities ``score`` (n,)."""
    keep = mel | neg
    y, s = mel[keep], score[keep]
    if not y.any() or y.all():
        return f"  {name}: n/a"
    lo, hi = bootstrap_ci(roc_auc, y, s)
    return f"  {name} ({int(y.sum())} melanomas vs {int((~y).sum())}): AUC {roc_auc(y, s):.3f} [{lo:.3f}, {hi:.3f}]"


def melanoma_scores(model: DiagnosisModel, rows: list[dict], tta: int) -> dict[str, np.ndarray]:
    """{"p(mel)": (n,) melanoma probability, MELANOMA_SCORE: (n,) the score the benchmarks use}
    of each row's image (read whole at the model's stored size)."""
    imgs = load_images([r["path"] for r in rows], model.load_size)
    from bodymap.models.preprocess import fit_size

    p = model.predict_arrays(fit_size(imgs, model.input_size), [r["site_code"] for r in rows], tta=tta)
    return {"p(mel)": p[:, model.classes.index("mel")], MELANOMA_SCORE: melanoma_score(p, model.classes, "mel")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--external", default=str(EXTERNAL), help="folder of the real data sets")
    ap.add_argument("--tta", type=int, default=8, help="test-time views (default 8, as shipped)")
    ap.add_argument("--weights", default=None, help="a diagnosis checkpoint (default: the shipped model B)")
    a = ap.parse_args(argv)
    ext = Path(a.external)
    m = DiagnosisModel.load(a.weights)
    print(f"model: {m.path} ({m.description})")
    ham = ext / "ham10000" / "metadata.csv"
    if ham.exists():
        split = m.checkpoint.get("data", {}).get("split") or {}
        rows = split_rows(ham, "test", split.get("fractions"), split.get("seed"))
        scores = melanoma_scores(m, rows, a.tta)
        dx = np.array([r["dx"] for r in rows])
        how = np.array([r.get("dx_type", "") for r in rows])
        mel = dx == "mel"
        for name, s in scores.items():
            print(f"HAM10000 held-out part (split seed {split.get('seed')}, {len(rows)} images, per image), "
                  f"score {name}:")
            print(auc_line("melanoma vs rest", mel, ~mel, s))
            print(auc_line("melanoma vs nevi confirmed by histopathology", mel, (dx == "nv") & (how == "histo"), s))
            print(auc_line("melanoma vs nevi seen at follow-up", mel, (dx == "nv") & (how == "follow_up"), s))
            print(auc_line("melanoma vs benign keratoses", mel, dx == "bkl", s))
    else:
        print(f"skipped: {ham} not found")
    isic = ext / "isic2017" / "metadata.csv"
    if isic.exists():
        rows = split_rows(isic, "all")
        scores = melanoma_scores(m, rows, a.tta)
        mel = np.array([r["diagnosis"] == "melanoma" for r in rows])
        gt = ext / "isic_enhance" / "ISIC-2017_Training_Part3_GroundTruth.csv"
        flag = {}
        if gt.exists():
            with open(gt, newline="") as f:
                flag = {r["image_id"]: float(r["seborrheic_keratosis"]) > 0.5 for r in csv.DictReader(f)}
        labelled = np.array([r["image_id"] in flag for r in rows])
        sk = np.array([flag.get(r["image_id"], False) for r in rows])
        for name, s in scores.items():
            print(f"ISIC 2017 ({len(rows)} images), score {name}:")
            print(auc_line("melanoma vs rest", mel, ~mel, s))
            if flag:
                print(f"  (training part: {int(labelled.sum())} images with the seborrheic keratosis flag)")
                print(auc_line("melanoma vs nevi", mel & labelled, ~mel & ~sk & labelled, s))
                print(auc_line("melanoma vs seborrheic keratoses", mel & labelled, sk, s))
            else:
                print(f"  (no {gt}: melanoma vs nevi / keratoses skipped)")
    else:
        print(f"skipped: {isic} not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
