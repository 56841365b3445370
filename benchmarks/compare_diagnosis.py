"""A candidate diagnosis model against the shipped one, on the same images neither trained on.

    python benchmarks/compare_diagnosis.py --candidate RUN/diagnosis_B.pt [--shipped default]
        [--external ../shared/external] [--sets isic2017 pad_ufes20] [--boot 1000]

For each set: melanoma vs rest (ROC AUC of both and the paired bootstrap interval of the
difference) and, where the diagnoses map onto the models' classes (PAD-UFES-20), balanced
accuracy of both, its paired interval and McNemar. This is the figure a decision to ship a
model should rest on: held-out parts of two different lesion splits compare two draws.
A model trained on a set is refused on it. Read-only: nothing is trained or tuned here.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.models.diagnosis import EXTERNAL, DiagnosisModel, compare_on, compare_on_text  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", required=True, help="checkpoint (path or name) of the model to judge")
    ap.add_argument("--shipped", default="default", help="checkpoint (path or name) it would replace")
    ap.add_argument("--external", default=str(EXTERNAL), help="folder of the real data sets")
    ap.add_argument("--sets", nargs="+", default=["isic2017", "pad_ufes20"])
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--cache", help="folder for the decoded images")
    a = ap.parse_args()
    cand, ship = DiagnosisModel.load(a.candidate), DiagnosisModel.load(a.shipped)
    print(f"candidate: {cand.path}: {cand.description}")
    print(f"shipped:   {ship.path}: {ship.description}")
    for name in a.sets:
        f = Path(a.external) / name / "metadata.csv"
        if not f.exists():
            print(f"{f}: absent, skipped")
            continue
        t0 = time.perf_counter()
        for line in compare_on_text(compare_on(cand, ship, str(f), n_boot=a.boot, cache=a.cache)):
            print(line)
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
