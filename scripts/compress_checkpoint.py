"""Store a BodyMap checkpoint's large kernels as int8 (a quarter of their fp32 size, half of fp16):

    python scripts/compress_checkpoint.py CHECKPOINT [--out OUT]

`bodymap.models.checkpoint.compress_checkpoint`: convolution and linear kernels get int8 values
and one fp32 scale per output channel; biases and normalisation layers stay as they were. The
command is recorded in the checkpoint ("training" -> "compressed"). Measure the held-out scores
again afterwards (`python benchmarks/models.py --only ear macro`): the stored scores are the
uncompressed weights' until then.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodymap.models.checkpoint import compress_checkpoint  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="write here (default: in place)")
    a = ap.parse_args(argv)
    rec = compress_checkpoint(a.checkpoint, a.out, command="python scripts/compress_checkpoint.py " + shlex.join(argv))
    print(f"{a.out or a.checkpoint}: {rec['tensors']} kernels to int8, {rec['mb_before']} -> {rec['mb_after']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
