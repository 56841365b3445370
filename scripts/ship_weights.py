"""Record the sha256 of the shipped YOLO detector weights in bodymap/data/SHA256SUMS.

BodyMap unpickles only weights whose hash is recorded there (or that the user trusts with
--trust-weights): a YOLO checkpoint is a pickle and can run code when loaded. Run this after
copying newly trained weights to bodymap/data/detector_yolo.pt:

    python scripts/ship_weights.py [WEIGHTS]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.detect.yolo import SHA256SUMS, SHIPPED, record_shipped_hash  # noqa: E402


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else SHIPPED
    print(f"{record_shipped_hash(path)}  {path.name} -> {SHA256SUMS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
