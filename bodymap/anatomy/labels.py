"""Region labels on a scan: transferred from the labelled template through a Correspondence,
queried at any surface point, saved and loaded beside the scan."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from bodymap import taxonomy as tx
from bodymap.anatomy.register import STEPS, Correspondence
from bodymap.anatomy.template import LabelledTemplate

# A scan vertex farther than this from the fitted body gets its label flagged as unreliable.
RELIABLE_MM = 15.0


@dataclasses.dataclass
class RegionLabels:
    """Per scan vertex: site (n,) uint8 (taxonomy.SITES, finest level), side (n,) uint8
    (taxonomy.LATERALITY), ear (n,) uint8 (taxonomy.EAR_REGIONS), residual_mm (n,) float32."""

    site: np.ndarray
    side: np.ndarray
    ear: np.ndarray
    residual_mm: np.ndarray

    @property
    def reliable(self) -> np.ndarray:
        """(n,) bool: the fitted body lies within RELIABLE_MM of the vertex."""
        return self.residual_mm <= RELIABLE_MM

    def at_level(self, level: int) -> np.ndarray:
        """(n,) site indices at taxonomy level 1, 2 or 3."""
        return tx.level_lut(level)[self.site]

    def macro(self) -> np.ndarray:
        """(n,) indices into taxonomy.MACRO."""
        return tx.macro_lut()[self.site]

    def save(self, path: str | Path, correspondence: Correspondence | None = None) -> None:
        """Write the labels (and the correspondence, if given) to an .npz file."""
        extra = {}
        if correspondence is not None:
            extra = {"template_face": correspondence.template_face.astype(np.int32),
                     "template_bary": correspondence.template_bary}
        from bodymap.atomic import atomic_write

        with atomic_write(path) as tmp:  # a kill mid-write leaves the previous labels whole
            np.savez_compressed(tmp, site=self.site, side=self.side, ear=self.ear, residual_mm=self.residual_mm,
                                site_codes=np.array([s.code for s in tx.SITES]), **extra)

    @classmethod
    def load(cls, path: str | Path) -> "RegionLabels":
        """Read labels written by save(). Site codes are checked against this taxonomy."""
        z = _read_npz(path, ("site", "side", "ear", "residual_mm", "site_codes"))
        codes = [str(c) for c in z["site_codes"]]
        if codes != [s.code for s in tx.SITES][:len(codes)]:
            raise ValueError(f"{path}: written with another site taxonomy")
        n = len(z["site"])
        if any(len(z[k]) != n for k in ("side", "ear", "residual_mm")) or (n and int(z["site"].max()) >= len(tx.SITES)):
            raise ValueError(f"{path}: corrupt labels file (arrays of different lengths or unknown sites)")
        return cls(z["site"], z["side"], z["ear"], z["residual_mm"])


def load_correspondence(path: str | Path, n_vertices: int | None = None) -> Correspondence | None:
    """The template correspondence saved with labels (RegionLabels.save(path, correspondence)),
    or None when the file has none or it was made for a scan with another vertex count.
    fitted_vertices is not stored (empty); info holds the source file."""
    z = _read_npz(path, ("residual_mm",))
    if "template_face" not in z or "template_bary" not in z:
        return None
    tf, tb, res = z["template_face"].astype(np.int64), z["template_bary"], z["residual_mm"]
    if n_vertices is not None and len(tf) != n_vertices:
        return None
    return Correspondence(tf, tb, res, np.zeros((0, 3)), {"loaded_from": str(path)})


def transfer_labels(corr: Correspondence, template: LabelledTemplate) -> RegionLabels:
    """Labels of each scan vertex: those of the template vertex nearest its template point (the
    corner with the largest barycentric weight)."""
    corner = template.faces[corr.template_face, np.argmax(corr.template_bary, axis=1)]
    return RegionLabels(template.site[corner].astype(np.uint8), template.side[corner].astype(np.uint8),
                        template.ear[corner].astype(np.uint8), corr.residual_mm.astype(np.float32))


def axes_view_frame(vertices: np.ndarray) -> np.ndarray:
    """view_frame without labels, from the scan's extent alone (vertices (n, 3) mm): a scan
    taller along y than along z is taken as y up, facing +z (the OBJ convention many scanners
    export), else as z up, facing -y (the identity)."""
    size = np.ptp(vertices, axis=0)
    if size[1] > size[2]:
        return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return np.eye(3)


def view_frame(vertices: np.ndarray, labels: RegionLabels | None) -> np.ndarray:
    """(3, 3) the upright body's axes (rows x, y, z: z up, the body facing -y) in the scan's
    coordinates, for front and back views (renderers.camera.framed_body_view): up is the scan
    axis, either sign, nearest the feet-to-head direction (a seated or bent body stays as it
    was scanned; a scanner's up is one of its axes: many give y), the front is the anterior
    torso's side of the posterior torso, level. vertices (n, 3) mm with labels (RegionLabels of
    them). axes_view_frame when there are no labels, or they lack a head, feet or either side
    of the trunk."""
    if labels is None:
        return axes_view_frame(vertices)
    l2 = labels.at_level(2)
    names = [site.name for site in tx.SITES]

    def centre(*sites: str):
        m = np.isin(l2, [names.index(x) for x in sites]) & labels.reliable
        return vertices[m].mean(0) if m.sum() >= 10 else None

    head, feet = centre("head"), centre("foot", "ankle")
    front, back = centre("anterior torso"), centre("posterior torso")
    if head is None or feet is None or front is None or back is None:
        return axes_view_frame(vertices)
    d = head - feet
    k = int(np.argmax(np.abs(d)))
    up = np.zeros(3)
    up[k] = np.sign(d[k])
    f = front - back
    f = f - f.dot(up) * up
    if np.linalg.norm(f) < 1e-6:
        return axes_view_frame(vertices)
    y = -f / np.linalg.norm(f)
    return np.stack([np.cross(y, up), y, up])


def registered_view_frame(vertices: np.ndarray, correspondence: Correspondence | None) -> np.ndarray:
    """view_frame of a registered scan (vertices (n, 3) mm) from its correspondence;
    axes_view_frame when it has none."""
    if correspondence is None:
        return axes_view_frame(vertices)
    from bodymap.anatomy.template import load_template

    return view_frame(vertices, transfer_labels(correspondence, load_template()))


class RegionIndex:
    """Answers "which region is this?" for any point on (or near) a labelled scan.

    vertices (n, 3) mm, faces (m, 3), labels: the scan's RegionLabels.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, labels: RegionLabels):
        self.vertices, self.faces, self.labels = np.asarray(vertices, np.float64), np.asarray(faces), labels

    def region_at(self, points: np.ndarray) -> list[dict]:
        """Regions of points (k, 3) or (3,) mm: for each a dict with code, name, side, ear,
        macro, description and distance_mm (to the scan surface) and reliable."""
        import gpytoolbox as gp

        p = np.atleast_2d(np.asarray(points, np.float64))
        sqd, I, L = gp.squared_distance(p, self.vertices, F=self.faces, use_cpp=True, use_aabb=True)
        corner = self.faces[np.asarray(I).ravel(), np.argmax(np.asarray(L), axis=1)]
        out = []
        for d, c in zip(np.sqrt(np.asarray(sqd).ravel()), corner):
            s, side, ear = int(self.labels.site[c]), int(self.labels.side[c]), int(self.labels.ear[c])
            out.append({"code": tx.SITES[s].code, "name": tx.SITES[s].name, "side": tx.LATERALITY[side],
                        "ear": tx.EAR_REGIONS[ear], "macro": tx.macro(s), "description": tx.describe(s, side),
                        "distance_mm": round(float(d), 2), "reliable": bool(self.labels.reliable[c])})
        return out


