"""Writes bodymap/data/template_mesh.npz: the anny template's vertices (float32, mm) and faces
(int32), so the body diagram (bodymap.overview.body_diagram) is drawn without building the body
model (torch, anny: seconds, and torch started in a worker thread while the 3D view first draws
has hung the GUI under Mesa's llvmpipe). Reproducible:

    .venv/bin/python scripts/make_template_mesh.py

Run it again with scripts/make_template_labels.py whenever the body model changes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from bodymap.anatomy.template import load_template
    from bodymap.atomic import atomic_write

    t = load_template()
    out = ROOT / "bodymap" / "data" / "template_mesh.npz"
    with atomic_write(out) as tmp:
        np.savez_compressed(tmp, vertices=t.vertices.astype(np.float32), faces=t.faces.astype(np.int32))
    print(out, len(t.vertices), "vertices", len(t.faces), "faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
