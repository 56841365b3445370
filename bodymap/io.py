"""Reading and writing scans: OBJ (+ MTL + texture image), PLY, OFF, glTF / GLB.

``load_scan`` turns a mesh file into a validated :class:`~bodymap.scan.Scan` in millimetres;
``save_scan`` writes one back. Both dispatch on the file extension through the ``READERS`` and
``WRITERS`` registries ({extension: function}).

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

import dataclasses
import json
import re
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap import atomic
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


@dataclasses.dataclass
class _RawMesh:
    """What a reader returns: geometry in file units, before scaling and validation."""

    vertices: np.ndarray  # (n, 3) float64, file units
    faces: np.ndarray  # (m, 3) int64
    uv: np.ndarray | None = None  # (m, 3, 2) float per face corner
    texture: np.ndarray | None = None  # (H, W, 3) uint8
    vertex_colors: np.ndarray | None = None  # (n, 3) uint8
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)


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
        tex_override = _read_image(Path(texture), path, "texture given with texture=")
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


# ====================================================================== images
def _image_to_rgb8(im) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) uint8 RGB (16-bit scaled down, alpha dropped)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit -> 8-bit
        elif mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _read_image(tex: Path, source: Path, what: str) -> np.ndarray:
    """Read a texture image as (H, W, 3) uint8; ScanError naming ``source`` and ``tex``."""
    from PIL import Image

    if not tex.is_file():
        raise ScanError(source, f"texture file {tex} not found ({what})")
    try:
        with Image.open(tex) as im:
            im.load()
            arr = _image_to_rgb8(im)
    except Exception as e:  # UnidentifiedImageError, truncated data, decompression bomb...
        raise ScanError(source, f"texture file {tex} cannot be read as an image ({what}): "
                                f"{type(e).__name__}: {e}") from e
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ScanError(source, f"texture file {tex} is too small to be a texture ({arr.shape})")
    return arr


def _resize_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.shape[0] == height:
        return img
    from PIL import Image

    w = max(1, int(round(img.shape[1] * height / img.shape[0])))
    return np.asarray(Image.fromarray(img).resize((w, height), Image.BILINEAR), dtype=np.uint8)


def _wrap_tiles(t: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-corner UVs t (k, 3, 2): every face whose centre lies outside [0, 1) moved by whole
    units so that its centre is inside (texture coordinates repeat: tiled and UDIM layouts).
    Returns (UVs, number of faces moved)."""
    centre = t.mean(axis=1, keepdims=True)
    shift = np.floor(centre)
    moved = (shift != 0).any(axis=(1, 2))
    if not moved.any():
        return t, 0
    t = t.copy()
    t[moved] -= shift[moved]
    return t, int(moved.sum())


UDIM_TOKEN = re.compile(r"<udim>", re.I)


