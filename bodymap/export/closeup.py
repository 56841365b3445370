"""Close-ups of a lesion at true scale: the texture seen straight down the surface normal.

``CloseUps(scan)(point, normal, field_mm, size_px)`` casts one ray per pixel along -normal from a
square grid on the lesion's tangent plane, so every pixel is field_mm / size_px wide on that
plane (the DICOM Pixel Spacing, the SLICE-3D 15 mm tile) whatever the UV layout; the image's up
is the scan's +z projected on the plane (bodymap.measures.tangent_frame). One ray-casting
structure per scan, built on first use.
"""
from __future__ import annotations

import numpy as np

from bodymap.measures import tangent_frame
from bodymap.scan import Scan

BACKGROUND = (255, 255, 255)


class CloseUps:
    """Orthographic close-ups of one textured scan (mm)."""

    def __init__(self, scan: Scan):
        scan.require_texture()
        self.scan = scan
        self._rays = None

    def _intersector(self):
        if self._rays is None:
            from renderers.raycast import ray_intersector

            self._rays = ray_intersector(self.scan)[1]
        return self._rays

    def __call__(self, point, normal, field_mm: float, size_px: int,
                 up_dir=None) -> tuple[np.ndarray, np.ndarray, float]:
        """The close-up of the surface around point (3,) mm seen along -normal (3,): image
        (size_px, size_px, 3) uint8, mask (size_px, size_px) bool (pixels that show the
        surface; others are white) and the pixel spacing (mm per pixel, both axes). up_dir
        (3,): the direction shown upwards, projected on the tangent plane (e.g. the body's up
        from bodymap.history.body_up); default the scan's +z projected."""
        from renderers.raycast import barycentric, sample_texture

        n = np.asarray(normal, np.float64)
        n = n / max(np.linalg.norm(n), 1e-12)
        up, e2 = tangent_frame(n)
        if up_dir is not None:
            u = np.asarray(up_dir, np.float64)
            u = u - (u @ n) * n
            if np.linalg.norm(u) > 1e-9:
                up = u / np.linalg.norm(u)
                e2 = np.cross(n, up)
        right = -e2  # seen from outside, looking down -n: x right, y down
        g = field_mm / size_px
        off = (np.arange(size_px) - (size_px - 1) / 2) * g
        cx, cy = np.meshgrid(off, off)  # cy grows downwards
        height = 0.5 * field_mm + 5.0  # start above the skin, below anything a few cm away
        origins = (np.asarray(point, np.float64) + height * n + cx.reshape(-1, 1) * right
                   - cy.reshape(-1, 1) * up)
        dirs = np.broadcast_to(-n, origins.shape).copy()
        loc, ray_idx, tri_idx = self._intersector().intersects_location(origins, dirs, multiple_hits=False)
        # a hit far below the tangent plane is another part of the body seen past an edge
        depth = (origins[ray_idx] - loc) @ n
        ok = np.abs(depth - height) <= 0.5 * field_mm + 2.0
        ray_idx, tri_idx, loc = ray_idx[ok], tri_idx[ok], loc[ok]
        rgb = np.empty((size_px * size_px, 3), np.uint8)
        rgb[:] = BACKGROUND
        mask = np.zeros(size_px * size_px, bool)
        if len(ray_idx):
            bary = barycentric(self.scan.vertices[self.scan.faces[tri_idx]], loc)
            uv = np.einsum("kj,kjd->kd", bary, self.scan.uv[tri_idx].astype(np.float64))
            rgb[ray_idx] = np.clip(sample_texture(self.scan.texture, uv) + 0.5, 0, 255).astype(np.uint8)
            mask[ray_idx] = True
        return rgb.reshape(size_px, size_px, 3), mask.reshape(size_px, size_px), float(g)


def closeup_field_mm(diameter_mm: float) -> float:
    """The field of a lesion's DICOM close-up: 2.5 lesion diameters, at least 10 mm."""
    return max(2.5 * float(diameter_mm), 10.0)
