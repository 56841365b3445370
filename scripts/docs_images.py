"""Renders the README/docs pictures of a sample patient: whole-body views and lesion close-ups.

    python scripts/docs_images.py sample_meshes/SYN00101/visit1 docs/images/SYN00101_visit1
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bodymap.io import load_scan
from renderers import Camera, RaycastRenderer, render_views


def main(visit_dir: str, out_prefix: str, n_closeups: int = 6) -> None:
    visit = Path(visit_dir)
    scan = load_scan(visit / "scan.obj")
    Image.fromarray(render_views(scan, (0, 180), 500, 1000)).save(f"{out_prefix}_body.png")
    truth = json.loads((visit / "truth.json").read_text())
    # one close-up per lesion type, largest first, so a reader sees each appearance
    by_type = {}
    for les in sorted(truth["lesions"], key=lambda l: -l["diameter_mm"]):
        by_type.setdefault(les["type"], les)
    renderer = RaycastRenderer(scan)
    tiles = []
    for les in list(by_type.values())[:n_closeups]:
        p, n = np.array(les["point_mm"]), np.array(les["normal"])
        cam = Camera.look_at(p + 150 * n, p, fov_deg=20, width=320, height=320)
        tiles.append(renderer.render(cam).rgb)
        print(f"{les['type']}: {les['diameter_mm']:.1f} mm")
    Image.fromarray(np.concatenate(tiles, axis=1)).save(f"{out_prefix}_closeups.png")


if __name__ == "__main__":
    main(*sys.argv[1:3])