def _udim_tiles(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UDIM tile numbers (k,) of faces uv (k, 3, 2) by their centre (1001 + u + 10 v) and the
    (k, 1, 2) whole-unit offsets that bring each face into [0, 1]."""
    off = np.floor(uv.mean(axis=1, keepdims=True))
    return (1001 + off[:, 0, 0] + 10 * off[:, 0, 1]).astype(np.int64), off


# Width in texels of the grey atlas slot for faces whose material has no diffuse texture.
_GREY_SLOT_WIDTH = 8
_GREY = 128


def _assemble_textures(source: Path, uv: np.ndarray | None, has_uv: np.ndarray, tex_id: np.ndarray,
                       images: list[np.ndarray], names: list[str], warnings: list[str],
                       extra: dict, tri_line: np.ndarray | None = None):
    """Combine per-face textures into one texture and per-corner UVs.

    uv : (m, 3, 2) float per corner (anything where has_uv is False); has_uv : (m,) bool;
    tex_id : (m,) int index into ``images`` or -1 for faces without a texture.
    Returns (uv (m, 3, 2) float32 or None, texture (H, W, 3) uint8 or None).

    One texture covering every face: used as is. Otherwise every used texture is resized to
    the tallest one's height and packed side by side into an atlas, each face's UVs squeezed
    into its texture's slot (a face whose UVs leave [0, 1] is moved by whole tiles so that its
    centre is inside, then clamped to the slot: clamp-to-edge, approximately repeat);
    faces without a texture get a constant UV in an 8-texel-wide grey slot at the right.
    """
    m = len(tex_id)
    textured = tex_id >= 0
    used = [int(i) for i in np.unique(tex_id[textured])]
    if not used:
        if has_uv.all():
            return (None if m == 0 or uv is None else uv.astype(np.float32)), None
        if has_uv.any():
            warnings.append(f"texture coordinates on only {int(has_uv.sum())} of {m} faces and no "
                            "texture: UVs ignored")
        return None, None
    if not has_uv.any():
        # The Scan's validation reports "texture but no UV coordinates".
        return None, images[used[0]]
    missing = textured & ~has_uv
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        where = f" (first on line {int(tri_line[first]) + 1})" if tri_line is not None else ""
        raise ScanError(source, f"{int(missing.sum())} of {int(textured.sum())} textured faces have "
                                f"no texture coordinates{where}, so the texture cannot be mapped")
    if len(used) == 1 and textured.all():
        t, n_wrapped = _wrap_tiles(np.asarray(uv, np.float64))
        if n_wrapped:  # a repeating (tiled) layout: texture coordinates repeat every whole unit
            warnings.append(f"{n_wrapped} faces had UVs outside [0, 1] (a tiled layout); moved by whole tiles "
                            "onto the texture, which repeats")
        return t.astype(np.float32), images[used[0]]

    height = max(images[i].shape[0] for i in used)
    slots = [_resize_height(images[i], height) for i in used]
    widths = [s.shape[1] for s in slots]
    n_grey = int((~textured).sum())
    total_w = sum(widths) + (_GREY_SLOT_WIDTH if n_grey else 0)
    atlas = np.full((height, total_w, 3), _GREY, dtype=np.uint8)
    out = np.zeros((m, 3, 2), dtype=np.float64)
    x0 = 0
    n_outside = 0
    layout = []
    for i, img, w in zip(used, slots, widths):
        atlas[:, x0:x0 + w] = img
        sel = tex_id == i
        t, moved = _wrap_tiles(np.asarray(uv[sel], dtype=np.float64))
        t = np.clip(t, 0.0, 1.0)  # a slot cannot repeat: a face across a tile border is clamped to it
        n_outside += moved
        out[sel, :, 0] = (x0 + t[..., 0] * w) / total_w
        out[sel, :, 1] = t[..., 1]
        layout.append({"texture": names[i], "x0": x0, "width": w, "faces": int(sel.sum())})
        x0 += w
    if n_grey:
        out[~textured, :, 0] = (x0 + _GREY_SLOT_WIDTH / 2) / total_w
        out[~textured, :, 1] = 0.5
        layout.append({"texture": None, "x0": x0, "width": _GREY_SLOT_WIDTH, "faces": n_grey})
        warnings.append(f"{n_grey} faces have no diffuse texture; mapped to a grey slot of the atlas")
    if n_outside:
        warnings.append(f"{n_outside} faces had UVs outside [0, 1]; shifted by whole tiles and "
                        "clamped into their atlas slot")
    if len(used) > 1:
        warnings.append(f"packed {len(used)} diffuse textures into one {total_w}x{height} atlas "
                        f"({', '.join(names[i] for i in used)}); UVs remapped")
    extra["texture_atlas"] = layout
    return out.astype(np.float32), atlas


# ====================================================================== OBJ reader
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True
_FLOAT_RE = re.compile(rb"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)$", re.I)
_CORNER_RE = re.compile(rb"^[+-]?\d+(/[+-]?\d+(/[+-]?\d+)?|//[+-]?\d+)?$")

# map_Kd options and how many arguments each takes (-o/-s/-t take up to 3 numbers).
_MTL_OPTIONS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1,
                "-imfchan": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1, "-type": 1}


class _Lines:
    """An OBJ file's bytes split into lines without making one Python object per line."""

    def __init__(self, path: Path, data: bytes):
        self.path = path
        self.unterminated = not data.endswith(b"\n")
        if self.unterminated:
            data += b"\n"
        self.data = data
        self.buf = np.frombuffer(data, dtype=np.uint8)
        self.ends = np.flatnonzero(self.buf == 10)  # newline of each line
        self.starts = np.empty(len(self.ends), dtype=np.int64)
        self.starts[:1] = 0
        self.starts[1:] = self.ends[:-1] + 1
        self.n = len(self.ends)

    def char(self, k: int) -> np.ndarray:
        """(n_lines,) uint8: the k-th byte of every line, 0 past its end."""
        pos = self.starts + k
        out = np.zeros(self.n, dtype=np.uint8)
        ok = pos < self.ends
        out[ok] = self.buf[pos[ok]]
        return out

    def line(self, i: int) -> bytes:
        return self.data[self.starts[i]:self.ends[i]].rstrip(b"\r")

    def problem(self, i: int, detail: str) -> ScanError:
        text = self.line(i).decode("utf-8", "replace")
        if len(text) > 80:
            text = text[:77] + "..."
        if self.unterminated and i == self.n - 1:
            return ScanError(self.path, f"file is truncated or corrupt, line {i + 1}: {detail} "
                                        f"in {text!r}")
        return ScanError(self.path, f"line {i + 1}: {detail} in {text!r} (corrupt or truncated file?)")

    def section(self, mask: np.ndarray, kw_len: int):
        """Concatenate the lines in ``mask`` with their keyword blanked out.

        Returns (line indices (k,), bytes, tokens per line (k,)).
        """
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return idx, b"", np.zeros(0, dtype=np.int64)
        s, e = self.starts[idx], self.ends[idx]
        d = np.zeros(len(self.buf) + 1, dtype=np.int8)
        d[s] = 1
        d[e + 1] -= 1  # indices unique; a line starting right after another cancels out
        sel = np.cumsum(d[:-1], dtype=np.int8).astype(bool)
        sub = self.buf[sel]  # a copy
        lens = e - s + 1
        sub_starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for k in range(kw_len):
            sub[sub_starts + k] = 32
        counts = _token_counts(sub, sub_starts)
        return idx, sub.tobytes(), counts


