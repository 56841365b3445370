"""Dense map between two scans of one patient that keeps the first scan's own surface.

The template carries each point of one scan to the other (`bodymap.track.map_between`), but a
fit by distance alone lets the template slide along the skin, and differently in each pose: on
the FAUST scans a vertex lands 5-11 mm from its true partner at the median and 100 mm on an arm
whose fit slid. Both scans are the same person's skin, so the right map keeps lengths
along the surface. This stage starts from the template's map and moves it over the second
scan's surface until the first scan's local shape is kept: the as-rigid-as-possible energy of
the first scan (Sorkine and Alexa 2007), every vertex drawn onto the second scan by its closest
surface point, from loose (the shape leads, large slides can undo) to tight (every vertex on
the surface). A scan with many vertices is solved on a coarse copy whose regions grow along
the surface (`coarse`), and each of its vertices follows the copy. FAUST, all 12 ordered pairs
of poses (6,890 vertices, solved whole): worst pair median 10.6 -> 4.1 mm from the true partner,
pooled 7.3 -> 2.8 mm; the same meshes subdivided to 110k vertices, on a coarse copy of 8,000:
4.1 and 2.5 mm on two pairs (2.7 / 2.6 whole), 7 s a pair on 2 cores (docs/benchmarks.md).
A leash draws each point back when it strays over LEASH_MM from the template's map: a slide
along a limb costs ARAP next to nothing, so without it whole arms slid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import factorized

from bodymap.project import clean_barycentric

# A leash on the refinement: each point is drawn back towards the ball of LEASH_MM around where
# the template put it, with LEASH_WEIGHT times the mean vertex weight (inside the ball, nothing
# draws it). Unleashed, ARAP slides a sheet along a limb freely (a cylinder slides isometrically),
# and the loose first steps let whole arms slide: FAUST 002 -> 003, the upper arm's points ended a
# median 81 mm from their partners, where the template had them 39 mm off. FAUST, 12 ordered
# pairs, sampling seeds 0 / 1 / 2 (development): worst p95 85.6 / 84.6 / 87.8 -> 47.4 / 46.6 /
# 51.5 mm, within 10 mm 0.749 / 0.753 / 0.748 -> 0.772 / 0.776 / 0.773, the medians the same or
# lower (docs/benchmarks.md, stop 47)
LEASH_MM = 20.0
LEASH_WEIGHT = 0.01
MAX_VERTICES = 10_000  # above this the first scan is solved on a coarse copy (FAUST, 6,890: 4-6 s)
# SurfaceLocator answers batches up to this size itself (5,000 points 10 mm off a 290k-face
# scan: 1.9 s, against 0.3 s for gp.squared_distance's tree; 500 points 3 mm off: 0.04 / 0.4 s)
LOCATOR_MAX_BATCH = 2000
# ... and while the balls of a batch hold at most this many vertices in all (a point 3 mm off a
# 290k-face scan: about 30; one at the middle of the trunk: thousands)
LOCATOR_MAX_NEAR = 200_000


@dataclass
class PairMap:
    """Where each vertex of scan A lies on scan B: points (n_a, 3) mm on B's surface (face (n_a,),
    bary (n_a, 3)) and moved (n_a,) mm, how far the refinement took each from the template's map."""

    points: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    moved: np.ndarray


def closest_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
    """Closest surface point of a mesh to each of points (k, 3): face (k,), bary (k, 3), point (k, 3)."""
    import gpytoolbox as gp

    _, f, b = gp.squared_distance(points, vertices, F=faces, use_cpp=True, use_aabb=True)
    f, b = np.asarray(f, np.int64).ravel(), clean_barycentric(np.asarray(b))
    return f, b, np.einsum("kj,kjd->kd", b, vertices[faces[f]])


