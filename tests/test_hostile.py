"""The hostile corpus: broken, odd and malicious inputs through the `bodymap` command.

Each case is an input a user (or an attacker) can hand BodyMap. An *error* case must end with
exit code 2 and exactly one line "error: ..." naming the file and the problem (no traceback),
within LIMIT_S (huge meshes: within the time it takes to read them), and must leave every file
the user had as it was. A *handled* case (an unusual but valid input) must simply work. None
needs a registration: the plausibility check, the readers and the file checks answer first.

Set BODYMAP_HOSTILE_TABLE=FILE to append one row per case (name, outcome, seconds, message).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import trimesh
from PIL import Image

from bodymap.cli import main
from bodymap.io import save_scan
from bodymap.scan import Scan

from conftest import ROOT, SAMPLES

LIMIT_S = 10.0
GUI_DATA = ROOT / "tests" / "data" / "gui"
SAMPLE = SAMPLES / "SYN00101" / "visit1" / "scan.obj"


# ----------------------------------------------------------------------------- inputs
def body(height=1700.0, sections=48, subdiv=2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cheap stand-in for a body (an upright elliptic cylinder, ~3k faces, mm) that passes the
    plausibility check: vertices (n, 3), faces (m, 3), per-corner cylindrical UVs (m, 3, 2)."""
    m = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    for _ in range(subdiv):
        m = m.subdivide()
    v = np.asarray(m.vertices) * [0.1 * height, 0.07 * height, height] + [0, 0, height / 2]
    f = np.asarray(m.faces)
    ang = (np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi)) % 1.0
    uv = np.stack([ang[f], v[f, 2] / height], axis=2).astype(np.float32)
    uv[..., 0] = np.clip(uv[..., 0], 0.02, 0.98)
    return v, f, uv


def textured_body(folder: Path, name="scan.obj", tex: np.ndarray | None = None) -> Path:
    v, f, uv = body()
    tex = np.full((256, 256, 3), (205, 160, 130), np.uint8) if tex is None else tex
    folder.mkdir(parents=True, exist_ok=True)
    save_scan(Scan(v, f, uv, tex), folder / name)
    return folder / name


def obj_with_texture_file(folder: Path, image_name: str) -> Path:
    """A textured body OBJ whose MTL points at image_name (written by the caller)."""
    p = textured_body(folder)
    (folder / "scan.mtl").write_text(f"newmtl skin\nmap_Kd {image_name}\n")
    return p


def binary_ply(path: Path, v: np.ndarray, f: np.ndarray) -> Path:
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\nproperty float y\n"
            f"property float z\nelement face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    fa = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    fa["n"], fa["i"] = 3, f
    with open(path, "wb") as fh:
        fh.write(head.encode())
        fh.write(np.ascontiguousarray(v, "<f4").tobytes())
        fh.write(fa.tobytes())
    return path