def _token_counts(sub: np.ndarray, line_starts: np.ndarray) -> np.ndarray:
    """Whitespace-separated tokens per line of ``sub`` whose lines begin at ``line_starts``."""
    ws = _WS[sub]
    start = ~ws
    start[1:] &= ws[:-1]
    pos = np.flatnonzero(start)
    line = np.searchsorted(line_starts, pos, side="right") - 1
    return np.bincount(line, minlength=len(line_starts)).astype(np.int64)


def _parse(text: bytes, dtype, expected: int) -> np.ndarray | None:
    """All numbers in ``text``; None when anything is not a number (caller locates it)."""
    if expected == 0:
        return np.zeros(0, dtype=dtype)
    try:
        out = np.fromstring(text, dtype=dtype, sep=" ")
    except ValueError:
        return None
    return out if len(out) == expected else None


def _locate_bad_number(lines: _Lines, idx: np.ndarray, kw_len: int, faces: bool) -> ScanError:
    """Slow path, only on error: find the first malformed token among lines ``idx``."""
    pattern = _CORNER_RE if faces else _FLOAT_RE
    for i in idx:
        for tok in lines.line(int(i))[kw_len:].split():
            if not pattern.match(tok):
                what = "face corner" if faces else "number"
                return lines.problem(int(i), f"malformed {what} {tok.decode('utf-8', 'replace')!r}")
    return ScanError(lines.path, "malformed numbers (corrupt file?)")


def _obj_vectors(lines: _Lines, mask: np.ndarray, kw_len: int, min_cols: int, what: str):
    """Parse ``v`` / ``vt`` lines. Returns (line indices (k,), values (total,), counts, offsets)."""
    idx, text, counts = lines.section(mask, kw_len)
    if len(idx) and counts.min() < min_cols:
        i = int(idx[np.argmax(counts < min_cols)])
        c = int(counts[np.argmax(counts < min_cols)])
        raise lines.problem(i, f"{what} has {c} numbers, expected at least {min_cols}")
    nums = _parse(text, np.float64, int(counts.sum()))
    if nums is None:
        raise _locate_bad_number(lines, idx, kw_len, faces=False)
    offsets = np.cumsum(counts) - counts
    return idx, nums, counts, offsets


