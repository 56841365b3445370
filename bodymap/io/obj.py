"""Wavefront OBJ (+ MTL + texture images): a numpy parser (v, vt, f in every index form,
polygons fan-triangulated, mtllib / usemtl, several textures packed into one atlas, UDIM tiles)
and a writer with per-corner UVs and the texture as ``<stem>.png`` referenced from ``<stem>.mtl``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bodymap import atomic
from bodymap.io.common import (FLOAT_RE, UDIM_TOKEN, WS, RawMesh, assemble_textures, check_face_count,
                               face_limit, fmt_rows, parse_numbers, read_image, udim_tiles, unique_uvs, uv_from_keys)
from bodymap.scan import Scan, ScanError

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
    ws = WS[sub]
    start = ~ws
    start[1:] &= ws[:-1]
    pos = np.flatnonzero(start)
    line = np.searchsorted(line_starts, pos, side="right") - 1
    return np.bincount(line, minlength=len(line_starts)).astype(np.int64)


def _locate_bad_number(lines: _Lines, idx: np.ndarray, kw_len: int, faces: bool) -> ScanError:
    """Slow path, only on error: find the first malformed token among lines ``idx``."""
    pattern = _CORNER_RE if faces else FLOAT_RE
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
    nums = parse_numbers(text, np.float64, int(counts.sum()))
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
        nums = parse_numbers(text, np.int64, n_tok)
        if nums is None:
            raise _locate_bad_number(lines, idx, 1, faces=True)
        return idx, counts, nums, np.zeros_like(nums)
    text = text.replace(b"//", b"/0/")
    buf = np.frombuffer(text, dtype=np.uint8)
    ws = WS[buf]
    start = ~ws
    start[1:] &= ws[:-1]
    tok_pos = np.flatnonzero(start)
    slash_tok = np.searchsorted(tok_pos, np.flatnonzero(buf == ord("/")), side="right") - 1
    n_slash = np.bincount(slash_tok, minlength=len(tok_pos))
    s = int(n_slash[0]) if len(n_slash) else 0
    if len(tok_pos) == n_tok and s in (1, 2) and (n_slash == s).all():
        nums = parse_numbers(text.replace(b"/", b" "), np.int64, n_tok * (s + 1))
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
                    while k < 3 and i < len(toks) and FLOAT_RE.match(toks[i].encode()):
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


def read(path: Path, tex_override: np.ndarray | None) -> RawMesh:
    """Wavefront OBJ: numpy parser (v, vt, f in all index forms, polygons, mtllib, usemtl)."""
    if path.stat().st_size > 4 * face_limit():  # too small to hold that many triangles otherwise
        n_f = _count_face_lines(path)
        check_face_count(path, n_f)
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
    end1 = WS[c1] | (length == 1)
    is_v = (c0 == ord("v")) & end1
    is_vt = (c0 == ord("v")) & (c1 == ord("t")) & (WS[c2] | (length == 2))
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
    check_face_count(path, n_tri, "triangles")
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
                tiles, off = udim_tiles(uv[sel])
                bad = (tiles < 1001) | ((tiles - 1001) % 10 > 9) | (off[:, 0, 0] > 9)
                if bad.any():
                    raise ScanError(path, f"material {mname!r} uses UDIM tiles but {int(bad.sum())} faces lie outside "
                                          "the UDIM range (u 0-10, v >= 0)")
                uv[sel] -= off
                for tile in np.unique(tiles):
                    f_tile = tex.with_name(UDIM_TOKEN.sub(str(int(tile)), tex.name))
                    images.append(read_image(f_tile, path, f"UDIM tile {int(tile)} of material {mname!r}"))
                    names.append(f_tile.name)
                    tex_id[sel[tiles == tile]] = len(images) - 1
                continue
            key = tex.resolve()
            if key not in slot_of_tex:
                images.append(read_image(tex, path, f"map_Kd of material {mname!r}"))
                names.append(tex.name)
                slot_of_tex[key] = len(images) - 1
            tex_id[mat_of_tri == u] = slot_of_tex[key]
    if uv is None:
        uv = np.zeros((n_tri, 3, 2))
    uv_out, texture = assemble_textures(path, uv, has_uv, tex_id, images, names, warnings, extra,
                                         tri_line)
    return RawMesh(vertices, faces, uv_out, texture, colors, warnings, extra)


def write(scan: Scan, path: Path) -> None:
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
        out.append(fmt_rows("v %.3f %.3f %.3f\n", scan.vertices.tolist()))  # 1 um: far below scanner noise
    f1 = scan.faces + 1
    if scan.uv is not None:
        uv_keys, inv = unique_uvs(scan.uv)
        uniq = uv_from_keys(uv_keys)
        out.append(fmt_rows("vt %.9g %.9g\n", uniq.astype(np.float64).tolist()))
        if scan.texture is not None:
            out.append("usemtl skin\n")
        t1 = inv.reshape(-1, 3) + 1
        rows = np.stack([f1[:, 0], t1[:, 0], f1[:, 1], t1[:, 1], f1[:, 2], t1[:, 2]], axis=1)
        out.append(fmt_rows("f %d/%d %d/%d %d/%d\n", rows.tolist()))
    else:
        out.append(fmt_rows("f %d %d %d\n", f1.tolist()))
    atomic.write_text(path, "".join(out))  # last: the OBJ appears only when its texture is there
