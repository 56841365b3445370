"""The CPU renderer: buffers agree with the mesh and the camera."""
from __future__ import annotations

import numpy as np
import pytest

from bodymap.io import load_scan
from renderers import Camera, RaycastRenderer, body_view, render_views

from conftest import SAMPLES

SAMPLE = SAMPLES / "SYN00101" / "visit1" / "scan.obj"


@pytest.fixture(scope="module")
def scan():
    return load_scan(SAMPLE)


def test_buffers_are_consistent(scan):
    res = RaycastRenderer(scan).render(body_view(scan.bounds, 0, 0, 200, 400))
    hit = res.face_id >= 0
    assert 0.08 < hit.mean() < 0.6  # a body, not an empty frame or a wall
    assert (res.rgb[~hit] == 255).all() and (res.rgb[hit] < 250).any()
    # the surface point of each pixel (face + barycentric) projects back into that pixel
    rows, cols = np.nonzero(hit)
    pts = np.einsum("kj,kjd->kd", res.bary[rows, cols], scan.vertices[scan.faces[res.face_id[rows, cols]]])
    px = res.camera.project(pts)
    assert np.abs(px - np.stack([cols + 0.5, rows + 0.5], 1)).max() < 0.01  # rays through pixel centres
    # depth is the distance along the optical axis; normals face the camera
    d = (pts - res.camera.position) @ res.camera.forward
    np.testing.assert_allclose(res.depth[rows, cols], d, rtol=1e-4, atol=0.5)
    assert (np.einsum("kd,d->k", res.normal[rows, cols], res.camera.forward) < 0).mean() > 0.95


def test_front_and_back_see_different_sides(scan):
    img = render_views(scan, (0, 180), 100, 200)
    assert img.shape == (200, 200, 3)
    r = RaycastRenderer(scan)
    front = r.render(body_view(scan.bounds, 0, 0, 100, 200)).face_id
    back = r.render(body_view(scan.bounds, 180, 0, 100, 200)).face_id
    f, b = set(np.unique(front[front >= 0])), set(np.unique(back[back >= 0]))
    assert len(f & b) < 0.1 * min(len(f), len(b))


def test_close_up_of_a_lesion_is_centred(scan):
    import json

    truth = json.loads((SAMPLE.parent / "truth.json").read_text())
    renderer = RaycastRenderer(scan)
    for les in sorted(truth["lesions"], key=lambda l: -l["diameter_mm"])[:10]:
        p, n = np.array(les["point_mm"]), np.array(les["normal"])
        # close enough that no other body part comes between (buttocks, thighs, arms)
        res = renderer.render(Camera.look_at(p + 30 * n, p, fov_deg=20, width=64, height=64))
        assert res.face_id[32, 32] >= 0
        centre = np.asarray(res.bary[32, 32]) @ scan.vertices[scan.faces[res.face_id[32, 32]]]
        assert np.linalg.norm(centre - p) < 0.5
