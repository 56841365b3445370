"""The Scan: a textured triangle mesh of one body at one visit, in millimetres.

Conventions (see docs/architecture.md):
- vertices are in mm; the body is usually z-up (registration handles any frame);
- UVs are stored per face corner (seams allowed), origin at the bottom-left of the texture;
- texture images are stored top row first, as image files are; ``uv_to_pixel`` and
  ``pixel_to_uv`` are the only places that convert between the two.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np



def vertex_normals(vertices: np.ndarray, faces: np.ndarray, face_cross: np.ndarray | None = None,
                   eps: float = 1e-12) -> np.ndarray:
    """(n, 3) unit vertex normals of a triangle mesh (vertices (n, 3), faces (m, 3)): the
    area-weighted average of the adjacent faces' normals (face_cross (m, 3): the faces' edge
    cross products, when already computed). A vertex no face uses gets (0, 0, 0)."""
    v = np.asarray(vertices)
    if face_cross is None:
        face_cross = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    acc = np.zeros(v.shape, np.result_type(v.dtype, face_cross.dtype))
    for k in range(3):
        np.add.at(acc, faces[:, k], face_cross)
    return acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), eps)

class ScanError(ValueError):
    """A scan (or a file that should hold one) cannot be used; the message names file and problem."""

    def __init__(self, source: str | Path | None, problem: str):
        self.source = str(source) if source else "<in memory>"
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclasses.dataclass
class ScanMeta:
    """Everything about a scan that is not geometry. Round-trips through JSON."""

    patient_id: str = ""
    visit_date: str = ""  # ISO 8601 date, e.g. "2026-11-22"
    source: str = ""  # the file it was read from
    units: str = "mm"  # units of the source file; the Scan itself is always mm
    unit_scale: float = 1.0  # source coordinate * unit_scale = mm
    up_axis: str = "z"
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScanMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# A body is between a newborn (~450 mm) and a very tall adult (~2.3 m); keep a margin.
BODY_SIZE_MM = (250.0, 3000.0)
# Share of degenerate faces above which a file is judged broken rather than merely untidy.
MAX_DEGENERATE_SHARE = 0.10


def uv_to_pixel(uv: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """UV (origin bottom-left, [0, 1]) -> continuous pixel coordinates (x = column, y = row).

    uv : (..., 2) float. shape : texture shape (H, W, ...). Returns (..., 2) float where
    pixel centres sit at integers (texel (r, c) is centred at x=c, y=r).
    """
    h, w = shape[0], shape[1]
    uv = np.asarray(uv, dtype=np.float64)
    out = np.empty_like(uv)
    out[..., 0] = uv[..., 0] * w - 0.5
    out[..., 1] = (1.0 - uv[..., 1]) * h - 0.5
    return out


def pixel_to_uv(xy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Continuous pixel coordinates (x = column, y = row) -> UV; inverse of ``uv_to_pixel``.

    xy : (..., 2) float. Returns (..., 2) float.
    """
    h, w = shape[0], shape[1]
    xy = np.asarray(xy, dtype=np.float64)
    out = np.empty_like(xy)
    out[..., 0] = (xy[..., 0] + 0.5) / w
    out[..., 1] = 1.0 - (xy[..., 1] + 0.5) / h
    return out