def grid_sheet(n: int, size_mm: float = 1700.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat n x n grid: 2 (n-1)^2 faces."""
    x = np.linspace(0, size_mm, n, dtype=np.float32)
    xx, yy = np.meshgrid(x, x)
    v = np.stack([xx.ravel(), yy.ravel(), np.zeros(n * n, np.float32)], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def analysis_copy(folder: Path, src: Path = GUI_DATA / "SYN00101_visit1") -> Path:
    """A copy of an analysis folder whose lesion list names its scan by absolute path."""
    shutil.copytree(src, folder)
    d = json.loads((folder / "lesions.json").read_text())
    d["scan"] = str((src / d["scan"]).resolve())
    (folder / "lesions.json").write_text(json.dumps(d))
    return folder


def tracking_folder(folder: Path) -> Path:
    """A tracking folder (tracking.json) of visit-1 lesions 1-5 and visit-2 lesions 1-6."""
    from bodymap.track import Tracking

    folder.mkdir(parents=True, exist_ok=True)
    pairs = [{"id1": i, "id2": i, "confidence": 0.9, "flags": [], "reviewed": False} for i in range(1, 6)]
    info = {"visit1": {"scan": "/a/v1.obj", "points": {str(i): [0.0, 0.0, float(i)] for i in range(1, 6)}},
            "visit2": {"scan": "/a/v2.obj", "points": {str(i): [0.0, 0.0, float(i)] for i in range(1, 7)}}}
    Tracking(pairs, [{"id2": 6, "diameter_mm": 2.0, "flags": []}], [], np.zeros((6, 3)), np.zeros(6, int),
             np.zeros((6, 3)), info).save_json(folder / "tracking.json")
    return folder


def lesion_file(path: Path, lesions) -> Path:
    path.write_text(json.dumps({"schema": "bodymap.lesions/1", "scan": "", "lesions": lesions}))
    return path


def good_lesion(**kw) -> dict:
    d = {"id": 1, "point_mm": [0, 0, 900], "face": 3, "bary": [1, 0, 0], "normal": [1, 0, 0], "diameter_mm": 3.0,
         "area_mm2": 7.0, "colour_lab": [40, 10, 10], "skin_lab": [60, 10, 15], "contrast_de": 20.0,
         "confidence": 0.9}
    d.update(kw)
    return d


def png_bytes(width: int, height: int, mode_byte=0, depth=8, payload=b"") -> bytes:
    """A PNG whose header claims width x height (the data may be anything)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- cases
@dataclasses.dataclass
class Case:
    """argv: the command, or call: a function (for inputs only the library or the GUI reads);
    named: what the error must name; words: what it must say; handled: a check for a valid
    input that must work; protect: folders whose files must not change; limit_s."""

    argv: list | None = None
    call: Callable | None = None
    named: str | None = None
    words: tuple = ()
    handled: Callable | None = None
    protect: tuple = ()
    limit_s: float = LIMIT_S


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


@case("empty mesh file")
def _(t):
    p = t / "empty.obj"
    p.write_bytes(b"")
    return Case(["info", str(p)], named=p, words=("empty",))


@case("truncated OBJ")
def _(t):
    src = textured_body(t / "src")
    p = t / "cut.obj"
    p.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return Case(["info", str(p)], named=p, words=("truncated",))


@case("truncated binary PLY")
def _(t):
    v, f, _ = body()
    p = binary_ply(t / "cut.ply", v, f)
    p.write_bytes(p.read_bytes()[:-500])
    return Case(["info", str(p)], named=p, words=("truncated",))


@case("NaN coordinates")
def _(t):
    p = t / "nan.obj"
    p.write_text("v 0 0 0\nv nan 0 0\nv 0 1700 0\nf 1 2 3\n")
    return Case(["info", str(p)], named=p, words=("NaN",))


@case("out-of-range face index")
def _(t):
    p = t / "range.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1.7 0\nf 1 2 9\n")
    return Case(["info", str(p)], named=p, words=("out of range",))


@case("binary garbage named .obj")
def _(t):
    p = t / "garbage.obj"
    p.write_bytes(os.urandom(5000))
    return Case(["info", str(p)], named=p, words=("binary",))


@case("one triangle")
def _(t):
    p = t / "tri.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return Case(["info", str(p)], named=p, words=("1 face", "not a body"))


@case("cube")
def _(t):
    p = t / "cube.ply"
    trimesh.creation.box((1000, 1000, 1000)).export(p)
    return Case(["label", str(p), "--quiet"], named=p, words=("12 faces", "not a body"))


@case("500-face body")
def _(t):
    v, f, _ = body(sections=125, subdiv=0)  # 4 x 125 faces
    p = t / "coarse.ply"
    save_scan(Scan(v, f), p)
    return Case(["analyze", str(p), "--quiet"], named=p, words=("500 faces",))


@case("closed ball")
def _(t):
    p = t / "ball.ply"
    trimesh.creation.icosphere(4, radius=850.0).export(p)
    return Case(["label", str(p), "--quiet"], named=p, words=("not a body", "ball"))


