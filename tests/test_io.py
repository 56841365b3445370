"""Tests for bodymap.io: round trips, unit detection, every kind of bad input, real files."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from bodymap import io as bio
from bodymap.io import load_scan, save_scan
from bodymap.scan import Scan, ScanError, uv_to_pixel

EXTERNAL = Path(__file__).resolve().parents[1].parent / "shared" / "external"


# ---------------------------------------------------------------------- helpers
def body_mesh(height=1700.0, sections=16) -> trimesh.Trimesh:
    """A closed elliptic cylinder (mm), z up, ``height`` its largest extent, 4 * sections faces."""
    m = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    m.apply_scale([0.1 * height, 0.07 * height, height])
    return m


def seam_scan(texture=True) -> Scan:
    """A body-sized box whose vertex 0 has a different UV in each face around it (UV seams)."""
    m = trimesh.creation.box(extents=[400.0, 250.0, 1700.0])
    f = np.asarray(m.faces)
    rng = np.random.default_rng(1)
    uv = rng.random((len(f), 3, 2)).astype(np.float32)
    tex = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) if texture else None  # H != W
    s = Scan(m.vertices, f, uv, tex)
    corners = np.argwhere(s.faces == 0)
    a, b = corners[0], corners[1]
    assert not np.array_equal(s.uv[a[0], a[1]], s.uv[b[0], b[1]])  # really a seam
    return s


def obj_text(mesh: trimesh.Trimesh, scale=1.0) -> str:
    v = "".join("v %r %r %r\n" % tuple(p) for p in (np.asarray(mesh.vertices) * scale).tolist())
    f = "".join("f %d %d %d\n" % tuple(t) for t in (np.asarray(mesh.faces) + 1).tolist())
    return v + f


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def expect_error(path, *words, **kwargs) -> ScanError:
    """load_scan(path) must raise ScanError naming the file and containing every word."""
    with pytest.raises(ScanError) as ei:
        load_scan(path, **kwargs)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return ei.value


BOX_V = "v 0 0 0\nv 400 0 0\nv 400 250 0\nv 0 250 0\nv 0 0 1700\nv 400 0 1700\n"
BOX_F = "f 1 2 3\nf 1 3 4\nf 1 2 6\nf 1 6 5\n"


# ---------------------------------------------------------------------- round trips
def test_obj_roundtrip_texture_and_seams(tmp_path):
    s = seam_scan()
    p = tmp_path / "scan.obj"
    save_scan(s, p)
    assert (tmp_path / "scan.png").is_file()
    assert "map_Kd scan.png" in (tmp_path / "scan.mtl").read_text()
    r = load_scan(p)
    np.testing.assert_array_equal(r.vertices, s.vertices)
    np.testing.assert_array_equal(r.faces, s.faces)
    assert r.uv.dtype == np.float32
    np.testing.assert_array_equal(r.uv, s.uv)  # exact, seams kept per corner
    np.testing.assert_array_equal(r.texture, s.texture)
    assert r.meta.units == "mm" and r.meta.unit_scale == 1.0 and r.meta.source == str(p)


def test_obj_roundtrip_vertex_colors_no_texture(tmp_path):
    m = body_mesh()
    col = np.random.default_rng(2).integers(0, 256, (len(m.vertices), 3), dtype=np.uint8)
    s = Scan(m.vertices, m.faces, vertex_colors=col)
    save_scan(s, tmp_path / "c.obj")
    assert not (tmp_path / "c.mtl").exists()
    r = load_scan(tmp_path / "c.obj")
    np.testing.assert_array_equal(r.vertex_colors, col)
    assert r.uv is None and r.texture is None


def test_ply_roundtrip_vertex_colors(tmp_path):
    m = body_mesh()
    col = np.random.default_rng(3).integers(0, 256, (len(m.vertices), 3), dtype=np.uint8)
    s = Scan(m.vertices, m.faces, vertex_colors=col)
    save_scan(s, tmp_path / "s.ply")
    r = load_scan(tmp_path / "s.ply")
    np.testing.assert_array_equal(r.vertices, s.vertices)
    np.testing.assert_array_equal(r.faces, s.faces)
    np.testing.assert_array_equal(r.vertex_colors, col)
    assert r.uv is None  # PLY does not store per-corner UVs


def test_ply_ascii_with_quads(tmp_path):
    p = write(tmp_path / "a.ply", "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\n"
              "property uchar blue\nelement face 1\nproperty list uchar int vertex_indices\n"
              "end_header\n0 0 0 255 0 0\n1 0 0 0 255 0\n1 0 1.7 0 0 255\n0 0 1.7 9 9 9\n"
              "4 0 1 2 3\n")
    r = load_scan(p)
    assert r.meta.units == "m" and r.n_vertices == 4 and r.n_faces == 2
    assert r.vertex_colors[3].tolist() == [9, 9, 9]


def test_off_roundtrip(tmp_path):
    m = body_mesh()
    s = Scan(m.vertices, m.faces)
    save_scan(s, tmp_path / "s.off")
    r = load_scan(tmp_path / "s.off")
    np.testing.assert_array_equal(r.vertices, s.vertices)
    np.testing.assert_array_equal(r.faces, s.faces)


def test_glb_roundtrip_texture(tmp_path):
    s = seam_scan()
    save_scan(s, tmp_path / "s.glb")
    r = load_scan(tmp_path / "s.glb")
    assert r.n_vertices == s.n_vertices  # seam duplicates merged back
    np.testing.assert_allclose(r.vertices, s.vertices, atol=1e-3)  # float32 in glTF
    np.testing.assert_array_equal(r.faces, s.faces)
    np.testing.assert_allclose(r.uv, s.uv, atol=1e-6)
    np.testing.assert_array_equal(r.texture, s.texture)


def test_glb_roundtrip_vertex_colors(tmp_path):
    m = body_mesh()
    col = np.random.default_rng(4).integers(0, 256, (len(m.vertices), 3), dtype=np.uint8)
    save_scan(Scan(m.vertices, m.faces, vertex_colors=col), tmp_path / "c.glb")
    r = load_scan(tmp_path / "c.glb")
    np.testing.assert_array_equal(r.faces, m.faces)
    np.testing.assert_array_equal(r.vertex_colors, col)


# ---------------------------------------------------------------------- units
@pytest.mark.parametrize("unit,scale", [("m", 0.001), ("cm", 0.1), ("mm", 1.0)])
def test_unit_detection(tmp_path, unit, scale):
    m = body_mesh(height=1700.0)
    p = write(tmp_path / f"body_{unit}.obj", obj_text(m, scale))
    r = load_scan(p)
    assert r.meta.units == unit
    assert r.meta.unit_scale == pytest.approx(1.0 / scale)
    assert r.height_mm == pytest.approx(1700.0)
    np.testing.assert_allclose(r.vertices, m.vertices, rtol=1e-9, atol=1e-9)


def test_unit_override(tmp_path):
    p = write(tmp_path / "body_m.obj", obj_text(body_mesh(), 0.001))
    assert load_scan(p, units="m").height_mm == pytest.approx(1700.0)
    r = load_scan(p, units=1000.0)  # mm per file unit
    assert r.meta.units == "custom" and r.height_mm == pytest.approx(1700.0)
    expect_error(p, "too small", "units", units="cm")  # 17 mm
    with pytest.raises(ScanError, match="units"):
        load_scan(p, units="furlong")


def test_unit_overlap_goes_to_mm(tmp_path):
    # 280 file units: 2.8 m in cm (nobody) or 280 mm in mm (a small child / partial scan)
    r = load_scan(write(tmp_path / "small.obj", obj_text(body_mesh(height=280.0))))
    assert r.meta.units == "mm" and r.height_mm == pytest.approx(280.0)


def test_too_small_object(tmp_path):
    p = write(tmp_path / "tiny.obj", obj_text(body_mesh(height=5.0, sections=8)))
    # 5 file units is 5 m, 50 mm or 5 mm: none is a body, and the message says so
    expect_error(p, "cannot tell the units", "5 mm if millimetres", "units=")
    expect_error(p, "far too small", "5 mm", units="mm")  # explicit
    p2 = write(tmp_path / "tiny_m.obj", obj_text(body_mesh(height=5.0, sections=8), 0.001))
    expect_error(p2, "far too small for a human body in any unit")  # 5 mm written in metres


def test_too_large_object(tmp_path):
    p = write(tmp_path / "huge.obj", obj_text(body_mesh(height=50_000.0, sections=8)))  # 50 m in mm
    expect_error(p, "far too large", "units")
    expect_error(p, "far too large", units="mm")
    # 50 m written in metres reads as 50 units, which detection takes for a 50 cm baby:
    # only the explicit unit can catch it
    p2 = write(tmp_path / "huge_m.obj", obj_text(body_mesh(height=50.0, sections=8)))
    assert load_scan(p2).meta.units == "cm"
    expect_error(p2, "far too large", units="m")


# ---------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.obj", "not found")


def test_empty_file(tmp_path):
    expect_error(write(tmp_path / "empty.obj", ""), "empty")


def test_unsupported_extension(tmp_path):
    expect_error(write(tmp_path / "scan.stl", "solid x\n"), "unsupported", ".obj")


@pytest.mark.parametrize("tail,words", [
    ("f 1 2 3\nf 4 5", ["truncated or corrupt, line 8", "2 vertices"]),  # cut in a face line
    ("f 1 2 3\nv 1.0 2.0 3.5e", ["truncated or corrupt, line 8", "3.5e"]),  # cut mid-number
    ("f 1 2 3\nf 1 2 3/", ["truncated or corrupt, line 8"]),  # cut mid-corner
])
def test_truncated_obj(tmp_path, tail, words):
    expect_error(write(tmp_path / "cut.obj", BOX_V + tail), *words)


def test_truncated_obj_missing_vertices(tmp_path):
    # the last vertex lines were lost: faces refer to vertices that are not there
    text = BOX_V.split("\n")[:4]
    p = write(tmp_path / "cut.obj", "\n".join(text) + "\n" + BOX_F)
    expect_error(p, "line 7", "vertex 6", "only 4", "out of range")


def test_truncated_ply(tmp_path):
    m = body_mesh()
    save_scan(Scan(m.vertices, m.faces), tmp_path / "s.ply")
    data = (tmp_path / "s.ply").read_bytes()
    cut = write(tmp_path / "cut.ply", "")
    cut.write_bytes(data[: len(data) - 100])
    expect_error(cut, "truncated")


def test_malformed_number(tmp_path):
    p = write(tmp_path / "bad.obj", BOX_V.replace("v 400 250 0", "v 400 2,50 0") + BOX_F)
    expect_error(p, "line 3", "malformed", "2,50")


def test_malformed_face_index(tmp_path):
    p = write(tmp_path / "bad.obj", BOX_V + BOX_F.replace("f 1 3 4", "f 1 3 x4"))
    expect_error(p, "line 8", "x4")


def test_nan_vertex(tmp_path):
    p = write(tmp_path / "nan.obj", BOX_V.replace("v 0 250 0", "v nan 250 0") + BOX_F)
    expect_error(p, "nan", "index 3")


def test_out_of_range_index(tmp_path):
    p = write(tmp_path / "oor.obj", BOX_V + BOX_F + "f 1 2 99\n")
    expect_error(p, "line 11", "vertex 99", "out of range")
    p0 = write(tmp_path / "zero.obj", BOX_V + "f 0 1 2\n")
    expect_error(p0, "line 7", "index 0")


def test_no_faces(tmp_path):
    expect_error(write(tmp_path / "points.obj", BOX_V), "no faces")


def test_all_faces_degenerate(tmp_path):
    p = write(tmp_path / "deg.obj", BOX_V + "f 1 1 2\nf 2 3 3\nf 1 2 2\n")
    expect_error(p, "degenerate", "3 of 3")


def test_few_degenerate_faces_removed(tmp_path):
    m = body_mesh()
    p = write(tmp_path / "deg.obj", obj_text(m) + "f 1 1 2\n")
    r = load_scan(p)
    assert r.n_faces == len(m.faces)
    assert any("removed 1 degenerate" in w for w in r.meta.warnings)


def test_quads_triangulated(tmp_path):
    p = write(tmp_path / "quad.obj", BOX_V + "f 1 2 3 4\nf 1 2 6 5\nf 1 2 3\n")
    r = load_scan(p)
    assert r.n_faces == 5
    np.testing.assert_array_equal(r.faces[:4], [[0, 1, 2], [0, 2, 3], [0, 1, 5], [0, 5, 4]])
    assert any("triangulated 2 polygons" in w for w in r.meta.warnings)


def _textured_box(tmp_path, map_kd="tex.png", with_vt=True, mtl=True) -> Path:
    vt = "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n" if with_vt else ""
    faces = ("f 1/1 2/2 3/3\nf 1/1 3/3 4/4\nf 1/1 2/2 6/3\nf 1/1 6/3 5/4\n" if with_vt else BOX_F)
    if mtl:
        write(tmp_path / "box.mtl", f"newmtl skin\nKd 1 1 1\nmap_Kd {map_kd}\n")
    return write(tmp_path / "box.obj", "mtllib box.mtl\n" + BOX_V + vt + "usemtl skin\n" + faces)


def test_texture_referenced_but_missing(tmp_path):
    p = _textured_box(tmp_path, "missing_texture.png")
    err = expect_error(p, "missing_texture.png", "not found")
    assert "skin" in str(err)


def test_corrupt_texture(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG this is not really a png" + bytes(range(256)))
    p = _textured_box(tmp_path, "x.png")
    expect_error(p, "x.png", "cannot be read")


def test_truncated_texture(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    expect_error(_textured_box(tmp_path, "t.png"), "t.png")


def test_texture_without_uvs(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "tex.png")
    p = _textured_box(tmp_path, "tex.png", with_vt=False)
    expect_error(p, "texture", "no UV")


def test_texture_on_some_faces_only_uvs(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "tex.png")
    write(tmp_path / "box.mtl", "newmtl skin\nmap_Kd tex.png\n")
    p = write(tmp_path / "box.obj", "mtllib box.mtl\nusemtl skin\n" + BOX_V
              + "vt 0 0\nvt 1 0\nvt 1 1\nf 1/1 2/2 3/3\nf 1 3 4\n")
    expect_error(p, "1 of 2 textured faces have no texture coordinates", "line 13")


def test_mtl_missing_is_a_warning(tmp_path):
    p = _textured_box(tmp_path, mtl=False)
    r = load_scan(p)
    assert r.texture is None and r.uv is not None
    assert any("box.mtl" in w and "not found" in w for w in r.meta.warnings)


def test_too_many_faces(tmp_path, monkeypatch):
    m = body_mesh()
    s = Scan(m.vertices, m.faces)
    for ext in ("obj", "ply", "off", "glb"):
        save_scan(s, tmp_path / f"s.{ext}")
    monkeypatch.setattr(bio, "MAX_FACES", 10)
    for ext in ("obj", "ply", "off", "glb"):
        expect_error(tmp_path / f"s.{ext}", f"{len(m.faces)} faces", "more than the 10")


# ---------------------------------------------------------------------- OBJ features
def test_obj_index_forms_and_negative_indices(tmp_path):
    vt = "vt 0.1 0.2\nvt 0.3 0.4 0.0\nvt 0.5 0.6\nvt 0.7 0.8\n"
    vn = "vn 0 0 1\n"
    faces = "f 1/1/1 2/2/1 3/3/1\nf -6/-4 -4/-2 -3/-1\ng part\ns off\nf 1/1 2/2/1 6/4\n"
    p = write(tmp_path / "forms.obj", BOX_V.replace("v 0 0 0", "v 0 0 0 1.0") + vt + vn + faces)
    r = load_scan(p)
    np.testing.assert_array_equal(r.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 5]])
    np.testing.assert_allclose(r.uv[1], [[0.1, 0.2], [0.5, 0.6], [0.7, 0.8]], atol=1e-7)
    np.testing.assert_allclose(r.uv[2, 2], [0.7, 0.8], atol=1e-7)
    # a//c: vertex and normal only -> no UVs
    r2 = load_scan(write(tmp_path / "vn.obj", BOX_V + vn + "f 1//1 2//1 3//1\nf 1//1 3//1 4//1\n"))
    assert r2.uv is None and r2.n_faces == 2


def test_obj_crlf_comments_and_indent(tmp_path):
    text = "# exported\r\n" + (BOX_V + BOX_F).replace("\n", "  # note\r\n").replace("v 400 0 0", "  v 400 0 0")
    r = load_scan(write(tmp_path / "crlf.obj", text))
    assert r.n_vertices == 6 and r.n_faces == 4


def test_obj_map_kd_options_and_texture_modes(tmp_path):
    grey16 = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    p = _textured_box(tmp_path, "-s 1 1 1 -o 0 0 -bm 0.5 g16.png")
    r = load_scan(p)
    assert r.texture.shape == (32, 64, 3) and r.texture.dtype == np.uint8
    assert r.texture[0, 0].tolist() == [0, 0, 0] and r.texture[-1, -1, 0] == round(2047 * 30 / 257)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 100
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    r = load_scan(_textured_box(tmp_path, "rgba.png"))
    assert r.texture.shape == (8, 8, 3) and r.texture[0, 0].tolist() == [200, 0, 0]


def test_obj_several_textures_packed_into_atlas(tmp_path):
    Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).save(tmp_path / "red.png")
    Image.fromarray(np.full((4, 4, 3), (0, 0, 255), np.uint8)).save(tmp_path / "blue.png")
    write(tmp_path / "m.mtl", "newmtl a\nmap_Kd red.png\nnewmtl b\nmap_Kd blue.png\nnewmtl plain\nKd 1 1 1\n")
    p = write(tmp_path / "m.obj", "mtllib m.mtl\n" + BOX_V + "vt 0.1 0.1\nvt 0.9 0.1\nvt 0.9 0.9\n"
              "usemtl a\nf 1/1 2/2 3/3\nusemtl b\nf 1/1 3/2 4/3\nf 1/1 2/2 6/3\nusemtl plain\nf 1 6 5\n")
    r = load_scan(p)
    assert r.texture.shape == (8, 8 + 8 + 8, 3)  # red 8x8, blue resized to 8x8, grey slot
    centre = r.uv.mean(axis=1)
    xy = np.rint(uv_to_pixel(centre, r.texture.shape)).astype(int)
    colours = r.texture[xy[:, 1], xy[:, 0]].tolist()
    assert colours == [[255, 0, 0], [0, 0, 255], [0, 0, 255], [128, 128, 128]]
    assert any("packed 2 diffuse textures" in w for w in r.meta.warnings)
    assert any("grey slot" in w for w in r.meta.warnings)


def test_texture_override(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "other.png")
    p = _textured_box(tmp_path, "missing.png")  # the MTL's texture is ignored
    r = load_scan(p, texture=tmp_path / "other.png", patient_id="P1", visit_date="2026-11-22")
    assert r.texture[0, 0].tolist() == [7, 7, 7]
    assert r.meta.patient_id == "P1" and r.meta.visit_date == "2026-11-22"
    m = body_mesh()
    save_scan(Scan(m.vertices, m.faces), tmp_path / "plain.ply")
    expect_error(tmp_path / "plain.ply", "no UV", texture=tmp_path / "other.png")


@pytest.mark.slow
def test_large_obj_loads_fast(tmp_path):
    m = trimesh.creation.icosphere(subdivisions=7)  # 163842 vertices, 327680 faces
    v = m.vertices * np.array([300.0, 200.0, 850.0])
    uv = (v[m.faces][..., :2] / 1000.0 + 0.5).astype(np.float32)
    save_scan(Scan(v, m.faces, uv, np.zeros((64, 64, 3), np.uint8)), tmp_path / "big.obj")
    t = time.perf_counter()
    r = load_scan(tmp_path / "big.obj")
    elapsed = time.perf_counter() - t
    assert r.n_vertices == 163842 and r.n_faces == 327680
    np.testing.assert_array_equal(r.uv, uv)
    assert elapsed < 10.0, f"took {elapsed:.1f} s"


# ---------------------------------------------------------------------- real files
def external(rel: str) -> Path:
    p = EXTERNAL / rel
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


@pytest.mark.external
def test_faust_off_files():
    folder = external("faust_fundcg")
    files = sorted(folder.glob("tr_reg_*.off"))
    assert len(files) == 6
    scans = [load_scan(f) for f in files]
    first = scans[0]
    for s in scans:
        assert s.n_vertices == 6890 and s.n_faces == 13776
        assert s.meta.units == "m" and s.meta.unit_scale == 1000.0
        assert 1400 <= s.height_mm <= 2100
        np.testing.assert_array_equal(s.faces, first.faces)  # same topology, same vertex order
    # tr_reg_000..003 are one person in four poses: dense correspondence means the same
    # vertex index is the same body point, so edge lengths barely change between poses
    e = first.faces[:, :2]
    len0 = np.linalg.norm(np.diff(first.vertices[e], axis=1), axis=2)
    len1 = np.linalg.norm(np.diff(scans[1].vertices[e], axis=1), axis=2)
    assert np.median(np.abs(len1 - len0) / len0) < 0.1


@pytest.mark.external
@pytest.mark.parametrize("name,n_vertices,has_uv", [
    ("human_man.obj", 6890, False), ("human_woman.obj", 6890, False), ("human_neutral.obj", 10475, True)])
def test_human_objs(name, n_vertices, has_uv):
    s = load_scan(external(f"human_ccby_odedstein/{name}"))
    assert s.n_vertices == n_vertices
    assert s.meta.units == "m" and 1400 <= s.height_mm <= 2100
    assert (s.uv is not None) == has_uv
    assert s.texture is None
    if has_uv:
        assert s.uv.shape == (s.n_faces, 3, 2)
        # SMPL-X has UV seams: some vertex has different UVs in different faces
        corners = s.faces.reshape(-1)
        uv = s.uv.reshape(-1, 2)
        order = np.argsort(corners, kind="stable")
        same_v = corners[order][1:] == corners[order][:-1]
        diff_uv = (uv[order][1:] != uv[order][:-1]).any(axis=1)
        assert (same_v & diff_uv).any()


@pytest.mark.external
def test_doorman_textured_character():
    p = external("textured_doorman_vtkdata/doorman.obj")
    # an artist's model about 6.1 units tall: no unit makes it a body ...
    expect_error(p, "cannot tell the units", "6.113 file units")
    expect_error(p, "far too large", units="m")
    # ... so say how big a unit is (a ~1.8 m man)
    s = load_scan(p, units=300.0)
    assert s.meta.units == "custom" and 1700 <= s.height_mm <= 1900
    assert s.n_vertices == 6959 and s.n_faces == 9783
    # body + clothing share one texture; teeth and eyes have their own: packed into an atlas
    assert s.texture.shape == (1024, 3 * 1024, 3)
    assert any("packed 3 diffuse textures" in w for w in s.meta.warnings)
    assert [slot["texture"] for slot in s.meta.extra["texture_atlas"]] == [
        "t_doorMan_d.png", "t_doorMan_teeth_d.png", "t_eye_d.png"]
    assert (s.uv >= 0).all() and (s.uv <= 1).all()


# ---------------------------------------------------------------------- more bad input
def test_truncated_glb(tmp_path):
    save_scan(seam_scan(), tmp_path / "s.glb")
    data = (tmp_path / "s.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "cut.glb", "truncated")


@pytest.mark.parametrize("ext,words", [
    ("obj", ["binary data"]), ("ply", ["not a PLY file"]), ("off", ["not an OFF file"]),
    ("glb", ["not a GLB file"])])
def test_garbage_file(tmp_path, ext, words):
    p = tmp_path / f"garbage.{ext}"
    p.write_bytes(b"\x00\x01garbage" + bytes(range(256)))
    expect_error(p, *words)


def test_ply_point_cloud_has_no_faces(tmp_path):
    p = write(tmp_path / "pts.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
              "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1.7 0\n")
    expect_error(p, "no faces")


def test_closest_points_keep_their_tree_and_answer_as_gpytoolbox_does():
    """Scan.closest_points builds the surface's AABB tree once and keeps it (a registration asks
    the same scan several times), gives what a one-off gpytoolbox query gives, leaves the tree
    out of a pickle and lets it go when asked."""
    import pickle

    import gpytoolbox as gp

    m = body_mesh()
    s = Scan(m.vertices, m.faces)
    q = np.random.default_rng(3).normal(size=(500, 3)) * 400.0
    want = gp.squared_distance(q, s.vertices, F=s.faces, use_cpp=True, use_aabb=True)
    got = s.closest_points(q)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got, want))
    tree = s.__dict__["_surface_tree"]
    s.closest_points(q[:5])
    assert s.__dict__["_surface_tree"] is tree
    copy = pickle.loads(pickle.dumps(s))
    assert "_surface_tree" not in copy.__dict__
    assert np.array_equal(copy.closest_points(q)[0], got[0])
    s.drop_surface_tree()
    assert "_surface_tree" not in s.__dict__
