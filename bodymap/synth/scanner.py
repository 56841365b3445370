"""Turn a body-model mesh into what a 3D body scanner delivers: dense, remeshed, noisy, holed.

Every output vertex keeps where it came from on the body model (base face + barycentric), which
is the correspondence truth later stages are scored against.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bodymap.project import clean_barycentric


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


def _bary_unclipped(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of p (k, 3) projected on the planes of tri (k, 3, 3); may be < 0."""
    v0, v1, v2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 ** 2) < 1e-18, 1e-18, d00 * d11 - d01 ** 2)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - b1 - b2, b1, b2], 1)


def _area(tri: np.ndarray) -> np.ndarray:
    """Areas (m,) of triangles tri (m, 3, 3)."""
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def _uv_area(uv: np.ndarray) -> np.ndarray:
    """Areas (m,) of UV triangles uv (m, 3, 2), in UV units."""
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def remesh(base_v: np.ndarray, base_f: np.ndarray, base_uv: np.ndarray, keep_faces: np.ndarray,
           target_faces: int) -> ScannedMesh:
    """Isotropic remesh (Botsch-Kobbelt) to about target_faces, with UVs and correspondence.

    Vertex order and connectivity are new, as between two real scans. A new face that crosses
    a UV seam takes one side's affine UV map for all its corners, so no face spans a seam.
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
    bb = clean_barycentric(L)
    F = np.asarray(F, dtype=np.int64)
    # UVs per corner, seam-consistent. A face takes one corner's base face as reference and
    # extends that face's affine UV map to its other corners wherever their own UVs disagree with
    # it (they lie across a UV seam). Of the three choices of reference corner keep the one whose
    # UV triangle is least distorted (extrapolating a skinny base face can explode).
    ref_ratio = _uv_area(base_uv) / np.maximum(_area(base_v[base_f]), 1e-12)  # UV area per mm^2
    area3 = np.maximum(_area(V[F]), 1e-12)
    edge = np.linalg.norm(V[F] - V[F[:, [1, 2, 0]]], axis=2).max(1)  # mm
    own = np.stack([np.einsum("fj,fjd->fd", bb[F[:, k]], base_uv[bf[F[:, k]]]) for k in range(3)], 1)
    best_uv, best_err = None, None
    for r in range(3):
        ref = bf[F[:, r]]
        tol = 0.5 * np.sqrt(ref_ratio[ref]) * edge  # UV distance of about half the face
        uv = own.astype(np.float32).copy()
        n_seam = np.zeros(len(F))
        for k in range(3):
            ext = np.einsum("fj,fjd->fd", _bary_unclipped(V[F[:, k]], base_v[base_f[ref]]), base_uv[ref])
            seam = np.linalg.norm(own[:, k] - ext, axis=1) > tol
            uv[seam, k] = ext[seam]
            n_seam += seam
        err = np.abs(np.log(np.maximum(_uv_area(uv) / area3, 1e-12) / np.maximum(ref_ratio[ref], 1e-12)))
        err += n_seam  # prefer the side that extrapolates the fewest corners (shortest reach into the gutter)
        if best_uv is None:
            best_uv, best_err = uv, err
        else:
            better = err < best_err
            best_uv[better], best_err[better] = uv[better], err[better]
    uv = best_uv
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