@case("3M-face mesh (flat sheet)")
def _(t):
    v, f = grid_sheet(1226)  # 3.0 million faces, 54 MB
    p = binary_ply(t / "huge.ply", v, f)
    from bodymap.io import load_scan

    t0 = time.perf_counter()
    load_scan(p)  # the time to read it: the whole check may take at most that again, plus a margin
    read_s = time.perf_counter() - t0
    return Case(["label", str(p), "--quiet"], named=p, words=("flat", "not a body"), limit_s=2 * read_s + 5)


@case("two bodies in one file")
def _(t):
    v, f, _ = body()
    p = t / "two.ply"
    save_scan(Scan(np.concatenate([v, v + [700, 0, 0]]), np.concatenate([f, f + len(v)])), p)
    return Case(["analyze", str(p), "--quiet"], named=p, words=("2 separate large pieces",))


@case("body in inches")
def _(t):
    from bodymap.io import load_scan

    s = load_scan(SAMPLE)
    p = t / "inches.ply"
    save_scan(Scan(s.vertices / 25.4, s.faces), p)
    return Case(["info", str(p)], named=p, words=("inches", "--units in"))


@case("body in inches, --units in")
def _(t):
    from bodymap.io import load_scan

    s = load_scan(SAMPLE)
    p = t / "inches.ply"
    save_scan(Scan(s.vertices / 25.4, s.faces), p)

    def ok(out, err):
        return 1700 < json.loads(out)["height_mm"] < 1800
    return Case(["info", str(p), "--units", "in", "--json"], handled=ok)


@case("partial body (upper half): not refused")
def _(t):
    from bodymap.io import load_scan

    s = load_scan(SAMPLE)
    keep = (s.vertices[s.faces][:, :, 2] > s.bounds[0, 2] + 0.5 * s.height_mm).all(1)
    used = np.unique(s.faces[keep])
    remap = np.full(s.n_vertices, -1)
    remap[used] = np.arange(len(used))
    p = t / "upper.ply"
    save_scan(Scan(s.vertices[used], remap[s.faces[keep]]), p)
    return Case(["info", str(p), "--json"], handled=lambda out, err: json.loads(out)["body_check"] == "passed")


@case("texture file missing")
def _(t):
    p = obj_with_texture_file(t / "m", "gone.png")
    return Case(["info", str(p)], named=p, words=("gone.png", "not found"))


