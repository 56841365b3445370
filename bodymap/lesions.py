"""Lesion records on a scan: from 2D boxes on the texture to measured points on the 3D surface.

``LesionMeasurer`` segments each box's lesion by its contrast to the skin around it, lifts the
lesion's pixels onto the mesh (face + barycentric of each texel of the texture, or of each pixel
of a rendered view), and measures there: longest (Feret) diameter and area in mm on the body,
whatever the UV stretch or viewing angle. Pieces of one lesion cut by a UV seam (or found twice,
in two tiles or views) are merged in 3D. ``LesionSet`` round-trips through JSON and
writes the lesion table as CSV.

A candidate that is not counted as a lesion (larger than a mole map tracks, on a nipple, lip,
nail or eye) is never thrown away: it moves to ``LesionSet.suppressed`` with its reason
(``Lesion.suppressed``, one of ``SUPPRESSION_REASONS``), is written to lesions.json and the
CSV table like any lesion, and is left out of ``len``, ``points``, tracking and exports.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from bodymap.colour import delta_e, lesion_contrast, srgb_to_lab
from bodymap.detect import Boxes
from bodymap.jsonfile import read_json, write_json
from bodymap.project import UVAtlas
from bodymap.scan import Scan

SCHEMA = "bodymap.lesions/1"

# Why a candidate is not counted as a lesion: code -> what the table says.
SUPPRESSION_REASONS = {
    "too_large": "too large",  # over pipeline.MAX_DIAMETER_MM: a patch of skin tone, not one mole
    "nipple": "off skin: nipple / areola",
    "lips": "off skin: lip",
    "nail": "off skin: nail",
    "eye": "off skin: eye",
}


def suppression_text(reason: str | None) -> str:
    """What the lesion table says for a suppression reason code ('' for a counted lesion)."""
    return "" if not reason else SUPPRESSION_REASONS.get(reason, reason)


def _plain_copy(v):
    """A deep copy of JSON-like data (dicts, lists and tuples of numbers and strings)."""
    if isinstance(v, dict):
        return {k: _plain_copy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain_copy(x) for x in v)
    return v


@dataclasses.dataclass
class Lesion:
    """One lesion on a scan.

    point_mm (3,) surface point (area-weighted centre, snapped to the surface); face, bary: the
    same point as face index + barycentric (3,); normal (3,) unit; diameter_mm: longest (Feret)
    diameter on the surface's tangent plane; area_mm2 on the surface; colour_lab / skin_lab (3,):
    mean CIELAB of the lesion and of the skin around it; contrast_de: their Delta E;
    confidence in [0, 1]; region: site path (see RegionIndex.region_at); source: where it was
    found ('texture', 'view:NAME', 'manual', 'imported'); box_px: (x0, y0, x1, y1) on the texture;
    measures: outline, colour and position measures keyed as in bodymap.measures.MEASURES ({}
    until measured: lists written before measures existed, manual lesions).
    suppressed: None for a counted lesion, else why the candidate is not counted (a key of
    SUPPRESSION_REASONS).
    """

    id: int
    point_mm: list[float]
    face: int
    bary: list[float]
    normal: list[float]
    diameter_mm: float
    area_mm2: float
    colour_lab: list[float]
    skin_lab: list[float]
    contrast_de: float
    confidence: float
    source: str = "texture"
    detector: str = ""
    box_px: list[float] | None = None
    region: dict = dataclasses.field(default_factory=dict)
    on_skin: bool = True
    note: str = ""
    # the measures a TBP system reports (bodymap.measures.MEASURES); empty in older files
    measures: dict = dataclasses.field(default_factory=dict)
    suppressed: str | None = None

    def to_dict(self) -> dict:
        """The JSON form: a copy sharing nothing mutable with the lesion (dataclasses.asdict did
        the same ten times slower: it was three quarters of the time a project took to save)."""
        return {f.name: _plain_copy(getattr(self, f.name)) for f in _LESION_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "Lesion":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_LESION_FIELDS = dataclasses.fields(Lesion)


_INT_FIELDS = ("id", "face")
_VEC3_FIELDS = ("point_mm", "bary", "normal", "colour_lab", "skin_lab")
_FLOAT_FIELDS = ("diameter_mm", "area_mm2", "contrast_de", "confidence")
_COLOUR_FIELDS = ("colour_lab", "skin_lab")  # may be empty: colour unknown


def _lesion_from_json(d, k: int, path) -> Lesion:
    """A Lesion from the k-th record of a lesion file, every required field checked (type, length,
    finite, ids and faces non-negative integers). ValueError naming the file, the lesion and the field."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: lesion {k + 1} is not a record ({type(d).__name__})")
    who = f"lesion {k + 1}" + (f" (id {d['id']})" if "id" in d else "")
    required = [f.name for f in dataclasses.fields(Lesion)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise ValueError(f"{path}: {who} has no {', '.join(missing)}")
    out = {}
    for n in _INT_FIELDS:
        v = d[n]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
            raise ValueError(f"{path}: {who}: {n} is {v!r}, expected a non-negative integer")
        out[n] = int(v)
    for n in _VEC3_FIELDS:
        v = d[n]
        if n in _COLOUR_FIELDS and (v is None or v == []):  # colour not measured (truth lists, imports)
            out[n] = []
            continue
        try:
            a = np.asarray(v, np.float64)
        except (TypeError, ValueError):
            a = np.zeros(0)
        if a.shape != (3,) or not np.isfinite(a).all():
            raise ValueError(f"{path}: {who}: {n} is {v!r}, expected 3 finite numbers")
        out[n] = [float(x) for x in a]
    for n in _FLOAT_FIELDS:
        v = d[n]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"{path}: {who}: {n} is {v!r}, expected a number")
        out[n] = float(v)
    rest = {k2: v for k2, v in d.items() if k2 not in out}
    if not isinstance(rest.get("region") or {}, dict):
        raise ValueError(f"{path}: {who}: region is {rest['region']!r}, expected a record")
    box = rest.get("box_px")
    if box is not None and (not isinstance(box, (list, tuple)) or len(box) != 4):
        raise ValueError(f"{path}: {who}: box_px is {box!r}, expected 4 numbers or null")
    rest["region"] = rest.get("region") or {}
    try:
        return Lesion.from_dict({**rest, **out})
    except TypeError as e:
        raise ValueError(f"{path}: {who}: {e}") from None


