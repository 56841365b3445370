"""Pinhole cameras in millimetres, and simple rigs around a body.

World frame: z up, the body faces -y (see docs/architecture.md). Camera frame: x right,
y down, z forward (OpenCV convention), so pixel (u, v) = K @ (R @ X + t).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Camera:
    """Intrinsics K (3, 3) in pixels, extrinsics R (3, 3) and t (3,) mm (world -> camera)."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in world mm."""
        return -self.R.T @ self.t

    @property
    def forward(self) -> np.ndarray:
        """(3,) unit viewing direction in world coordinates."""
        return self.R[2]

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """One ray per pixel centre, row-major. Returns origins (H*W, 3) and unit dirs (H*W, 3)."""
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
        d_cam = pix @ np.linalg.inv(self.K).T
        d = d_cam @ self.R  # R^T d_cam, row-wise
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return np.broadcast_to(self.position, d.shape).copy(), d

    def project(self, X: np.ndarray) -> np.ndarray:
        """World points (k, 3) mm -> pixel coordinates (k, 2) (x right, y down)."""
        c = X @ self.R.T + self.t
        p = c @ self.K.T
        return p[:, :2] / p[:, 2:3]

    @classmethod
    def look_at(cls, eye, target, up=(0, 0, 1), fov_deg: float = 30.0, width: int = 512, height: int = 512) -> "Camera":
        """A camera at ``eye`` (mm) looking at ``target`` with vertical field of view fov_deg."""
        eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
        z = target - eye
        z /= np.linalg.norm(z)
        x = np.cross(z, up)
        if np.linalg.norm(x) < 1e-9:  # looking along up: pick any perpendicular
            x = np.cross(z, [0.0, 1.0, 0.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        f = 0.5 * height / np.tan(np.deg2rad(fov_deg) / 2)
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
        return cls(K, R, -R @ eye, width, height)


def body_view(bounds: np.ndarray, azimuth_deg: float, elevation_deg: float = 0.0, width: int = 512,
              height: int = 1024, fov_deg: float = 30.0, margin: float = 1.1) -> Camera:
    """A camera framing the whole body (bounds (2, 3) mm) from an azimuth around z.

    azimuth 0 looks at the front (camera on -y), 90 at the body's left side (camera on +x), 180 back.
    """
    centre = bounds.mean(0)
    size = np.ptp(bounds, axis=0)
    extent = max(size[2], size[0] * height / width) * margin
    dist = 0.5 * extent / np.tan(np.deg2rad(fov_deg) / 2) + 0.5 * size[:2].max()
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    direction = np.array([np.sin(a) * np.cos(e), -np.cos(a) * np.cos(e), np.sin(e)])
    return Camera.look_at(centre + dist * direction, centre, fov_deg=fov_deg, width=width, height=height)


def framed_body_view(vertices: np.ndarray, azimuth_deg: float, elevation_deg: float = 0.0, width: int = 512,
                     height: int = 1024, frame: np.ndarray | None = None) -> Camera:
    """body_view of the points vertices (n, 3) mm as seen in ``frame`` (3, 3): a rotation whose
    rows are the upright body's x, y, z axes (z up, the body facing -y) in the points'
    coordinates (bodymap.anatomy.labels.view_frame); None: the points' own axes. The camera
    works on the points as they are (no copy of the mesh is rotated)."""
    F = np.eye(3) if frame is None else np.asarray(frame, dtype=np.float64)
    p = vertices @ F.T
    return _unframed(body_view(np.stack([p.min(0), p.max(0)]), azimuth_deg, elevation_deg, width, height), F)


def _unframed(cam: Camera, F: np.ndarray) -> Camera:
    """cam, set up in the upright frame (points @ F.T), as a camera on the points themselves."""
    return Camera(cam.K, cam.R @ F, cam.t, cam.width, cam.height)


def orbit_rig(bounds: np.ndarray, azimuths=(0, 45, 90, 135, 180, 225, 270, 315), elevations=(-25, 10, 45),
              width: int = 1024, height: int = 2048, fov_deg: float = 30.0,
              frame: np.ndarray | None = None) -> list[Camera]:
    """Cameras around a standing body (bounds (2, 3) mm): every azimuth (degrees, 0 = front) at
    every elevation (degrees above the horizon), each framing the whole body. Soles and the top
    of the head are seen from the lowest and highest elevations. frame (3, 3): the upright
    body's axes in the scan's coordinates as for framed_body_view (a y-up scan is orbited about
    y); None: z is up."""
    F = np.eye(3) if frame is None else np.asarray(frame, dtype=np.float64)
    corners = np.array([[bounds[i, 0], bounds[j, 1], bounds[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ F.T
    b = np.stack([corners.min(0), corners.max(0)])  # (exact for an axis permutation, loose otherwise)
    return [_unframed(body_view(b, a, e, width, height, fov_deg), F) for e in elevations for a in azimuths]


def framing_camera(points: np.ndarray, view_dir: np.ndarray, width: int = 512, height: int = 512,
                   fov_deg: float = 30.0, margin: float = 1.2, up=(0, 0, 1)) -> Camera:
    """A camera looking along view_dir (3,) (from the camera towards the points) that frames
    points (k, 3) mm: a region close-up (an ear, a hand, a sole) or, with a few points around
    it, any surface point."""
    points = np.atleast_2d(np.asarray(points, np.float64))
    d = np.asarray(view_dir, np.float64)
    d /= np.linalg.norm(d)
    centre = points.mean(0)
    radius = max(float(np.linalg.norm(points - centre, axis=1).max()), 5.0) * margin
    dist = radius / np.tan(np.deg2rad(fov_deg) / 2 * min(1.0, width / height))
    up = np.asarray(up, np.float64)
    if abs(np.dot(up, d)) > 0.95:  # looking straight up or down (soles, scalp): y is up in the image
        up = np.array([0.0, 1.0, 0.0])
    return Camera.look_at(centre - dist * d, centre, up=up, fov_deg=fov_deg, width=width, height=height)


def point_camera(point: np.ndarray, normal: np.ndarray, field_mm: float = 40.0, width: int = 512,
                 height: int = 512, fov_deg: float = 30.0) -> Camera:
    """A camera facing a surface point (3,) mm along its normal (3,), field_mm across."""
    n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    dist = 0.5 * field_mm / np.tan(np.deg2rad(fov_deg) / 2)
    up = (0, 0, 1) if abs(n[2]) < 0.95 else (0, 1, 0)
    return Camera.look_at(np.asarray(point) + dist * n, point, up=up, fov_deg=fov_deg, width=width, height=height)
