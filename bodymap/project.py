"""2D <-> 3D on a scan's surface: texels of the texture map to surface points (face + barycentric).

``rasterize_uv`` finds, for every texel a UV layout covers, its face and the barycentric
coordinates of the texel centre, hence its 3D position on the mesh (and on any mesh of the same
topology: the synthetic generator paints textures this way on the body model).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from bodymap.scan import Scan, uv_to_pixel


@dataclasses.dataclass
class UVAtlas:
    """Texels covered by a UV layout, each with its face and barycentric coordinates.

    size : texture height in texels (rows); width: texture width (0: square, = size)
    uv : (m, 3, 2) the layout it was rasterised from
    flat : (k,) int64 flat indices (row * width + col) of covered texels
    face : (k,) int32 face of each covered texel
    bary : (k, 3) float32 barycentric coordinates of the texel centre in that face
    order, offsets : texels grouped by face: texels of face f are flat[order[offsets[f]:offsets[f+1]]];
        None until first needed (``by_face``)
    """

    size: int
    uv: np.ndarray
    flat: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    order: np.ndarray | None = None
    offsets: np.ndarray | None = None
    n_inside: int | None = None  # texels [0, n_inside) lie inside their faces; later ones were dilated
    width: int = 0  # texture width when it differs from size (non-square textures: 2048 x 1024, packed atlases)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the texture the atlas covers."""
        return self.size, self.width or self.size

    def is_inside(self, sel: np.ndarray) -> np.ndarray:
        """(t,) bool: which of the texel indices sel lie inside their face (not dilated)."""
        return np.ones(len(sel), bool) if self.n_inside is None else np.asarray(sel) < self.n_inside

    def positions(self, vertices: np.ndarray, faces: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        """3D positions of covered texels on a body. vertices (n, 3) mm; returns (k, 3) float32."""
        f = self.face if sel is None else self.face[sel]
        b = self.bary if sel is None else self.bary[sel]
        tri = vertices[faces[f]].astype(np.float32)
        return np.einsum("kj,kjd->kd", b, tri)

    def by_face(self) -> tuple[np.ndarray, np.ndarray]:
        """order (k,) int64, offsets (m + 1,) int64: the texels grouped by face (those of face f
        are order[offsets[f]:offsets[f + 1]]), worked out on first use and kept. Only the
        synthetic painter groups them; a stable sort of a 4096^2 texture's ten million texels
        cost analyze 0.8 s, twice (the detection's atlas and the region map's)."""
        if self.order is None or self.offsets is None:
            m = len(self.uv)
            self.order = np.argsort(self.face, kind="stable")
            self.offsets = np.zeros(m + 1, np.int64)
            np.cumsum(np.bincount(self.face, minlength=m), out=self.offsets[1:])
        return self.order, self.offsets

    def texels_of_faces(self, face_ids: np.ndarray) -> np.ndarray:
        """Indices (into flat/face/bary) of the texels of the given faces. Returns (t,) int64."""
        order, offsets = self.by_face()
        parts = [order[offsets[f]:offsets[f + 1]] for f in np.unique(face_ids)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def clean_barycentric(b) -> np.ndarray:
    """Barycentric coordinates (k, 3) clipped to the triangle and summing to 1. Closest-point
    queries return nan on degenerate triangles; those rows get the triangle's centre."""
    b = np.clip(np.asarray(b, np.float64).reshape(-1, 3), 0, 1)
    bad = ~np.isfinite(b).all(1) | (b.sum(1) < 1e-9)
    b[bad] = 1.0 / 3.0
    return b / b.sum(1, keepdims=True)


def _triangle_affine(px: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per triangle of px (m, 3, 2) (pixel coordinates, x = col, y = row), the numbers of its two
    affine maps from a texel's offset to the first corner onto the barycentric l1, l2: the
    corner ax, ay and v1y, v1x, v0x, v0y, den (each (m,), float64, contiguous so that gathering
    them per texel reads one small array at a time)."""
    px = np.asarray(px, np.float64)
    a = px[:, 0]
    v0, v1 = px[:, 1] - a, px[:, 2] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    return tuple(np.ascontiguousarray(v) for v in (a[:, 0], a[:, 1], v1[:, 1], v1[:, 0], v0[:, 0], v0[:, 1], den))


def _texel_affine(tri: tuple, face: np.ndarray, flat: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The second and third barycentric coordinates l1, l2 (each (k,), float64, unclipped) of
    texel centres flat (k,) (row * width + col) in their triangles face (k,); tri: the
    triangles' ``_triangle_affine`` numbers. The first coordinate is 1 - l1 - l2.

    Each triangle's two affine maps are worked out once per triangle and only their numbers are
    gathered per texel: a 4096^2 texture has ten million texels, and gathering each one's whole
    triangle (px[face], 48 bytes) cost seconds."""
    ax, ay, v1y, v1x, v0x, v0y, den = tri
    rows, cols = np.divmod(flat, width)
    dx = cols - np.take(ax, face)
    dy = rows - np.take(ay, face)
    d = np.take(den, face)
    # l1 = (dx * v1y - v1x * dy) / den, l2 = (v0x * dy - dx * v0y) / den
    l1 = (dx * np.take(v1y, face) - np.take(v1x, face) * dy) / d
    l2 = (np.take(v0x, face) * dy - dx * np.take(v0y, face)) / d
    return l1, l2


def _texel_bary(px: np.ndarray, face: np.ndarray, flat: np.ndarray, width: int) -> np.ndarray:
    """Barycentric coordinates (k, 3), unclipped, of texel centres flat (k,) (row * width + col)
    in their triangles face (k,), of px (m, 3, 2) given in pixel coordinates (x = col, y = row)."""
    l1, l2 = _texel_affine(_triangle_affine(px), face, flat, width)
    return np.stack([1 - l1 - l2, l1, l2], axis=1)


# Texels per pass when rasterising: small enough that the float64 temporaries of a pass are
# reused from the heap instead of being fresh pages (on a 4096^2 texture, whole-array
# temporaries cost more in page faults than in arithmetic).
_CHUNK = 1 << 18


def rasterize_uv(uv: np.ndarray, size: int | tuple[int, int]) -> UVAtlas:
    """Rasterise a UV layout. uv : (m, 3, 2) per face corner, origin bottom-left. size : the
    texture's side in texels, or its (rows, columns) for a non-square texture.

    Uses PIL to draw each triangle with its face id (fast, C), then computes exact barycentric
    coordinates of each texel centre in its face.
    """
    m = len(uv)
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    px = uv_to_pixel(uv, (h, w))  # (m, 3, 2) x=col, y=row, texel centres at integers
    img = Image.new("I", (w, h), -1)
    draw = ImageDraw.Draw(img)
    # PIL puts pixel centres at integer coordinates too; polygon() includes boundary texels.
    for i, tri in enumerate(px.reshape(m, 6).tolist()):  # flat [x0, y0, x1, y1, x2, y2]: no tuples to build
        draw.polygon(tri, fill=i, outline=i)
    fid = np.asarray(img, dtype=np.int32).ravel()
    flat = np.flatnonzero(fid >= 0)
    face = fid[flat]
    del fid
    tri = _triangle_affine(px)
    bary = np.empty((len(flat), 3), np.float32)
    for s in range(0, len(flat), _CHUNK):
        l1, l2 = _texel_affine(tri, face[s:s + _CHUNK], flat[s:s + _CHUNK], w)
        # boundary texels lie slightly outside their triangle: clamp back onto it
        b0, b1, b2 = np.clip(1 - l1 - l2, 0.0, 1.0), np.clip(l1, 0.0, 1.0), np.clip(l2, 0.0, 1.0)
        total = b0 + b1 + b2
        for j, b in enumerate((b0, b1, b2)):
            bary[s:s + _CHUNK, j] = b / total
    return UVAtlas(h, np.asarray(uv, np.float32), flat.astype(np.int64, copy=False), face.astype(np.int32, copy=False), bary,
                   width=0 if w == h else w)


def texel_atlas(scan: Scan) -> UVAtlas:
    """The texels of scan's texture covered by its UV layout (face + barycentric of each).

    Raises ScanError if the scan has no UVs or no texture.
    """
    scan.require_texture()
    return rasterize_uv(scan.uv, scan.texture.shape[:2])


def dilate_atlas(atlas: UVAtlas, width: int) -> UVAtlas:
    """The atlas grown by ``width`` texels into the gutters around each UV chart.

    Each added texel belongs to the face of its nearest covered texel, with barycentric
    coordinates extrapolated (unclipped) from that face's UV triangle: its 3D position continues
    the surface across the chart border. Painting these texels from their 3D positions makes a
    face that straddles a seam (and so reaches a little past its chart in UV) see the same skin
    and lesions as on the other side.
    """
    h, w = atlas.shape
    covered = np.zeros(h * w, bool)
    covered[atlas.flat] = True
    covered = covered.reshape(h, w)
    from scipy import ndimage

    dist, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
    new = np.flatnonzero((dist.ravel() > 0) & (dist.ravel() <= width))
    texel_face = np.full(h * w, -1, np.int64)
    texel_face[atlas.flat] = atlas.face
    src = ri.ravel()[new] * w + ci.ravel()[new]
    face = texel_face[src]
    bary = _texel_bary(uv_to_pixel(atlas.uv.astype(np.float64), (h, w)), face, new, w)
    flat = np.concatenate([atlas.flat, new])
    face_all = np.concatenate([atlas.face, face.astype(np.int32)])
    bary_all = np.concatenate([atlas.bary, bary.astype(np.float32)])
    return UVAtlas(atlas.size, atlas.uv, flat.astype(np.int64), face_all, bary_all, n_inside=len(atlas.flat),
                   width=atlas.width)


def face_adjacency(faces: np.ndarray):
    """Edge adjacency of triangles: a symmetric scipy.sparse CSR matrix (m, m) of 0/1."""
    from scipy import sparse

    m = len(faces)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e.sort(axis=1)
    fid = np.tile(np.arange(m), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, fid = e[order], fid[order]
    same = (e[1:] == e[:-1]).all(1)  # consecutive half-edges on the same edge
    a, b = fid[1:][same], fid[:-1][same]
    adj = sparse.coo_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(m, m))
    return adj.tocsr()


def surface_patch(adjacency, candidates: np.ndarray, seed_face: int) -> np.ndarray:
    """The candidate faces (k,) reachable from seed_face through candidate faces only: the piece
    of surface around a point, without the neighbouring finger, ear fold or thigh that happens
    to lie within the same 3D ball."""
    from scipy.sparse.csgraph import connected_components

    cand = np.union1d(candidates, [seed_face])
    _, comp = connected_components(adjacency[cand][:, cand], directed=False)
    return cand[comp == comp[np.searchsorted(cand, seed_face)]]
