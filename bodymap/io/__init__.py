"""Reading and writing scans: OBJ (+ MTL + texture image), PLY, OFF, glTF / GLB.

``load_scan`` turns a mesh file into a validated :class:`~bodymap.scan.Scan` in millimetres;
``save_scan`` writes one back. Both dispatch on the file extension through the ``READERS`` and
``WRITERS`` registries ({extension: function}). One module per format, each with ``read(path,
tex_override) -> RawMesh`` and ``write(scan, path)``: ``obj`` (+ MTL + textures), ``ply``, ``off``,
``gltf`` (glTF / GLB); what they share (textures and atlases, the face limit, numbers in text,
meshes read through trimesh) is in ``common``.

Rules every reader follows:

- vertex order and face order are kept as in the file (later stages rely on it), so trimesh is
  always called with ``process=False`` and the OBJ / OFF parsers here never merge or reorder;
- anything wrong with a file is reported as a :class:`ScanError` naming the file and the
  problem, never as a raw numpy / PIL / trimesh traceback;
- UVs are per face corner, origin bottom-left (OBJ convention; trimesh flips glTF's top-left
  origin on import and export).

Units: a Scan is always in mm. ``load_scan(units=None)`` guesses the file's units from the body's
size (largest bounding-box extent), see :func:`detect_units`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bodymap.io import gltf, obj, off, ply
from bodymap.io.common import RawMesh, image_to_rgb8, read_image
from bodymap.scan import Scan, ScanError, ScanMeta

__all__ = ["load_scan", "save_scan", "detect_units", "READERS", "WRITERS", "MAX_FACES",
           "UNIT_SCALES"]

#: Meshes with more faces than this are refused (a whole-body scan has well under 5 million).
MAX_FACES = 20_000_000

#: mm per file unit for the unit names ``load_scan`` accepts.
UNIT_SCALES = {"m": 1000.0, "cm": 10.0, "mm": 1.0, "in": 25.4}

#: Body sizes (largest extent, in file units) that identify each unit, in the order they are
#: tried. m and cm never overlap; cm (25-300) and mm (250-3000) overlap in 250-300, which is
#: given to mm: no person is 2.5-3 m tall, but a child or a partial scan of 250-300 mm is real.
UNIT_DETECTION = (("m", 0.25, 3.0), ("mm", 250.0, 3000.0), ("cm", 25.0, 300.0))


# ====================================================================== public API
def detect_units(size: float) -> tuple[str, float] | None:
    """Guess a file's units from a body's largest extent ``size`` (in file units).

    Returns (unit name, mm per unit) or None when the size fits a human body in none of them:
    0.25-3 -> "m", 250-3000 -> "mm", 25-300 -> "cm" (tried in that order, so 250-300 is mm).
    """
    if not np.isfinite(size):
        return None
    for name, lo, hi in UNIT_DETECTION:
        if lo <= size <= hi:
            return name, UNIT_SCALES[name]
    return None


def load_scan(path: str | Path, units: str | float | None = None, texture: str | Path | None = None,
              patient_id: str = "", visit_date: str = "") -> Scan:
    """Read a mesh file (.obj, .ply, .off, .glb, .gltf) into a validated Scan in mm.

    path : the mesh file. For OBJ the texture comes from the MTL's ``map_Kd``; several diffuse
        textures are packed side by side into one atlas (see ``_assemble_textures``).
    units : units of the file's coordinates: "m", "cm", "mm", a number (mm per file unit, for
        files in arbitrary units such as an artist's model), or None to detect them from the
        body's largest extent (see :func:`detect_units`).
    texture : optional image path overriding the file's own texture (the file must have UVs).
    patient_id, visit_date : stored in ``scan.meta``.

    Returns a Scan: vertices (n, 3) float64 mm in file order, faces (m, 3) int64, uv
    (m, 3, 2) float32 or None, texture (H, W, 3) uint8 or None, vertex_colors (n, 3) uint8 or
    None; ``meta.units`` / ``meta.unit_scale`` / ``meta.source`` record where it came from and
    ``meta.warnings`` what was repaired. Raises ScanError naming the file and the problem.
    """
    path = Path(path)
    unit_name, scale = _parse_units(units, path)
    if not path.exists():
        raise ScanError(path, "file not found")
    if path.is_dir():
        raise ScanError(path, "is a directory, not a mesh file")
    ext = path.suffix.lower()
    reader = READERS.get(ext)
    if reader is None:
        raise ScanError(path, f"unsupported file type {ext or '(no extension)'!r}; "
                              f"supported: {', '.join(sorted(READERS))}")
    if path.stat().st_size == 0:
        raise ScanError(path, "file is empty (0 bytes)")
    tex_override = None
    if texture is not None:
        tex_override = read_image(Path(texture), path, "texture given with texture=")
    try:
        raw = reader(path, tex_override)
    except ScanError:
        raise
    except MemoryError as e:
        raise ScanError(path, "not enough memory to read the file") from e
    except Exception as e:  # a reader bug or a library's complaint: still name the file
        raise ScanError(path, f"cannot read the file, truncated or corrupt? "
                              f"({type(e).__name__}: {e})") from e

    v = np.asarray(raw.vertices, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(v).all(axis=1)
    size = float(np.ptp(v[finite], axis=0).max()) if finite.any() else float("nan")
    detect_failed = False
    if unit_name is None:
        found = detect_units(size)
        if found is None:
            detect_failed = True
            unit_name, scale = "unknown", 1.0
        else:
            unit_name, scale = found
    meta = ScanMeta(patient_id=patient_id, visit_date=visit_date, source=str(path), units=unit_name,
                    unit_scale=float(scale), warnings=list(raw.warnings), extra=dict(raw.extra))
    # Structural validation first (NaN, indices, no faces...), then the size.
    scan = Scan(v * scale, raw.faces, raw.uv, raw.texture, raw.vertex_colors, meta)
    if detect_failed:
        raise ScanError(path, _units_problem(size))
    scan.check_body_size()
    return scan


def save_scan(scan: Scan, path: str | Path) -> None:
    """Write ``scan`` to ``path`` in mm; the format follows the extension.

    .obj : OBJ with per-corner UVs (``vt``), vertex colours as ``v x y z r g b`` (0..1) and,
        when the scan has a texture, ``<stem>.mtl`` and ``<stem>.png`` beside it (``map_Kd``).
        Reading it back gives the same vertex order, faces and float32 UVs.
    .ply : binary little-endian PLY, double coordinates, vertex colours if present. PLY has no
        per-corner UVs, so UVs and texture are NOT stored.
    .off : ASCII OFF, geometry only.
    .glb : binary glTF via trimesh, texture embedded. glTF needs per-vertex UVs, so vertices on
        UV seams are duplicated (appended after the originals, which keep their indices); the
        mapping is stored in the mesh's extras and ``load_scan`` undoes it. Coordinates are mm,
        not glTF's nominal metres.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ScanError(path, f"cannot write {path.suffix or '(no extension)'!r} files; "
                              f"supported: {', '.join(sorted(WRITERS))}")
    writer(scan, path)