def _obj_faces(lines: _Lines, mask: np.ndarray):
    """Parse ``f`` lines. Returns (line indices (P,), corners per face (P,), v idx, vt idx).

    Index arrays are per corner, as written (1-based, negative = relative, vt 0 = none).
    """
    idx, text, counts = lines.section(mask, 1)
    if len(idx) == 0:
        z = np.zeros(0, dtype=np.int64)
        return idx, z, z, z
    n_tok = int(counts.sum())
    if b"/" not in text:
        nums = _parse(text, np.int64, n_tok)
        if nums is None:
            raise _locate_bad_number(lines, idx, 1, faces=True)
        return idx, counts, nums, np.zeros_like(nums)
    text = text.replace(b"//", b"/0/")
    buf = np.frombuffer(text, dtype=np.uint8)
    ws = _WS[buf]
    start = ~ws
    start[1:] &= ws[:-1]
    tok_pos = np.flatnonzero(start)
    slash_tok = np.searchsorted(tok_pos, np.flatnonzero(buf == ord("/")), side="right") - 1
    n_slash = np.bincount(slash_tok, minlength=len(tok_pos))
    s = int(n_slash[0]) if len(n_slash) else 0
    if len(tok_pos) == n_tok and s in (1, 2) and (n_slash == s).all():
        nums = _parse(text.replace(b"/", b" "), np.int64, n_tok * (s + 1))
        if nums is None:
            raise _locate_bad_number(lines, idx, 1, faces=True)
        nums = nums.reshape(-1, s + 1)
        return idx, counts, nums[:, 0].copy(), nums[:, 1].copy()
    # Mixed corner forms (a, a/b, a/b/c in one file): rare, parse token by token.
    vi, ti = [], []
    for i in idx:
        for tok in lines.line(int(i))[1:].split():
            if not _CORNER_RE.match(tok):
                raise lines.problem(int(i), f"malformed face corner {tok.decode('utf-8', 'replace')!r}")
            parts = tok.split(b"/")
            vi.append(int(parts[0]))
            ti.append(int(parts[1]) if len(parts) > 1 and parts[1] else 0)
    return idx, counts, np.array(vi, dtype=np.int64), np.array(ti, dtype=np.int64)


def _resolve_indices(lines: _Lines, raw: np.ndarray, corner_line: np.ndarray, n_before: np.ndarray,
                     total: int, what: str, allow_zero: bool) -> np.ndarray:
    """1-based / negative OBJ indices -> 0-based; ScanError naming the line when out of range."""
    out = np.where(raw > 0, raw - 1, n_before[corner_line] + raw)
    bad = (out < 0) | (out >= total)
    if allow_zero:
        bad &= raw != 0
        out = np.where(raw == 0, -1, out)
    if bad.any():
        k = int(np.argmax(bad))
        if raw[k] == 0:
            detail = f"{what} index 0 (OBJ indices start at 1)"
        else:
            plural = "vertices" if what == "vertex" else f"{what}s"
            detail = (f"face refers to {what} {int(raw[k])} but the file defines only {total} "
                      f"{plural}{' before it' if raw[k] < 0 else ''} (indices out of range)")
        raise lines.problem(int(corner_line[k]), detail)
    return out


def _count_face_lines(path: Path) -> int:
    """Count OBJ face lines in chunks, without holding the file in memory."""
    count, tail = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            block = tail + chunk
            count += block.count(b"\nf ") + block.count(b"\nf\t")
            tail = block[-2:]
    return count


