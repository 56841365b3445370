"""Synthetic patients: one body, one skin, a set of lesions, scanned at several visits.

``synthesize_patient`` writes, per visit, ``scan.obj`` (+ .mtl + texture .png) and the ground
truth ``truth.json`` + ``truth.npz`` (see ``bodymap.synth.truth``). Same seed and options give
the same files.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.scan import Scan, ScanMeta
from bodymap.synth import truth as truth_io
from bodymap.anatomy.body import CLINIC_POSES, PARTS, POSES, BodySpec, body_model, landmark_weights, pose_rotations, vertex_parts
from bodymap.synth.lesions import CONFOUNDER_TYPES, LesionPainter, LesionSpec, sample_lesions
from bodymap.synth.scanner import remesh, scanner_artifacts, subdivide
from bodymap.synth.skin import SkinSpec, draw_hair, paint_skin
from bodymap.project import dilate_atlas, rasterize_uv
from bodymap.synth.texture import fill_gutter, linear_to_srgb, _segmentation_labels

Progress = Callable[[str, float], None]


@dataclasses.dataclass
class SynthOptions:
    """What to generate. Defaults match a full 3DBodyTex-like scan."""

    n_lesions: int = 300
    texture_size: int = 4096
    target_faces: int = 300_000
    remesh: bool = True  # isotropic remesh: visits never share vertex order
    noise_mm: float = 0.2  # scanner noise along the normal (standard deviation)
    holes: bool = True  # drop soles and armpits, as real scanners miss them
    visits: int = 2
    poses: tuple[str, ...] = ("a-pose", "random")  # pose of visit 1, 2, ... (last repeats)
    fitzpatrick: int | None = None  # None: random
    body: BodySpec | None = None  # None: random adult
    freckles: bool | None = None  # None: depends on skin type
    weight_change: float = 0.05  # largest change of the weight parameter between visits
    new_fraction: float = 0.06  # new lesions at each later visit, share of current count
    removed_fraction: float = 0.04  # lesions excised between visits
    grown_fraction: float = 0.12  # persistent lesions that grow
    darker_fraction: float = 0.08  # persistent lesions that darken

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["poses"] = list(self.poses)
        return d


def _face_parts(faces: np.ndarray, vparts: np.ndarray) -> np.ndarray:
    """Majority part of each face's three vertices. Returns (m,) int8."""
    p = vparts[faces]
    out = p[:, 0].copy()
    agree = p[:, 1] == p[:, 2]
    out[agree] = p[agree, 1]
    return out


