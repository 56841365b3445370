"""Shared fixtures: synthetic patients generated once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_meshes"
EXTERNAL = ROOT.parent / "shared" / "external"


@pytest.fixture(scope="session")
def small_patient(tmp_path_factory) -> list[Path]:
    """Two visits of a small patient (fast): 40 lesions, 512 texture, ~20k faces."""
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    out = tmp_path_factory.mktemp("synth_small")
    opts = SynthOptions(n_lesions=40, texture_size=512, target_faces=20_000, visits=2,
                        poses=("a-pose", "arms-raised"), new_fraction=0.1, removed_fraction=0.1,
                        grown_fraction=0.2, darker_fraction=0.2)
    return synthesize_patient(3, opts, out)


@pytest.fixture(scope="session")
def big_patient(tmp_path_factory) -> Path:
    """One visit of a patient with 300 lesions on a 4096 texture (about 1.5 min)."""
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    out = tmp_path_factory.mktemp("synth_big")
    opts = SynthOptions(n_lesions=300, texture_size=4096, target_faces=60_000, visits=1)
    return synthesize_patient(5, opts, out)[0]
