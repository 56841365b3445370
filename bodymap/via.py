"""Lesion boxes in the VGG Image Annotator (VIA) CSV format that Skin3D published for 3DBodyTex.

One row per box: filename, file_size, file_attributes, region_count, region_id,
region_shape_attributes ({"name": "rect", "x", "y", "width", "height"} in texture pixels, row 0 at
the top), region_attributes (Skin3D puts {"lesion_id": "17"} there to link a lesion across two
scans of one subject, and sometimes {"annotator": "A2"}).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

HEADER = ["filename", "file_size", "file_attributes", "region_count", "region_id",
          "region_shape_attributes", "region_attributes"]


@dataclasses.dataclass
class ViaBoxes:
    """Boxes read from a VIA CSV. xyxy (k, 4) float32 texture pixels; attributes: one dict per
    box (region_attributes); lesion_id (k,) str ('' where none); filename: the image named."""

    xyxy: np.ndarray
    attributes: list[dict]
    filename: str

    @property
    def lesion_id(self) -> list[str]:
        return [str(a.get("lesion_id", "") or "") for a in self.attributes]


def read_via_csv(path: str | Path) -> ViaBoxes:
    """Read rect regions from a VIA CSV export. Raises ValueError naming the file and the row on
    anything else (no header, bad JSON, a shape that is not a rect)."""
    path = Path(path)
    try:
        fh = open(path, newline="")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    with fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0]][:7] != HEADER:
        raise ValueError(f"{path}: not a VIA CSV export (expected header {','.join(HEADER)})")
    boxes, attrs, names = [], [], set()
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 7:
            raise ValueError(f"{path}, line {n}: {len(row)} columns, expected 7")
        try:
            shape = json.loads(row[5] or "{}")
            attr = json.loads(row[6] or "{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {n}: bad JSON in the region columns ({e.msg})") from None
        if not shape:  # an image with no regions
            names.add(row[0])
            continue
        if shape.get("name") != "rect":
            raise ValueError(f"{path}, line {n}: region shape {shape.get('name')!r}; only 'rect' is supported")
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise ValueError(f"{path}, line {n}: empty box ({w} x {h})")
        boxes.append((x, y, x + w, y + h))
        attrs.append(attr if isinstance(attr, dict) else {})
        names.add(row[0])
    return ViaBoxes(np.array(boxes, np.float32).reshape(-1, 4), attrs, sorted(names)[0] if names else "")


def write_via_csv(path: str | Path, xyxy: np.ndarray, filename: str, attributes: list[dict] | None = None,
                  file_size: int = 0) -> None:
    """Write boxes xyxy (k, 4) texture pixels as a VIA CSV (rects, integer pixels), one
    region_attributes dict per box (e.g. {"lesion_id": "3"})."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    attributes = attributes or [{} for _ in range(len(xyxy))]
    from bodymap.atomic import open_atomic

    with open_atomic(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i, (b, a) in enumerate(zip(xyxy, attributes)):
            x0, y0 = int(np.floor(b[0])), int(np.floor(b[1]))
            shape = {"name": "rect", "x": x0, "y": y0, "width": int(np.ceil(b[2])) - x0,
                     "height": int(np.ceil(b[3])) - y0}
            w.writerow([filename, file_size, "{}", len(xyxy), i, json.dumps(shape, separators=(",", ":")),
                        json.dumps(a, separators=(",", ":"))])


def import_via(scan, path: str | Path):
    """Lesions of a VIA CSV placed on scan (its texture's pixels): each box segmented, lifted to
    3D and measured like a detection; the VIA lesion_id kept in the lesion's note as 'via:ID'.
    Returns a LesionSet (source 'imported')."""
    from bodymap.detect import Boxes
    from bodymap.lesions import LesionMeasurer, LesionSet, TextureImage
    from bodymap.project import texel_atlas

    vb = read_via_csv(path)
    h, w = scan.texture.shape[:2] if scan.texture is not None else (0, 0)
    if len(vb.xyxy) and (vb.xyxy[:, 2].max() > w + 1 or vb.xyxy[:, 3].max() > h + 1):
        raise ValueError(f"{path}: boxes reach past the {w}x{h} texture of {scan.meta.source}: "
                         "annotations of another texture?")
    meas, img = LesionMeasurer(scan), TextureImage(scan, texel_atlas(scan))
    lesions = []
    for b, lid in zip(vb.xyxy, vb.lesion_id):
        found = meas.measure(img, Boxes(b[None], np.ones(1, np.float32)), detector="annotation", source="imported")
        for l in found[:1]:
            l.id = len(lesions) + 1
            l.note = f"via:{lid}" if lid else ""
            lesions.append(l)
    return LesionSet(lesions, scan=scan.meta.source or "", detector="annotation",
                     info={"via_file": str(path), "boxes": int(len(vb.xyxy))})


def export_via(lesion_set, path: str | Path, filename: str) -> None:
    """Write a LesionSet's texture boxes as a VIA CSV; lesion_id is the BodyMap id (or the
    imported VIA id where the lesion came from one)."""
    rows = [l for l in lesion_set.lesions if l.box_px is not None]
    ids = [l.note[4:] if l.note.startswith("via:") else str(l.id) for l in rows]
    write_via_csv(path, np.array([l.box_px for l in rows], np.float64).reshape(-1, 4), filename,
                  [{"lesion_id": i} for i in ids])