def _parse_mtl(mtl: Path, warnings: list[str]) -> dict[str, Path | None]:
    """Material name -> diffuse texture path (``map_Kd``, resolved beside the MTL) or None."""
    out: dict[str, Path | None] = {}
    current = None
    for raw in mtl.read_bytes().decode("utf-8", "replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, rest = line.partition(" ")
        if "\t" in key:
            key, _, rest2 = line.partition("\t")
            rest = rest2
        key = key.lower()
        rest = rest.strip()
        if key == "newmtl":
            current = rest
            out[current] = None
        elif key == "map_kd" and current is not None:
            toks = rest.split()
            i = 0
            while i < len(toks) and toks[i].lower() in _MTL_OPTIONS:
                n = _MTL_OPTIONS[toks[i].lower()]
                i += 1
                if n == 3:  # up to three numbers
                    k = 0
                    while k < 3 and i < len(toks) and _FLOAT_RE.match(toks[i].encode()):
                        i += 1
                        k += 1
                else:
                    i += n
            name = " ".join(toks[i:]).replace("\\", "/")
            if not name:
                warnings.append(f"material {current!r} in {mtl.name} has an empty map_Kd; ignored")
                continue
            tex = Path(name)
            if not tex.is_absolute():
                tex = mtl.parent / tex
            if not tex.exists() and (mtl.parent / tex.name).exists():
                tex = mtl.parent / tex.name  # absolute or wrong-folder path from another machine
            out[current] = tex
    return out


def _read_obj(path: Path, tex_override: np.ndarray | None) -> _RawMesh:
    """Wavefront OBJ: numpy parser (v, vt, f in all index forms, polygons, mtllib, usemtl)."""
    if path.stat().st_size > 4 * MAX_FACES:  # too small to hold MAX_FACES triangles otherwise
        n_f = _count_face_lines(path)
        if n_f > MAX_FACES:
            raise ScanError(path, f"the file has {n_f} faces, more than the {MAX_FACES} this program "
                                  "accepts; decimate the mesh first")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise ScanError(path, "binary data, not a text OBJ file (corrupt file?)")
    if b"#" in data:  # comments, full-line or trailing; line numbers are kept
        data = re.sub(rb"#[^\n]*", b"", data)
    if re.search(rb"(?m)^[ \t]", data):
        data = re.sub(rb"(?m)^[ \t]+", b"", data)
    lines = _Lines(path, data)
    warnings: list[str] = []
    extra: dict = {}

    c0, c1, c2 = lines.char(0), lines.char(1), lines.char(2)
    length = lines.ends - lines.starts
    end1 = _WS[c1] | (length == 1)
    is_v = (c0 == ord("v")) & end1
    is_vt = (c0 == ord("v")) & (c1 == ord("t")) & (_WS[c2] | (length == 2))
    is_f = (c0 == ord("f")) & end1

    # vertices
    v_idx, nums, counts, off = _obj_vectors(lines, is_v, 1, 3, "vertex")
    vertices = nums[off[:, None] + np.arange(3)] if len(v_idx) else np.zeros((0, 3))
    colors = None
    if len(v_idx) and (counts == 6).any():
        if (counts == 6).all():
            c = nums[off[:, None] + np.arange(3, 6)]
            if np.isfinite(c).all():
                if c.max(initial=0) <= 1.0:
                    c = c * 255.0
                colors = np.clip(np.rint(c), 0, 255).astype(np.uint8)
        else:
            warnings.append("vertex colours on only some vertices; ignored")
    # texture coordinates
    t_idx, tnums, tcounts, toff = _obj_vectors(lines, is_vt, 2, 1, "texture coordinate")
    vt = np.zeros((len(t_idx), 2))
    if len(t_idx):
        vt[:, 0] = tnums[toff]
        two = tcounts >= 2
        vt[two, 1] = tnums[toff[two] + 1]
    # faces
    f_idx, corners, vi_raw, ti_raw = _obj_faces(lines, is_f)
    if len(f_idx) and corners.min() < 3:
        k = int(np.argmax(corners < 3))
        raise lines.problem(int(f_idx[k]), f"face with {int(corners[k])} vertices (a face needs 3)")
    corner_line = np.repeat(f_idx, corners)
    vi = _resolve_indices(lines, vi_raw, corner_line, np.cumsum(is_v), len(vertices), "vertex", False)
    ti = _resolve_indices(lines, ti_raw, corner_line, np.cumsum(is_vt), len(vt),
                          "texture coordinate", True)

    # fan triangulation of polygons
    n_tri_per = corners - 2
    n_tri = int(n_tri_per.sum())
    if n_tri > MAX_FACES:
        raise ScanError(path, f"the mesh has {n_tri} triangles, more than the {MAX_FACES} this "
                              "program accepts; decimate the mesh first")
    poly = np.repeat(np.arange(len(f_idx)), n_tri_per)
    first = (np.cumsum(corners) - corners)[poly]
    j = np.arange(n_tri) - np.repeat(np.cumsum(n_tri_per) - n_tri_per, n_tri_per) + 1
    corner_of = np.stack([first, first + j, first + j + 1], axis=1)  # (T, 3) corner indices
    faces = vi[corner_of]
    tri_line = f_idx[poly]
    n_poly = int((corners > 3).sum())
    if n_poly:
        warnings.append(f"triangulated {n_poly} polygons with more than 3 vertices "
                        f"(fan triangulation, {n_tri - len(f_idx) + n_poly} triangles)")
    tcorner = ti[corner_of]
    has_uv = (tcorner >= 0).all(axis=1)
    uv = vt[np.maximum(tcorner, 0)] if len(vt) else None

    # materials and textures
    tex_id = np.full(n_tri, -1, dtype=np.int64)
    images: list[np.ndarray] = []
    names: list[str] = []
    if tex_override is not None:
        tex_id[:] = 0
        images, names = [tex_override], ["texture override"]
    else:
        kw_lines = np.flatnonzero((c0 == ord("u")) | (c0 == ord("m")))
        use_lines, use_names, libs = [], [], []
        for i in kw_lines:
            parts = lines.line(int(i)).decode("utf-8", "replace").strip().split(None, 1)
            if not parts:
                continue
            rest = parts[1].strip() if len(parts) > 1 else ""
            if parts[0] == "usemtl":
                use_lines.append(int(i))
                use_names.append(rest)
            elif parts[0] == "mtllib":
                libs.append(rest)
        materials: dict[str, Path | None] = {}
        for lib in libs:
            cands = [lib] if (path.parent / lib).is_file() else lib.split()
            for name in cands:
                mtl = path.parent / name.replace("\\", "/")
                if not mtl.is_file():
                    warnings.append(f"material library {mtl} not found; loaded without its texture")
                    continue
                for k, v in _parse_mtl(mtl, warnings).items():
                    materials.setdefault(k, v)
        extra["materials"] = sorted(set(use_names))
        if use_lines:
            # statement -> distinct material name (files may switch material on every face)
            first_seen: dict[str, int] = {}
            name_id = np.array([first_seen.setdefault(n, len(first_seen)) for n in use_names])
            names_of_use = list(first_seen)
            k = np.searchsorted(np.array(use_lines), tri_line, side="right") - 1
            mat_of_tri = np.where(k >= 0, name_id[np.maximum(k, 0)], -1)
        elif len(materials) == 1:  # one material and no usemtl: it is meant for everything
            mat_of_tri = np.zeros(n_tri, dtype=np.int64)
            names_of_use = list(materials)
        else:
            mat_of_tri = np.full(n_tri, -1, dtype=np.int64)
            names_of_use = []
        slot_of_tex: dict[Path, int] = {}
        for u in (np.unique(mat_of_tri[mat_of_tri >= 0]) if n_tri else []):
            mname = names_of_use[int(u)]
            tex = materials.get(mname)
            if tex is None:
                continue
            if UDIM_TOKEN.search(tex.name) and uv is not None:
                # one image per UDIM tile (name.1001.png, name.1002.png, ...): each becomes its own
                # atlas slot and the faces of each tile move into [0, 1]
                sel = np.flatnonzero((mat_of_tri == u) & has_uv)
                tiles, off = _udim_tiles(uv[sel])
                bad = (tiles < 1001) | ((tiles - 1001) % 10 > 9) | (off[:, 0, 0] > 9)
                if bad.any():
                    raise ScanError(path, f"material {mname!r} uses UDIM tiles but {int(bad.sum())} faces lie outside "
                                          "the UDIM range (u 0-10, v >= 0)")
                uv[sel] -= off
                for tile in np.unique(tiles):
                    f_tile = tex.with_name(UDIM_TOKEN.sub(str(int(tile)), tex.name))
                    images.append(_read_image(f_tile, path, f"UDIM tile {int(tile)} of material {mname!r}"))
                    names.append(f_tile.name)
                    tex_id[sel[tiles == tile]] = len(images) - 1
                continue
            key = tex.resolve()
            if key not in slot_of_tex:
                images.append(_read_image(tex, path, f"map_Kd of material {mname!r}"))
                names.append(tex.name)
                slot_of_tex[key] = len(images) - 1
            tex_id[mat_of_tri == u] = slot_of_tex[key]
    if uv is None:
        uv = np.zeros((n_tri, 3, 2))
    uv_out, texture = _assemble_textures(path, uv, has_uv, tex_id, images, names, warnings, extra,
                                         tri_line)
    return _RawMesh(vertices, faces, uv_out, texture, colors, warnings, extra)


# ====================================================================== PLY reader
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
    if n_faces > MAX_FACES:
        raise ScanError(path, f"the file has {n_faces} faces, more than the {MAX_FACES} this program "
                              "accepts; decimate the mesh first")
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


def _visual_parts(mesh):
    """(per-vertex uv or None, texture (H, W, 3) or None, vertex colours (n, 3) or None)."""
    vis = getattr(mesh, "visual", None)
    uv = image = colors = None
    if vis is None:
        return uv, image, colors
    if vis.kind == "vertex":
        colors = np.asarray(vis.vertex_colors)[:, :3].astype(np.uint8)
    elif vis.kind == "texture" or hasattr(vis, "uv"):
        if getattr(vis, "uv", None) is not None and len(vis.uv) == len(mesh.vertices):
            uv = np.asarray(vis.uv, dtype=np.float64)[:, :2]
        mat = getattr(vis, "material", None)
        img = getattr(mat, "baseColorTexture", None) if mat is not None else None
        if img is None and mat is not None:
            img = getattr(mat, "image", None)
        if img is not None:
            image = _image_to_rgb8(img)
        attrs = getattr(vis, "vertex_attributes", {}) or {}
        if "color" in attrs and len(attrs["color"]) == len(mesh.vertices):
            colors = np.asarray(attrs["color"])[:, :3].astype(np.uint8)
    return uv, image, colors


def _from_trimesh_parts(path: Path, parts, tex_override, warnings: list[str], extra: dict) -> _RawMesh:
    """Concatenate mesh parts into one _RawMesh.

    parts : list of (name, vertices (n, 3), faces (m, 3), per-corner uv (m, 3, 2) or None,
    texture (H, W, 3) or None, vertex colours (n, 3) or None).
    """
    if not parts:
        return _RawMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), warnings=warnings)
    verts, faces, uvs, has_uv, tex_id, colors = [], [], [], [], [], []
    images: list[np.ndarray] = []
    names: list[str] = []
    offset = 0
    for name, v, f, uvc, image, col in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
        uvs.append(uvc if uvc is not None else np.zeros((len(f), 3, 2)))
        has_uv.append(np.full(len(f), uvc is not None))
        if tex_override is not None:
            tex_id.append(np.zeros(len(f), dtype=np.int64))
        elif image is not None:
            images.append(image)
            names.append(name)
            tex_id.append(np.full(len(f), len(images) - 1, dtype=np.int64))
        else:
            tex_id.append(np.full(len(f), -1, dtype=np.int64))
        colors.append(col)
    if tex_override is not None:
        images, names = [tex_override], ["texture override"]
    v = np.concatenate(verts).astype(np.float64)
    f = np.concatenate(faces).astype(np.int64)
    uv, texture = _assemble_textures(path, np.concatenate(uvs), np.concatenate(has_uv),
                                     np.concatenate(tex_id), images, names, warnings, extra)
    col = None
    if any(c is not None for c in colors):
        col = np.concatenate([c if c is not None else np.full((len(vv), 3), 255, dtype=np.uint8)
                              for c, vv in zip(colors, verts)])
    return _RawMesh(v, f, uv, texture, col, warnings, extra)