@dataclasses.dataclass
class LesionSet:
    """The lesions of one scan, with where they came from. scan: source file; detector: name;
    suppressed: candidates kept on record but not counted (each with its ``suppressed``
    reason): ``len``, ``points``, ``diameters``, tracking and exports see ``lesions`` only."""

    lesions: list[Lesion]
    scan: str = ""
    detector: str = ""
    info: dict = dataclasses.field(default_factory=dict)
    suppressed: list[Lesion] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lesions)

    @property
    def all(self) -> list[Lesion]:
        """Counted lesions, then suppressed candidates."""
        return self.lesions + self.suppressed

    def suppress(self, keep, reason: str | None) -> int:
        """Move the lesions for which keep(lesion) is False to ``suppressed`` with reason
        (a str, or a callable lesion -> str). Returns how many moved. Ids are left alone."""
        out = [l for l in self.lesions if not keep(l)]
        for l in out:
            l.suppressed = reason(l) if callable(reason) else reason
        self.lesions = [l for l in self.lesions if keep(l)]
        self.suppressed += out
        return len(out)

    def renumber(self) -> None:
        """Ids 1..k for the counted lesions, then k+1.. for the suppressed ones (so every id of a
        visit names one record); info['max_id'] keeps new manual lesions from reusing them; a
        count of suppressed candidates per reason goes to info['suppressed']."""
        for i, l in enumerate(self.all, 1):
            l.id = i
        self.info["max_id"] = max(self.info.get("max_id", 0), len(self.all))
        counts: dict[str, int] = {}
        for l in self.suppressed:
            counts[l.suppressed] = counts.get(l.suppressed, 0) + 1
        self.info["suppressed"] = counts

    def to_dict(self) -> dict:
        """The JSON form (schema bodymap.lesions/1; 'suppressed' absent from older files)."""
        return {"schema": SCHEMA, "scan": self.scan, "detector": self.detector, "info": self.info,
                "lesions": [l.to_dict() for l in self.lesions],
                "suppressed": [l.to_dict() for l in self.suppressed]}

    @classmethod
    def from_dict(cls, d: dict, source="lesion file") -> "LesionSet":
        """The set from its JSON form, every record checked (older files without 'suppressed' read
        as none). ValueError naming source (a file or where the list came from) and the problem."""
        items = d.get("lesions") if isinstance(d, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"{source}: lesion file without a 'lesions' list (corrupt?)")
        lesions = [_lesion_from_json(x, k, source) for k, x in enumerate(items)]
        sup_items = d.get("suppressed") or []
        if not isinstance(sup_items, list):
            raise ValueError(f"{source}: 'suppressed' is not a list of lesion records")
        sup = [_lesion_from_json(x, k, source) for k, x in enumerate(sup_items)]
        for l in sup:
            l.suppressed = l.suppressed or "unknown"  # a record under "suppressed" is never counted
        ids = [l.id for l in lesions + sup]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{source}: lesion ids repeat ({', '.join(map(str, dup[:5]))}); each lesion needs its own id")
        info = d.get("info", {})
        return cls(lesions, str(d.get("scan") or ""), str(d.get("detector") or ""),
                   info if isinstance(info, dict) else {}, sup)

    @property
    def points(self) -> np.ndarray:
        """(k, 3) mm."""
        return np.array([l.point_mm for l in self.lesions], np.float64).reshape(-1, 3)

    @property
    def diameters(self) -> np.ndarray:
        """(k,) mm."""
        return np.array([l.diameter_mm for l in self.lesions], np.float64)

    def save_json(self, path: str | Path) -> None:
        """Write the set as JSON (schema bodymap.lesions/1)."""
        write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> "LesionSet":
        """Read a set written by save_json. Raises ValueError naming the file if it is not one."""
        return cls.from_dict(read_json(path, SCHEMA, "lesion file"), path)

    def save_csv(self, path: str | Path) -> None:
        """Write the lesion table: one row per lesion, sizes in mm, region names, colour; then the
        suppressed candidates, their reason code in the last column (empty for counted lesions)."""
        cols = ["id", "x_mm", "y_mm", "z_mm", "diameter_mm", "area_mm2", "region", "site_code", "side",
                "macro", "ear_region", "L", "a", "b", "contrast_de", "confidence", "source", "on_skin", "note",
                "suppressed"]
        from bodymap.atomic import open_atomic

        with open_atomic(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for l in self.all:
                r = l.region
                w.writerow([l.id, *(f"{x:.2f}" for x in l.point_mm), f"{l.diameter_mm:.2f}", f"{l.area_mm2:.2f}",
                            r.get("description", ""), r.get("code", ""), r.get("side", ""), r.get("macro", ""),
                            r.get("ear", ""), *((f"{x:.1f}" for x in l.colour_lab) if len(l.colour_lab) == 3 else ("", "", "")),
                            f"{l.contrast_de:.1f}",
                            f"{l.confidence:.3f}", l.source, int(l.on_skin), l.note, l.suppressed or ""])


def texel_index(atlas: UVAtlas) -> np.ndarray:
    """(size, size) int32: for each texel its index into atlas.flat/face/bary, -1 off the mesh
    (and in dilated gutters)."""
    h, w = atlas.shape
    idx = np.full(h * w, -1, np.int32)
    n = len(atlas.flat) if atlas.n_inside is None else atlas.n_inside
    idx[atlas.flat[:n]] = np.arange(n, dtype=np.int32)
    return idx.reshape(h, w)


class SurfaceImage:
    """An image whose pixels are pinned to a scan's surface: the texture (through the UV atlas)
    or a rendered view (through its face-id and barycentric buffers).

    image (H, W, 3) uint8; inside (H, W) bool: pixels that show the surface; lift(rows, cols)
    gives their surface points (k, 3) mm, faces (k,) and surface area per pixel (k,) mm^2.
    """

    image: np.ndarray
    inside: np.ndarray

    def lift(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


class TextureImage(SurfaceImage):
    """A scan's texture as a SurfaceImage. scan: textured Scan (mm); atlas: its UV atlas."""

    def __init__(self, scan: Scan, atlas: UVAtlas):
        scan.require_texture()
        self.scan, self.atlas, self.image = scan, atlas, scan.texture
        self.index = texel_index(atlas)
        self.inside = self.index >= 0
        uvt = scan.uv_areas_texels
        with np.errstate(divide="ignore", invalid="ignore"):
            self.face_texel_area = np.where(uvt > 0, scan.face_areas / uvt, 0.0)  # mm^2 per texel

    def lift(self, rows, cols):
        t = self.index[rows, cols]
        f = self.atlas.face[t]
        pts = np.einsum("kj,kjd->kd", self.atlas.bary[t].astype(np.float64), self.scan.vertices[self.scan.faces[f]])
        return pts, f, self.face_texel_area[f]


class ViewImage(SurfaceImage):
    """A rendered view (renderers.RenderResult) of scan as a SurfaceImage; a pixel's area on the
    surface is its footprint (depth / focal length)^2 over the cosine of the viewing angle."""

    def __init__(self, scan: Scan, view):
        self.scan, self.view, self.image = scan, view, view.rgb
        cam = view.camera
        # grazing pixels smear a lesion over a long strip of skin: only well-facing surface counts
        _, dirs = cam.rays()
        cos = np.abs((view.normal.reshape(-1, 3) * dirs).sum(1)).reshape(view.face_id.shape)
        self.inside = (view.face_id >= 0) & (cos > 0.35)
        f = cam.K[0, 0]
        with np.errstate(invalid="ignore", over="ignore"):
            self.pixel_area = np.where(self.inside, (view.depth / f) ** 2 / np.maximum(cos, 0.35), 0.0)

    def lift(self, rows, cols):
        f = self.view.face_id[rows, cols]
        b = self.view.bary[rows, cols].astype(np.float64)
        pts = np.einsum("kj,kjd->kd", b, self.scan.vertices[self.scan.faces[f]])
        return pts, f, self.pixel_area[rows, cols]


@dataclasses.dataclass
class _Piece:
    """A lesion's pixels lifted to 3D: points (k, 3) mm, areas (k,) mm^2, colours (k, 3) Lab;
    image: which image it was found on (id), rc (k, 2) its pixels there (row, column)."""

    points: np.ndarray
    areas: np.ndarray
    lab: np.ndarray
    skin_lab: np.ndarray
    score: float
    box: tuple[float, float, float, float] | None
    texel_mm: float
    outline: list = dataclasses.field(default_factory=list)  # border loops (measures.image_outline)
    ring_lab: np.ndarray | None = None  # (r, 3) Lab of the ring of skin around the lesion
    image: int | None = None
    rc: np.ndarray | None = None


class LesionMeasurer:
    """Measures lesions found on images of one scan (its texture, rendered views).

    scan: the Scan (mm). ``pieces(surface_image, boxes)`` segments and lifts each box;
    ``lesions(pieces)`` merges pieces of one lesion (across seams, tiles, views) and measures.
    """

    def __init__(self, scan: Scan):
        self.scan = scan

    def measure(self, img: SurfaceImage, boxes: Boxes, detector: str = "", source: str = "texture") -> list[Lesion]:
        """Lesions (ids from 1) of boxes on one image, pieces of one lesion merged."""
        return self.lesions(self.pieces(img, boxes), detector, source)

    def pieces(self, img: SurfaceImage, boxes: Boxes) -> list[_Piece]:
        """Each box's lesion segmented and lifted to the surface (boxes that show none left out).
        Texture boxes are kept with the piece (the lesion table and VIA export give them)."""
        keep_box = isinstance(img, TextureImage)
        masks = boxes.masks if boxes.masks is not None else [None] * len(boxes)
        out = (self._piece(img, b, s, keep_box, m) for b, s, m in zip(boxes.xyxy, boxes.score, masks))
        return [p for p in out if p is not None]

    def lesions(self, pieces: list[_Piece], detector: str = "", source: str = "texture") -> list[Lesion]:
        """Merge pieces that are one lesion and measure each; ids from 1."""
        groups = [[pieces[i] for i in g] for g in _merge_groups(pieces)]
        groups = [g for g in groups if sum(p.areas.sum() for p in g) > 0]
        if not groups:
            return []
        centres = np.array([_centre(g) for g in groups])
        # every centre snapped onto the surface in one query, by the scan's own locator: the
        # second look measures a few lesions in each of dozens of windows, and a face tree
        # built per call took 0.27 s of each at 290k faces
        I, L, _ = self.scan.locator.closest(centres)
        return [self._lesion(g, k + 1, int(f), b, detector, source)
                for k, (g, f, b) in enumerate(zip(groups, I, L))]

    # -------------------------------------------------------------- one box
    def _piece(self, img: SurfaceImage, box: np.ndarray, score: float, keep_box: bool,
               mask: np.ndarray | None = None) -> _Piece | None:
        """One box's lesion: segmented at half its contrast to the skin ring around the box
        (within the detector's mask (y1 - y0, x1 - x0) bool of the box, grown by a pixel, when
        there is one), lifted to the surface."""
        tex = img.image
        H, W = tex.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        m = int(max(3, round(0.6 * max(bw, bh))))
        X0, Y0 = int(max(0, np.floor(x0) - m)), int(max(0, np.floor(y0) - m))
        X1, Y1 = int(min(W, np.ceil(x1) + m)), int(min(H, np.ceil(y1) + m))
        inside = img.inside[Y0:Y1, X0:X1]
        if not inside.any():
            return None
        lab = srgb_to_lab(tex[Y0:Y1, X0:X1])
        yy, xx = np.mgrid[Y0:Y1, X0:X1] + 0.5
        inbox = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        ring = inside & ~ndimage.binary_dilation(inbox, iterations=1)
        if ring.sum() < 8:
            ring = inside & ~inbox
        if ring.sum() < 4:
            return None
        skin = np.median(lab[ring], axis=0)
        c = lesion_contrast(lab, skin)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max(bw / 2, 0.5), max(bh / 2, 0.5)
        centre = inside & (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 0.3 ** 2 + 1e-9)
        allowed = None
        if mask is not None:  # the detector's blob: the lesion ends where its neighbour begins
            blob = np.zeros_like(inside)
            bx0, by0 = int(round(x0)) - X0, int(round(y0)) - Y0
            blob[by0:by0 + mask.shape[0], bx0:bx0 + mask.shape[1]] = mask[:Y1 - Y0 - by0, :X1 - X0 - bx0]
            blob &= inside
            if blob.any():
                allowed = ndimage.binary_dilation(blob, iterations=1)
                centre = centre & blob if (centre & blob).any() else blob
        if not centre.any():
            centre = inside & inbox
        if not centre.any():
            return None
        # the border: half the lesion's own contrast (a low percentile: dark-centred nevi), but
        # never below a third of the box's peak: a ring (an areola round a pale nipple) has no
        # contrast at its centre and would otherwise spread over all the skin around it
        peak = np.percentile(c[inside & inbox], 95) if (inside & inbox).any() else 0.0
        level = max(0.5 * np.percentile(c[centre], 35), peak / 3.0, 1.0)
        lab_img, _ = ndimage.label((c > level) & inside & (allowed if allowed is not None else True))
        ids = np.unique(lab_img[centre & (lab_img > 0)])
        if not len(ids):  # the ring itself, from its strongest pixels in the box
            ids = np.unique(lab_img[inbox & (c >= 0.6 * peak) & (lab_img > 0)])
        seg = ndimage.binary_fill_holes(np.isin(lab_img, ids)) & inside if len(ids) else inside & inbox
        r, cc = np.nonzero(seg)
        pts, _, areas = img.lift(r + Y0, cc + X0)
        texel_mm = float(np.sqrt(np.median(areas))) if len(areas) else 0.0
        # pixels of another UV chart (or a limb behind) next to this one in the image are far in 3D
        p0 = np.median(pts, axis=0)
        reach = 1.5 * max(bw, bh) * texel_mm + 1.0
        near = np.linalg.norm(pts - p0, axis=1) <= reach
        if not near.any():
            return None
        outline, ring_lab = _surroundings(img, (Y0, X0), seg, inside, ring, centre, c / max(level, 1e-6), lab, p0,
                                          reach, texel_mm)
        return _Piece(pts[near], areas[near], lab[seg][near], skin, float(score),
                      tuple(float(v) for v in box) if keep_box else None, texel_mm, outline, ring_lab,
                      id(img), np.stack([r[near] + Y0, cc[near] + X0], 1))

    # -------------------------------------------------------------- boxes -> lesions
    def _lesion(self, parts: list[_Piece], lid: int, face: int, bary: np.ndarray, detector: str,
                source: str) -> Lesion:
        """The lesion made of parts, its centre at face + bary (3,) on the scan."""
        pts = np.concatenate([p.points for p in parts])
        areas = np.concatenate([p.areas for p in parts])
        lab = np.concatenate([p.lab for p in parts])
        point = bary @ self.scan.vertices[self.scan.faces[face]]
        normal = self.scan.face_normals[face]
        texel_mm = float(np.mean([p.texel_mm for p in parts]))
        boxed = [p for p in parts if p.box is not None]
        best = max(boxed, key=lambda p: len(p.points)) if boxed else None
        skin = np.mean([p.skin_lab for p in parts], axis=0)
        colour = lab.mean(0)
        return Lesion(
            id=lid, point_mm=_r(point, 3), face=face, bary=_r(bary, 6), normal=_r(normal, 4),
            # the longest diameter is never below that of the disc of the same area (a lone texel's
            # side would be: a 1-texel lesion of 1.86 mm2 measured 1.36 mm, its area above its square)
            diameter_mm=round(max(feret_diameter(pts, normal, texel_mm), float(np.sqrt(4 * areas.sum() / np.pi))), 3),
            area_mm2=round(float(areas.sum()), 3),
            colour_lab=_r(colour, 2), skin_lab=_r(skin, 2), contrast_de=round(float(delta_e(colour, skin)), 2),
            confidence=round(max(p.score for p in parts), 4), source=source, detector=detector,
            box_px=_r(np.array(best.box), 1) if best is not None else None,
            measures=_measures(parts, point, normal))

    def add_measures(self, img: "TextureImage", lesions: list[Lesion]) -> int:
        """Measure lesions that have no measures yet (lists written before measures existed,
        imported ones): each is segmented again in its texture box, or in a box of its diameter
        around its texture point, and measured like a new one (one piece: a lesion cut by a UV
        seam is measured on the side its point lies on). Returns how many got measures."""
        done = 0
        for l in lesions:
            if l.measures:
                continue
            box = np.array(l.box_px, np.float64) if l.box_px is not None else self._box_around(l)
            p = self._piece(img, box, l.confidence, False)
            if p is None:
                continue
            l.measures = _measures([p], np.asarray(l.point_mm, np.float64), np.asarray(l.normal, np.float64))
            done += bool(l.measures)
        return done

    def _box_around(self, l: Lesion) -> np.ndarray:
        """(4,) texture box (x0, y0, x1, y1) of the lesion's diameter around its texture point."""
        from bodymap.scan import uv_to_pixel

        uv = self.scan.uv_from_barycentric(np.array([l.face]), np.array([l.bary], np.float64))
        x, y = uv_to_pixel(uv, self.scan.texture.shape)[0]
        texel = float(self.scan.texel_density[l.face])
        half = max(1.5, 0.5 * l.diameter_mm / texel) if np.isfinite(texel) and texel > 0 else 3.0
        return np.array([x - half, y - half, x + half, y + half])


def _surroundings(img: SurfaceImage, origin: tuple[int, int], seg: np.ndarray, inside: np.ndarray, skin: np.ndarray,
                  centre: np.ndarray, rel: np.ndarray, lab: np.ndarray, p0: np.ndarray, reach: float,
                  texel_mm: float) -> tuple[list, np.ndarray]:
    """A segmented lesion's border on the surface and the skin around it.

    The window of img starting at origin (row, col): seg, inside, skin, centre (h, w) bool: the
    lesion's pixels, the pixels that show the surface, the skin around the detector's box and
    the box's centre; rel (h, w): the segmentation's contrast relative to its level; lab (h, w,
    3): CIELAB; p0 (3,) mm and reach mm: where the lesion lies (pixels farther away show another
    UV chart or limb).

    The border is where the lesion's colour is half way between the skin's and its own in
    linear light (sRGB decoded): where pigment covers half the skin's reflectance. (The
    segmentation's half-contrast in CIELAB lies farther in, L* being compressive.) Returns
    (border loops, see bodymap.measures.image_outline; (r, 3) Lab of a ring of skin two pixels
    out from the border (past a soft edge), a quarter of the lesion's size wide (at least 2
    pixels), lesion-like pixels left out)."""
    from bodymap.colour import srgb_to_linear
    from bodymap.measures import image_outline

    Y0, X0 = origin
    h, w_ = seg.shape
    lin = srgb_to_linear(img.image[Y0:Y0 + h, X0:X0 + w_].astype(np.float32) / 255.0)
    k = np.linalg.norm(lin - np.median(lin[skin], axis=0), axis=-1)
    # half the lesion's own contrast: of its centre (a low percentile: dark-centred nevi), or of
    # its inside where that is lower (a dark centre in a paler lesion: atypical nevi)
    klev = max(0.5 * float(np.percentile(k[centre], 35)), 1e-6)
    keep = _component(k > klev, inside, centre | seg, seg)
    core = ndimage.binary_erosion(keep, iterations=1)
    if core.sum() >= 3:
        klev = max(min(klev, 0.5 * float(np.percentile(k[core], 25))), 1e-6)
    keep = _component(k > klev, inside, centre | seg, seg)
    w = max(2, int(round(0.28 * np.sqrt(keep.sum()))))  # ~ a quarter of the equivalent diameter
    region = ndimage.binary_dilation(keep, iterations=w + 2) & inside
    rr, cc = np.nonzero(region)
    p, _, _ = img.lift(rr + Y0, cc + X0)
    ok = np.linalg.norm(p - p0, axis=1) <= reach + (w + 2) * texel_mm
    pos = np.full(seg.shape + (3,), np.nan)
    pos[rr[ok], cc[ok]] = p[ok]
    lifted = np.isfinite(pos[..., 0])
    ring = region & lifted & ~ndimage.binary_dilation(keep, iterations=2) & (rel <= 1.0)
    return image_outline(k / klev, keep & lifted, pos), lab[ring]


def _component(mask: np.ndarray, inside: np.ndarray, seed: np.ndarray, default: np.ndarray) -> np.ndarray:
    """The connected pieces of mask & inside that touch seed (h, w) bool, holes filled; default
    when none does."""
    comp, _ = ndimage.label(mask & inside)
    ids = np.unique(comp[seed & (comp > 0)])
    return ndimage.binary_fill_holes(np.isin(comp, ids)) & inside if len(ids) else default


def _distinct(parts: list[_Piece]) -> list[_Piece]:
    """The pieces of one lesion that are not copies of a larger one (the same lesion seen in two
    rendered views or tiles): a piece is a copy when most of its points lie within a texel of a
    larger piece's. Pieces cut apart by a UV seam do not overlap and are all kept."""
    kept: list[_Piece] = []
    for p in sorted(parts, key=lambda p: -len(p.points)):
        if kept:
            d, _ = cKDTree(np.concatenate([k.points for k in kept])).query(p.points)
            if (d <= max(p.texel_mm, 0.2)).mean() >= 0.5:
                continue
        kept.append(p)
    return kept


def _measures(parts: list[_Piece], point: np.ndarray, normal: np.ndarray) -> dict:
    """bodymap.measures of the lesion made of parts, centred at point (3,) with normal (3,)."""
    from bodymap.measures import lesion_measures

    parts = _distinct(parts)
    rings = [p.ring_lab for p in parts if p.ring_lab is not None and len(p.ring_lab)]
    return lesion_measures([l for p in parts for l in p.outline], point, normal,
                           np.concatenate([p.points for p in parts]), np.concatenate([p.lab for p in parts]),
                           np.concatenate(rings) if rings else np.zeros((0, 3)))


def _centre(parts: list[_Piece]) -> np.ndarray:
    """(3,) area-weighted centre of the pieces' points (mm)."""
    pts = np.concatenate([p.points for p in parts])
    areas = np.concatenate([p.areas for p in parts])
    return (pts * areas[:, None]).sum(0) / areas.sum()


def feret_diameter(points: np.ndarray, normal: np.ndarray, texel_mm: float) -> float:
    """Longest diameter (mm) of a lesion's texel centres points (k, 3) mm seen along normal (3,):
    the largest distance between hull points on the tangent plane, plus one texel (the texel
    centres lie half a texel inside the border on each side)."""
    n = normal / max(np.linalg.norm(normal), 1e-12)
    a = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(n, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    d = points - points.mean(0)
    xy = np.stack([d @ e1, d @ e2], 1)
    if len(xy) >= 3:
        try:
            xy = xy[ConvexHull(xy).vertices]
        except QhullError:  # collinear texels
            pass
    far = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1).max()) if len(xy) > 1 else 0.0
    return float(far + texel_mm)


def _merge_groups(pieces: list[_Piece]) -> list[list[int]]:
    """Groups of pieces that are one lesion: their texels touch in 3D (within two texels) and
    their centres lie within the larger piece's extent. Two pieces side by side on one image
    were told apart by the detector: they are one lesion only when they are of a size (a
    duplicate from overlapping tiles, a lesion found in two halves); a larger patch never takes
    a small lesion beside it (an areola, a lip, a nail). Returns index lists."""
    n = len(pieces)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        centres = np.array([p.points.mean(0) for p in pieces])
        ext = np.array([np.linalg.norm(p.points - p.points.mean(0), axis=1).max() * 2 + p.texel_mm for p in pieces])
        trees = [None] * n
        for i, j in sorted(cKDTree(centres).query_pairs(float(ext.max()) + 1.0)):
            if np.linalg.norm(centres[i] - centres[j]) > max(ext[i], ext[j]):
                continue
            trees[i] = trees[i] or cKDTree(pieces[i].points)
            gap = trees[i].query(pieces[j].points)[0].min()
            if gap <= 2.0 * max(pieces[i].texel_mm, pieces[j].texel_mm) + 0.3 and _one_lesion(pieces[i], pieces[j]):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: min(g))


