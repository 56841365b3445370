"""Choose the shipped diagnosis models' melanoma operating point again on their dev part, in the
current melanoma score (bodymap.models.diagnosis.MELANOMA_SCORE), and write it into the
checkpoints (weights unchanged):

    .venv/bin/python scripts/retune_melanoma_threshold.py [--csv ../shared/external/ham10000/metadata.csv]

The dev part is recreated from the lesion split each checkpoint records; the test part is not
read. Prints the chosen thresholds and the dev AUCs.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.models.diagnosis import EXTERNAL, retune_operating_points  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default=str(EXTERNAL / "ham10000" / "metadata.csv"),
                    help="the CSV the shipped pair was trained on (HAM10000's metadata.csv)")
    ap.add_argument("--cache", default=None, help="folder for the decoded images (reused)")
    a = ap.parse_args(argv)
    print(json.dumps(retune_operating_points(a.csv, cache=a.cache), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