def summary(labels: RegionLabels, face_areas: np.ndarray, faces: np.ndarray) -> dict:
    """Area (mm^2) per site and laterality, from faces' majority labels; JSON-ready."""
    s = labels.site[faces]
    site = np.where(s[:, 1] == s[:, 2], s[:, 1], s[:, 0])
    side = labels.side[faces[:, 0]]
    rows = {}
    for si, sd, a in zip(site, side, face_areas):
        key = tx.describe(int(si), int(sd))
        rows[key] = rows.get(key, 0.0) + float(a)
    return {"area_mm2_by_region": {k: round(v, 1) for k, v in sorted(rows.items())},
            "unreliable_fraction": round(float(1 - labels.reliable.mean()), 4)}


def write_json(path: str | Path, data: dict) -> None:
    """Write a JSON record (indented), atomically."""
    from bodymap.atomic import write_text

    write_text(path, json.dumps(data, indent=1))


def _read_npz(path: str | Path, need: tuple[str, ...]) -> dict:
    """The arrays of a labels file (all of them, read now). Raises ValueError naming the file for
    a truncated, corrupt or foreign file (instead of numpy's BadZipFile / pickle messages)."""
    import zipfile
    import zlib

    broken = "truncated or corrupt (not a readable .npz archive); run `bodymap analyze` again to rebuild it"
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not a BodyMap labels file")
        with z:
            missing = [k for k in need if k not in z.files]
            if missing:
                raise ValueError(f"not a BodyMap labels file (no {', '.join(missing)})")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: labels file not found") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path}: {broken}") from e
    except ValueError as e:
        msg = broken if "pickle" in str(e) else str(e)
        raise ValueError(f"{path}: {msg}") from None
    except KeyError:
        raise ValueError(f"{path}: {broken}") from None


def label_scan(scan, progress=None, steps: int = STEPS) -> tuple[Correspondence, RegionLabels]:
    """Register the template to scan (mm) with `steps` fitting steps (register's) and transfer
    its labels. progress(stage, fraction). A mesh that cannot be a body is refused first, in
    about a second (bodymap.bodycheck: ScanError), instead of after minutes of fitting."""
    from bodymap.anatomy.register import register
    from bodymap.anatomy.template import load_template
    from bodymap.bodycheck import check_body

    check_body(scan)
    corr = register(scan, progress=progress, steps=steps)
    return corr, transfer_labels(corr, load_template())
