"""OFF / COFF / NOFF (ASCII): an own parser that keeps the vertex order (polygons
fan-triangulated, vertex colours kept); written as ASCII OFF, geometry only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodymap import atomic
from bodymap.io.common import FLOAT_RE, RawMesh, check_face_count, fmt_rows, parse_numbers
from bodymap.scan import Scan, ScanError

def read(path: Path, tex_override: np.ndarray | None) -> RawMesh:
    """OFF / COFF / NOFF (ASCII): own parser, vertex order kept; polygons fan-triangulated."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    head_lines = [ln.split(b"#", 1)[0].split() for ln in head.splitlines()]
    head_toks = [t for ln in head_lines for t in ln]
    if not head_toks or not head_toks[0].upper().endswith(b"OFF"):
        raise ScanError(path, "not an OFF file (it does not start with 'OFF')")
    kw = head_toks[0].upper()
    if b"BINARY" in [t.upper() for t in head_toks[1:2]]:
        raise ScanError(path, "binary OFF is not supported; convert it to ASCII OFF, PLY or OBJ")
    if kw.startswith(b"4") or kw.startswith(b"N4") or b"n" in head_toks[0][:-3]:
        raise ScanError(path, f"{head_toks[0].decode(errors='replace')} (4D / n-D OFF) is not supported")
    try:
        nv, nf = int(head_toks[1]), int(head_toks[2])
    except (IndexError, ValueError):
        raise ScanError(path, "OFF header: cannot read the vertex and face counts "
                              "(truncated or corrupt file?)") from None
    check_face_count(path, nf)
    data = path.read_bytes()
    unterminated = not data.endswith(b"\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(data.split(b"\n"))]
    body = [(i, ln.split(b"#", 1)[0].strip()) for i, ln in numbered]
    body = [(i, ln) for i, ln in body if ln]
    n_total = len(numbered) - (0 if unterminated else 1)

    def problem(lineno, detail):
        if unterminated and lineno == n_total:
            return ScanError(path, f"file is truncated or corrupt, line {lineno}: {detail}")
        return ScanError(path, f"line {lineno}: {detail} (corrupt or truncated file?)")

    # header: keyword line, then counts (possibly on the keyword line)
    k = 1 if len(body[0][1].split()) > 1 else 2
    vlines, flines = body[k:k + nv], body[k + nv:k + nv + nf]
    if len(vlines) < nv or len(flines) < nf:
        raise ScanError(path, f"file is truncated or corrupt: the header promises {nv} vertices and "
                              f"{nf} faces but the file holds {len(vlines)} vertex lines and "
                              f"{len(flines)} face lines")

    def parse_block(block, what):
        toks = [ln.split() for _, ln in block]
        counts = np.array([len(t) for t in toks], dtype=np.int64)
        nums = parse_numbers(b"\n".join(ln for _, ln in block), np.float64, int(counts.sum()))
        if nums is None:
            for (lineno, ln), t in zip(block, toks):
                for tok in t:
                    if not FLOAT_RE.match(tok):
                        raise problem(lineno, f"malformed number {tok.decode(errors='replace')!r} "
                                              f"in {what} line {ln.decode(errors='replace')!r}")
            raise ScanError(path, f"malformed numbers in the {what} lines")
        return nums, counts, np.cumsum(counts) - counts

    nums, counts, off = parse_block(vlines, "vertex")
    if nv and counts.min() < 3:
        i = int(np.argmax(counts < 3))
        raise problem(vlines[i][0], f"vertex has {int(counts[i])} numbers, expected 3")
    vertices = nums[off[:, None] + np.arange(3)] if nv else np.zeros((0, 3))
    colors = None
    if kw.startswith(b"C") and nv and counts.min() >= 6:
        c = nums[off[:, None] + np.arange(3, 6)]
        if c.max(initial=0) <= 1.0:
            c = c * 255.0
        colors = np.clip(np.rint(c), 0, 255).astype(np.uint8)

    fnums, fcounts, foff = parse_block(flines, "face")
    warnings: list[str] = []
    if nf == 0:
        faces = np.zeros((0, 3), dtype=np.int64)
    else:
        n_corner = fnums[foff]
        bad = (n_corner < 3) | (n_corner != np.rint(n_corner)) | (fcounts < n_corner + 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise problem(flines[i][0], f"face line {flines[i][1].decode(errors='replace')!r} is "
                                        "incomplete or not a polygon")
        n_corner = n_corner.astype(np.int64)
        n_tri_per = n_corner - 2
        n_tri = int(n_tri_per.sum())
        poly = np.repeat(np.arange(nf), n_tri_per)
        j = np.arange(n_tri) - np.repeat(np.cumsum(n_tri_per) - n_tri_per, n_tri_per) + 1
        base = foff[poly] + 1
        idx = np.stack([fnums[base], fnums[base + j], fnums[base + j + 1]], axis=1)
        if (idx != np.rint(idx)).any():
            i = int(poly[np.argmax((idx != np.rint(idx)).any(axis=1))])
            raise problem(flines[i][0], "face index is not an integer")
        faces = idx.astype(np.int64)
        n_poly = int((n_corner > 3).sum())
        if n_poly:
            warnings.append(f"triangulated {n_poly} polygons with more than 3 vertices "
                            f"(fan triangulation, {n_tri - nf + n_poly} triangles)")
    raw = RawMesh(vertices, faces, None, None, colors, warnings)
    if tex_override is not None:
        raw.texture = tex_override  # validation reports the missing UVs
    return raw


def write(scan: Scan, path: Path) -> None:
    """ASCII OFF in mm, geometry only."""
    atomic.write_text(path, f"OFF\n{scan.n_vertices} {scan.n_faces} 0\n"
                    + fmt_rows("%r %r %r\n", scan.vertices.tolist())
                    + fmt_rows("3 %d %d %d\n", scan.faces.tolist()))
