"""An independent measuring instrument for painted lesions, used by the tests.

It reads only what a scanner would give (the scan's mesh, UVs and texture image) plus where each
lesion is (its point and normal from the truth), and measures the lesion's area on the 3D surface
from the texture's colours: no access to the generator's lesion shapes or label images.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import ConvexHull, cKDTree

from bodymap.project import face_adjacency, surface_patch, texel_atlas
from bodymap.scan import Scan


PCT = 35  # percentile of the centre's contrast taken as the lesion's own: low enough for dark-centred nevi


class LesionMeter:
    """Measures lesions on one textured scan. Precomputes texel 3D positions once."""

    def __init__(self, scan: Scan):
        self.scan = scan
        atlas = texel_atlas(scan)
        self.atlas = atlas
        tex = scan.texture.reshape(-1, 3).astype(np.float32) / 255.0
        srgb = tex[atlas.flat]
        self.lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        # area on the surface of each texel of a face: face area / face area in texels
        uv_texels = scan.uv_areas_texels
        with np.errstate(divide="ignore", invalid="ignore"):
            per_face = np.where(uv_texels > 0, scan.face_areas / uv_texels, 0.0)
        self.texel_area = per_face[atlas.face]
        tri = scan.vertices[scan.faces]
        self.centroids = tri.mean(1)
        self.face_radius = np.linalg.norm(tri - self.centroids[:, None], axis=2).max(1)
        self.tree = cKDTree(self.centroids)
        self.adjacency = face_adjacency(scan.faces)

    def measure(self, point: np.ndarray, normal: np.ndarray, diameter_mm: float) -> tuple[float, float]:
        """Area (mm^2) and longest diameter (mm) of the lesion around point (3,) mm with unit
        normal (3,); diameter_mm (expected size) sets the search radius only.

        The colour contrast with the surrounding skin is interpolated from the texels onto a fine
        grid in the tangent plane (sub-texel border localisation), thresholded at half the lesion's
        own contrast, hole-filled (light crusts, regression inside a lesion), and measured.
        """
        R = 0.7 * diameter_mm + 1.0
        ring = R + 2.0 + 0.25 * diameter_mm
        faces = np.asarray(self.tree.query_ball_point(point, ring + self.face_radius.max()), dtype=np.int64)
        # the piece of skin around the point: connected to it and facing the same way
        seed = faces[np.argmin(np.linalg.norm(self.centroids[faces] - point, axis=1))]
        faces = surface_patch(self.adjacency, faces[self.scan.face_normals[faces] @ normal > 0.2], seed)
        idx = self.atlas.texels_of_faces(faces)
        d = self.atlas.positions(self.scan.vertices, self.scan.faces, idx).astype(np.float64) - point
        h = d @ normal
        a = np.array([1.0, 0, 0]) if abs(normal[0]) < 0.9 else np.array([0, 1.0, 0])
        e1 = np.cross(normal, a)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(normal, e1)
        xy = np.stack([d @ e1, d @ e2], 1)
        t = np.linalg.norm(xy, axis=1)
        keep = (np.abs(h) < 0.35 * diameter_mm + 2.0) & (t <= ring)
        idx, xy, t = idx[keep], xy[keep], t[keep]
        col = self.lin[idx]
        skin = np.median(col[t > R], axis=0)
        contrast = np.linalg.norm(col - skin, axis=1)
        g = min(0.1, diameter_mm / 40)  # grid step, mm
        n = int(np.ceil(R / g))
        gx, gy = np.meshgrid(np.arange(-n, n + 1) * g, np.arange(-n, n + 1) * g)
        field = LinearNDInterpolator(xy, contrast, fill_value=0.0)(gx, gy)
        centre = np.hypot(gx, gy) < max(0.3 * diameter_mm, 1.5 * g)
        level = 0.5 * np.percentile(field[centre], PCT)
        lab, _ = ndimage.label(field > level)
        ids = np.unique(lab[centre & (lab > 0)])
        if len(ids) == 0:
            return 0.0, 0.0
        mask = ndimage.binary_fill_holes(np.isin(lab, ids))
        pts = np.stack([gx[mask], gy[mask]], 1)
        hull = pts[ConvexHull(pts).vertices] if len(pts) >= 3 else pts
        feret = np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1).max()) + g  # + one pixel: its extent
        return float(mask.sum() * g * g), float(feret)