class SurfaceLocator:
    """Exact closest surface points of one mesh, for many small batches of queries.

    gp.squared_distance (closest_points) builds its tree over the faces on every call: a quarter
    of a second at 300k faces, for a batch of 500 points that takes milliseconds; tracking asks
    for seven such batches on the same scan. Here a k-d tree over the vertices is built once.
    A query's closest point lies on a face with a point within r0 of it (r0: its nearest
    vertex), and every vertex of that face lies within r0 + the face's longest edge; so the
    candidates are the faces of the vertices within r0 + tau, tau a few typical edges, plus
    every face longer than tau (hole fills, tested against each query). vertices (n, 3) mm,
    faces (m, 3) int."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from scipy.spatial import cKDTree

        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        tri = self.vertices[self.faces]
        edge = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max(1)  # (m,) longest edge
        self.tau = 2.0 * float(np.median(edge)) if len(edge) else 0.0
        self.long = np.flatnonzero(edge > self.tau)
        # vertex -> faces (CSR), the short faces only (long ones are tested with every query)
        short = np.flatnonzero(edge <= self.tau)
        corner_v = self.faces[short].ravel()
        order = np.argsort(corner_v, kind="stable")
        self.vf = np.repeat(short, 3)[order]
        self.vf_ptr = np.concatenate([[0], np.cumsum(np.bincount(corner_v, minlength=len(self.vertices)))])
        # only vertices on a face (a scan may hold loose ones, which are not on the surface)
        self.used = np.flatnonzero(np.bincount(self.faces.ravel(), minlength=len(self.vertices)))
        self.tree = cKDTree(self.vertices[self.used])

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closest surface point of each of points (k, 3) mm: face (k,), bary (k, 3), point (k, 3)."""
        P = np.asarray(points, np.float64).reshape(-1, 3)
        k = len(P)
        if k == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3))
        if k > LOCATOR_MAX_BATCH or len(self.long) > LOCATOR_MAX_BATCH:
            return closest_points(P, self.vertices, self.faces)
        # a first bound: the nearest vertex's own faces (the ball below grows with it)
        _, v0 = self.tree.query(P)
        r0 = self._nearest_of(P, self.used[v0])
        r = r0 * (1 + 1e-9) + 1e-9 + self.tau
        # a point deep inside the body (far from the surface everywhere) draws a wide ring of the
        # surface into its ball: past a budget, the face tree is the cheaper way
        if int(self.tree.query_ball_point(P, r, return_length=True).sum()) > LOCATOR_MAX_NEAR:
            return closest_points(P, self.vertices, self.faces)
        near = self.tree.query_ball_point(P, r, return_sorted=False)
        counts = np.fromiter((len(x) for x in near), np.int64, k)
        verts = self.used[np.fromiter((v for x in near for v in x), np.int64, int(counts.sum()))]
        q_of_v = np.repeat(np.arange(k), counts)
        # every (query, face) candidate: each near vertex's faces, then the long faces
        own, f = self._candidates(verts)
        q = np.concatenate([q_of_v[own], np.repeat(np.arange(k), len(self.long))])
        f = np.concatenate([f, np.tile(self.long, k)])
        f, bary, c, _ = self._best(P, q, f)
        return f, clean_barycentric(bary), c

    def _candidates(self, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The short faces of vertices verts (r,): their owner (index into verts) and face."""
        nf = self.vf_ptr[verts + 1] - self.vf_ptr[verts]
        start = np.repeat(self.vf_ptr[verts], nf)
        within = np.arange(int(nf.sum())) - np.repeat(np.cumsum(nf) - nf, nf)
        return np.repeat(np.arange(len(verts)), nf), self.vf[start + within]

    def _nearest_of(self, P: np.ndarray, verts: np.ndarray) -> np.ndarray:
        """(k,) mm: distance from each of P (k, 3) to the nearest face of its vertex verts (k,)
        (its distance to that vertex when the vertex has only long faces)."""
        own, f = self._candidates(verts)
        d = np.linalg.norm(P - self.vertices[verts], axis=1)
        if len(f):
            _, _, _, dq = self._best(P, own, f)
            has = np.unique(own)
            d[has] = np.minimum(d[has], dq)
        return d

    def _best(self, P, q, f):
        """For candidate pairs (query q (c,), face f (c,)): each query's nearest face, its
        barycentric point and point, and the distance (queries in order, those with a candidate)."""
        c, bary = _closest_on_triangles(P[q], self.vertices[self.faces[f]])
        d = np.einsum("kd,kd->k", c - P[q], c - P[q])
        # the nearest candidate of each query (ties: the lowest face number, whatever the order)
        best = np.lexsort((f, d, q))
        first = best[np.concatenate([[True], q[best][1:] != q[best][:-1]])]
        return f[first], bary[first], c[first], np.sqrt(d[first])


def _closest_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of each triangle tri (k, 3, 3) mm to p (k, 3): points (k, 3) and their
    barycentric coordinates (k, 3) (Ericson, Real-Time Collision Detection, 5.1.5, by regions)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac, ap = b - a, c - a, p - a
    dot = lambda x, y: np.einsum("kd,kd->k", x, y)  # noqa: E731
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp, cp = p - b, p - c
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1.0 / (va + vb + vc)
        v, w = vb * denom, vc * denom  # inside the face
        # the regions, last assignment wins: edges, then corners
        on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        t_ab = d1 / (d1 - d3)
        v, w = np.where(on_ab, t_ab, v), np.where(on_ab, 0.0, w)
        on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        t_ac = d2 / (d2 - d6)
        v, w = np.where(on_ac, 0.0, v), np.where(on_ac, t_ac, w)
        on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        v, w = np.where(on_bc, 1.0 - t_bc, v), np.where(on_bc, t_bc, w)
        at_a = (d1 <= 0) & (d2 <= 0)
        at_b = (d3 >= 0) & (d4 <= d3)
        at_c = (d6 >= 0) & (d5 <= d6)
    v = np.where(at_a, 0.0, np.where(at_b, 1.0, np.where(at_c, 0.0, v)))
    w = np.where(at_a, 0.0, np.where(at_b, 0.0, np.where(at_c, 1.0, w)))
    bad = ~(np.isfinite(v) & np.isfinite(w))  # a degenerate face: its first corner
    v, w = np.where(bad, 0.0, v), np.where(bad, 0.0, w)
    bary = np.stack([1.0 - v - w, v, w], 1)
    return np.einsum("kj,kjd->kd", bary, tri), bary


class _Surface:
    """Mesh B for the many closest-point queries of the solve: the tangent plane of its nearest
    vertex (k-d tree built once, vertex normals) stands in for the exact closest surface point,
    which would rebuild a search tree over B's faces for each of the 100 steps (30 s at 300k
    faces against 1 s)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from scipy.spatial import cKDTree

        from bodymap.scan import vertex_normals

        self.vertices = np.asarray(vertices, np.float64)
        self.normals = vertex_normals(self.vertices, faces)
        self.tree = cKDTree(self.vertices)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(k, 3) mm: each of points (k, 3) dropped onto the tangent plane of B's nearest vertex."""
        _, i = self.tree.query(points)
        c, n = self.vertices[i], self.normals[i]
        return points - np.einsum("kd,kd->k", points - c, n)[:, None] * n


