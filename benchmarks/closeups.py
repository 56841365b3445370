"""DICOM close-ups: does Pixel Spacing reproduce each lesion's size?

    bodymap detect VISIT/scan.obj --out DIR          # or any analysis folder
    python benchmarks/closeups.py DIR [DIR ...]

Every lesion of the folder is exported as its DICOM close-up (bodymap.export.dicom), read back
with pydicom, segmented again in the image (pixels past half the lesion's contrast in linear
light, as BodyMap traces borders) and its longest width in pixels times Pixel Spacing compared
with the lesion's diameter (`diameter_mm`) and with its outline's (`major_axis_mm`). Prints the
median absolute relative difference, the bias and the share within 5 %.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def image_diameter(img: np.ndarray) -> float:
    """Longest width in pixels of the lesion in the middle of a close-up (h, w, 3) uint8."""
    from bodymap.colour import srgb_to_linear
    from bodymap.measures import feret

    lin = srgb_to_linear(img.astype(np.float32) / 255)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    k = np.linalg.norm(lin - np.median(lin[r > 0.45 * h], axis=0), axis=-1)
    centre = r < 0.06 * h
    lab, _ = ndimage.label(k > 0.5 * np.percentile(k[centre], 35))
    ids = np.unique(lab[centre & (lab > 0)])
    m = ndimage.binary_fill_holes(np.isin(lab, ids[ids > 0]))
    return feret(np.argwhere(m)[:, ::-1].astype(float))[0] + 1.0


def main() -> None:
    from bodymap.export.dicom import read_dicom, write_dicom
    from bodymap.export.record import load_export_visit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="analysis (or detect) folders")
    a = p.parse_args()
    for folder in a.folders:
        v = load_export_visit(folder)
        with tempfile.TemporaryDirectory() as tmp:
            write_dicom(v, tmp, body_maps=False)
            shots = read_dicom(tmp)["closeups"]
        by_id = {l.id: l for l in v.lesions.lesions}
        for ref, key in (("diameter_mm", None), ("outline diameter", "major_axis_mm")):
            e = []
            for c in shots:
                l = by_id[c["lesion_id"]]
                truth = l.diameter_mm if key is None else (l.measures or {}).get(key)
                if truth:
                    e.append(image_diameter(c["image"]) * c["pixel_spacing_mm"] / truth - 1)
            e = np.array(e)
            print(f"{folder}: {len(e)} close-ups against {ref}: median |error| {np.median(np.abs(e)):.3f}, "
                  f"bias {np.median(e):+.3f}, within 5 %: {(np.abs(e) <= 0.05).mean():.3f}")


if __name__ == "__main__":
    main()