def _one_lesion(a: _Piece, b: _Piece, ratio: float = 0.25, embedded: float = 0.35) -> bool:
    """Whether two pieces that touch in 3D are one lesion: always across images or UV charts
    (apart in the image: a seam); on one image when they overlap (a duplicate), when the
    smaller is embedded in the larger (at least `embedded` of the skin round it is the larger
    piece: a darker or lighter part of one lesion) or when the smaller has at least `ratio` of
    the larger's area. A small lesion that only touches a larger patch stays apart."""
    if a.image is None or a.image != b.image or a.rc is None or b.rc is None:
        return True
    small, large = (a, b) if len(a.rc) <= len(b.rc) else (b, a)
    # side by side: closer in the image than the two sides of a seam (gutters are wider)
    d = cKDTree(large.rc).query(small.rc, distance_upper_bound=5.0)[0]
    if not np.isfinite(d).any():
        return True  # apart in the image, touching on the body: the two sides of a seam
    if (d == 0).mean() >= 0.5:
        return True
    sa, sb = a.areas.sum(), b.areas.sum()
    if min(sa, sb) >= ratio * max(sa, sb):
        return True
    lo = np.minimum(small.rc.min(0), large.rc.min(0)) - 4
    shape = tuple(np.maximum(small.rc.max(0), large.rc.max(0)) - lo + 5)
    s_img, l_img = np.zeros(shape, bool), np.zeros(shape, bool)
    s_img[tuple((small.rc - lo).T)] = True
    l_img[tuple((large.rc - lo).T)] = True
    s_img = ndimage.binary_fill_holes(s_img)
    ring = ndimage.binary_dilation(s_img, iterations=2) & ~s_img
    return (ring & ndimage.binary_dilation(l_img, iterations=1)).sum() >= embedded * max(ring.sum(), 1)


def _r(a, nd: int) -> list[float]:
    return [round(float(x), nd) for x in np.asarray(a).ravel()]