def coarse(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """A coarse copy of a mesh with about `target` vertices, on any mesh (seams, holes, several
    pieces): seed vertices one per cell of a grid (the nearest its cell's mean), then more
    among the vertices still over 1.5 cells from every seed along the surface (the other of two
    sheets that share cells: a hand on a thigh, the thighs), every vertex given to its nearest
    seed along the surface (Dijkstra on the edge graph), and a coarse face wherever three seeds'
    regions meet in a face. Regions grown along the surface never join two sheets that lie
    close, which a grid's cells do. vertices (n, 3) mm, faces (m, 3). Returns seed points (c, 3)
    mm on the surface and faces (m', 3) among them."""
    from scipy.sparse.csgraph import dijkstra

    from bodymap.geodesic import mesh_graph

    v = np.asarray(vertices, np.float64)
    label, h = cluster(v, target)
    seeds = _cell_seeds(np.arange(len(v)), v, label)
    graph = mesh_graph(v, faces, shortcuts=False)
    for _ in range(6):
        dist, _, source = dijkstra(graph, directed=False, indices=seeds, min_only=True, return_predecessors=True)
        far = np.flatnonzero(dist > 1.5 * h)
        if len(far) == 0:
            break
        seeds = np.concatenate([seeds, _cell_seeds(far, v, np.floor((v[far] - v.min(0)) / h).astype(np.int64))])
    rank = np.full(len(v), -1, np.int64)
    rank[seeds] = np.arange(len(seeds))
    region = np.where(source >= 0, rank[np.maximum(source, 0)], -1)
    f = region[faces]
    f = f[(f >= 0).all(1) & (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, keep = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    return v[seeds], f[np.sort(keep)]


def _cell_seeds(idx: np.ndarray, v: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Of vertices idx (k,) in grid cells cell (k,) or (k, 3) int, the one nearest its cell's
    mean point in each cell: vertex indices into v (n, 3)."""
    c = np.unique(_cell_key(cell.reshape(len(idx), -1)), return_inverse=True)[1].ravel()
    mean = np.zeros((c.max() + 1, 3))
    np.add.at(mean, c, v[idx])
    mean /= np.bincount(c)[:, None]
    order = np.lexsort((np.linalg.norm(v[idx] - mean[c], axis=1), c))
    return idx[order[np.r_[True, c[order][1:] != c[order][:-1]]]]


def _cell_key(cells: np.ndarray) -> np.ndarray:
    """(k,) int64: one number per row of cells (k, d) >= 0 int, in the rows' lexicographic order
    (so np.unique of the keys numbers the cells as np.unique(cells, axis=0) does, 10x faster)."""
    key = np.zeros(len(cells), np.int64)
    for d in range(cells.shape[1]):
        key = key * (int(cells[:, d].max(initial=0)) + 1) + cells[:, d]
    return key


def cluster(vertices: np.ndarray, target: int) -> tuple[np.ndarray, float]:
    """Vertices (n, 3) mm grouped by the cells of a grid sized for about `target` groups (the
    cell size corrected on the count: a surface crosses cells unevenly). Returns each vertex's
    group (n,) and the cell size, mm."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    h = max(float(np.prod(np.maximum(hi - lo, 1e-6)) ** (1 / 3)) / target ** 0.5, 1e-6)
    for _ in range(6):
        label = np.unique(_cell_key(np.floor((v - lo) / h).astype(np.int64)), return_inverse=True)[1].ravel()
        n = int(label.max()) + 1
        if 0.8 * target <= n <= 1.2 * target:
            break
        h *= np.sqrt(n / target)
    return label, h


def _edge_weights(v: np.ndarray, f: np.ndarray) -> sp.coo_matrix:
    """Symmetric (n, n) cotangent weights of the edges, clamped to [0.01, 10] so that the
    obtuse and sliver triangles of a coarse copy or a raw scan cannot make the energy indefinite."""
    rows, cols, w = [], [], []
    for k in range(3):
        i, j, o = f[:, (k + 1) % 3], f[:, (k + 2) % 3], f[:, k]
        a, b = v[i] - v[o], v[j] - v[o]
        cot = np.einsum("ij,ij->i", a, b) / np.maximum(np.linalg.norm(np.cross(a, b), axis=1), 1e-12)
        rows += [i, j]
        cols += [j, i]
        w += [0.5 * cot, 0.5 * cot]
    W = sp.coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))), shape=(len(v),) * 2).tocsr()
    W.sum_duplicates()
    W.data = np.clip(W.data, 0.01, 10.0)
    return W.tocoo()