def synthesize_patient(seed: int, options: SynthOptions, out_dir: str | Path, patient_id: str | None = None,
                       progress: Progress | None = None) -> list[Path]:
    """Generate one patient with ``options.visits`` visits under out_dir/<patient_id>/visitN/.

    Returns the visit folders. progress(stage, fraction) is called as work proceeds.
    """
    say = progress or (lambda stage, frac: None)
    rng = np.random.default_rng(seed)
    pid = patient_id or f"SYN{seed:05d}"
    out = Path(out_dir) / pid
    out.mkdir(parents=True, exist_ok=True)
    for p in options.poses:
        if p not in POSES:
            raise ValueError(f"unknown pose {p!r}; choose from {', '.join(POSES)}")

    say("body model", 0.0)
    bm = body_model()
    body = options.body or BodySpec.random(rng)
    skin = SkinSpec.random(rng, body.sex, options.fitzpatrick)
    if options.freckles is not None:
        skin.freckles = options.freckles
    faces, base_uv = bm.faces, bm.uv
    template = bm.template()
    vparts = vertex_parts(bm)
    fparts = _face_parts(faces, vparts)
    marks = landmark_weights(bm)
    not_skin_v = np.maximum.reduce([marks["lips"], marks["nipple"], marks["nail"]]) > 0.2
    cavity = np.zeros(len(faces), bool)
    cavity[template.cavity_faces] = True

    say("texture atlas", 0.05)
    size = options.texture_size
    # grown into the gutters: scan faces that straddle a seam reach a little past their chart
    atlas = dilate_atlas(rasterize_uv(base_uv, size), width=max(3, round(0.0075 * size)))
    seg, seg_colors = _segmentation_labels(str(bm._root), size)
    seg_flat = seg.reshape(-1, 3)[atlas.flat]
    eye = np.zeros(len(atlas.flat), bool)
    for name in ("eye_front.L", "eye_front.R", "eye_back.L", "eye_back.R"):
        eye |= (seg_flat == np.array(seg_colors[name])).all(1)
    face_is_eye = np.zeros(len(faces), bool)
    face_is_eye[np.unique(atlas.face[eye])] = True

    say("skin", 0.1)
    skin_col, tissue = paint_skin(atlas, template.vertices, faces, vparts, marks, eye, skin, rng)
    skin_img = np.zeros((size * size, 3), np.float32)
    skin_img[atlas.flat] = skin_col
    skin_img = skin_img.reshape(size, size, 3)
    tissue_img = np.zeros(size * size, np.uint8)
    tissue_img[atlas.flat] = tissue
    tissue_img = tissue_img.reshape(size, size)
    tmpl_painter = LesionPainter(atlas, template.vertices, faces)  # texel footprint on the template
    n_hair = draw_hair(skin_img, atlas, template.vertices, faces, vparts, tissue_img, skin, rng,
                       np.nan_to_num(tmpl_painter.texel_mm, nan=1.0))
    face_allowed = ~(not_skin_v[faces].any(1) | cavity | face_is_eye)

    # lesions of visit 1, sampled on the visit-1 body
    visit_bodies = []
    for k in range(options.visits):
        spec = dataclasses.replace(body)
        if k > 0:
            spec.weight = float(np.clip(body.weight + rng.uniform(-1, 1) * options.weight_change, 0.0, 1.0))
        pose = options.poses[min(k, len(options.poses) - 1)]
        rot = pose_rotations(pose, rng if pose == "random" or pose in CLINIC_POSES else None)
        visit_bodies.append((spec, pose, rot, bm.vertices(spec, rot)))
    v1 = visit_bodies[0][3]
    lesions = sample_lesions(options.n_lesions, v1, faces, fparts, face_allowed, rng)
    confounders: list[LesionSpec] = []
    if skin.freckles:
        n_fr = int(rng.integers(60, 250))
        confounders = sample_lesions(n_fr, v1, faces, fparts, face_allowed, rng, first_id=100001,
                                     types=CONFOUNDER_TYPES,
                                     avoid=[(LesionPainter.centre_of(l, v1, faces), l.diameter_mm / 2) for l in lesions])
    next_id = len(lesions) + 1
    start = datetime.date(2025, 1, 6) + datetime.timedelta(days=int(rng.integers(0, 300)))

    visit_dirs = []
    current = {l.id: l for l in lesions}
    history: dict[int, dict] = {}
    for k, (spec, pose, rot, V) in enumerate(visit_bodies):
        frac0 = 0.15 + 0.85 * k / options.visits
        say(f"visit {k + 1}: lesions", frac0)
        changes: dict[int, list[str]] = {}
        if k > 0:
            ids = sorted(current)
            n_rm = int(round(options.removed_fraction * len(ids)))
            for i in rng.choice(ids, n_rm, replace=False) if n_rm else []:
                changes[int(i)] = ["removed"]
                del current[int(i)]
            ids = sorted(current)
            for i in rng.choice(ids, int(round(options.grown_fraction * len(ids))), replace=False):
                l = current[int(i)]
                growth = max(1.0, float(rng.uniform(0.2, 0.6)) * l.diameter_mm)
                current[int(i)] = dataclasses.replace(l, diameter_mm=round(min(l.diameter_mm + growth, 20.0), 3))
                changes.setdefault(int(i), []).append("grown")
            for i in rng.choice(ids, int(round(options.darker_fraction * len(ids))), replace=False):
                l = current[int(i)]
                current[int(i)] = dataclasses.replace(l, darkness=round(l.darkness * 1.35, 3))
                changes.setdefault(int(i), []).append("darker")
            n_new = int(round(options.new_fraction * len(ids)))
            avoid = [(LesionPainter.centre_of(l, V, faces), l.diameter_mm / 2) for l in current.values()]
            new = sample_lesions(n_new, V, faces, fparts, face_allowed, rng, first_id=next_id, avoid=avoid)
            next_id += len(new)
            for l in new:
                current[l.id] = l
                changes[l.id] = ["new"]

        painter = LesionPainter(atlas, V, faces)
        col = skin_img.reshape(-1, 3)[atlas.flat].copy()
        label = np.zeros(len(atlas.flat), np.int32)
        areas = {}
        for l in confounders + [current[i] for i in sorted(current)]:
            areas[l.id] = painter.paint(col, label, l)
        img = np.zeros((size * size, 3), np.float32)
        img[atlas.flat] = col
        covered = np.zeros(size * size, bool)
        covered[atlas.flat] = True
        say(f"visit {k + 1}: texture", frac0 + 0.3 / options.visits)
        img = fill_gutter(img.reshape(size, size, 3), covered.reshape(size, size))
        tex = (linear_to_srgb(img) * 255.0 + 0.5).astype(np.uint8)
        label_img = np.zeros(size * size, np.int32)
        label_img[atlas.flat] = label

        say(f"visit {k + 1}: scanning", frac0 + 0.45 / options.visits)
        keep = ~cavity
        if options.remesh:
            mesh = remesh(V, faces, base_uv, keep, options.target_faces)
        else:
            mesh = subdivide(V, faces, base_uv, keep, options.target_faces)
        holes = None
        if options.holes:
            heads = {b: bm.template_bone_heads[i] for i, b in enumerate(bm.bone_labels)}
            holes = _hole_faces(mesh, template.vertices, faces, fparts, heads)
        mesh = scanner_artifacts(mesh, rng, options.noise_mm, holes)

        # 150-400 days after the previous visit (one draw per visit, the first's unused): dates
        # always increase, however many visits
        gap = int(rng.integers(150, 400))
        day = start if k == 0 else day + datetime.timedelta(days=gap)
        visit_date = day.isoformat()
        meta = ScanMeta(patient_id=pid, visit_date=visit_date, source="", units="mm",
                        extra={"generator": "bodymap synth", "seed": seed, "visit": k + 1})
        scan = Scan(mesh.vertices, mesh.faces, mesh.uv, tex, meta=meta)
        vdir = out / f"visit{k + 1}"
        vdir.mkdir(parents=True, exist_ok=True)
        say(f"visit {k + 1}: writing", frac0 + 0.6 / options.visits)
        from bodymap.io import save_scan

        save_scan(scan, vdir / "scan.obj")
        truth = truth_io.build_visit_truth(
            scan=scan, mesh=mesh, painter=painter, visit=k + 1, patient_id=pid, seed=seed,
            options=options, body=spec, pose=pose, skin=skin, n_hair=n_hair,
            lesions=[current[i] for i in sorted(current)], confounders=confounders, areas=areas,
            changes=changes, fparts=fparts)
        truth_io.write_visit_truth(vdir, truth, mesh, tissue_img, label_img.reshape(size, size))
        visit_dirs.append(vdir)
        history[k + 1] = {"n_lesions": len(current)}
    from bodymap.atomic import write_text

    write_text(out / "patient.json", json.dumps({
        "patient_id": pid, "seed": seed, "options": options.to_dict(), "body": dataclasses.asdict(body),
        "skin": dataclasses.asdict(skin), "visits": [p.name for p in visit_dirs]}, indent=1))
    say("done", 1.0)
    return visit_dirs


def _hole_faces(mesh, template_vertices: np.ndarray, faces: np.ndarray, fparts: np.ndarray,
                bone_heads: dict[str, np.ndarray]) -> np.ndarray:
    """Faces a standing scan misses: soles, and downward-facing skin deep in the armpits.

    Armpits are located on the template (below and inside the shoulder joints), so the holes
    follow the anatomy whatever the pose. Returns (m,) bool over the scanned mesh's faces.
    """
    Vs, F = mesh.vertices, mesh.faces
    cr = np.cross(Vs[F[:, 1]] - Vs[F[:, 0]], Vs[F[:, 2]] - Vs[F[:, 0]])
    nz = cr[:, 2] / np.maximum(np.linalg.norm(cr, axis=1), 1e-12)
    bf = mesh.base_face[F[:, 0]]
    sole = (fparts[bf] == PARTS.index("foot")) & (nz < -0.6)
    centroid_t = template_vertices[faces[bf]].mean(1)
    axilla = np.zeros(len(F), bool)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        apex = bone_heads[f"upperarm01.{side}"] + np.array([-35.0 * sign, 0.0, -75.0])
        axilla |= np.linalg.norm(centroid_t - apex, axis=1) < 55.0
    return sole | (axilla & (nz < -0.3))
