"""glTF / GLB: read through trimesh after a header check (face limit, truncated GLB); written
as GLB with the texture embedded, seam vertices duplicated after the originals (the mapping in
the mesh's extras, undone on reading).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from bodymap import atomic
from bodymap.io.common import RawMesh, check_face_count, from_trimesh_parts, unique_uvs, uv_from_keys, visual_parts
from bodymap.scan import Scan, ScanError

def _gltf_check_header(path: Path) -> None:
    """Read only the JSON part: refuse huge meshes and truncated GLBs before trimesh parses them."""
    try:
        if path.suffix.lower() == ".glb":
            with open(path, "rb") as fh:
                head = fh.read(20)
                if len(head) < 20 or head[:4] != b"glTF":
                    raise ScanError(path, "not a GLB file (no 'glTF' magic; truncated or corrupt?)")
                _, length, chunk_len, chunk_type = struct.unpack("<IIII", head[4:20])
                if length > path.stat().st_size:
                    raise ScanError(path, f"file is truncated: the GLB header says {length} bytes but "
                                          f"the file has {path.stat().st_size}")
                if chunk_type != 0x4E4F534A:  # "JSON"
                    raise ScanError(path, "GLB's first chunk is not JSON (corrupt file?)")
                js = json.loads(fh.read(chunk_len))
        else:
            js = json.loads(path.read_bytes())
    except ScanError:
        raise
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise ScanError(path, f"glTF JSON cannot be read (truncated or corrupt?): {e}") from e
    acc = js.get("accessors", [])
    n_faces = 0
    try:
        for mesh in js.get("meshes", []):
            for p in mesh.get("primitives", []):
                if p.get("mode", 4) != 4:
                    continue
                a = p["indices"] if "indices" in p else p["attributes"]["POSITION"]
                n_faces += int(acc[a]["count"]) // 3
    except (KeyError, IndexError, TypeError, ValueError):
        return  # let trimesh report the details
    check_face_count(path, n_faces)


def read(path: Path, tex_override: np.ndarray | None) -> RawMesh:
    """glTF / GLB via trimesh (process=False); all triangle primitives merged into one mesh.

    Node transforms are applied; per-corner UVs come from TEXCOORD_0; the baseColorTexture is
    the texture (several are packed into an atlas). Seam vertices duplicated by ``save_scan``
    are merged back using the mapping it stores in the mesh extras.
    """
    import trimesh

    _gltf_check_header(path)
    scene = trimesh.load(str(path), process=False, force="scene")
    warnings: list[str] = []
    parts = []
    skipped = 0
    for node in scene.graph.nodes_geometry:
        transform, gname = scene.graph[node]
        g = scene.geometry[gname]
        if not isinstance(g, trimesh.Trimesh):
            skipped += 1
            continue
        v = np.asarray(g.vertices, dtype=np.float64)
        if not np.allclose(transform, np.eye(4)):
            v = trimesh.transformations.transform_points(v, transform)
        f = np.asarray(g.faces, dtype=np.int64).reshape(-1, 3)
        uv, image, colors = visual_parts(g)
        uvc = None if uv is None else uv[f]
        bm = (g.metadata or {}).get("bodymap")
        if isinstance(bm, dict) and "n_vertices" in bm:  # written by save_scan: undo seam splits
            n0 = int(bm["n_vertices"])
            dup = np.asarray(bm.get("duplicate_of", []), dtype=np.int64)
            if n0 + len(dup) == len(v) and (dup < n0).all():
                f = np.concatenate([np.arange(n0), dup])[f]
                v = v[:n0]
                colors = None if colors is None else colors[:n0]
        parts.append((str(gname), v, f, uvc, image, colors))
    if skipped:
        warnings.append(f"skipped {skipped} geometries that are not triangle meshes (points or lines)")
    return from_trimesh_parts(path, parts, tex_override, warnings, {})


def write(scan: Scan, path: Path) -> None:
    """Binary glTF in mm via trimesh; texture embedded as baseColorTexture (PNG)."""
    import trimesh
    from PIL import Image

    n = scan.n_vertices
    v, f = scan.vertices, scan.faces
    colors = scan.vertex_colors
    meta: dict = {"bodymap": {"n_vertices": n, "units": "mm"}}
    visual = None
    if scan.uv is not None:
        # one glTF vertex per (vertex, uv) pair; the first pair of each vertex keeps its index
        uv_keys, uv_inv = unique_uvs(scan.uv)
        pair = f.reshape(-1) * len(uv_keys) + uv_inv  # (vertex, uv) pair id, sorted by vertex
        uniq, inv = np.unique(pair, return_inverse=True)
        inv = inv.reshape(-1)
        vid = uniq // len(uv_keys)
        primary = np.ones(len(uniq), dtype=bool)
        primary[1:] = vid[1:] != vid[:-1]
        new_index = np.empty(len(uniq), dtype=np.int64)
        new_index[primary] = vid[primary]
        dup = vid[~primary]
        new_index[~primary] = n + np.arange(len(dup))
        uv_pairs = uv_from_keys(uv_keys)[uniq % len(uv_keys)].astype(np.float64)
        uv_v = np.zeros((n + len(dup), 2))
        uv_v[new_index] = uv_pairs
        v = np.concatenate([v, v[dup]])
        f = new_index[inv].reshape(-1, 3)
        if colors is not None:
            colors = np.concatenate([colors, colors[dup]])
        meta["bodymap"]["duplicate_of"] = dup.tolist()
        mat = trimesh.visual.material.PBRMaterial(
            baseColorTexture=None if scan.texture is None else Image.fromarray(scan.texture),
            baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0)
        visual = trimesh.visual.TextureVisuals(uv=uv_v, material=mat)
        if colors is not None:
            visual.vertex_attributes["color"] = np.column_stack(
                [colors, np.full(len(colors), 255, dtype=np.uint8)])
    mesh = trimesh.Trimesh(vertices=v, faces=f, process=False, validate=False)
    if visual is not None:
        mesh.visual = visual
    elif colors is not None:
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    mesh.metadata.update(meta)
    atomic.write_bytes(path, mesh.export(file_type="glb"))