def _rotations(inc: sp.csr_matrix, w: np.ndarray, e_rest: np.ndarray, e_now: np.ndarray) -> np.ndarray:
    """(n, 3, 3): the rotation of each vertex's one-ring that best turns its rest edges onto its
    current edges (e_rest, e_now (E, 3) mm per half-edge, weights w (E,); inc (n, E) sums the
    half-edges of each vertex). The proper rotation U V^T of S = sum w e_rest e_now^T (Kabsch)
    from the eigenvectors of S^T S: the two largest give V's and U's first columns, their cross
    products the third, which keeps det = +1 (a one-ring on a surface is nearly flat, so S is
    nearly of rank 2 and the third direction is the one to choose); 3x faster than numpy's
    batched SVD on 3x3 matrices."""
    S = (inc @ (w[:, None] * (e_rest[:, :, None] * e_now[:, None, :]).reshape(-1, 9))).reshape(-1, 3, 3)
    _, V = np.linalg.eigh(S.transpose(0, 2, 1) @ S)  # S^T S = V diag(s^2) V^T, ascending
    v1, v2 = V[..., 2], V[..., 1]
    u1, u2 = np.einsum("nij,nj->ni", S, v1), np.einsum("nij,nj->ni", S, v2)  # u_k = S v_k / s_k
    u1 /= np.maximum(np.linalg.norm(u1, axis=1, keepdims=True), 1e-12)
    u2 -= np.einsum("ni,ni->n", u1, u2)[:, None] * u1  # (orthogonal already, up to rounding)
    u2 /= np.maximum(np.linalg.norm(u2, axis=1, keepdims=True), 1e-12)
    U = np.stack([u1, u2, np.cross(u1, u2)], axis=2)
    Vm = np.stack([v1, v2, np.cross(v1, v2)], axis=2)
    return np.einsum("nik,njk->nij", Vm, U)  # R = V U^T takes rest edges onto current ones


