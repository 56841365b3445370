"""bodymap.session without Qt: the project file (round trip, version, corruption) and undoable
edits; and the exports the GUI and CLI share (annotated mesh, region SVG, report)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bodymap.lesions import Lesion, LesionSet
from bodymap.session import (FORMAT_VERSION, AddLesion, DeleteLesion, History, Project, ProjectError, Review,
                             SetField, VisitState, manual_lesion, region_for_site)

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "data" / "gui" / "SYN00101_visit1"


def _lesion(i: int) -> Lesion:
    return Lesion(id=i, point_mm=[float(i), 0.0, 1000.0], face=i, bary=[1 / 3] * 3, normal=[0, -1, 0],
                  diameter_mm=2.0 + i, area_mm2=3.0, colour_lab=[50, 10, 20], skin_lab=[60, 10, 15],
                  contrast_de=12.0, confidence=0.9, region={"description": "thigh", "code": "lower_extremity/thigh"})


def _project(tmp_path) -> Project:
    scan = tmp_path / "scan.obj"
    scan.write_text("# placeholder\n")
    return Project([VisitState(str(scan), LesionSet([_lesion(i) for i in (1, 2, 3)], scan=str(scan)), title="v1")])


def test_round_trip_keeps_edits_and_reviews(tmp_path):
    p = _project(tmp_path)
    h = History(p)
    h.push(SetField(0, 2, "note", "check again"))
    h.push(DeleteLesion(0, 1))
    h.push(Review("confirm", 5, 2))
    h.push(Review("reject", 6, 3))
    path = p.save(tmp_path / "sub" / "a.bodymap")
    q = Project.load(path)
    assert [l.id for l in q.visits[0].lesions.lesions] == [2, 3]
    assert q.visits[0].lesion(2).note == "check again"
    assert q.reviews.confirmed == {5: 2} and q.reviews.rejected == {(6, 3)}
    assert Path(q.visits[0].scan_path).resolve() == Path(p.visits[0].scan_path).resolve()
    d = json.loads(path.read_text())
    assert d["version"] == FORMAT_VERSION and not Path(d["visits"][0]["scan"]).is_absolute()


def test_moved_project_finds_its_scan(tmp_path):
    p = _project(tmp_path)
    path = p.save(tmp_path / "a.bodymap")
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "scan.obj").rename(moved / "scan.obj")
    path.rename(moved / "a.bodymap")
    q = Project.load(moved / "a.bodymap")
    assert Path(q.visits[0].scan_path).exists()


def test_undo_redo(tmp_path):
    p = _project(tmp_path)
    h = History(p)
    seen = []
    h.listeners.append(seen.append)
    ids = lambda: [l.id for l in p.visits[0].lesions.lesions]
    h.push(DeleteLesion(0, 2))
    assert ids() == [1, 3] and h.dirty
    h.push(AddLesion(0, _lesion(p.visits[0].next_id())))
    assert ids() == [1, 3, 4]
    h.undo()
    h.undo()
    assert ids() == [1, 2, 3]
    h.redo()
    assert ids() == [1, 3]
    assert p.visits[0].next_id() == 5  # ids 2 (deleted) and 4 (added, undone) are never handed out again
    h.push(SetField(0, 3, "region", region_for_site("upper_extremity/forearm", "left")))
    assert p.visits[0].lesion(3).region["description"] == "left forearm"
    assert h.undone == []  # a new edit clears redo
    h.undo()
    assert p.visits[0].lesion(3).region["description"] == "thigh"
    h.push(Review("new", 9))
    assert 9 in p.reviews.new
    h.undo()
    assert 9 not in p.reviews.new
    assert len(seen) == 9
    h.mark_clean()
    assert not h.dirty


def test_bad_project_files(tmp_path):
    for text, words in (('{"schema": "bodymap.project", "version": 1, "vis', "corrupt"),
                        (json.dumps({"schema": "bodymap.project", "version": FORMAT_VERSION + 1, "visits": []}),
                         "newer BodyMap"),
                        (json.dumps({"schema": "bodymap.lesions/1"}), "not a BodyMap project"),
                        (json.dumps({"schema": "bodymap.project", "version": 1, "visits": [{"x": 1}]}), "corrupt")):
        f = tmp_path / "p.bodymap"
        f.write_text(text)
        with pytest.raises(ProjectError) as e:
            Project.load(f)
        assert str(f) in str(e.value) and words in str(e.value)
    with pytest.raises(ProjectError, match="not found"):
        Project.load(tmp_path / "absent.bodymap")


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous project file whole."""
    p = _project(tmp_path)
    path = p.save(tmp_path / "a.bodymap")
    before = path.read_text()
    import bodymap.atomic as atomic

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    p.visits[0].lesions.lesions.pop()
    with pytest.raises(OSError):
        p.save(path)
    assert path.read_text() == before