def _read_ply(path: Path, tex_override: np.ndarray | None) -> _RawMesh:
    """PLY (ASCII or binary) via trimesh, process=False; keeps RGB vertex colours."""
    import trimesh

    _ply_check_header(path)
    mesh = trimesh.load(str(path), file_type="ply", process=False)
    if isinstance(mesh, trimesh.Scene):  # not expected from PLY, but be safe
        mesh = mesh.to_mesh()
    v = np.asarray(mesh.vertices, dtype=np.float64)  # a PointCloud has vertices but no faces
    f = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    uv, image, colors = _visual_parts(mesh) if isinstance(mesh, trimesh.Trimesh) else (None, None, None)
    uvc = None if uv is None else uv[f]
    return _from_trimesh_parts(path, [("ply texture", v, f, uvc, image, colors)], tex_override, [], {})


# ====================================================================== OFF reader
def _read_off(path: Path, tex_override: np.ndarray | None) -> _RawMesh:
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
    if nf > MAX_FACES:
        raise ScanError(path, f"the file has {nf} faces, more than the {MAX_FACES} this program "
                              "accepts; decimate the mesh first")
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
        nums = _parse(b"\n".join(ln for _, ln in block), np.float64, int(counts.sum()))
        if nums is None:
            for (lineno, ln), t in zip(block, toks):
                for tok in t:
                    if not _FLOAT_RE.match(tok):
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
    raw = _RawMesh(vertices, faces, None, None, colors, warnings)
    if tex_override is not None:
        raw.texture = tex_override  # validation reports the missing UVs
    return raw


