"""CPU renderer: ray casting with Embree (through trimesh), returning per-pixel buffers.

Output contract (shared by every backend): ``RenderResult`` with
rgb (H, W, 3) uint8, face_id (H, W) int64 (-1 = background), bary (H, W, 3) float32,
depth (H, W) float32 mm along the optical axis (inf = background), normal (H, W, 3) float32.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bodymap.scan import Scan, uv_to_pixel
from renderers.camera import Camera, framed_body_view


@dataclasses.dataclass
class RenderResult:
    """Per-pixel buffers of one rendered view (see module docstring for shapes)."""

    rgb: np.ndarray
    face_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    camera: Camera

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, pixels that see the surface."""
        return self.face_id >= 0


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup. texture (H, W, 3) uint8; uv (k, 2). Returns (k, 3) float32 in [0, 255]."""
    xy = uv_to_pixel(uv, texture.shape)
    h, w = texture.shape[:2]
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None].astype(np.float32), (y - y0)[:, None].astype(np.float32)
    t = texture
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bot = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def ray_intersector(scan: Scan):
    """(trimesh mesh, ray intersector) of a scan, built once per scan: embree when present, else
    trimesh's pure-python intersector (slow but correct)."""
    import trimesh

    mesh = trimesh.Trimesh(scan.vertices, scan.faces, process=False, validate=False)
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        return mesh, RayMeshIntersector(mesh)
    except Exception:  # embree missing or failing
        from trimesh.ray.ray_triangle import RayMeshIntersector

        return mesh, RayMeshIntersector(mesh)


def barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (k, 3), clipped to the triangle and summing to 1, of points p (k, 3)
    (ray hits) in triangles tri (k, 3, 3)."""
    v0, v1, v2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 ** 2, 1e-18)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    b = np.clip(np.stack([1 - b1 - b2, b1, b2], 1), 0, 1)
    return b / b.sum(1, keepdims=True)


class RaycastRenderer:
    """Renders one scan from any camera. The acceleration structure is built once per scan.

    scan : the Scan to render (textured or not; untextured scans use vertex colours or grey).
    """

    def __init__(self, scan: Scan):
        self.scan = scan
        self._mesh, self._rays = ray_intersector(scan)

    def render(self, camera: Camera, ambient: float = 0.35, background=(255, 255, 255)) -> RenderResult:
        """Render the scan from ``camera``. Lambert shading with a light at the camera."""
        H, W = camera.height, camera.width
        origins, dirs = camera.rays()
        loc, ray_idx, tri_idx = self._rays.intersects_location(origins, dirs, multiple_hits=False)
        face_id = np.full(H * W, -1, np.int64)
        face_id[ray_idx] = tri_idx
        scan = self.scan
        tri = scan.vertices[scan.faces[tri_idx]]
        b = barycentric(tri, loc)  # of the hit points
        bary = np.zeros((H * W, 3), np.float32)
        bary[ray_idx] = b
        depth = np.full(H * W, np.inf, np.float32)
        depth[ray_idx] = (loc - camera.position) @ camera.forward
        vn = scan.vertex_normals[scan.faces[tri_idx]]
        n = np.einsum("kj,kjd->kd", b, vn)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        normal = np.zeros((H * W, 3), np.float32)
        normal[ray_idx] = n
        if scan.texture is not None and scan.uv is not None:
            uv = np.einsum("kj,kjd->kd", b, scan.uv[tri_idx].astype(np.float64))
            albedo = sample_texture(scan.texture, uv)
        elif scan.vertex_colors is not None:
            albedo = np.einsum("kj,kjd->kd", b, scan.vertex_colors[scan.faces[tri_idx]].astype(np.float32))
        else:
            albedo = np.full((len(tri_idx), 3), 200.0, np.float32)
        lam = np.abs((n * -dirs[ray_idx]).sum(1))
        shade = ambient + (1 - ambient) * lam
        rgb = np.empty((H * W, 3), np.uint8)
        rgb[:] = background
        rgb[ray_idx] = np.clip(albedo * shade[:, None], 0, 255).astype(np.uint8)
        return RenderResult(rgb.reshape(H, W, 3), face_id.reshape(H, W), bary.reshape(H, W, 3),
                            depth.reshape(H, W), normal.reshape(H, W, 3), camera)


def render_views(scan: Scan, azimuths=(0.0, 180.0), width: int = 400, height: int = 800,
                 elevation_deg: float = 5.0, frame: np.ndarray | None = None) -> np.ndarray:
    """Whole-body views side by side: (height, width * len(azimuths), 3) uint8.

    azimuths : degrees around the body's up; 0 = front, 90 = the body's left side, 180 = back.
    frame : (3, 3) the upright body's axes in the scan's coordinates (camera.framed_body_view);
        None: the scan's own (z up, facing -y).
    """
    renderer = RaycastRenderer(scan)
    views = [renderer.render(framed_body_view(scan.vertices, a, elevation_deg, width, height, frame)).rgb
             for a in azimuths]
    return np.concatenate(views, axis=1)
