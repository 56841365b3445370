"""How many threads this process may compute on: one answer for every stage that runs work side
by side (a texture's tiles, tracking's pair map beside its geodesics), so that a batch worker
held to one thread runs each of them in turn and the CLI on two cores runs them two at a time."""
from __future__ import annotations

import os
import sys


def process_threads() -> int:
    """The threads this process may compute on: torch's intra-op count once torch is imported
    (a batch worker sets it to its share), else OMP_NUM_THREADS, else the cores it may run on."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(int(torch.get_num_threads()), 1)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(int(env), 1) if env.isdigit() else max(len(os.sched_getaffinity(0)), 1)
