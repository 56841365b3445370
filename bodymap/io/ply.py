"""PLY (ASCII or binary, vertex colours): read through trimesh after a header check (face
limit, truncation); written as binary little-endian, geometry and colours only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodymap import atomic
from bodymap.io.common import RawMesh, check_face_count, from_trimesh_parts, visual_parts
from bodymap.scan import Scan, ScanError

_PLY_SIZES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2,
              "uint16": 2, "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4,
              "double": 8, "float64": 8}


def _ply_check_header(path: Path) -> None:
    """Read only the header: refuse huge meshes and detect truncated files before parsing."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.startswith(b"ply"):
        raise ScanError(path, "not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise ScanError(path, "PLY header has no end_header (truncated or corrupt file)")
    body_start = end + len(b"end_header")
    body_start += 2 if head[body_start:body_start + 2] == b"\r\n" else 1
    fmt, elements = "", []
    for ln in head[:end].decode("ascii", "replace").splitlines():
        t = ln.split()
        if not t:
            continue
        if t[0] == "format" and len(t) > 1:
            fmt = t[1]
        elif t[0] == "element" and len(t) == 3:
            try:
                elements.append([t[1], int(t[2]), []])
            except ValueError:
                raise ScanError(path, f"PLY header: bad element line {ln!r}") from None
        elif t[0] == "property" and elements:
            elements[-1][2].append(t[1:])
    counts = {name: n for name, n, _ in elements}
    n_faces = counts.get("face", 0)
    check_face_count(path, n_faces)
    size = path.stat().st_size
    if fmt.startswith("binary"):
        need = body_start
        for name, n, props in elements:
            row = 0
            for p in props:
                if p[0] == "list" and len(p) >= 4:
                    min_items = 3 if p[3] in ("vertex_indices", "vertex_index") else 0
                    row += _PLY_SIZES.get(p[1], 1) + min_items * _PLY_SIZES.get(p[2], 4)
                else:
                    row += _PLY_SIZES.get(p[0], 4)
            need += n * row
        if size < need:
            raise ScanError(path, f"file is truncated or corrupt: the header promises "
                                  f"{counts.get('vertex', 0)} vertices and {n_faces} faces "
                                  f"(at least {need} bytes) but the file has {size} bytes")
    elif fmt == "ascii":
        with open(path, "rb") as fh:
            fh.seek(body_start)
            n_lines = sum(1 for ln in fh if ln.strip())
        want = sum(n for _, n, _ in elements)
        if n_lines < want:
            raise ScanError(path, f"file is truncated or corrupt: the header promises {want} "
                                  f"element lines but the file has {n_lines}")
    else:
        raise ScanError(path, f"PLY header has an unknown format {fmt!r}")


def read(path: Path, tex_override: np.ndarray | None) -> RawMesh:
    """PLY (ASCII or binary) via trimesh, process=False; keeps RGB vertex colours."""
    import trimesh

    _ply_check_header(path)
    mesh = trimesh.load(str(path), file_type="ply", process=False)
    if isinstance(mesh, trimesh.Scene):  # not expected from PLY, but be safe
        mesh = mesh.to_mesh()
    v = np.asarray(mesh.vertices, dtype=np.float64)  # a PointCloud has vertices but no faces
    f = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    uv, image, colors = visual_parts(mesh) if isinstance(mesh, trimesh.Trimesh) else (None, None, None)
    uvc = None if uv is None else uv[f]
    return from_trimesh_parts(path, [("ply texture", v, f, uvc, image, colors)], tex_override, [], {})


def write(scan: Scan, path: Path) -> None:
    """Binary little-endian PLY in mm: double x y z, uchar RGB if present; no UVs (PLY has none
    per corner)."""
    n, m = scan.n_vertices, scan.n_faces
    vdt = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    header = ["ply", "format binary_little_endian 1.0", "comment BodyMap scan, units mm",
              f"element vertex {n}", "property double x", "property double y", "property double z"]
    if scan.vertex_colors is not None:
        vdt += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {m}", "property list uchar int vertex_indices", "end_header"]
    va = np.empty(n, dtype=vdt)
    va["x"], va["y"], va["z"] = scan.vertices.T
    if scan.vertex_colors is not None:
        va["red"], va["green"], va["blue"] = scan.vertex_colors.T
    fa = np.empty(m, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    fa["n"] = 3
    fa["i"] = scan.faces
    with atomic.open_atomic(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(va.tobytes())
        fh.write(fa.tobytes())