def arap_onto(rest: np.ndarray, faces: np.ndarray, start: np.ndarray, vertices_b: np.ndarray, faces_b: np.ndarray,
              iterations: int = 100, stiffness: tuple[float, float] = (0.01, 1.0),
              leash: tuple[float, float] = (LEASH_MM, LEASH_WEIGHT)) -> tuple[np.ndarray, np.ndarray]:
    """Move points start (n, 3) mm over mesh B (vertices_b (p, 3), faces_b (q, 3)) to keep the
    shape of mesh A (rest (n, 3) mm, faces (m, 3)): minimises ARAP(A -> X) + lam |X - P_B(X)|^2
    + mu dist(X, ball(start, r))^2 (P_B: onto the tangent plane of B's nearest vertex), lam
    rising geometrically over `iterations` from stiffness[0] to stiffness[1] times the mean
    vertex weight (loose: A's shape leads and undoes slides; tight: on B); leash (r mm, mu as a
    multiple of the mean vertex weight): no point strays far from its start (mu 0: free).
    Returns X (n, 3) mm and the rotations (n, 3, 3)."""
    W = _edge_weights(rest, faces)
    i, j, w = W.row, W.col, W.data
    n = len(rest)
    deg = np.bincount(i, weights=w, minlength=n)
    L = (sp.diags(deg) - sp.csr_matrix(W)).tocsc()
    scale = deg[deg > 0].mean()
    e_rest = rest[i] - rest[j]
    inc = sp.csr_matrix((np.ones(len(i)), (i, np.arange(len(i)))), shape=(n, len(i)))  # vertex <- its half-edges
    surface = _Surface(vertices_b, faces_b)
    start = np.asarray(start, np.float64)
    X = start.copy()
    reach, mu = leash[0], leash[1] * scale
    solve, lam = None, None
    R = np.broadcast_to(np.eye(3), (n, 3, 3))
    for k, s in enumerate(np.geomspace(stiffness[0], stiffness[1], iterations)):
        if lam is None or s * scale > 1.2 * lam or k == iterations - 1:
            # refactorise only when the weight has risen by a fifth (the solve barely notices less)
            lam = s * scale
            solve = factorized((L + (lam + mu) * sp.eye(n, format="csc")).tocsc())
        R = _rotations(inc, w, e_rest, X[i] - X[j])
        rhs = inc @ ((0.5 * w)[:, None] * np.einsum("nij,nj->ni", R[i] + R[j], e_rest))
        C = surface.project(X)
        # the leash: drawn to the nearest point of the ball around the start (inside it, to itself)
        off = X - start
        far = np.linalg.norm(off, axis=1, keepdims=True)
        T = start + off * np.minimum(1.0, reach / np.maximum(far, 1e-9))
        X = np.column_stack([solve(rhs[:, d] + lam * C[:, d] + mu * T[:, d]) for d in range(3)])
    return X, R


def refine_map(scan_a, start: np.ndarray, scan_b, iterations: int = 100, max_vertices: int = MAX_VERTICES,
               leash: tuple[float, float] = (LEASH_MM, LEASH_WEIGHT)) -> PairMap:
    """The map of scan A's vertices onto scan B made to keep A's own surface (see the module
    docstring). start (n_a, 3) mm: where the template carries each vertex of A on B. A scan of
    more than max_vertices vertices is solved on a coarse copy (`coarse`) of 0.8 x max_vertices.
    leash: arap_onto's (radius mm, weight)."""
    va, fa = scan_a.vertices, scan_a.faces
    start = np.asarray(start, np.float64)
    if scan_a.n_vertices <= max_vertices:
        X, _ = arap_onto(va, fa, start, scan_b.vertices, scan_b.faces, iterations, leash=leash)
    else:
        pts, fc = coarse(va, fa, int(0.8 * max_vertices))
        # (the coarse copy's points are vertices of A: each starts where the template put it)
        Xc, R = arap_onto(pts, fc, start[_nearest_vertex(va, pts)], scan_b.vertices, scan_b.faces, iterations,
                          leash=leash)
        X = _follow(va, pts, fc, Xc, R)
    f, b, p = closest_points(X, scan_b.vertices, scan_b.faces)
    return PairMap(p, f, b, np.linalg.norm(p - start, axis=1))


def _nearest_vertex(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(k,): the nearest of vertices (n, 3) to each of points (k, 3)."""
    from scipy.spatial import cKDTree

    return cKDTree(vertices).query(points, workers=-1)[1]


def _follow(vertices: np.ndarray, pts: np.ndarray, faces: np.ndarray, moved: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(n, 3) mm: vertices (n, 3) of a mesh moved with its coarse copy (pts (c, 3), faces (m, 3))
    whose points went to moved (c, 3), turned by R (c, 3, 3): each follows the three coarse
    vertices of its closest point on the copy, keeping its offset from each turned as that one
    turned, blended by the closest point's weights."""
    f, b, _ = closest_points(vertices, pts, faces)
    c = faces[f]  # (n, 3)
    return np.einsum("nj,njd->nd", b, moved[c] + np.einsum("njde,nje->njd", R[c], vertices[:, None] - pts[c]))
