"""Ground truth beside each synthetic scan: truth.json (records) + truth.npz (big arrays).

truth.json (schema "bodymap.truth/1"): patient, visit, body, pose, skin, and every lesion and
confounder present at this visit with id (stable across visits), type, diameter_mm (longest
diameter of its border, exact), area_mm2 (area inside the border, exact), painted_area_mm2 (texels
with alpha >= 0.5), texel_mm (texture resolution there), 3D point on the scan (mm), on_scan (false where a scanner hole took it), scan
face + barycentric, template face + barycentric,
body part, and what changed since the previous visit (new / grown / darker); ids removed since
the previous visit are listed under "removed".

truth.npz:
- vertex_template_face (n,) int32, vertex_template_bary (n, 3) float32: for each scan vertex,
  the template surface point it came from (the anny template: same faces, default phenotype);
- tissue (H, W) uint8: texel labels (bodymap.synth.skin.TISSUE), 0 off the mesh;
- lesion_label (H, W) int32: lesion / confounder id where it is painted (alpha >= 0.5), else 0.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from bodymap.project import clean_barycentric
from bodymap.anatomy.body import PARTS
from bodymap.synth.lesions import lesion_area_mm2

SCHEMA = "bodymap.truth/1"


def build_visit_truth(*, scan, mesh, painter, visit, patient_id, seed, options, body, pose, skin, n_hair,
                      lesions, confounders, areas, changes, fparts) -> dict:
    """Assemble the truth record of one visit (see module docstring)."""
    import gpytoolbox as gp

    allrec = list(lesions) + list(confounders)
    if allrec:
        centres = np.array([painter.centre(l)[0] for l in allrec])
        normals = np.array([painter.centre(l)[1] for l in allrec])
        sqd, I, L = gp.squared_distance(centres, scan.vertices, F=scan.faces, use_cpp=True, use_aabb=True)
        I = np.asarray(I).ravel()
        L = clean_barycentric(L)
        pts = scan.points_from_barycentric(I, L)
    recs = []
    for j, l in enumerate(allrec):
        d = l.to_dict()
        d.pop("base_face")
        d.pop("base_bary")
        d.update({
            "template_face": int(l.base_face),
            "template_bary": [round(float(x), 6) for x in l.base_bary],
            "point_mm": [round(float(x), 3) for x in pts[j]],
            "normal": [round(float(x), 4) for x in normals[j]],
            "scan_face": int(I[j]),
            "scan_bary": [round(float(x), 6) for x in L[j]],
            "area_mm2": round(lesion_area_mm2(l), 3),
            "painted_area_mm2": round(float(areas.get(l.id, 0.0)), 3),
            # texture resolution where it lies: lesions under ~3 texels across are only a blur
            "texel_mm": round(float(painter.texel_mm[l.base_face]), 3),
            # the centre lies on the scan unless a scanner hole (sole, armpit) removed it
            "on_scan": bool(np.sqrt(sqd[j]) < 1.0 + 0.05 * l.diameter_mm),
            "part": PARTS[int(fparts[l.base_face])],
            "changes": changes.get(l.id, []),
        })
        recs.append(d)
    return {
        "schema": SCHEMA,
        "patient_id": patient_id,
        "visit": visit,
        "visit_date": scan.meta.visit_date,
        "seed": seed,
        "scan": {"file": "scan.obj", "vertices": scan.n_vertices, "faces": scan.n_faces,
                 "texture_size": int(scan.texture.shape[0]), "height_mm": round(scan.height_mm, 1)},
        "body": dataclasses.asdict(body),
        "pose": pose,
        "skin": dataclasses.asdict(skin),
        "hair_strands": int(n_hair),
        "options": options.to_dict(),
        "lesions": [r for r in recs if r["is_lesion"]],
        "confounders": [r for r in recs if not r["is_lesion"]],
        "removed": sorted(i for i, c in changes.items() if "removed" in c),
    }


def write_visit_truth(vdir: Path, truth: dict, mesh, tissue: np.ndarray, lesion_label: np.ndarray) -> None:
    """Write truth.json and truth.npz into vdir."""
    from bodymap.atomic import atomic_write, write_text

    write_text(Path(vdir) / "truth.json", json.dumps(truth, indent=1))
    with atomic_write(Path(vdir) / "truth.npz") as tmp:
        np.savez_compressed(
            tmp,
            vertex_template_face=mesh.base_face.astype(np.int32),
            vertex_template_bary=mesh.base_bary.astype(np.float32),
            tissue=tissue.astype(np.uint8),
            lesion_label=lesion_label.astype(np.int32),
        )


def read_visit_truth(vdir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a visit's truth. Returns (truth.json as dict, arrays of truth.npz)."""
    vdir = Path(vdir)
    t = json.loads((vdir / "truth.json").read_text())
    if t.get("schema") != SCHEMA:
        raise ValueError(f"{vdir / 'truth.json'}: not a BodyMap truth file (schema {t.get('schema')!r})")
    with np.load(vdir / "truth.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return t, arrays
