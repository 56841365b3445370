"""The pair map (bodymap.pairmap): a map slid along the skin is pulled back to keep the first
scan's own surface, on the full mesh and on a clustered copy."""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from bodymap.pairmap import closest_points, coarse, refine_map
from bodymap.scan import Scan, ScanMeta


def _scan(v: np.ndarray, f: np.ndarray, name: str) -> Scan:
    return Scan(np.asarray(v, np.float64), np.asarray(f, np.int64), meta=ScanMeta(source=name), validate=False)


def _body(subdivisions: int) -> Scan:
    """An egg with a bump (120 x 70 x 45 mm semi-axes): no symmetry that could carry a slide."""
    m = trimesh.creation.icosphere(subdivisions, radius=1.0)
    v = np.asarray(m.vertices) * [120.0, 70.0, 45.0]
    v[:, 2] += 25.0 * np.exp(-((v[:, 0] - 60.0) ** 2 + v[:, 1] ** 2) / 900.0) * (v[:, 2] > 0)
    v[:, 0] += 0.002 * v[:, 1] ** 2  # and bent, so that it is not even mirror-symmetric
    return _scan(v, m.faces, "egg")


def _pair(subdivisions: int):
    """Scan A, scan B (A remeshed finer, turned and moved), each A vertex's true point on B,
    and a start map slid along B by a smooth field of up to 12 mm."""
    a = _body(subdivisions)
    vb, fb = trimesh.remesh.subdivide(a.vertices, a.faces)
    R = Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix()
    move = lambda p: p @ R.T + [300.0, -40.0, 15.0]  # noqa: E731
    b = _scan(move(vb), fb, "egg, visit 2")
    truth = move(a.vertices)
    slide = 12.0 * np.column_stack([np.sin(a.vertices[:, 1] / 30.0), np.cos(a.vertices[:, 0] / 40.0),
                                    np.sin(a.vertices[:, 0] / 50.0)])
    _, _, start = closest_points(truth + slide @ R.T, b.vertices, b.faces)
    return a, b, truth, start


def test_a_slid_map_is_pulled_back_to_keep_the_surface():
    a, b, truth, start = _pair(4)
    # the true map is kept exactly
    assert np.abs(refine_map(a, truth, b).points - truth).max() < 1e-6
    before = np.linalg.norm(start - truth, axis=1)
    pm = refine_map(a, start, b)
    after = np.linalg.norm(pm.points - truth, axis=1)
    assert np.median(before) > 6.0
    # (100 steps undo a slide this smooth by half; 300 by 80 %: the loose start converges slowly)
    assert np.median(after) < 0.5 * np.median(before) and np.percentile(after, 95) < 0.7 * np.percentile(before, 95)
    # the points lie on B and say where they are on it
    assert np.allclose(b.points_from_barycentric(pm.face, pm.bary), pm.points, atol=1e-6)
    assert np.allclose(pm.moved, np.linalg.norm(pm.points - start, axis=1))


def test_a_large_scan_is_solved_on_a_clustered_copy():
    a, b, truth, start = _pair(5)  # 10,242 vertices
    before = np.linalg.norm(start - truth, axis=1)
    pm = refine_map(a, start, b, max_vertices=2500)
    after = np.linalg.norm(pm.points - truth, axis=1)
    assert np.median(after) < 0.5 * np.median(before)
    assert pm.points.shape == (a.n_vertices, 3)


def test_the_coarse_copy_is_a_valid_mesh_near_the_size_asked_that_never_joins_close_sheets():
    a = _body(5)
    pts, faces = coarse(a.vertices, a.faces, 2000)
    assert 1600 <= len(pts) <= 2400
    assert faces.min() >= 0 and faces.max() < len(pts)
    assert np.all((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2]))
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == len(faces)
    assert np.isin(pts, a.vertices).all(1).all()  # seeds are vertices of the surface
    # two plates 4 mm apart (a hand on a thigh): a grid cell of ~20 mm holds both, the copy
    # keeps them apart
    p = trimesh.creation.box([200.0, 200.0, 1.0]).subdivide().subdivide().subdivide().subdivide()
    top = np.asarray(p.vertices) + [0, 0, 2.5]
    bottom = np.asarray(p.vertices) - [0, 0, 2.5]
    v = np.concatenate([top, bottom])
    f = np.concatenate([p.faces, p.faces + len(top)])
    pts, faces = coarse(v, f, 300)
    side = pts[:, 2] > 0
    assert side.any() and (~side).any()
    assert np.all(side[faces] == side[faces[:, :1]])


