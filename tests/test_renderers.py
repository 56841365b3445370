"""The CPU renderer: buffers agree with the mesh and the camera."""
from __future__ import annotations

import numpy as np
import pytest

from bodymap.io import load_scan
from bodymap.scan import Scan
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


def test_a_y_up_scan_is_rendered_and_orbited_standing(scan, tmp_path):
    """Many scanners export y up (FAUST, OBJ convention): `bodymap render` and the view rig of
    `bodymap detect --views` showed such a body from below. The same body turned y-up gives the
    same pictures and the same cameras (moved with it)."""
    from bodymap.anatomy.labels import axes_view_frame
    from bodymap.cli import main
    from renderers import orbit_rig

    Y = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # z up, facing -y -> y up, facing +z
    yup = Scan(scan.vertices @ Y.T, scan.faces, scan.uv, scan.texture, scan.vertex_colors)
    assert np.allclose(axes_view_frame(yup.vertices) @ Y, np.eye(3))
    a = render_views(scan, (0, 90), 60, 120)
    b = render_views(yup, (0, 90), 60, 120, frame=axes_view_frame(yup.vertices))
    assert np.mean(np.any(a != b, axis=2)) < 0.005  # (a pixel or two on silhouettes: float ties)
    cams = orbit_rig(scan.bounds, azimuths=(0, 90), elevations=(10, 45), width=40, height=80)
    turned = orbit_rig(yup.bounds, azimuths=(0, 90), elevations=(10, 45), width=40, height=80,
                       frame=axes_view_frame(yup.vertices))
    for c, t in zip(cams, turned):
        assert np.allclose(Y @ c.position, t.position, atol=1e-6)
        assert np.allclose(Y @ c.forward, t.forward, atol=1e-9)
    # the command renders a y-up file standing: the same picture as of the z-up file
    from PIL import Image

    from bodymap.io import save_scan

    for name, s in (("zup", scan), ("yup", yup)):
        save_scan(s, tmp_path / f"{name}.obj")
        assert main(["render", str(tmp_path / f"{name}.obj"), str(tmp_path / f"{name}.png"), "--size", "50x100"]) == 0
    z, y = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("zup", "yup"))
    assert np.mean(np.any(z != y, axis=2)) < 0.005
