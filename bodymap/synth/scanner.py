"""Turn a body-model mesh into what a 3D body scanner delivers: dense, remeshed, noisy, holed.

Every output vertex keeps where it came from on the body model (base face + barycentric), which
is the correspondence truth later stages are scored against.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import sparse


@dataclasses.dataclass
class ScannedMesh:
    """A scanner-like mesh of one body.

    vertices (n, 3) mm; faces (m, 3); uv (m, 3, 2) per corner;
    base_face (n,) int / base_bary (n, 3): each vertex's point on the body model.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    base_face: np.ndarray
    base_bary: np.ndarray


def uv_charts(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Connected UV charts: faces sharing an edge with identical UVs on both ends.

    uv (m, 3, 2); faces (m, 3). Returns (m,) int chart id per face.
    """
    m = len(faces)
    rows, cols = [], []
    # key each directed corner edge by its vertex pair and UV pair
    e_v = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e_uv = np.concatenate([uv[:, [0, 1]], uv[:, [1, 2]], uv[:, [2, 0]]]).reshape(-1, 4)
    fid = np.tile(np.arange(m), 3)
    swap = e_v[:, 0] > e_v[:, 1]
    e_v = np.where(swap[:, None], e_v[:, ::-1], e_v)
    e_uv = np.where(swap[:, None], e_uv[:, [2, 3, 0, 1]], e_uv)
    key = np.concatenate([e_v.astype(np.float64), np.round(e_uv.astype(np.float64), 6)], 1)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    a, b = fid[order][1:][same], fid[order][:-1][same]
    g = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(m, m))
    from scipy.sparse.csgraph import connected_components

    return connected_components(g, directed=False)[1]


def _bary_unclipped(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of p (k, 3) projected on the planes of tri (k, 3, 3); may be < 0."""
    v0, v1, v2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 ** 2) < 1e-18, 1e-18, d00 * d11 - d01 ** 2)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - b1 - b2, b1, b2], 1)


def remesh(base_v: np.ndarray, base_f: np.ndarray, base_uv: np.ndarray, keep_faces: np.ndarray,
           target_faces: int, charts: np.ndarray) -> ScannedMesh:
    """Isotropic remesh (Botsch-Kobbelt) to about target_faces, with UVs and correspondence.

    Vertex order and connectivity are new, as between two real scans. Each new face takes its
    UVs from one UV chart (the one under its first corner): corners that project into another
    chart get that chart's affine UV map extended to them, so no face spans a seam.
    """
    import gpytoolbox as gp

    kf = np.flatnonzero(keep_faces)
    f_in = base_f[kf]
    tri = base_v[f_in]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    # an isotropic mesh with edge h has about area / (sqrt(3)/4 h^2) faces
    h = float(np.sqrt(area / (target_faces * np.sqrt(3) / 4)))
    V, F = gp.remesh_botsch(base_v, f_in.astype(np.int32), 10, h, True)
    _, I, L = gp.squared_distance(V, base_v, F=f_in, use_cpp=True, use_aabb=True)
    bf = kf[np.asarray(I).ravel()]
    bb = np.clip(np.asarray(L), 0, 1)
    bb /= bb.sum(1, keepdims=True)
    F = np.asarray(F, dtype=np.int64)
    # UVs per corner, chart-consistent
    ref = bf[F[:, 0]]
    uv = np.empty((len(F), 3, 2), np.float32)
    for k in range(3):
        vk = F[:, k]
        own = np.einsum("fj,fjd->fd", bb[vk], base_uv[bf[vk]])
        other = charts[bf[vk]] != charts[ref]
        if other.any():
            b = _bary_unclipped(V[vk[other]], base_v[base_f[ref[other]]])
            own[other] = np.einsum("fj,fjd->fd", b, base_uv[ref[other]])
        uv[:, k] = own
    return ScannedMesh(np.asarray(V, np.float64), F, uv, bf, bb)


def subdivide(base_v: np.ndarray, base_f: np.ndarray, base_uv: np.ndarray, keep_faces: np.ndarray,
              target_faces: int) -> ScannedMesh:
    """Midpoint (1-to-4) subdivision, as many levels as bring the count to >= 0.7 x target.

    Keeps the base mesh's vertex order first; shapes are the body model's (flat per base face).
    """
    kf = np.flatnonzero(keep_faces)
    F = base_f[kf]
    parent = kf.copy()
    cb = np.tile(np.eye(3)[None], (len(F), 1, 1))  # corner barycentrics in the parent face
    nv = len(base_v)
    while len(F) < 0.7 * target_faces:
        e = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
        e.sort(1)
        uniq, inv = np.unique(e, axis=0, return_inverse=True)
        inv = inv.ravel()
        mid = nv + inv.reshape(3, -1).T  # (m, 3) midpoint vertex ids of edges 01, 12, 20
        nv += len(uniq)
        a, b, c = F[:, 0], F[:, 1], F[:, 2]
        m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
        B0, B1, B2 = cb[:, 0], cb[:, 1], cb[:, 2]
        M01, M12, M20 = (B0 + B1) / 2, (B1 + B2) / 2, (B2 + B0) / 2
        F = np.concatenate([np.stack(x, 1) for x in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
        cb = np.concatenate([np.stack(x, 1) for x in ((B0, M01, M20), (M01, B1, M12), (M20, M12, B2), (M01, M12, M20))])
        parent = np.tile(parent, 4)
    # one (parent, barycentric) per vertex: from any face using it
    used = np.unique(F)
    remap = np.full(nv, -1, np.int64)
    remap[used] = np.arange(len(used))
    F = remap[F]
    bf = np.empty(len(used), np.int64)
    bb = np.empty((len(used), 3))
    for k in range(3):
        bf[F[:, k]] = parent
        bb[F[:, k]] = cb[:, k]
    V = np.einsum("vj,vjd->vd", bb, base_v[base_f[bf]])
    uv = np.einsum("fkj,fjd->fkd", cb, base_uv[parent]).astype(np.float32)
    return ScannedMesh(V, F, uv, bf, bb)


def scanner_artifacts(mesh: ScannedMesh, rng: np.random.Generator, noise_mm: float,
                      hole_faces: np.ndarray | None) -> ScannedMesh:
    """Add measurement noise along the normals and remove faces a scanner would miss.

    noise_mm : standard deviation of the normal displacement (0 = none); hole_faces : (m,)
    bool mask of faces to drop (e.g. soles and armpits), or None. Unused vertices are removed.
    """
    V, F = mesh.vertices.copy(), mesh.faces
    if noise_mm > 0:
        cr = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
        vn = np.zeros_like(V)
        for k in range(3):
            np.add.at(vn, F[:, k], cr)
        vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
        V += vn * rng.normal(0, noise_mm, (len(V), 1))
    keep = np.ones(len(F), bool) if hole_faces is None else ~hole_faces
    F2, uv2 = F[keep], mesh.uv[keep]
    used = np.unique(F2)
    remap = np.full(len(V), -1, np.int64)
    remap[used] = np.arange(len(used))
    return ScannedMesh(V[used], remap[F2], uv2, mesh.base_face[used], mesh.base_bary[used])