# ====================================================================== units
def _parse_units(units, path) -> tuple[str | None, float]:
    if units is None:
        return None, 1.0
    if isinstance(units, str):
        key = units.strip().lower()
        if key in UNIT_SCALES:
            return key, UNIT_SCALES[key]
        raise ScanError(path, f"unknown units {units!r}: use 'm', 'cm', 'mm', a number of mm per "
                              "file unit, or None to detect them")
    try:
        scale = float(units)
    except (TypeError, ValueError):
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0:
        raise ScanError(path, f"units must be 'm', 'cm', 'mm', a positive number of mm per file "
                              f"unit, or None; got {units!r}")
    return "custom", scale


def _units_problem(size: float) -> str:
    if not np.isfinite(size):
        return "cannot tell the units: the mesh has no finite vertices"
    how = ""
    if size < UNIT_DETECTION[0][1]:
        how = " - far too small for a human body in any unit"
    elif size > UNIT_DETECTION[1][2]:
        how = " - far too large for a human body in any unit"
    return (f"cannot tell the units: the largest extent is {size:.4g} file units, i.e. "
            f"{size * 1000:.4g} mm if metres, {size * 10:.4g} mm if centimetres, {size:.4g} mm if "
            f"millimetres; none is a human body (250-3000 mm){how}. If this is a body, pass "
            "units='m', 'cm', 'mm' or a number of mm per file unit to load_scan")


# ====================================================================== registries
READERS: dict[str, Callable[[Path, np.ndarray | None], RawMesh]] = {
    ".obj": obj.read,
    ".ply": ply.read,
    ".off": off.read,
    ".glb": gltf.read,
    ".gltf": gltf.read,
}

WRITERS: dict[str, Callable[[Scan, Path], None]] = {
    ".obj": obj.write,
    ".ply": ply.write,
    ".off": off.write,
    ".glb": gltf.write,
}

_image_to_rgb8 = image_to_rgb8  # the name bodymap.io had before it became a package