@pytest.fixture(scope="module")
def visit1():
    from bodymap.anatomy.labels import RegionLabels
    from bodymap.pipeline import load_visit

    v = load_visit(V1)
    return v.scan, v.lesions, RegionLabels.load(V1 / "labels.npz")


def test_manual_lesion(visit1):
    scan, lesions, labels = visit1
    l0 = lesions.lesions[0]
    m = manual_lesion(scan, l0.face, l0.bary, 999, 4.0, labels, measure=False)
    assert np.linalg.norm(np.subtract(m.point_mm, l0.point_mm)) < 1.0
    assert m.region["code"] == l0.region["code"] and m.source == "manual" and m.diameter_mm == 4.0
    assert m.colour_lab[0] > 0


def test_manual_lesion_is_measured(visit1):
    """A click on a lesion segments and measures it like the detector's (same outline, size and
    measures), also a click off its centre; a click on plain skin keeps the clinician's size."""
    scan, lesions, labels = visit1
    l0 = lesions.lesions[0]
    m = manual_lesion(scan, l0.face, l0.bary, 999, 3.0, labels)
    assert m.id == 999 and m.source == "manual" and m.confidence == 1.0
    assert m.diameter_mm == pytest.approx(l0.diameter_mm, rel=0.05)
    assert m.area_mm2 == pytest.approx(l0.area_mm2, rel=0.05) and m.measures["perimeter_mm"] > 0
    assert m.region["code"] == l0.region["code"]
    # a point 1 mm from the centre (inside the lesion): the nearest corner pulled towards it
    corners = scan.vertices[scan.faces[l0.face]]
    b = np.asarray(l0.bary) * 0.5 + 0.5 * np.eye(3)[int(np.argmin(np.linalg.norm(corners - l0.point_mm, axis=1)))]
    off = manual_lesion(scan, l0.face, b, 1000, 3.0)
    assert off.diameter_mm == pytest.approx(l0.diameter_mm, rel=0.05)
    c = scan.vertices[scan.faces].mean(1)
    far = np.min(np.linalg.norm(c[:, None] - lesions.points[None], axis=2), 1) > 25  # plain skin
    f = int(np.nonzero(far & (np.abs(c[:, 2] - 1000) < 200))[0][0])
    plain = manual_lesion(scan, f, [1 / 3] * 3, 1001, 3.5)
    assert plain.diameter_mm == 3.5 and plain.measures == {} and plain.detector == "clinician"


def test_exports(visit1, tmp_path):
    import trimesh

    from bodymap.export.annotated import write_annotated_mesh
    from bodymap.export.report import write_region_svg, write_report

    scan, lesions, labels = visit1
    glb = write_annotated_mesh(scan, lesions, tmp_path / "a.glb")
    scene = trimesh.load(glb)
    assert sum(k.startswith("lesion_") for k in scene.graph.nodes_geometry) == len(lesions)
    body = scene.geometry["body"]
    assert body.visual.material.baseColorTexture is not None  # textured
    ply = trimesh.load(write_annotated_mesh(scan, lesions, tmp_path / "a.ply", labels=labels))
    assert len(ply.vertices) > scan.n_vertices
    with pytest.raises(ValueError, match="glb or .ply"):
        write_annotated_mesh(scan, lesions, tmp_path / "a.stl")
    svg = write_region_svg(scan, labels, lesions, tmp_path / "r.svg").read_text()
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and svg.count("<circle") >= 0.5 * len(lesions)
    pdf = write_report(tmp_path / "r.pdf", scan, lesions)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_cli_report(tmp_path):
    from bodymap.cli import main

    assert main(["report", str(V1), str(tmp_path / "r.svg")]) == 0
    assert (tmp_path / "r.svg").read_text().startswith("<svg")
    assert main(["report", str(V1), str(tmp_path / "r.glb")]) == 0
    assert main(["report", str(V1), str(tmp_path / "r.txt")]) == 2  # a clear one-line error, exit code 2


def test_report_names_the_scan_without_dot_dots(monkeypatch):
    from bodymap.export.report import _source

    monkeypatch.chdir("/")  # relative sources resolve against the current folder: keep it short
    from bodymap.scan import Scan, ScanMeta

    tri = (np.eye(3), np.array([[0, 1, 2]]))
    s = Scan(*tri, meta=ScanMeta(source="a/b/../scan.obj"))
    assert ".." not in _source(s) and _source(s).endswith(str(Path("a", "scan.obj")))
    deep = Scan(*tri, meta=ScanMeta(source="/" + "/".join(["folder"] * 20) + "/SYN1/visit1/scan.obj"))
    assert _source(deep) == str(Path("...", "folder", "SYN1", "visit1", "scan.obj"))
    assert _source(Scan(*tri)) == "-"
