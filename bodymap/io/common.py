"""What the format readers and writers share: the raw mesh a reader returns, the face limit,
texture images (any mode to RGB, several textures and UDIM tiles packed into one atlas), numbers
parsed from text, meshes read through trimesh, and exact-bit UV keys for writers.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from bodymap.scan import ScanError


def face_limit() -> int:
    """The most faces a mesh may have: ``bodymap.io.MAX_FACES``, read at call time so that one
    setting (tests lower it) holds for every format."""
    import bodymap.io

    return int(bodymap.io.MAX_FACES)


def check_face_count(path: Path, n: int, what: str = "faces") -> None:
    """ScanError naming ``path`` when a mesh has more than ``face_limit()`` faces (``what``:
    "faces" counted in the file, or "triangles" after polygons were split)."""
    limit = face_limit()
    if n > limit:
        holder = "mesh" if what == "triangles" else "file"
        raise ScanError(path, f"the {holder} has {n} {what}, more than the {limit} this program "
                              "accepts; decimate the mesh first")


@dataclasses.dataclass
class RawMesh:
    """What a reader returns: geometry in file units, before scaling and validation."""

    vertices: np.ndarray  # (n, 3) float64, file units
    faces: np.ndarray  # (m, 3) int64
    uv: np.ndarray | None = None  # (m, 3, 2) float per face corner
    texture: np.ndarray | None = None  # (H, W, 3) uint8
    vertex_colors: np.ndarray | None = None  # (n, 3) uint8
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)



# ====================================================================== images
def image_to_rgb8(im) -> np.ndarray:
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


def read_image(tex: Path, source: Path, what: str) -> np.ndarray:
    """Read a texture image as (H, W, 3) uint8; ScanError naming ``source`` and ``tex``."""
    from PIL import Image

    if not tex.is_file():
        raise ScanError(source, f"texture file {tex} not found ({what})")
    try:
        with Image.open(tex) as im:
            im.load()
            arr = image_to_rgb8(im)
    except Exception as e:  # UnidentifiedImageError, truncated data, decompression bomb...
        raise ScanError(source, f"texture file {tex} cannot be read as an image ({what}): "
                                f"{type(e).__name__}: {e}") from e
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ScanError(source, f"texture file {tex} is too small to be a texture ({arr.shape})")
    return arr


def resize_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.shape[0] == height:
        return img
    from PIL import Image

    w = max(1, int(round(img.shape[1] * height / img.shape[0])))
    return np.asarray(Image.fromarray(img).resize((w, height), Image.BILINEAR), dtype=np.uint8)


def wrap_tiles(t: np.ndarray) -> tuple[np.ndarray, int]:
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


def udim_tiles(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UDIM tile numbers (k,) of faces uv (k, 3, 2) by their centre (1001 + u + 10 v) and the
    (k, 1, 2) whole-unit offsets that bring each face into [0, 1]."""
    off = np.floor(uv.mean(axis=1, keepdims=True))
    return (1001 + off[:, 0, 0] + 10 * off[:, 0, 1]).astype(np.int64), off


# Width in texels of the grey atlas slot for faces whose material has no diffuse texture.
_GREY_SLOT_WIDTH = 8
_GREY = 128


def assemble_textures(source: Path, uv: np.ndarray | None, has_uv: np.ndarray, tex_id: np.ndarray,
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
        t, n_wrapped = wrap_tiles(np.asarray(uv, np.float64))
        if n_wrapped:  # a repeating (tiled) layout: texture coordinates repeat every whole unit
            warnings.append(f"{n_wrapped} faces had UVs outside [0, 1] (a tiled layout); moved by whole tiles "
                            "onto the texture, which repeats")
        return t.astype(np.float32), images[used[0]]

    height = max(images[i].shape[0] for i in used)
    slots = [resize_height(images[i], height) for i in used]
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
        t, moved = wrap_tiles(np.asarray(uv[sel], dtype=np.float64))
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



# ====================================================================== numbers in text
WS = np.zeros(256, dtype=bool)
WS[[9, 10, 11, 12, 13, 32]] = True
FLOAT_RE = re.compile(rb"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)$", re.I)


def parse_numbers(text: bytes, dtype, expected: int) -> np.ndarray | None:
    """All numbers in ``text``; None when anything is not a number (caller locates it)."""
    if expected == 0:
        return np.zeros(0, dtype=dtype)
    try:
        out = np.fromstring(text, dtype=dtype, sep=" ")
    except ValueError:
        return None
    return out if len(out) == expected else None


# ====================================================================== meshes read by trimesh
def visual_parts(mesh):
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
            image = image_to_rgb8(img)
        attrs = getattr(vis, "vertex_attributes", {}) or {}
        if "color" in attrs and len(attrs["color"]) == len(mesh.vertices):
            colors = np.asarray(attrs["color"])[:, :3].astype(np.uint8)
    return uv, image, colors


def from_trimesh_parts(path: Path, parts, tex_override, warnings: list[str], extra: dict) -> RawMesh:
    """Concatenate mesh parts into one RawMesh.

    parts : list of (name, vertices (n, 3), faces (m, 3), per-corner uv (m, 3, 2) or None,
    texture (H, W, 3) or None, vertex colours (n, 3) or None).
    """
    if not parts:
        return RawMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), warnings=warnings)
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
    uv, texture = assemble_textures(path, np.concatenate(uvs), np.concatenate(has_uv),
                                     np.concatenate(tex_id), images, names, warnings, extra)
    col = None
    if any(c is not None for c in colors):
        col = np.concatenate([c if c is not None else np.full((len(vv), 3), 255, dtype=np.uint8)
                              for c, vv in zip(colors, verts)])
    return RawMesh(v, f, uv, texture, col, warnings, extra)


# ====================================================================== writers
def unique_uvs(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct UV pairs of (m, 3, 2) float32 ``uv``, by exact bits: (keys (k,) uint64, corner ->
    key index (3m,))."""
    bits = np.ascontiguousarray(uv, dtype=np.float32).reshape(-1, 2).view(np.uint32).astype(np.uint64)
    keys, inv = np.unique((bits[:, 0] << np.uint64(32)) | bits[:, 1], return_inverse=True)
    return keys, inv.reshape(-1)


def uv_from_keys(keys: np.ndarray) -> np.ndarray:
    """(k,) uint64 keys from ``unique_uvs`` -> (k, 2) float32 UVs."""
    bits = np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)], axis=1).astype(np.uint32)
    return bits.view(np.float32)


def fmt_rows(fmt: str, rows) -> str:
    return "".join(fmt % tuple(r) for r in rows)
