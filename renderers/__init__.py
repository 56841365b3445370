"""Cameras and renderers: RGB plus face-id, barycentric, depth and normal buffers.

pytorch3d cannot be installed on our machines; ``RaycastRenderer`` (Embree ray casting on the
CPU) is the reference backend.
"""
from renderers.camera import Camera, body_view, framing_camera, orbit_rig, point_camera
from renderers.raycast import RaycastRenderer, RenderResult, render_views

__all__ = ["Camera", "body_view", "framing_camera", "orbit_rig", "point_camera", "RaycastRenderer", "RenderResult", "render_views"]
