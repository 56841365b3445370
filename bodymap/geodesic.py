"""Geodesic distances on a scan's surface, built once per scan and reused.

Lesion tracking needs many short distances (a lesion to its candidates and to its matched
neighbours, up to ~150 mm) and a few long ones. Short ones come from Dijkstra on the edge graph
with the "opposite vertex" shortcuts of every interior edge added (the straight chord across
two triangles), which brings the graph metric within ~2% of the true geodesic on an isotropic
mesh instead of the ~8% of edges alone; surface points (face + barycentric) join the graph
through their face's corners. Whole-body distance fields use the heat method (potpourri3d),
whose factorisation is computed once on first use.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

FIELD_CHUNK = 16  # points per Dijkstra call in SurfaceGeodesics.from_points
# fields up to this limit are kept per point (a tracking run again after a review or a second
# look asks for nearly the same points), up to KEEP_ENTRIES distances per scan (12 bytes each;
# 500 lesions' fields to 200 mm hold 3.6M at 290k faces)
KEEP_LIMIT_MM = 250.0
KEEP_ENTRIES = 8_000_000


class SurfaceGeodesics:
    """Geodesic distances on one triangle mesh.

    vertices (n, 3) mm, faces (m, 3) int. Build once per scan; every query reuses the graph
    (and the heat-method factorisation once `field` has been called).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.n = len(self.vertices)
        self.graph = mesh_graph(self.vertices, self.faces)
        self._heat = None
        self._kept: dict = {}  # (limit, face, bary bytes) -> (1, n) field of one point

    def points(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """(k, 3) mm: surface points of face (k,) + barycentric (k, 3)."""
        tri = self.vertices[self.faces[np.asarray(face, np.int64)]]
        return np.einsum("kj,kjd->kd", np.asarray(bary, np.float64).reshape(-1, 3), tri)

    def from_points(self, face: np.ndarray, bary: np.ndarray, limit_mm: float = 200.0) -> sp.csr_matrix:
        """Sparse (k, n) mm: distance from each of k surface points to every vertex within
        limit_mm (vertices beyond it are not stored). Each point enters the graph through its
        face's three corners. Work is chunked so memory stays bounded for any k. Fields up to
        KEEP_LIMIT_MM are kept per point and limit, and a point asked for again is not computed
        again."""
        face = np.asarray(face, np.int64).reshape(-1)
        bary = np.asarray(bary, np.float64).reshape(-1, 3)
        if len(face) == 0:
            return sp.csr_matrix((0, self.n))
        if limit_mm > KEEP_LIMIT_MM:
            return self._fields(face, bary, limit_mm)
        keys = [(float(limit_mm), int(f), b.tobytes()) for f, b in zip(face, bary)]
        got = {key: self._kept.get(key) for key in keys}  # (this call's own: another may clear)
        first = {}
        for i, key in enumerate(keys):
            if got[key] is None:
                first.setdefault(key, i)
        if first:
            todo = np.fromiter(first.values(), np.int64, len(first))
            new = self._fields(face[todo], bary[todo], limit_mm)
            if sum(r.nnz for r in self._kept.values()) + new.nnz > KEEP_ENTRIES:
                self._kept.clear()
            for r, key in enumerate(first):
                got[key] = self._kept[key] = new[r]
        return sp.vstack([got[key] for key in keys], format="csr")

    def _fields(self, face: np.ndarray, bary: np.ndarray, limit_mm: float) -> sp.csr_matrix:
        """from_points, computed: face (k,) >= 1 point, bary (k, 3)."""
        k = len(face)
        corners = self.faces[face]
        w = np.linalg.norm(self.vertices[corners] - self.points(face, bary)[:, None], axis=2)
        # one extra node per point, joined to its corners by edges out of it only (so no path
        # from one point passes through another's node): one graph serves every chunk
        rows = np.repeat(np.arange(self.n, self.n + k), 3)
        link = sp.csr_matrix((np.maximum(w.ravel(), 1e-9), (rows, corners.ravel())), shape=(self.n + k, self.n + k))
        g = sp.bmat([[self.graph, None], [None, sp.csr_matrix((k, k))]], format="csr") + link
        out = []
        # small chunks: Dijkstra holds the interpreter lock for a whole call, and a pair map
        # running beside (bodymap.track) waits for it
        for s in range(0, k, FIELD_CHUNK):
            src = np.arange(self.n + s, self.n + min(s + FIELD_CHUNK, k))
            d = dijkstra(g, directed=True, indices=src, limit=limit_mm)[:, :self.n]
            # the rows straight into CSR (vertices beyond the limit, inf, not stored): building
            # it from the dense block went through COO and a sort, as long as Dijkstra itself
            # for a short limit
            reached = np.isfinite(d)
            indptr = np.concatenate([[0], np.cumsum(reached.sum(1))])
            out.append(sp.csr_matrix((d[reached], np.nonzero(reached)[1], indptr), shape=(len(src), self.n)))
        return out[0] if len(out) == 1 else sp.vstack(out, format="csr")

    def at_points(self, fields: sp.csr_matrix, face: np.ndarray, bary: np.ndarray,
                  sources: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(r, k) mm: distances from r sources to k surface points, given the sources' fields
        (r, n) from `from_points` (inf beyond their limit): the shortest way in through one of
        each point's corners. sources (face (r,), bary (r, 3)): when given, a point on a face
        that shares a vertex with its source's face gets the straight distance instead (going
        through a corner would overestimate it by up to an edge length)."""
        face = np.asarray(face, np.int64).reshape(-1)
        if len(face) == 0 or fields.shape[0] == 0:
            return np.full((fields.shape[0], len(face)), np.inf)
        corners = self.faces[face]
        p = self.points(face, bary)
        w = np.linalg.norm(self.vertices[corners] - p[:, None], axis=2)  # (k, 3)
        u, inv = np.unique(corners.ravel(), return_inverse=True)
        sub = fields[:, u].toarray()
        sub[sub == 0] = np.inf  # stored distances are >= 1e-9; zeros are "beyond the limit"
        d = np.min(sub[:, inv.reshape(-1, 3)] + w[None], axis=2)
        if sources is not None:
            sf = np.asarray(sources[0], np.int64).reshape(-1)
            sc = self.faces[sf]
            near = (sc[:, :, None, None] == corners[None, None]).any(axis=(1, 3))  # (r, k) faces touch
            if near.any():
                r, k = np.nonzero(near)
                e = np.linalg.norm(self.points(sf[r], np.asarray(sources[1]).reshape(-1, 3)[r]) - p[k], axis=1)
                d[r, k] = np.minimum(d[r, k], e)
        return d

    def between(self, face_a, bary_a, face_b, bary_b, limit_mm: float = 200.0) -> np.ndarray:
        """(ka, kb) mm: distances between two sets of surface points (inf beyond limit_mm)."""
        return self.at_points(self.from_points(face_a, bary_a, limit_mm), face_b, bary_b, (face_a, bary_a))

    def field(self, vertex_sources: np.ndarray) -> np.ndarray:
        """(n,) mm: heat-method distance from a set of vertices to every vertex (whole body)."""
        if self._heat is None:
            import potpourri3d as pp3d

            self._heat = pp3d.MeshHeatMethodDistanceSolver(self.vertices, self.faces)
        return self._heat.compute_distance_multisource(np.asarray(vertex_sources, np.int64).reshape(-1))


def mesh_graph(v: np.ndarray, f: np.ndarray, shortcuts: bool = True) -> sp.csr_matrix:
    """Symmetric sparse (n, n) graph of a mesh's edges, weighted by Euclidean length (mm); with
    shortcuts, also, for each edge shared by two faces, the chord between the two opposite
    vertices. v (n, 3) mm, f (m, 3) int."""
    n = len(v)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])  # directed half-edges
    pairs = e
    if shortcuts:
        opp = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])  # vertex opposite each half-edge
        key = np.minimum(e[:, 0], e[:, 1]) * n + np.maximum(e[:, 0], e[:, 1])
        order = np.argsort(key, kind="stable")
        k = key[order]
        same = k[1:] == k[:-1]  # consecutive half-edges of one edge: its two faces
        a, b = opp[order[:-1][same]], opp[order[1:][same]]
        pairs = np.concatenate([e, np.stack([a, b], 1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    key = sorted_unique(pairs[:, 0] * n + pairs[:, 1])  # each edge once
    pairs = np.stack([key // n, key % n], 1)
    w = np.maximum(np.linalg.norm(v[pairs[:, 0]] - v[pairs[:, 1]], axis=1), 1e-9)  # 0 would drop the edge
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    return sp.csr_matrix((np.concatenate([w, w]), (i, j)), shape=(n, n))


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique(x) of a 1-D array (sorted, each value once) by a sort and a comparison: numpy
    2.4's np.unique hashes first and then sorts, 10x slower on the 2-3 million edge keys of a
    300k-face scan (2.3 s against 0.2 s), and holds the interpreter lock the while."""
    s = np.sort(np.asarray(x).ravel())
    if len(s) == 0:
        return s
    return s[np.concatenate([[True], s[1:] != s[:-1]])]