def test_junk_in_a_scan_neither_breaks_the_map_nor_spoils_it(recwarn):
    """Raw scans carry junk: vertices no face uses, a stray triangle, faces with a repeated
    corner. The map stays finite and still pulls the body's slide back, on either path."""
    a, b, truth, start = _pair(4)
    n = a.n_vertices
    v = np.concatenate([a.vertices, [[1000.0, 0, 0], [1001.0, 0, 0]], [[0, 0, 500.0], [10, 0, 500], [0, 10, 500]]])
    f = np.concatenate([a.faces, [[n + 2, n + 3, n + 4], [0, 0, 1], [5, 6, 5]]])
    junk = _scan(v, f, "egg with junk")
    before = np.median(np.linalg.norm(start - truth, axis=1))
    for max_vertices in (100_000, 1500):  # solved whole, and on a coarse copy
        pm = refine_map(junk, np.concatenate([start, np.zeros((5, 3))]), b, max_vertices=max_vertices)
        assert np.isfinite(pm.points).all() and pm.points.shape == (n + 5, 3)
        assert np.median(np.linalg.norm(pm.points[:n] - truth, axis=1)) < 0.5 * before
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_the_locator_finds_the_same_closest_points_as_the_face_tree(monkeypatch):
    """SurfaceLocator (a vertex k-d tree built once) answers exactly what gp.squared_distance's
    face tree does: the same distances and points, near the surface and far from it, with a
    long hole-filling face and a loose vertex (not on the surface) in the mesh."""
    from bodymap import pairmap
    from bodymap.pairmap import SurfaceLocator

    a = _body(4)
    v = np.vstack([a.vertices, [[0.0, 0.0, 200.0], [0.0, 0.0, 60.0]]])  # a far corner, a loose vertex
    n = len(a.vertices)
    f = np.vstack([a.faces, [[0, 1, n]]])  # one face ~150 mm long
    loc = SurfaceLocator(v, f)
    assert len(loc.long) >= 1
    rng = np.random.default_rng(3)
    for spread in (1.0, 8.0, 40.0):
        p = v[rng.integers(0, n, 400)] + rng.normal(0.0, spread, (400, 3))
        p[:5] = [0.0, 0.0, 60.0]  # at the loose vertex: the surface is ~15 mm away, not 0
        f0, b0, p0 = closest_points(p, v, f)
        f1, b1, p1 = loc.closest(p)
        d0, d1 = np.linalg.norm(p - p0, axis=1), np.linalg.norm(p - p1, axis=1)
        np.testing.assert_allclose(d1, d0, atol=1e-9)
        np.testing.assert_allclose(p1, p0, atol=1e-6)
        np.testing.assert_allclose(np.einsum("kj,kjd->kd", b1, v[f[f1]]), p1, atol=1e-9)
        assert d1[:5].min() > 5.0
    assert [len(x) for x in loc.closest(np.zeros((0, 3)))] == [0, 0, 0]
    # past its budget of vertices near the queries, the same answer from the face tree
    p = np.vstack([np.zeros((3, 3)), v[:50] + 2.0])
    want = np.linalg.norm(p - closest_points(p, v, f)[2], axis=1)
    for budget in (10 ** 9, 10):
        monkeypatch.setattr(pairmap, "LOCATOR_MAX_NEAR", budget)
        np.testing.assert_allclose(np.linalg.norm(p - loc.closest(p)[2], axis=1), want, atol=1e-9)


def test_the_leash_holds_points_near_where_the_template_put_them():
    """A map slid 80 mm along the egg: unleashed, ARAP takes points back 40 mm and more (and it
    as freely slides a sheet along a limb that the template had right); on the leash
    (pairmap.LEASH_MM, LEASH_WEIGHT) the far moves are restrained, while a slide within the
    leash is still undone (test_a_slid_map_is_pulled_back_to_keep_the_surface)."""
    a, b, truth, _ = _pair(4)
    R = Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix()
    _, _, start = closest_points(truth + np.array([80.0, 0.0, 0.0]) @ R.T, b.vertices, b.faces)
    free = refine_map(a, start, b, leash=(20.0, 0.0))
    held = refine_map(a, start, b)
    assert free.moved.max() > 40.0
    assert np.percentile(held.moved, 95) < 0.7 * np.percentile(free.moved, 95)
    assert np.allclose(b.points_from_barycentric(held.face, held.bary), held.points, atol=1e-6)