@case("texture file corrupt")
def _(t):
    p = obj_with_texture_file(t / "m", "bad.png")
    (t / "m" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    return Case(["info", str(p)], named=p, words=("bad.png", "cannot be read"))


@case("texture 1x1")
def _(t):
    p = obj_with_texture_file(t / "m", "dot.png")
    Image.new("RGB", (1, 1)).save(t / "m" / "dot.png")
    return Case(["info", str(p)], named=p, words=("dot.png", "too small"))


def _texture_read(t, name, image: Image.Image, expect_rgb) -> Case:
    p = obj_with_texture_file(t / "m", name)
    image.save(t / "m" / name)

    def ok(out, err):
        from bodymap.io import load_scan

        tex = load_scan(p).texture
        return tex.shape[2] == 3 and np.abs(tex.reshape(-1, 3).mean(0) - expect_rgb).max() < 6
    return Case(["info", str(p)], handled=ok)


@case("CMYK JPEG texture")
def _(t):
    return _texture_read(t, "cmyk.jpg", Image.new("RGB", (64, 64), (200, 150, 120)).convert("CMYK"), (200, 150, 120))


@case("16-bit greyscale texture")
def _(t):
    return _texture_read(t, "grey16.png", Image.fromarray(np.full((64, 64), 30000, np.uint16)), (117, 117, 117))


@case("RGBA texture")
def _(t):
    return _texture_read(t, "rgba.png", Image.new("RGBA", (64, 64), (200, 150, 120, 40)), (200, 150, 120))


@case("unicode paths")
def _(t):
    p = textured_body(t / "pätient δ", "scan ü.obj")
    return Case(["info", str(p), "--json"], handled=lambda out, err: json.loads(out)["body_check"] == "passed")


@case("read-only output folder")
def _(t):
    scan = textured_body(t / "in")
    out = t / "readonly"
    out.mkdir()
    (out / "lesions.json").write_text('{"kept": "the user\'s"}')
    return Case(["detect", str(scan), "--out", str(out), "--quiet"], named=out, words=("Permission denied",),
                protect=(out, t / "in"))


@case("disk full while writing")
def _(t):
    scan = textured_body(t / "in")
    out = t / "full"
    out.mkdir()
    (out / "lesions.json").write_text('{"kept": "the user\'s"}')
    return Case(["detect", str(scan), "--out", str(out), "--quiet"], named=out / "lesions", words=("No space left",),
                protect=(out, t / "in"))


@case("output path is a file")
def _(t):
    scan = textured_body(t / "in")
    out = t / "afile"
    out.write_text("mine")
    return Case(["detect", str(scan), "--out", str(out), "--quiet"], named=out, words=("exists",), protect=(t,))


@case("lesion file not JSON")
def _(t):
    a = analysis_copy(t / "a1")
    (a / "lesions.json").write_text("{ not json")
    return Case(["track", str(a), str(GUI_DATA / "SYN00101_visit2"), "--out", str(t / "o"), "--quiet"],
                named=a / "lesions.json", words=("not a readable lesion file",), protect=(a,))


@case("lesion file without 'lesions'")
def _(t):
    a = analysis_copy(t / "a1")
    d = json.loads((a / "lesions.json").read_text())
    del d["lesions"]
    (a / "lesions.json").write_text(json.dumps(d))
    return Case(["track", str(a), str(GUI_DATA / "SYN00101_visit2"), "--quiet"],
                named=a / "lesions.json", words=("'lesions' list",), protect=(a,))


@case("lesion with a missing field")
def _(t):
    les = good_lesion()
    del les["face"]
    p = lesion_file(t / "l.json", [les])
    return Case(["track", str(SAMPLE), str(SAMPLE), "--lesions1", str(p), "--lesions2", str(p), "--quiet"],
                named=p, words=("no face",))


@case("lesion field of the wrong type")
def _(t):
    p = lesion_file(t / "l.json", [good_lesion(face="abc")])
    return Case(["track", str(SAMPLE), str(SAMPLE), "--lesions1", str(p), "--lesions2", str(p), "--quiet"],
                named=p, words=("face is 'abc'",))


@case("lesion on a face the scan lacks")
def _(t):
    p = lesion_file(t / "l.json", [good_lesion(face=10 ** 7)])
    return Case(["track", str(SAMPLE), str(SAMPLE), "--lesions1", str(p), "--lesions2", str(p), "--quiet"],
                named=p, words=("another scan",))


@case("reviews file corrupt")
def _(t):
    d = tracking_folder(t / "tr")
    (d / "reviews.json").write_text(json.dumps({"schema": "bodymap.reviews/1", "confirmed": [[1]]}))
    return Case(["review", str(d), "--confirm", "1:1"], named=d / "reviews.json",
                words=("expected [visit-2 id, visit-1 id] pairs",), protect=(d,))


@case("review of lesions that do not exist")
def _(t):
    d = tracking_folder(t / "tr")
    return Case(["review", str(d), "--confirm", "998:999"], named=d / "tracking.json",
                words=("visit 1 has no lesion 998", "visit 2 has no lesion 999"), protect=(d,))


@case("review with the old ID2=ID1 form")
def _(t):
    d = tracking_folder(t / "tr")

    def ok(out, err):
        return json.loads((d / "reviews.json").read_text())["confirmed"] == [[6, 2]] and "visit-2 lesion 6" in err
    return Case(["review", str(d), "--confirm", "6=2"], handled=ok)


@case("labels.npz truncated")
def _(t):
    a = analysis_copy(t / "a1")
    data = (a / "labels.npz").read_bytes()
    (a / "labels.npz").write_bytes(data[: len(data) // 2])
    return Case(["track", str(a), str(GUI_DATA / "SYN00101_visit2"), "--out", str(t / "o"), "--quiet"],
                named=a / "labels.npz", words=("truncated or corrupt",), protect=(a,))


@case("labels.npz garbage")
def _(t):
    a = analysis_copy(t / "a1")
    (a / "labels.npz").write_bytes(os.urandom(2000))
    return Case(["report", str(a), str(t / "map.png")], named=a / "labels.npz", words=("truncated or corrupt",),
                protect=(a,))


@case("analysis folder's relative scan path")
def _(t):
    """A folder naming its scan relative to itself must not read a same-named file in the
    current folder (another visit's scan)."""
    a = t / "patient" / "analysis"
    shutil.copytree(GUI_DATA / "SYN00101_visit1", a)
    d = json.loads((a / "lesions.json").read_text())
    d["scan"] = "visit1/scan.obj"
    (a / "lesions.json").write_text(json.dumps(d))
    wrong = Path.cwd() / "visit1"
    wrong.mkdir()
    shutil.copy(SAMPLES / "SYN00101" / "visit2" / "scan.obj", wrong / "scan.obj")
    return Case(["report", str(a), str(t / "r.png")], named=a, words=("not there",), protect=(a,))


@case("project file corrupt")
def _(t):
    from bodymap.session import Project

    p = t / "p.bodymap"
    p.write_text('{"schema": "bodymap.project", "version": 1, "visits": [')
    return Case(call=lambda: Project.load(p), named=p, words=("corrupt",), protect=(t,))


@case("project whose visits are strings")
def _(t):
    from bodymap.session import Project

    p = t / "p.bodymap"
    p.write_text(json.dumps({"schema": "bodymap.project", "version": 1, "visits": ["a", "b"]}))
    return Case(call=lambda: Project.load(p), named=p, words=("visits",), protect=(t,))


@case("checkpoint corrupt (diagnosis)")
def _(t):
    p = t / "model.pt"
    p.write_bytes(os.urandom(4000))
    photo = t / "mole.png"
    Image.new("RGB", (64, 64), (120, 90, 70)).save(photo)
    return Case(["diagnose", str(photo), "--weights", str(p)], named=p, words=("not a BodyMap checkpoint",))


@case("YOLO weights not trusted")
def _(t):
    import torch

    p = t / "other.pt"
    torch.save({"bodymap": {"task": "lesion-detection"}}, p)
    scan = textured_body(t / "in")
    return Case(["detect", str(scan), "--detector", "yolo", "--weights", str(p), "--quiet"], named=p,
                words=("--trust-weights",))


@case("crafted pickle as YOLO weights")
def _(t):
    import pickle

    marker = t / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    p = t / "evil.pt"
    p.write_bytes(pickle.dumps({"bodymap": Payload()}))
    scan = textured_body(t / "in")

    def never_ran():
        assert not marker.exists(), "the pickled payload ran"
    return Case(["detect", str(scan), "--detector", "yolo", "--weights", str(p), "--quiet"], named=p,
                words=("pickle",), call=never_ran)


@case("decompression-bomb photo")
def _(t):
    p = t / "bomb.png"
    p.write_bytes(png_bytes(40000, 40000, mode_byte=0, depth=1))
    return Case(["diagnose", str(p)], named=p, words=("decompression bomb",))


@case("1x1 photo")
def _(t):
    p = t / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    return Case(["diagnose", str(p)], named=p, words=("1x1", "too small"))


@case("16-bit greyscale photo: not read as white")
def _(t):
    from bodymap.models.quality import load_photo

    p = t / "grey16.png"
    Image.fromarray(np.full((64, 64), 16000, np.uint16)).save(p)

    def check():
        a = load_photo(p)
        assert a.shape == (64, 64, 3) and abs(float(a.mean()) - 16000 / 257) < 2, a.mean()
    return Case(call=check, handled=lambda out, err: True)


@case("unknown --site")
def _(t):
    import torch  # noqa: F401  (the site is checked against the model's vocabulary: the model is loaded;
    # importing torch, 2-3 s on an idle machine and far more on a busy one, is not counted)

    p = t / "mole.png"
    Image.new("RGB", (64, 64), (120, 90, 70)).save(p)
    return Case(["diagnose", str(p), "--site", "elbw"], named="elbw", words=("unknown anatomic site",))


@case("two photos with one name")
def _(t):
    for d in ("a", "b"):
        (t / d).mkdir()
        Image.new("RGB", (64, 64), (120, 90, 70)).save(t / d / "mole.png")
    out = t / "dx"

    def ok(o, e):
        return sorted(p.name for p in (out / "saliency").glob("*.png")) == ["mole.png", "mole_2.png"]
    # a real diagnosis (model, Grad-CAM): not an error case, so the 10 s limit does not apply
    return Case(["diagnose", str(t / "a" / "mole.png"), str(t / "b" / "mole.png"), "--out", str(out)], handled=ok,
                limit_s=120.0)


@case("scan is a folder")
def _(t):
    (t / "d.obj").mkdir()
    return Case(["info", str(t / "d.obj")], named=t / "d.obj", words=("directory",))


# ----------------------------------------------------------------------------- the test
def _snapshot(folders) -> dict:
    out = {}
    for f in folders:
        for p in sorted(Path(f).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _simulate(name: str, monkeypatch) -> None:
    """Conditions a root account cannot make for real: a read-only folder (EACCES on creating a
    file there) and a full disk (ENOSPC when the bytes reach the disk)."""
    import errno
    import tempfile

    if name == "read-only output folder":
        real = tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if dir is not None and Path(dir).name == "readonly":
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    elif name == "disk full while writing":
        import bodymap.atomic as atomic

        def fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path, capsys, monkeypatch):
    c = CASES[name](tmp_path)
    before = _snapshot(c.protect)
    _simulate(name, monkeypatch)
    capsys.readouterr()
    t0 = time.perf_counter()
    rc, raised = None, None
    if c.argv is not None:
        try:
            rc = main([str(a) for a in c.argv])
        except SystemExit as e:  # argparse
            rc = e.code
        if c.call is not None:
            c.call()
    else:
        try:
            c.call()
        except Exception as e:  # noqa: BLE001 - library-level cases: the exception is the message
            raised = e
    dt = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if c.handled is not None:
        assert raised is None and rc in (None, 0), (rc, err)
        assert c.handled(out, err), (out, err)
        outcome, message = "handled", (err.strip().splitlines() or [""])[-1]
    else:
        if c.argv is not None:
            errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert rc == 2 and len(errors) == 1, (rc, err)
            message = errors[0]
        else:
            assert raised is not None, "no error"
            message = str(raised)
            assert "\n" not in message
        assert str(c.named) in message, message
        for w in c.words:
            assert w.lower() in message.lower(), (w, message)
        outcome = "error (exit 2)" if c.argv is not None else f"error ({type(raised).__name__})"
    assert dt < c.limit_s, f"{dt:.1f} s"
    assert _snapshot(c.protect) == before, "a file the user had was changed"
    leftovers = [p for f in c.protect for p in Path(f).rglob(".*.tmp*")]
    assert not leftovers, leftovers
    table = os.environ.get("BODYMAP_HOSTILE_TABLE")
    if table:
        with open(table, "a") as fh:
            fh.write(json.dumps({"case": name, "outcome": outcome, "seconds": round(dt, 2),
                                 "message": message.replace(str(tmp_path), "...")}) + "\n")


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30  # 47
