"""The overview of one visit, with no Qt in it: a 2D body diagram (front and back) with a dot per
lesion and the lesion count of each region, a triage list ordered by concern, and the geometry
of the 3D view's lesion marks (a selection ring that follows curved skin, a marker beside the
lesion rather than on its centre).

    d = body_diagram()                            # the labelled template drawn front and back (slow once, cached)
    pts = d.place(lesions, scan, correspondence)  # each lesion's side (front / back) and place on the diagram
    counts = region_counts(lesions, pts.side)     # {(view, level-2 site code, laterality): lesions}
    items = triage(lesions, tracking, diagnoses)  # Concern per lesion worth a look, most concerning first

The diagram is the registered template (bodymap.anatomy.template: z up, facing -y, subject's
left = +x) seen from the front (-y; the subject's left on the viewer's right) and from the back
(+y; mirrored), drawn flat in pale region colours. A lesion is placed at its point on the
template (the registration's correspondence carries each scan vertex to it), so a lesion
lands on the same spot of the diagram whatever the pose of the scan; its side is the one the
template's surface there faces. A visit without a registration is placed by its own
coordinates (the scan's z up and -y front, scaled to the template's height): approximate, and
said so (DiagramPoints.registered).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from bodymap import taxonomy as tx

VIEWS = ("front", "back")
# the diagram's pixel value where no body is (site maps hold site index * 3 + laterality)
BACKGROUND = 255
# new lesions at least this wide (mm) are the first concern (bodymap.records.flag_new)
NEW_MIN_MM = 3.0
# a diagnosis whose suspicious classes together reach this probability is a concern
SUSPICIOUS_MIN = 0.5
# classes of the diagnosis models (HAM10000 codes and the synthetic model's names) that ask for a look
SUSPICIOUS = ("mel", "bcc", "akiec", "melanoma", "atypical_nevus", "basal_cell_carcinoma", "squamous_cell_carcinoma")
# readable names of the HAM10000 / ISIC codes (bodymap.models.diagnosis.CLASS_NAMES, shorter for tables)
_CODE_NAMES = {"akiec": "actinic keratosis / intraepithelial carcinoma", "bcc": "basal cell carcinoma",
               "bkl": "benign keratosis", "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic nevus",
               "vasc": "vascular lesion"}


def diagnosis_name(label: str | None) -> str:
    """A diagnosis label as a person reads it: 'seborrheic_keratosis' -> 'seborrheic keratosis',
    'mel' -> 'melanoma' ('' for None)."""
    if not label:
        return ""
    return _CODE_NAMES.get(label, str(label).replace("_", " "))


def suspicion(diagnosis: dict | None) -> float:
    """Probability (0-1) of the suspicious classes (SUSPICIOUS) in a diagnosis {label, probs}; 0
    without one, and 0 when the model said the crop is out of its distribution."""
    if not diagnosis or diagnosis.get("ood"):
        return 0.0
    probs = diagnosis.get("probs") or {}
    if probs:
        return float(sum(float(v) for k, v in probs.items() if k in SUSPICIOUS))
    return 1.0 if diagnosis.get("label") in SUSPICIOUS else 0.0


# ------------------------------------------------------------------------------ triage
@dataclasses.dataclass
class Concern:
    """One lesion in the triage list: lesion_id (at the visit shown), score (higher first: 8 for
    new >= 3 mm, 4 grown, 2 colour change, plus the diagnosis' suspicion 0-1), reasons (words
    for the list), growth_mm (diameter change since the previous visit, 0 unknown),
    diameter_mm."""

    lesion_id: int
    score: float
    reasons: list[str]
    growth_mm: float = 0.0
    diameter_mm: float = 0.0


def triage(lesions, tracking=None, diagnoses: dict | None = None, new_min_mm: float = NEW_MIN_MM,
           suspicious_min: float = SUSPICIOUS_MIN) -> list[Concern]:
    """The lesions of one visit worth a clinician's look, most concerning first.

    lesions: the visit's LesionSet (counted lesions only); tracking: bodymap.track.Tracking of
    this visit (as its visit 2) against the visit before, or None (first visit, not tracked);
    diagnoses: {lesion id: {label, probs, ood?, melanoma_flag?}}. A lesion is listed when it is
    new and at least new_min_mm wide, grown, changed colour, its diagnosis' melanoma check is
    over the model's threshold (melanoma_flag), or its diagnosis gives the suspicious classes at
    least suspicious_min. Order: new >= new_min_mm, then grown, then colour change, then the
    melanoma check (each worth more than all the later ones together), then the diagnosis'
    suspicion; ties by growth, then diameter (larger first), then id."""
    from bodymap.records import FLAG_COLOUR, FLAG_GROWN

    diagnoses = diagnoses or {}
    pairs = {p.id2: p for p in tracking.pairs} if tracking is not None else {}
    new = {n.id2 for n in tracking.new} if tracking is not None else set()
    out = []
    for l in lesions.lesions if lesions is not None else []:
        score, reasons, growth = 0.0, [], 0.0
        if l.id in new and l.diameter_mm >= new_min_mm:
            score += 8
            reasons.append(f"new, {l.diameter_mm:.1f} mm")
        p = pairs.get(l.id)
        if p is not None:
            growth = float(p.diameter_change_mm or 0.0)
            if FLAG_GROWN in p.flags:
                score += 4
                reasons.append(f"grown {growth:+.1f} mm" + (" (uncertain match)" if p.status.value == "uncertain"
                                                           else ""))
            if FLAG_COLOUR in p.flags:
                score += 2
                reasons.append("colour change" + (f" (ΔE {p.colour_delta_e:.0f})" if p.colour_delta_e else ""))
        d = diagnoses.get(l.id)
        s = suspicion(d)
        if d and d.get("melanoma_flag") and not d.get("ood"):
            # the model's validated operating point, above any suspicion (0.99 x s < 1)
            score += 1
            reasons.append("melanoma check: over the model's threshold")
        if s >= suspicious_min:
            reasons.append(f"diagnosis: {diagnosis_name(d.get('label'))} ({100 * s:.0f} % suspicious)")
        if reasons:
            out.append(Concern(l.id, score + 0.99 * s, reasons, growth, float(l.diameter_mm)))
    out.sort(key=lambda c: (-c.score, -c.growth_mm, -c.diameter_mm, c.lesion_id))
    return out


def step(order: list[int], current: int | None, forward: bool = True) -> int | None:
    """The next (or previous) id of order after current, wrapping around; the first (or last)
    when current is not in it; None when order is empty (keyboard walk of the triage list)."""
    if not order:
        return None
    if current not in order:
        return order[0] if forward else order[-1]
    i = order.index(current) + (1 if forward else -1)
    return order[i % len(order)]


# ------------------------------------------------------------------------------ body diagram
@dataclasses.dataclass
class DiagramPoints:
    """Lesions on the body diagram: ids (n,), side (n,) 0 front / 1 back, xy (n, 2) diagram pixels
    (x right, y down) in the view of their side; registered: placed through the registration
    (else by the scan's own frame: approximate)."""

    ids: np.ndarray
    side: np.ndarray
    xy: np.ndarray
    registered: bool

    def nearest(self, view: int, x: float, y: float, max_px: float = 8.0) -> int | None:
        """The id of the lesion drawn nearest to pixel (x, y) of view (0 front, 1 back), within
        max_px; None when there is none."""
        on = np.flatnonzero(self.side == view)
        if not len(on):
            return None
        d = np.hypot(self.xy[on, 0] - x, self.xy[on, 1] - y)
        k = int(np.argmin(d))
        return int(self.ids[on[k]]) if d[k] <= max_px else None


class BodyDiagram:
    """The template drawn front and back at height_px pixels (same scale both views).

    images: per view (H, W, 3) uint8 (pale level-2 region colours, shaded a little by the
    surface's slope; white outside the body); sites: per view (H, W) uint8, level-2 site index
    * 3 + laterality index (BACKGROUND outside), for clicks; anchors: per view {(site code,
    side): (x, y)} the middle of each region's pixels (where its count is written)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, site: np.ndarray, side: np.ndarray,
                 height_px: int = 560, margin_px: int = 12):
        from scipy.spatial import cKDTree

        from bodymap.scan import vertex_normals

        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.normals = vertex_normals(self.vertices, self.faces)
        self.site2 = tx.level_lut(2)[np.asarray(site)].astype(np.int64)
        self.laterality = np.asarray(side).astype(np.int64)
        self._tree = cKDTree(self.vertices)
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        self.margin = margin_px
        self.scale = (height_px - 2 * margin_px) / (hi[2] - lo[2])  # px per mm
        self.centre_x = 0.5 * (lo[0] + hi[0])
        self.top_z = hi[2]
        self.bottom_z = lo[2]
        self.size = (int(np.ceil((hi[0] - lo[0]) * self.scale)) + 2 * margin_px, int(height_px))  # (W, H)
        self.images, self.sites, self.anchors = [], [], []
        for view in range(2):
            img, st = self._draw(view)
            self.images.append(img)
            self.sites.append(st)
            self.anchors.append(self._anchors(st))

    # ---------------------------------------------------------------- geometry
    def to_pixels(self, view: int, points: np.ndarray) -> np.ndarray:
        """(n, 2) diagram pixels (x right, y down) of template points (n, 3) mm in view 0 (front:
        the subject's left, +x, on the right) or 1 (back: mirrored)."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        sx = 1.0 if view == 0 else -1.0
        x = 0.5 * self.size[0] + sx * (p[:, 0] - self.centre_x) * self.scale
        y = self.margin + (self.top_z - p[:, 2]) * self.scale
        return np.c_[x, y]

    def _draw(self, view: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image, ImageDraw

        W, H = self.size
        img = Image.new("RGB", (W, H), (255, 255, 255))
        st = Image.new("L", (W, H), BACKGROUND)
        di, ds = ImageDraw.Draw(img), ImageDraw.Draw(st)
        xy = self.to_pixels(view, self.vertices)
        # painter's order: the far side first (front view: the camera at -y, so larger y is farther)
        depth = self.vertices[self.faces, 1].mean(1) * (1 if view == 0 else -1)
        facing = self.normals[self.faces].mean(1)
        for f in np.argsort(-depth):
            tri = [tuple(xy[i]) for i in self.faces[f]]
            corner = self.faces[f][0]
            s2, lat = int(self.site2[corner]), int(self.laterality[corner])
            base = np.array(tx.SITES[s2].colour, float)
            shade = 0.8 + 0.2 * abs(facing[f, 1]) / max(np.linalg.norm(facing[f]), 1e-9)
            col = tuple(int(c) for c in (255 - 0.38 * (255 - base)) * shade)
            di.polygon(tri, fill=col)
            ds.polygon(tri, fill=s2 * 3 + lat)
        return np.asarray(img), np.asarray(st)

    @staticmethod
    def _anchors(st: np.ndarray) -> dict:
        out = {}
        for v in np.unique(st):
            if v == BACKGROUND:
                continue
            ys, xs = np.nonzero(st == v)
            # the region's pixel nearest its centroid (a curved region's centroid may fall outside it)
            cx, cy = xs.mean(), ys.mean()
            k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
            out[(tx.SITES[int(v) // 3].code, tx.LATERALITY[int(v) % 3])] = (float(xs[k]), float(ys[k]))
        return out

    def region_at(self, view: int, x: float, y: float) -> tuple[str, str] | None:
        """(level-2 site code, laterality) drawn at pixel (x, y) of view, None off the body."""
        W, H = self.size
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < W and 0 <= yi < H):
            return None
        v = int(self.sites[view][yi, xi])
        return None if v == BACKGROUND else (tx.SITES[v // 3].code, tx.LATERALITY[v % 3])

    def place(self, lesions, scan=None, correspondence=None) -> DiagramPoints:
        """Each lesion of a LesionSet (counted ones) on the diagram. With the scan's
        correspondence (bodymap.anatomy.register.Correspondence) a lesion goes to its point on
        the template (its face's corners' template points, by its barycentric coordinates) and
        to the view its template surface faces; without one, to its own position in the scan's
        frame scaled to the template (z up, facing -y) and the view its normal faces."""
        L = list(lesions.lesions) if lesions is not None else []
        ids = np.array([l.id for l in L], np.int64)
        if not L:
            return DiagramPoints(ids, np.zeros(0, np.int64), np.zeros((0, 2)), correspondence is not None)
        if correspondence is not None and scan is not None:
            tp = correspondence.template_points(self.vertices, self.faces)
            face = np.array([l.face for l in L], np.int64)
            bary = np.array([l.bary for l in L], np.float64)
            pts = np.einsum("nj,njd->nd", bary, tp[scan.faces[face]])
            _, near = self._tree.query(pts, k=8)
            normals = self.normals[near].mean(1)
            registered = True
        else:
            p = np.array([l.point_mm for l in L], np.float64)
            normals = np.array([l.normal for l in L], np.float64)
            lo = scan.bounds[0] if scan is not None else p.min(0)
            hi = scan.bounds[1] if scan is not None else p.max(0)
            s = (self.top_z - self.bottom_z) / max(hi[2] - lo[2], 1e-9)
            pts = np.c_[(p[:, 0] - 0.5 * (lo[0] + hi[0])) * s + self.centre_x, p[:, 1] * s,
                        (p[:, 2] - lo[2]) * s + self.bottom_z]
            registered = False
        side = (normals[:, 1] > 0).astype(np.int64)  # facing +y: seen from the back
        xy = np.zeros((len(L), 2))
        for view in (0, 1):
            on = side == view
            xy[on] = self.to_pixels(view, pts[on])
        return DiagramPoints(ids, side, xy, registered)


MESH_FILE = Path(__file__).resolve().parent / "data" / "template_mesh.npz"


@functools.lru_cache(maxsize=2)
def body_diagram(height_px: int = 560) -> BodyDiagram:
    """The BodyDiagram of the labelled template, drawn once per size and kept (about a second).
    Its geometry comes from data/template_mesh.npz (scripts/make_template_mesh.py: no torch, no
    body model to build); from the body model itself (bodymap.anatomy.template, seconds) when
    that file is missing or does not fit the labels."""
    from bodymap.anatomy.template import LABELS_FILE

    with np.load(LABELS_FILE) as z:
        site, side = z["site"], z["side"]
    if MESH_FILE.is_file():
        with np.load(MESH_FILE) as z:
            v, f = z["vertices"].astype(np.float64), z["faces"].astype(np.int64)
        if len(v) == len(site):
            return BodyDiagram(v, f, site, side, height_px)
    from bodymap.anatomy.template import load_template

    t = load_template()
    return BodyDiagram(t.vertices, t.faces, t.site, t.side, height_px)


def region_key(region: dict | None) -> tuple[str, str]:
    """(level-2 site code, laterality) of a lesion's region record ('unknown', 'midline' when none)."""
    r = region or {}
    code = r.get("code") if r.get("code") in tx.SITE_INDEX else "unknown"
    side = r.get("side") if r.get("side") in tx.LATERALITY else "midline"
    return tx.SITES[tx.ancestor(tx.SITE_INDEX[code], 2)].code, side


def region_counts(lesions, side: np.ndarray, ids=None) -> dict[tuple[int, str, str], int]:
    """{(view, level-2 site code, laterality): number of lesions} of lesions (a list of Lesion, or a
    LesionSet: its counted lesions) by their region record, each counted in the view of its side
    (DiagramPoints.side, same order). ids: count only these lesion ids (the table's filter)."""
    L = list(getattr(lesions, "lesions", lesions))
    out: dict = {}
    for l, s in zip(L, np.asarray(side)):
        if ids is not None and l.id not in ids:
            continue
        key = (int(s), *region_key(l.region))
        out[key] = out.get(key, 0) + 1
    return out


def region_text(code: str, side: str) -> str:
    """What the table's region search is given for a region clicked on the diagram ('left thigh')."""
    return tx.describe(tx.SITE_INDEX[code], tx.LATERALITY.index(side))


# ------------------------------------------------------------------------------ 3D marks
def surface_ring(vertices: np.ndarray, tree, point, normal, radius_mm: float, n: int = 64,
                 lift_mm: float = 0.8) -> np.ndarray:
    """(n + 1, 3) mm: a closed ring of radius_mm around point (3,) that follows the skin: each
    ring point is the tangent-plane circle's point moved along the normal (3,) onto a quadratic
    fitted to the scan's vertices (k, 3) near it (tree: their scipy cKDTree), then lifted_mm off
    the skin. A flat disc cuts into curved skin (an arm, a shoulder) and is hidden there."""
    from bodymap.measures import tangent_frame

    p = np.asarray(point, np.float64)
    nrm = np.asarray(normal, np.float64)
    nrm = nrm / max(np.linalg.norm(nrm), 1e-12)
    e1, e2 = tangent_frame(nrm)
    a = np.linspace(0, 2 * np.pi, n + 1)
    u, v = radius_mm * np.cos(a), radius_mm * np.sin(a)
    idx = np.asarray(tree.query_ball_point(p, 1.6 * radius_mm + 4.0), np.int64)
    h = np.zeros(n + 1)
    if len(idx) >= 6:
        d = np.asarray(vertices)[idx] - p
        du, dv, dh = d @ e1, d @ e2, d @ nrm
        keep = np.abs(dh) < radius_mm + 4.0  # the skin around the lesion, not a limb beside it
        if keep.sum() >= 6:
            X = np.c_[np.ones(keep.sum()), du[keep], dv[keep], du[keep] ** 2, du[keep] * dv[keep], dv[keep] ** 2]
            c = np.linalg.lstsq(X, dh[keep], rcond=None)[0]
            h = c[0] + c[1] * u + c[2] * v + c[3] * u ** 2 + c[4] * u * v + c[5] * v ** 2
    return p + np.outer(u, e1) + np.outer(v, e2) + np.outer(h + lift_mm, nrm)


def marker_offsets(points: np.ndarray, normals: np.ndarray, diameters: np.ndarray, gap_mm: float = 2.5) -> np.ndarray:
    """(n, 3) mm: where each lesion's marker dot goes: beside the lesion (its radius + gap_mm
    along the skin towards the scan's up, bodymap.measures.tangent_frame), 1 mm off the skin, so
    the dot never covers the lesion's centre."""
    from bodymap.measures import tangent_frame

    P, N = np.asarray(points, np.float64).reshape(-1, 3), np.asarray(normals, np.float64).reshape(-1, 3)
    out = np.empty_like(P)
    for k, (p, nrm, d) in enumerate(zip(P, N, np.asarray(diameters, np.float64).reshape(-1))):
        nn = nrm / max(np.linalg.norm(nrm), 1e-12)
        e1, _ = tangent_frame(nn)
        out[k] = p + (0.5 * d + gap_mm) * e1 + 1.0 * nn
    return out