class Scan:
    """One body scan in millimetres.

    vertices : (n, 3) float64, mm
    faces : (m, 3) int64 triangle vertex indices
    uv : (m, 3, 2) float32 or None, per face-corner texture coordinates (origin bottom-left)
    texture : (H, W, 3) uint8 or None, RGB, row 0 at the top
    vertex_colors : (n, 3) uint8 or None
    meta : ScanMeta

    Derived arrays (normals, areas, texel density) are computed once and cached; treat the
    arrays as read-only, or call ``copy()`` and build a new Scan to change geometry.
    """

    def __init__(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        uv: np.ndarray | None = None,
        texture: np.ndarray | None = None,
        vertex_colors: np.ndarray | None = None,
        meta: ScanMeta | None = None,
        validate: bool = True,
    ):
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.uv = None if uv is None else np.ascontiguousarray(uv, dtype=np.float32)
        self.texture = None if texture is None else np.ascontiguousarray(texture, dtype=np.uint8)
        self.vertex_colors = (
            None if vertex_colors is None else np.ascontiguousarray(vertex_colors, dtype=np.uint8)
        )
        self.meta = meta if meta is not None else ScanMeta()
        if validate:
            self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        """Check shapes and values; drop degenerate faces (recorded in meta.warnings)."""
        src = self.meta.source or None
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
            raise ScanError(src, f"no vertices (vertex array has shape {v.shape})")
        if f.ndim != 2 or len(f) == 0:
            raise ScanError(src, "no faces: the file holds no triangles (a point cloud is not a scan)")
        if f.shape[1] != 3:
            raise ScanError(src, f"faces must be triangles, got {f.shape[1]} vertices per face")
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise ScanError(src, f"{int(bad.sum())} vertices have NaN or infinite coordinates "
                                 f"(first at index {int(np.flatnonzero(bad)[0])})")
        if f.min() < 0 or f.max() >= len(v):
            i = int(np.flatnonzero((f < 0).any(1) | (f >= len(v)).any(1))[0])
            raise ScanError(src, f"face {i} refers to vertex {f[i].tolist()} but the mesh has "
                                 f"{len(v)} vertices (indices out of range)")
        if self.uv is not None and self.uv.shape != (len(f), 3, 2):
            raise ScanError(src, f"UV array has shape {self.uv.shape}, expected ({len(f)}, 3, 2)")
        if self.uv is not None and not np.isfinite(self.uv).all():
            raise ScanError(src, "UV coordinates contain NaN or infinite values")
        if self.texture is not None:
            if self.texture.ndim != 3 or self.texture.shape[2] != 3 or min(self.texture.shape[:2]) < 2:
                raise ScanError(src, f"texture must be an RGB image, got array of shape {self.texture.shape}")
            if self.uv is None:
                raise ScanError(src, "the scan has a texture but no UV coordinates, so the texture "
                                     "cannot be mapped onto the surface")
        if self.vertex_colors is not None and self.vertex_colors.shape != v.shape:
            raise ScanError(src, f"vertex colours have shape {self.vertex_colors.shape}, expected {v.shape}")

        # Degenerate faces: repeated indices or zero area. Real scanners leave a few; drop them.
        area = self.face_areas
        degenerate = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2]) | (area <= 1e-12)
        n_deg = int(degenerate.sum())
        if n_deg:
            if n_deg == len(f) or n_deg > MAX_DEGENERATE_SHARE * len(f):
                raise ScanError(src, f"{n_deg} of {len(f)} faces are degenerate (zero area or repeated "
                                     "vertices); the file is broken")
            keep = ~degenerate
            self.faces = np.ascontiguousarray(f[keep])
            if self.uv is not None:
                self.uv = np.ascontiguousarray(self.uv[keep])
            self.meta.warnings.append(f"removed {n_deg} degenerate faces")
            self._clear_cache()

    def check_body_size(self) -> None:
        """Raise ScanError unless the mesh's largest extent fits a human body (250 mm to 3 m)."""
        size = self.height_mm
        lo, hi = BODY_SIZE_MM
        if not lo <= size <= hi:
            raise ScanError(self.meta.source or None,
                            f"largest extent is {size:.4g} mm, far too {'small' if size < lo else 'large'} "
                            f"for a human body ({lo:.0f} to {hi:.0f} mm); wrong units? "
                            "(pass units='m', 'cm' or 'mm' to override the detection)")

    def require_texture(self) -> None:
        """Raise ScanError when a texture-dependent stage gets an untextured scan."""
        if self.texture is None or self.uv is None:
            raise ScanError(self.meta.source or None,
                            "this step needs a textured scan (UV coordinates and a texture image)")

    # ------------------------------------------------------------------ derived data
    def _clear_cache(self) -> None:
        for name in ("face_normals", "face_areas", "vertex_normals", "uv_areas_texels",
                     "texel_density", "bounds", "surface_area_mm2", "vertex_corners", "locator", "geodesics"):
            self.__dict__.pop(name, None)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @functools.cached_property
    def _face_cross(self) -> np.ndarray:
        v = self.vertices
        f = self.faces
        return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])

    @functools.cached_property
    def face_areas(self) -> np.ndarray:
        """(m,) float64, face areas in mm^2."""
        return 0.5 * np.linalg.norm(self._face_cross, axis=1)

    @functools.cached_property
    def surface_area_mm2(self) -> float:
        """Total surface area in mm^2."""
        return float(self.face_areas.sum())

    @functools.cached_property
    def face_normals(self) -> np.ndarray:
        """(m, 3) float64 unit face normals (right-hand rule on the vertex order)."""
        c = self._face_cross
        n = np.linalg.norm(c, axis=1, keepdims=True)
        return c / np.maximum(n, 1e-30)

    @functools.cached_property
    def vertex_normals(self) -> np.ndarray:
        """(n, 3) float64 unit vertex normals, area-weighted average of adjacent faces."""
        return vertex_normals(self.vertices, self.faces, self._face_cross, eps=1e-30)

    @functools.cached_property
    def _surface_tree(self):
        import gpytoolbox as gp

        return gp.squared_distance_precompute(self.vertices, self.faces)

    def drop_surface_tree(self) -> None:
        """Free the AABB tree closest_points keeps (45 MB on a 300k-face scan); built again when
        next asked."""
        self.__dict__.pop("_surface_tree", None)

    def __getstate__(self) -> dict:
        """(pickling, a copy: the kept AABB tree is a C++ object, left out and built again)"""
        state = self.__dict__.copy()
        state.pop("_surface_tree", None)
        return state

    def closest_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The closest points of this scan's surface to points (k, 3) mm: squared distances (k,)
        mm^2, faces (k,) int and barycentric coordinates (k, 3). The surface's AABB tree is built
        on the first call and kept (0.19 s of a 0.22 s query of a fitted body on a 300k-face
        scan, which a registration asks four to six times); the same numbers as
        gpytoolbox.squared_distance building its own. For a whole fitted body, some of it far off
        the scan (0.04 s at 300k faces); ``locator`` is the one for small batches near the
        surface (the same body took it 0.32 s)."""
        import gpytoolbox as gp

        return gp.squared_distance(np.asarray(points, np.float64), self.vertices, F=self.faces, use_cpp=True,
                                   use_aabb=True, cpp_aabb=self._surface_tree)

    @functools.cached_property
    def vertex_corners(self) -> np.ndarray:
        """(n,) int64, for each vertex one face corner holding it, as face * 3 + corner (the
        first in face order; -1 for a vertex no face uses): a vertex as face + barycentric."""
        u, first = np.unique(self.faces.ravel(), return_index=True)
        out = np.full(self.n_vertices, -1, np.int64)
        out[u] = first
        return out

    @functools.cached_property
    def locator(self):
        """bodymap.pairmap.SurfaceLocator of this scan, built on first use: closest surface
        points for the many small batches of tracking (locator.closest(points (k, 3) mm))."""
        from bodymap.pairmap import SurfaceLocator

        return SurfaceLocator(self.vertices, self.faces)

    @functools.cached_property
    def geodesics(self):
        """bodymap.geodesic.SurfaceGeodesics of this scan, built on first use and kept: a
        tracking run again (after a review, a second look) reuses its graph and its fields."""
        from bodymap.geodesic import SurfaceGeodesics

        return SurfaceGeodesics(self.vertices, self.faces)

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        """(2, 3) float64 axis-aligned bounding box [min, max] in mm."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    @property
    def height_mm(self) -> float:
        """Largest bounding-box extent in mm (the standing height for an upright body)."""
        return float(np.ptp(self.vertices, axis=0).max())

    @functools.cached_property
    def uv_areas_texels(self) -> np.ndarray:
        """(m,) float64, face areas in the texture in texels^2 (NaN without a texture)."""
        if self.uv is None or self.texture is None:
            return np.full(self.n_faces, np.nan)
        h, w = self.texture.shape[:2]
        t = self.uv.astype(np.float64) * np.array([w, h])
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])

    @functools.cached_property
    def texel_density(self) -> np.ndarray:
        """(m,) float64, mm per texel on each face: sqrt(3D area / texture area).

        NaN where the face has no texture area (or the scan no texture).
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.sqrt(self.face_areas / self.uv_areas_texels)
        d[~np.isfinite(d)] = np.nan
        return d

    # ------------------------------------------------------------------ helpers
    def points_from_barycentric(self, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Surface points from (face id, barycentric). face_ids : (k,) int; bary : (k, 3). Returns (k, 3) mm."""
        tri = self.vertices[self.faces[np.asarray(face_ids)]]
        return np.einsum("kj,kjd->kd", np.asarray(bary, dtype=np.float64), tri)

    def uv_from_barycentric(self, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Texture coordinates of surface points. face_ids : (k,); bary : (k, 3). Returns (k, 2)."""
        if self.uv is None:
            raise ScanError(self.meta.source or None, "the scan has no UV coordinates")
        return np.einsum("kj,kjd->kd", np.asarray(bary, dtype=np.float64), self.uv[np.asarray(face_ids)])

    def vertex_rgb(self) -> np.ndarray:
        """(n_vertices, 3) uint8 colour per vertex for display and export: the texture sampled at
        one of the vertex's corners' UVs (nearest texel), else the vertex colours, else grey."""
        if self.texture is not None and self.uv is not None:
            uv = np.zeros((self.n_vertices, 2), np.float32)
            uv[self.faces.reshape(-1)] = self.uv.reshape(-1, 2)
            xy = np.rint(uv_to_pixel(uv, self.texture.shape)).astype(int)
            H, W = self.texture.shape[:2]
            return self.texture[np.clip(xy[:, 1], 0, H - 1), np.clip(xy[:, 0], 0, W - 1)]
        if self.vertex_colors is not None:
            return self.vertex_colors
        return np.full((self.n_vertices, 3), 200, np.uint8)

    def copy(self) -> "Scan":
        """Deep copy (arrays copied, metadata copied)."""
        return Scan(self.vertices.copy(), self.faces.copy(),
                    None if self.uv is None else self.uv.copy(),
                    None if self.texture is None else self.texture.copy(),
                    None if self.vertex_colors is None else self.vertex_colors.copy(),
                    ScanMeta.from_dict(self.meta.to_dict()), validate=False)

    def summary(self) -> dict:
        """A JSON-able description: counts, size, texture, texel density, metadata."""
        d = {
            "source": self.meta.source,
            "patient_id": self.meta.patient_id,
            "visit_date": self.meta.visit_date,
            "source_units": self.meta.units,
            "vertices": self.n_vertices,
            "faces": self.n_faces,
            "height_mm": round(self.height_mm, 1),
            "surface_area_m2": round(self.surface_area_mm2 / 1e6, 4),
            "has_uv": self.uv is not None,
            "texture": None if self.texture is None else list(self.texture.shape[:2][::-1]),
            "vertex_colors": self.vertex_colors is not None,
            "warnings": list(self.meta.warnings),
        }
        if self.texture is not None:
            td = self.texel_density[np.isfinite(self.texel_density)]
            if len(td):
                d["texel_mm_median"] = round(float(np.median(td)), 4)
        return d

    def __repr__(self) -> str:
        tex = "none" if self.texture is None else f"{self.texture.shape[1]}x{self.texture.shape[0]}"
        return (f"Scan({self.n_vertices} vertices, {self.n_faces} faces, height {self.height_mm:.0f} mm, "
                f"texture {tex}, source={self.meta.source or '-'})")
