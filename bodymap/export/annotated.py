"""The annotated mesh: the scan (textured, or coloured by region) with a marker for every lesion,
as GLB (textured body + one named marker node per lesion) or PLY (one vertex-coloured mesh).

Marker size follows the lesion (radius = half its diameter + 1 mm, at least 2 mm), so a viewer
in another program sees where and how large each lesion is; GLB node names carry the lesion
numbers ("lesion_12")."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodymap.atomic import write_bytes
from bodymap.records import LESION_RGB
from bodymap.scan import Scan


def marker_mesh(lesions, colours: dict | None = None):
    """One small sphere per lesion (trimesh.Trimesh list, in lesion order): radius
    max(2, diameter/2 + 1) mm, centred on the surface point lifted by half its radius along
    the normal; vertex colours from colours {lesion id: (r, g, b)} or LESION_RGB."""
    import trimesh

    out = []
    unit = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    for l in lesions.lesions:
        r = max(2.0, 0.5 * l.diameter_mm + 1.0)
        m = unit.copy()
        m.vertices = m.vertices * r + np.asarray(l.point_mm) + 0.5 * r * np.asarray(l.normal)
        col = np.array([*(colours or {}).get(l.id, LESION_RGB), 255], np.uint8)
        m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=np.tile(col, (len(m.vertices), 1)))
        out.append(m)
    return out


def _vertex_rgb(scan: Scan, labels=None) -> np.ndarray:
    """(n, 3) uint8 per-vertex colour: region colours when labels are given, else the texture
    sampled at each vertex (one of its corners' UVs), else the vertex colours, else grey."""
    if labels is not None:
        from bodymap.export.regionmap import vertex_colours

        return vertex_colours(labels)
    return scan.vertex_rgb()


def _textured_body(scan: Scan):
    """The scan as a trimesh with one vertex per (vertex, UV) pair and the texture as material."""
    import trimesh
    from PIL import Image

    keys = np.column_stack([scan.faces.reshape(-1), scan.uv.reshape(-1, 2).view(np.int32)])
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    v = scan.vertices[uniq[:, 0]]
    uv = np.ascontiguousarray(uniq[:, 1:].astype(np.int32)).view(np.float32).astype(np.float64)
    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(scan.texture),
                                              baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
                                              roughnessFactor=1.0)
    mesh = trimesh.Trimesh(v, inv.reshape(-1, 3), process=False, validate=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
    return mesh


def write_annotated_mesh(scan: Scan, lesions, path: str | Path, labels=None, colours: dict | None = None) -> Path:
    """Write the scan with lesion markers. path: .glb (textured body unless labels are given,
    then region colours; one node per lesion named lesion_<id>) or .ply (vertex colours: region
    colours with labels, else the texture sampled per vertex; markers merged in). Units: mm.
    colours: {lesion id: (r, g, b)} marker colours (default red). Returns path."""
    import trimesh

    path = Path(path)
    ext = path.suffix.lower()
    markers = marker_mesh(lesions, colours)
    if ext == ".glb":
        scene = trimesh.Scene()
        if labels is None and scan.texture is not None and scan.uv is not None:
            body = _textured_body(scan)
        else:
            body = trimesh.Trimesh(scan.vertices, scan.faces, process=False, validate=False)
            body.visual = trimesh.visual.ColorVisuals(body, vertex_colors=_vertex_rgb(scan, labels))
        scene.add_geometry(body, node_name="body", geom_name="body")
        for l, m in zip(lesions.lesions, markers):
            scene.add_geometry(m, node_name=f"lesion_{l.id}", geom_name=f"lesion_{l.id}")
        scene.metadata["bodymap"] = {"units": "mm", "lesions": [l.id for l in lesions.lesions]}
        write_bytes(path, scene.export(file_type="glb"))
    elif ext == ".ply":
        body = trimesh.Trimesh(scan.vertices, scan.faces, process=False, validate=False)
        body.visual = trimesh.visual.ColorVisuals(body, vertex_colors=_vertex_rgb(scan, labels))
        merged = trimesh.util.concatenate([body, *markers]) if markers else body
        write_bytes(path, merged.export(file_type="ply"))
    else:
        raise ValueError(f"{path}: annotated mesh must be .glb or .ply, not {ext or '(no extension)'}")
    return path