# ====================================================================== glTF / GLB reader
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
    if n_faces > MAX_FACES:
        raise ScanError(path, f"the file has {n_faces} faces, more than the {MAX_FACES} this program "
                              "accepts; decimate the mesh first")


def _read_gltf(path: Path, tex_override: np.ndarray | None) -> _RawMesh:
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
        uv, image, colors = _visual_parts(g)
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
    return _from_trimesh_parts(path, parts, tex_override, warnings, {})


# ====================================================================== writers
def _uv_keys(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct UV pairs of (m, 3, 2) float32 ``uv``, by exact bits: (keys (k,) uint64, corner ->
    key index (3m,))."""
    bits = np.ascontiguousarray(uv, dtype=np.float32).reshape(-1, 2).view(np.uint32).astype(np.uint64)
    keys, inv = np.unique((bits[:, 0] << np.uint64(32)) | bits[:, 1], return_inverse=True)
    return keys, inv.reshape(-1)


def _uv_from_keys(keys: np.ndarray) -> np.ndarray:
    """(k,) uint64 keys from ``_uv_keys`` -> (k, 2) float32 UVs."""
    bits = np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)], axis=1).astype(np.uint32)
    return bits.view(np.float32)


def _fmt_rows(fmt: str, rows) -> str:
    return "".join(fmt % tuple(r) for r in rows)


def _write_obj(scan: Scan, path: Path) -> None:
    """OBJ in mm with per-corner UVs; texture as <stem>.png referenced from <stem>.mtl."""
    from PIL import Image

    out = [f"# BodyMap scan: {scan.n_vertices} vertices, {scan.n_faces} faces, units mm\n"]
    if scan.texture is not None:
        mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
        with atomic.atomic_write(png) as tmp:
            Image.fromarray(scan.texture).save(tmp, compress_level=6)
        atomic.write_text(mtl, f"# BodyMap material for {path.name}\nnewmtl skin\nKa 1 1 1\nKd 1 1 1\n"
                       f"Ks 0 0 0\nd 1\nillum 1\nmap_Kd {png.name}\n")
        out.append(f"mtllib {mtl.name}\n")
    if scan.vertex_colors is not None:
        cols = scan.vertex_colors.astype(np.float64) / 255.0
        rows = np.concatenate([scan.vertices, cols], axis=1).tolist()
        out.append("".join("v %.3f %.3f %.3f %.6g %.6g %.6g\n" % tuple(r) for r in rows))
    else:
        out.append(_fmt_rows("v %.3f %.3f %.3f\n", scan.vertices.tolist()))  # 1 um: far below scanner noise
    f1 = scan.faces + 1
    if scan.uv is not None:
        uv_keys, inv = _uv_keys(scan.uv)
        uniq = _uv_from_keys(uv_keys)
        out.append(_fmt_rows("vt %.9g %.9g\n", uniq.astype(np.float64).tolist()))
        if scan.texture is not None:
            out.append("usemtl skin\n")
        t1 = inv.reshape(-1, 3) + 1
        rows = np.stack([f1[:, 0], t1[:, 0], f1[:, 1], t1[:, 1], f1[:, 2], t1[:, 2]], axis=1)
        out.append(_fmt_rows("f %d/%d %d/%d %d/%d\n", rows.tolist()))
    else:
        out.append(_fmt_rows("f %d %d %d\n", f1.tolist()))
    atomic.write_text(path, "".join(out))  # last: the OBJ appears only when its texture is there


def _write_ply(scan: Scan, path: Path) -> None:
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


def _write_off(scan: Scan, path: Path) -> None:
    """ASCII OFF in mm, geometry only."""
    atomic.write_text(path, f"OFF\n{scan.n_vertices} {scan.n_faces} 0\n"
                    + _fmt_rows("%r %r %r\n", scan.vertices.tolist())
                    + _fmt_rows("3 %d %d %d\n", scan.faces.tolist()))


def _write_glb(scan: Scan, path: Path) -> None:
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
        uv_keys, uv_inv = _uv_keys(scan.uv)
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
        uv_pairs = _uv_from_keys(uv_keys)[uniq % len(uv_keys)].astype(np.float64)
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


# ====================================================================== registries
READERS: dict[str, Callable[[Path, np.ndarray | None], _RawMesh]] = {
    ".obj": _read_obj,
    ".ply": _read_ply,
    ".off": _read_off,
    ".glb": _read_gltf,
    ".gltf": _read_gltf,
}

WRITERS: dict[str, Callable[[Scan, Path], None]] = {
    ".obj": _write_obj,
    ".ply": _write_ply,
    ".off": _write_off,
    ".glb": _write_glb,
}
