"""The desktop application driven with pytest-qt on a virtual display (Xvfb, started here when
there is no display): open, analyse, select, edit and undo, compare, export, save and reopen.

Analysis folders of sample patient SYN00101 (tests/data/gui, written by `bodymap analyze` and
`--previous`) stand in for the ~5 minutes of template registration; the analysis run through the
GUI here is the real detection (anatomy=False), and the full analysis is started and cancelled."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import PySide6  # noqa: E402,F401  (dependencies: missing ones must fail, not skip)
import pyvistaqt  # noqa: E402,F401
import pytestqt  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "gui"
V1, V2 = DATA / "SYN00101_visit1", DATA / "SYN00101_visit2"
SCAN1 = ROOT / "sample_meshes" / "SYN00101" / "visit1" / "scan.obj"

try:
    from gui.xvfb import ensure_display

    ensure_display()
except RuntimeError as e:  # pragma: no cover
    pytest.skip(str(e), allow_module_level=True)

from PySide6 import QtCore, QtWidgets  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from bodymap.records import STYLES, Status  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """Autosaves, analyses and settings of these tests go to a temporary folder."""
    d = tmp_path_factory.mktemp("bodymap_home")
    old = os.environ.get("BODYMAP_HOME")
    os.environ["BODYMAP_HOME"] = str(d)
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope, str(d))
    yield d
    if old is None:
        os.environ.pop("BODYMAP_HOME", None)
    else:
        os.environ["BODYMAP_HOME"] = old


def wait_jobs(win, qtbot, timeout=300):
    """Let the window's workers finish (the event loop keeps running meanwhile)."""
    t0 = time.time()
    while win.runner.running:
        assert time.time() - t0 < timeout, "worker did not finish"
        qtbot.wait(50)
    qtbot.wait(50)


def make_window(qtbot):
    from gui.mainwindow import MainWindow

    w = MainWindow(recover=False)
    w._no_prompts = True  # errors go to w.last_error and the status bar, not modal boxes
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture(scope="module")
def win(qapp, home):
    """One window with visit 1 of SYN00101 opened from its analysis folder (shared by the
    tests below; each leaves it as it found it)."""
    from gui.mainwindow import MainWindow
    from gui.workers import wait_events

    w = MainWindow(recover=False)
    w._no_prompts = True
    w.resize(1400, 900)
    w.show()
    QTest.qWaitForWindowExposed(w)
    w.open_path(V1)
    t0 = time.time()
    while w.runner.running and time.time() - t0 < 300:
        wait_events(50)
    assert w.project.visits and w.project.visits[0].lesions is not None, getattr(w, "last_error", "")
    yield w
    w.history.mark_clean()
    w.close()


def test_window_opens_fast_without_torch():
    """`bodymap-gui` shows (and paints) its window in under 3 s without importing torch; VTK
    comes in a thread afterwards (benchmarks/gui.py reports both times)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "gui.app", "--startup-check"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    wall = time.perf_counter() - t0
    assert "window shown in" in out.stdout, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout and "exposed: True" in out.stdout
    shown = float(out.stdout.split("window shown in")[1].split("s;")[0])
    assert shown < 3.0 and wall < 20, (shown, wall)


def test_time_left_estimate():
    from gui.workers import eta_text

    assert eta_text(1.0, 0.05) == ""  # too early to say
    assert eta_text(10.0, 0.5) == ", about 10 s left"
    assert eta_text(60.0, 0.25) == ", about 3 min left"


def test_open_scan_run_analysis_and_cancel(qtbot):
    """A scan file opens in 3D; an analysis is cancelled from its progress dialog while the window
    stays responsive; run again it goes to the end (the real detection: anatomy is skipped here,
    registration takes minutes) and fills the table and the markers."""
    w = make_window(qtbot)
    w.open_path(SCAN1)
    wait_jobs(w, qtbot)
    assert w.view.scan is w.scans[0] and w.scans[0].n_faces > 50_000
    assert w.project.visits[0].lesions is None
    img = w.view.screenshot()
    assert img.std() > 5  # the body is drawn, not a blank view
    job = w.run_analysis(0, anatomy=False)
    assert job is not None and job.dialog.isVisible()
    # progress in a panel of the status bar, not a modal dialog: the window stays usable
    assert QtWidgets.QApplication.activeModalWidget() is None and job.dialog.parent() is not None
    assert w.overlay_combo.isEnabled() and w.visit_combo.isEnabled()
    cancel = next(b for b in job.dialog.findChildren(QtWidgets.QPushButton) if b.text() == "Cancel")
    cancel.click()  # the panel's Cancel button: the job stops at its next progress report
    wait_jobs(w, qtbot)
    assert job.is_cancelled and w.project.visits[0].lesions is None
    assert "cancelled" in w.statusBar().currentMessage()
    job = w.run_analysis(0, anatomy=False)
    alive = []
    QtCore.QTimer.singleShot(200, lambda: alive.append(job in w.runner.running))
    qtbot.waitUntil(lambda: bool(alive), timeout=10_000)
    assert alive == [True]  # the event loop ran while the analysis did
    wait_jobs(w, qtbot)
    n = len(w.project.visits[0].lesions)
    assert n > 50
    assert w.table.proxy.rowCount() == n  # suppressed candidates are in the model, hidden by default
    assert w.table.model.rowCount() == len(w.project.visits[0].lesions.all)
    assert w.view._marker_actors  # markers drawn
    w.history.mark_clean()
    w.close()


def test_overlays_and_legend(win, qtbot):
    for mode in ("macro regions", "level-2 sites", "ear micro-regions", "texture"):
        win.overlay_combo.setCurrentText(mode)
        qtbot.wait(50)
        assert win.view.overlay == mode
        if mode != "texture":
            assert "■" in win.legend.text()
    win.overlay_combo.setCurrentText("macro regions")
    a = win.view.screenshot()
    win.overlay_combo.setCurrentText("texture")
    b = win.view.screenshot()
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1  # the overlay changes what is drawn
    for name in ("back", "left", "right", "top", "front"):
        win.view.view(name)
    cam = win.view.plotter.camera
    assert cam.position[1] < cam.focal_point[1]  # front view: camera on -y


def test_suppressed_candidates_are_listed_only_when_asked(qtbot):
    """Candidates not counted as lesions (too large, on a nipple...) are in the table, hidden by
    default; the "suppressed" filter lists them with their reason."""
    from bodymap.lesions import LesionSet
    from bodymap.session import VisitState
    from gui.lesiontable import LesionTable

    ls = LesionSet.load_json(V1 / "lesions.json")
    ls.suppress(lambda l: l.id <= 2, "nipple")  # all but two
    ls.lesions[0].suppressed = "too_large"
    ls.suppressed.insert(0, ls.lesions.pop(0))
    ls.renumber()
    table = LesionTable()
    qtbot.addWidget(table)
    table.set_visit(VisitState(str(SCAN1), ls))
    assert table.proxy.rowCount() == 1 and "suppressed candidates hidden" in table.count.text()
    table.suppressed_check.setChecked(True)
    assert table.proxy.rowCount() == len(ls.all)
    types = [table.proxy.index(r, 4).data() for r in range(table.proxy.rowCount())]
    assert types.count("suppressed: off skin: nipple / areola") == len(ls.suppressed) - 1
    assert "suppressed: too large" in types and "detected" in types
    table.suppressed_check.setChecked(False)
    assert table.proxy.rowCount() == 1


def test_select_from_table_and_from_view(win, qtbot):
    lesions = win.project.visits[0].lesions.lesions
    target = max(lesions, key=lambda l: l.diameter_mm)
    # table -> view: the camera flies to the lesion and the detail panel shows it
    assert win.table.select_id(target.id, emit=True)
    qtbot.waitUntil(lambda: win.detail.lid == target.id, timeout=5000)
    assert win.view.selected == target.id
    assert np.linalg.norm(np.array(win.view.plotter.camera.focal_point) - target.point_mm) < 1e-3
    assert "mm longest diameter" in win.detail.info.text()
    wait_jobs(win, qtbot)  # the rendered close-up
    assert win.detail.close.pixmap() is not None and not win.detail.close.pixmap().isNull()
    # view -> table: a real (Qt) mouse click on another lesion's marker
    other = next(l for l in lesions if l.id != target.id and np.linalg.norm(np.subtract(l.point_mm, target.point_mm)) > 40)
    win.view.fly_to(np.asarray(other.point_mm), np.asarray(other.normal))
    qtbot.wait(100)
    x, y = win.view.display_position(np.asarray(other.point_mm))
    widget = win.view.plotter
    ratio = widget.devicePixelRatioF()
    pos = QtCore.QPoint(int(x / ratio), int(widget.height() - y / ratio))
    QTest.mouseClick(widget, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, pos)
    qtbot.waitUntil(lambda: win.table.current_id() == other.id, timeout=5000)
    assert win.detail.lid == other.id
    # filters
    win.table.size_spin.setValue(4.0)
    assert all(float(win.table.proxy.index(r, 2).data()) >= 4.0 for r in range(win.table.proxy.rowCount()))
    assert win.table.proxy.rowCount() < len(lesions)
    win.table.size_spin.setValue(0.0)
    win.table.region_edit.setText("thigh")
    assert 0 < win.table.proxy.rowCount() < len(lesions)
    assert all("thigh" in win.table.proxy.index(r, 1).data() for r in range(win.table.proxy.rowCount()))
    win.table.region_edit.setText("")
    # sorting by diameter, numerically
    win.table.view.sortByColumn(2, QtCore.Qt.SortOrder.DescendingOrder)
    assert float(win.table.proxy.index(0, 2).data()) == pytest.approx(round(target.diameter_mm, 1))
    win.table.view.sortByColumn(0, QtCore.Qt.SortOrder.AscendingOrder)


def test_nothing_selected_clears_the_detail_panel_and_jobs_leave_the_status_bar(win, qtbot):
    """Defects of issue 18: the detail panel kept the previous lesion's note and site with no
    lesion selected; a finished job's "stage (50 %)" stayed in the status bar."""
    from gui.workers import Job

    l = win.project.visits[0].lesions.lesions[0]
    l.note = "a note of lesion one"
    try:
        win.select_lesion(l.id, source="table")
        assert win.detail.note_edit.text() == "a note of lesion one" and win.detail.site_combo.currentIndex() >= 0
        win.select_lesion(None)
        assert win.detail.note_edit.text() == "" and win.detail.site_combo.currentIndex() == -1
        assert not win.detail.note_edit.isEnabled()
    finally:
        l.note = ""
    win.runner.start(Job(lambda progress: (progress("predicting", 0.5), 42)[1], "t"), "Diagnosis", lambda r: None,
                     dialog=False)
    wait_jobs(win, qtbot)
    assert "%" not in win.statusBar().currentMessage()


def test_edit_and_undo(win, qtbot):
    v = win.project.visits[0]
    n0 = len(v.lesions)
    first = v.lesions.lesions[0]
    # delete a false positive, undo, redo, undo
    win.select_lesion(first.id, source="table")
    win.detail.del_btn.click()
    assert len(v.lesions) == n0 - 1 and win.table.model.rowCount() == n0 - 1
    win.act["undo"].trigger()
    assert len(v.lesions) == n0 and v.lesions.lesions[0].id == first.id
    win.act["redo"].trigger()
    assert len(v.lesions) == n0 - 1
    win.undo()
    # a note and a site correction through the detail panel
    win.select_lesion(first.id, source="table")
    win.detail.note_edit.setText("irregular border, recheck")
    QTest.keyClick(win.detail.note_edit, QtCore.Qt.Key.Key_Return)
    assert v.lesion(first.id).note == "irregular border, recheck"
    old_region = dict(v.lesion(first.id).region)
    win.detail.site_combo.setCurrentIndex(win.detail.site_combo.findData("upper_extremity/forearm"))
    win.detail.side_combo.setCurrentText("left")
    win.detail.site_btn.click()
    assert v.lesion(first.id).region["description"] == "left forearm"
    assert "forearm" in win.table.model.index(win.table.model.row_of(first.id), 1).data()
    win.undo()
    assert v.lesion(first.id).region == old_region
    win.undo()
    assert v.lesion(first.id).note == ""
    # add a lesion by clicking on the body in add mode
    win.view.view("front")
    win.set_add_mode(True)
    c = win.scans[0].bounds.mean(0)
    x, y = win.view.display_position(c + np.array([0, -300, 100]))  # in front of the belly
    hit = win.view.pick_display(int(x), int(y))
    assert hit is not None
    assert len(v.lesions) == n0 + 1
    new = v.lesions.lesions[-1]
    assert new.source == "manual" and new.region.get("code") and win.detail.lid == new.id
    win.set_add_mode(False)
    win.undo()
    assert len(v.lesions) == n0 and win.history.undone
    # every change was autosaved (in this window's own autosave file, by the background writer)
    win.writer.flush()
    saved = json.loads(win.autosave_slot.path.read_text())
    assert len(saved["visits"][0]["lesions"]["lesions"]) == n0


def test_compare_two_visits_and_review(win, qtbot):
    win.add_visit(str(V2))
    wait_jobs(win, qtbot, timeout=600)  # reading visit 2, then tracking (template positions need torch)
    assert win.tracking is not None, getattr(win, "last_error", "")
    t = win.tracking
    assert len(t.pairs) > 80 and win.tabs.currentWidget() is win.compare
    assert win.compare.table.rowCount() == len(t.pairs) + len(t.new) + len(t.missing)
    # matched lesions share number and colour; new ones are red N<id>
    p = t.pairs[0]
    assert win.compare.view1.marker_labels[p.id1] == win.compare.view2.marker_labels[p.id2]
    assert win.compare.view1.marker_colours[p.id1] == win.compare.view2.marker_colours[p.id2]
    if t.new:
        assert win.compare.view2.marker_labels[t.new[0].id2].startswith("N")
    grown = [q for q in t.pairs if q.status is Status.GROWN]
    assert grown and win.compare.view2.marker_labels[grown[0].id2].endswith("↑")
    # one palette: a grown pair has the same colour in the views, the table and the exported map
    assert win.compare.view2.marker_colours[grown[0].id2] == STYLES[Status.GROWN].rgb
    # linked cameras: moving one moves the other (relative to each body)
    win.compare.view1.plotter.camera.Azimuth(30)
    s1, s2 = win.compare.view1.camera_state(), win.compare.view2.camera_state()
    assert np.allclose(s1["position"], s2["position"], atol=1e-3)
    # review: reject one pair, confirm another through the buttons; re-match applies them
    a, b = t.pairs[0], t.pairs[1]
    assert win.compare.select_pair(id2=a.id2)
    win.compare.reject_btn.click()
    assert win.compare.select_pair(id2=b.id2)
    win.compare.confirm_btn.click()
    assert (a.id2, a.id1) in win.project.reviews.rejected and win.project.reviews.confirmed[b.id2] == b.id1
    assert "not applied" in win.compare.pending.text()
    win.compare.rematch_btn.click()
    wait_jobs(win, qtbot, timeout=600)
    t2 = win.tracking
    assert t2.partner().get(a.id2) != a.id1
    assert next(q for q in t2.pairs if q.id2 == b.id2).reviewed
    # the visit tab of visit 2 shows the change column
    win.show_visit(1)
    changes = [win.table.model.index(r, 5).data() for r in range(win.table.model.rowCount())]
    assert any(c.startswith("new") for c in changes) == bool(t2.new)
    assert any(c.startswith("grown") for c in changes)
    win.show_visit(0)


def test_export_every_format(win, qtbot, tmp_path):
    import trimesh
    from PIL import Image

    from bodymap.lesions import LesionSet

    win.show_visit(0)
    n = len(win.project.visits[0].lesions)
    for kind in ("png", "svg", "glb", "ply", "csv", "json", "pdf"):
        path = tmp_path / f"out.{kind}"
        job = win.export(kind, path)
        assert job is not None
        wait_jobs(win, qtbot)
        assert path.exists() and path.stat().st_size > 0, (kind, getattr(win, "last_error", ""))
    assert Image.open(tmp_path / "out.png").size[0] > 700
    svg = (tmp_path / "out.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<circle") > 20 and "data:image/png;base64" in svg
    scene = trimesh.load(tmp_path / "out.glb")
    names = [k for k in scene.graph.nodes_geometry if k.startswith("lesion_")]
    assert len(names) == n
    ply = trimesh.load(tmp_path / "out.ply")
    assert len(ply.faces) > win.scans[0].n_faces
    assert len((tmp_path / "out.csv").read_text().strip().splitlines()) == n + 1
    assert len(LesionSet.load_json(tmp_path / "out.json")) == n
    pdf = (tmp_path / "out.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 4  # /Pages + body maps, changes, tables
    assert b"BodyMap report: visit 1" in pdf  # the visit shown, not the later one of the comparison


def test_pdf_of_a_later_visit_stands_the_earlier_one_up_by_its_own_labels(win, qtbot, tmp_path, monkeypatch):
    """The PDF of visit 2 (with its change since visit 1) frames each visit's body views from
    that visit's own region labels, not the earlier one's from its extent alone."""
    from bodymap.anatomy import labels as labels_mod
    from bodymap.export import report

    if len(win.project.visits) != 2 or win.ws.link_tracking(1) is None:  # (run apart from the comparison test)
        win.add_visit(str(V2))
        wait_jobs(win, qtbot, timeout=600)
        assert win.ws.link_tracking(1) is not None, getattr(win, "last_error", "")
    seen, frames = [], []
    view_frame = labels_mod.view_frame
    monkeypatch.setattr(labels_mod, "view_frame", lambda v, lab: seen.append((v, lab)) or view_frame(v, lab))
    write = report.write_report
    monkeypatch.setattr(report, "write_report", lambda *a, **k: frames.append(k["frames"]) or write(*a, **k))
    win.show_visit(1)
    win.export("pdf", tmp_path / "v2.pdf")
    wait_jobs(win, qtbot)
    win.show_visit(0)
    assert (tmp_path / "v2.pdf").stat().st_size > 0, getattr(win, "last_error", "")
    earlier = [lab for v, lab in seen if v is win.scans[0].vertices]  # (the 3D view asks too)
    assert win.labels[0] is not None and earlier and all(lab is win.labels[0] for lab in earlier)
    assert len(frames) == 1 and frames[0][1] is not None


def test_export_offers_the_standards(win, qtbot, tmp_path):
    """File > Export has SLICE-3D, DICOM and FHIR; the FHIR Bundle of the shown visit (the
    clinician's lesion list) reads back with every lesion and its site."""
    from bodymap.export.fhir import read_fhir

    assert all(k in win.act for k in ("exp_slice3d", "exp_dicom", "exp_fhir"))
    win.show_visit(0)
    v = win.project.visits[0]
    everything = v.lesions.lesions
    v.lesions.lesions = everything[:6]  # a short list: the test is about the wiring, not the work
    try:
        lesions = v.lesions.lesions
        assert win.export("fhir", tmp_path / "visit.json") is not None
        wait_jobs(win, qtbot)
    finally:
        v.lesions.lesions = everything
    back = read_fhir(tmp_path / "visit.json")
    assert [l.id for l in back.lesions] == [l.id for l in lesions], getattr(win, "last_error", "")
    assert [l.region["code"] for l in back.lesions] == [l.region["code"] for l in lesions]
    assert all(not l.measures for l in lesions)  # measured for the export, the project untouched


def test_history_panel_status_and_photo(win, qtbot, tmp_path):
    """The History tab shows a lesion tracked over both visits: two close-ups at one scale,
    its measures and rate per year; a status and an attached photo are saved in the project."""
    from bodymap.session import Project

    if len(win.project.visits) != 2 or win.tracking is None:
        pytest.skip("needs the two tracked visits of test_compare_two_visits_and_review")
    p = next(q for q in win.tracking.pairs if "grown" in q.flags)
    win.show_visit(1)
    win.select_lesion(p.id2)
    win.tabs.setCurrentWidget(win.history_panel)
    wait_jobs(win, qtbot)
    h = win.history_panel.history
    assert h is not None, win.history_panel.title.text()
    assert [s.lesion_id for s in h.sightings] == [p.id1, p.id2] and h.sightings[1].status == "grown"
    assert h.sightings[0].closeup.shape == h.sightings[1].closeup.shape and h.sightings[0].mm_per_px == h.sightings[1].mm_per_px
    assert win.history_panel.table.rowCount() == 2 and "mm/year" in win.history_panel.title.text()
    win.history_panel.set_status("biopsied", "2026-03-01")
    photo = tmp_path / "dermoscopy.png"  # the kind comes from photo mode's result ("other": none here)
    from PIL import Image

    Image.new("RGB", (8, 8), "brown").save(photo)
    win.photo.path, win.photo.result = str(photo), None  # photo mode's "Attach to selected lesion"
    win.photo.attach_btn.click()
    assert "biopsied" in win.history_panel.notes.text() and "dermoscopy.png" in win.history_panel.notes.text()
    path = tmp_path / "p.bodymap"
    assert win.save_to(path)
    win.writer.flush()  # written off the UI thread
    q = Project.load(path)
    assert q.visits[1].status[p.id2]["status"] == "biopsied"
    assert Path(q.visits[1].attachments[p.id2][0]["path"]) == photo
    win.undo()
    win.undo()
    assert win.project.visits[1].status == {} and win.project.visits[1].attachments == {}
    win.tabs.setCurrentIndex(0)
    win.show_visit(0)


def test_save_and_reopen_nothing_lost(win, qtbot, tmp_path):
    v0 = win.project.visits[0]
    lid = v0.lesions.lesions[3].id
    win.edit(__import__("bodymap.session", fromlist=["SetField"]).SetField(0, lid, "note", "biopsy next visit"))
    win.delete_lesion(v0.lesions.lesions[5].id)
    c = win.scans[0].bounds.mean(0)
    win.view.view("front")
    x, y = win.view.display_position(c + np.array([0, -300, 150]))
    win.set_add_mode(True)
    win.view.pick_display(int(x), int(y))
    win.set_add_mode(False)
    path = tmp_path / "patient.bodymap"
    assert win.history.dirty and win.save_to(path)
    win.writer.flush()  # written off the UI thread; the window hears of it on its own thread
    qtbot.waitUntil(lambda: not win.history.dirty and win.project.path == path, timeout=5000)
    before = [json.dumps(v.to_dict(None)["lesions"], sort_keys=True) for v in win.project.visits]
    reviews = win.project.reviews.to_dict() if win.project.reviews else None
    n_visits = len(win.project.visits)
    w2 = make_window(qtbot)
    w2.open_path(path)
    wait_jobs(w2, qtbot)
    assert len(w2.project.visits) == n_visits
    after = [json.dumps(v.to_dict(None)["lesions"], sort_keys=True) for v in w2.project.visits]
    assert after == before
    assert w2.project.visits[0].lesion(lid).note == "biopsy next visit"
    if reviews:
        assert w2.project.reviews.to_dict() == reviews
    if n_visits == 2:
        assert w2.tracking is not None and len(w2.tracking.pairs) == len(win.tracking.pairs)
        assert w2.compare.table.rowCount() > 0
    assert w2.labels[0] is not None  # the region labels came back with the analysis folder
    w2.history.mark_clean()
    w2.close()
    for _ in range(3):
        win.undo()


def test_bad_files_give_clear_messages(win, qtbot, tmp_path):
    from bodymap.session import FORMAT_VERSION

    n = len(win.project.visits[0].lesions)
    bad = tmp_path / "broken.bodymap"
    bad.write_text('{"schema": "bodymap.project", "version": 1, "visits": [')
    win.open_path(bad)
    assert "broken.bodymap" in win.last_error and "corrupt" in win.last_error
    newer = tmp_path / "newer.bodymap"
    newer.write_text(json.dumps({"schema": "bodymap.project", "version": FORMAT_VERSION + 1, "visits": []}))
    win.open_path(newer)
    assert "newer.bodymap" in win.last_error and "newer BodyMap" in win.last_error
    mesh = tmp_path / "scan.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nf 1 2 3\n")
    win.open_path(mesh)
    wait_jobs(win, qtbot)
    assert "scan.obj" in win.last_error
    # the session in the window is untouched by the failed opens
    assert len(win.project.visits[0].lesions) == n


def test_diagnosis_panel_without_models(win, qtbot, monkeypatch):
    """On a branch without bodymap.models the panel says so instead of failing."""
    from gui import models

    models.clear()
    monkeypatch.setitem(models.KINDS, "diagnosis", ("bodymap.models_absent_for_test.diagnosis", "DiagnosisModel"))
    lid = win.project.visits[0].lesions.lesions[0].id
    win.select_lesion(lid, source="table")
    win.detail.diag_btn.click()
    wait_jobs(win, qtbot)
    assert "model not available" in win.detail.diag.text()


# ----------------------------------------------------------------------- photo mode (fake models)
class _Quality:
    def __init__(self, ok, problems):
        self.ok, self.problems = ok, problems


class _Kind:
    def __init__(self, label="body"):
        self.label = label

    def classify(self, image, name=None):
        from bodymap.models.photokind import PhotoKind

        probs = {"dermoscopy": 0.02, "clinical": 0.03, "body": 0.03, "other": 0.02}
        probs[self.label] = 0.9
        return PhotoKind(self.label, probs)


class _Macro:
    classes = ["arm", "leg", "foot", "hand", "head", "trunk", "other"]

    def classify(self, image):
        return type("P", (), {"label": "head", "probs": {"head": 0.8, "trunk": 0.15, "arm": 0.05},
                              "region_map": np.zeros(image.shape[:2], int)})()


class _Locator:
    """Finds one ear in the middle of any photo."""

    def find(self, image, name=None):
        from bodymap.models.earfind import decide

        h, w = image.shape[:2]
        return decide(np.array([[w // 4, h // 4, 3 * w // 4, 3 * h // 4]], float), np.array([0.99]), (h, w), {})


class _Ear:
    def segment(self, image, name=None):
        lab = np.zeros(image.shape[:2], int)
        h, w = lab.shape
        lab[h // 4:3 * h // 4, w // 4:w // 2] = 7  # helix
        lab[h // 4:3 * h // 4, w // 2:3 * w // 4] = 8  # lobule
        return lab


class _Diag:
    card = {"name": "fake diagnosis", "trained_on": "HAM10000", "licence": "CC BY-NC 4.0", "held_out": "none"}
    checkpoint = {"data": {"name": "HAM10000"}}

    def predict(self, crops, sites):
        assert crops[0].ndim == 3 and crops[0].shape[2] == 3  # the whole photo: the model squeezes it
        return [type("D", (), {"label": "nevus", "probs": {"nevus": 0.7, "melanoma": 0.2, "seborrheic keratosis": 0.1},
                               "saliency": np.linspace(0, 1, 64 * 64).reshape(64, 64), "ood": False})()]


def test_photo_mode(win, qtbot, tmp_path, monkeypatch):
    from PIL import Image

    from gui import models

    fakes = {"quality": lambda img: _Quality(False, ["blurred: retake"]), "kind": _Kind("body"), "macro": _Macro(),
             "earfind": _Locator(), "earseg": _Ear(), "diagnosis": _Diag()}
    monkeypatch.setattr(models, "get", lambda kind: fakes[kind])
    earmod = type("M", (), {"overlay": staticmethod(lambda img, lab: np.where(lab[..., None] > 0, 255, img).astype(np.uint8))})
    monkeypatch.setattr(models, "module", lambda kind: earmod)
    photo = tmp_path / "ear.png"
    Image.fromarray(win.scans[0].texture[:400, :600]).save(photo)
    win.tabs.setCurrentWidget(win.photo)
    win.photo.open_photo(str(photo))
    wait_jobs(win, qtbot)
    assert "blurred: retake" in win.photo.quality.text()
    assert "body region" in win.photo.kind.text()
    assert "head" in win.photo.macro.text() and "region model" in win.photo.macro.text()
    assert "helix" in win.photo.ear.text() and "lobule" in win.photo.ear.text()
    assert (win.photo.photo.image == 255).all(axis=2).mean() > 0.1  # the ear overlay is shown
    win.photo.ear_check.setChecked(False)
    assert (win.photo.photo.image == 255).all(axis=2).mean() < 0.05
    assert "trained on" in win.photo.cards.text()  # every model used is named with its training data
    lbl = win.photo.photo
    QTest.mouseClick(lbl, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier,
                     lbl.image_to_widget(300, 200))
    wait_jobs(win, qtbot)
    assert abs(lbl.mark[0] - 300) <= 1 and abs(lbl.mark[1] - 200) <= 1  # widget <-> image pixels agree
    # a crop of a body photo is a clinical close-up; the model was trained on dermoscopy: said so
    assert "out of distribution" in win.photo.diag.text() and "nevus" in win.photo.diag.text()
    assert not win.photo.sal.pixmap().isNull()
    # the user's site replaces the region model's
    win.photo.site_combo.setCurrentIndex(win.photo.site_combo.findData("upper_extremity/forearm"))
    wait_jobs(win, qtbot)
    assert "forearm (given)" in win.photo.macro.text()
    assert "helix" in win.photo.ear.text()  # a body-region photo is searched whatever its site
    fakes["kind"] = _Kind("clinical")  # a close-up of the back is not (bodymap.photo.searches_ears)
    win.photo.site_combo.setCurrentIndex(win.photo.site_combo.findData("trunk/posterior"))
    wait_jobs(win, qtbot)
    assert "not searched (a close-up of the posterior torso)" in win.photo.ear.text()
    fakes["kind"] = _Kind("body")
    win.photo.site_combo.setCurrentIndex(0)
    wait_jobs(win, qtbot)
    # a file that is not a photo
    bad = tmp_path / "notaphoto.jpg"
    bad.write_bytes(b"garbage")
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a: setattr(win, "photo_error", a[2]))
    assert win.photo.open_photo(str(bad)) is None
    assert "notaphoto.jpg" in win.photo_error
    win.tabs.setCurrentIndex(0)


def test_photo_mode_dermoscopy_and_missing_models(win, qtbot, tmp_path, monkeypatch):
    """A dermoscopy photo is diagnosed whole, never searched for ears; a missing model says so."""
    from PIL import Image

    from gui import models

    def missing(kind):
        raise models.ModelUnavailable("model not available (no checkpoint)")

    fakes = {"quality": lambda img: _Quality(True, []), "kind": _Kind("dermoscopy"), "diagnosis": _Diag()}
    monkeypatch.setattr(models, "get", lambda kind: fakes[kind] if kind in fakes else missing(kind))
    photo = tmp_path / "derm.png"
    Image.fromarray(win.scans[0].texture[:300, :300]).save(photo)
    win.photo.open_photo(str(photo))
    wait_jobs(win, qtbot)
    assert "dermoscopy" in win.photo.kind.text()
    assert "not searched" in win.photo.ear.text()
    assert "nevus" in win.photo.diag.text() and "out of distribution" not in win.photo.diag.text()
    assert "unknown" in win.photo.macro.text()
    fakes.pop("kind")
    win.photo.reanalyse()
    wait_jobs(win, qtbot)
    assert "model not available" in win.photo.kind.text() and "model not available" in win.photo.ear.text()


def test_drop_and_recent_open_files(win, qtbot, tmp_path):
    """A file dropped on the window is opened (here a broken one: the message names it, the
    session stays); opened files are listed under Open recent."""
    from PySide6 import QtGui

    mesh = tmp_path / "dropped.obj"
    mesh.write_text("v 0 0 0\n")
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(mesh))])
    ev = QtGui.QDropEvent(QtCore.QPointF(50, 50), QtCore.Qt.DropAction.CopyAction, mime,
                          QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    wait_jobs(win, qtbot)
    assert "dropped.obj" in win.last_error
    recent = [a.text() for a in win.recent_menu.actions()]
    assert any(str(V1) in r or "SYN00101_visit1" in r for r in recent)


def test_autosave_recovers_after_a_crash(win, qtbot, monkeypatch):
    """Every edit is autosaved in the window's own file; after a crash (the file left with
    nobody holding its lock), `bodymap-gui OTHER_SCAN` offers it back in a window of its own,
    edits included, counted as unsaved work, while OTHER_SCAN opens; the recovered file is
    deleted only once the new window's autosave holds the work. Two windows never share an
    autosave file."""
    import shutil

    from bodymap.session import SetField, orphaned_autosaves

    lid = win.project.visits[0].lesions.lesions[2].id
    win.edit(SetField(0, lid, "note", "autosaved note"))
    win.writer.flush()
    assert "autosaved note" in win.autosave_slot.path.read_text()
    assert orphaned_autosaves() == []  # win is alive: its file is not offered to anyone
    # the crash: a copy of the file with no living owner
    crashed = win.autosave_slot.folder / "20000101-000000-99999-1.bodymap"
    shutil.copy(win.autosave_slot.path, crashed)
    monkeypatch.setattr(QtWidgets.QMessageBox, "question",
                        lambda *a, **k: QtWidgets.QMessageBox.StandardButton.Yes)
    from gui.mainwindow import MainWindow

    n_windows = len(MainWindow._open_windows)
    w2 = MainWindow(recover=True, path=str(V2))  # as `bodymap-gui OTHER_SCAN` starts
    w2._no_prompts = True
    qtbot.addWidget(w2)
    w2.show()
    qtbot.waitUntil(lambda: len(MainWindow._open_windows) > n_windows, timeout=10000)
    w3 = MainWindow._open_windows[-1]  # the recovered work, in its own window
    wait_jobs(w2, qtbot)
    wait_jobs(w3, qtbot)
    assert w3.project.visits[0].lesion(lid).note == "autosaved note" and w3.history.dirty
    assert [Path(v.analysis_dir).name for v in w2.project.visits] == [V2.name]  # OTHER_SCAN opened too
    w3.writer.flush()
    qtbot.waitUntil(lambda: not crashed.exists(), timeout=5000)  # now held by w3's own autosave
    paths = {win.autosave_slot.path, w2.autosave_slot.path, w3.autosave_slot.path}
    assert len(paths) == 3 and json.loads(w3.autosave_slot.path.read_text())["visits"]
    for w in (w2, w3):
        w.history.mark_clean()
        w.close()
    MainWindow._open_windows.remove(w3)
    win.undo()


def test_archive_search_opens_the_visit_of_a_lesion(win, qtbot, tmp_path):
    """File > Search an archive: a batch folder's lesion index (here one whose lesions point at
    the SYN00101 visit-2 analysis folder); the query filters the table; a double-click opens
    that visit through the window's open path and selects the lesion."""
    import json

    from bodymap.index import write_tables

    lesions = json.loads((V2 / "lesions.json").read_text())["lesions"][:5]
    rows = [{"patient_id": "SYN00101", "visit_id": "visit2", "visit_date": "2025-01-01", "lesion_id": l["id"],
             "persistent_id": k + 1, "status": "stable", "site": l["region"].get("name"),
             "diameter_mm": l["diameter_mm"], "analysis_dir": str(V2)} for k, l in enumerate(lesions)]
    write_tables(tmp_path / "index.duckdb", {"lesions": rows})
    dlg = win.open_archive(tmp_path)
    assert dlg.table.rowCount() == 5 and "5 lesions" in dlg.status.text()
    big = max(lesions, key=lambda l: l["diameter_mm"])
    dlg.query_edit.setText(f"diameter_mm >= {big['diameter_mm']}")
    dlg.search()
    assert dlg.table.rowCount() == 1
    dlg.query_edit.setText("no_such_column = 1")
    dlg.search()
    assert "query:" in dlg.status.text() and dlg.table.rowCount() == 1
    dlg._double_clicked(0, 0)
    wait_jobs(win, qtbot)
    assert Path(win.project.visits[0].analysis_dir) == V2.resolve() and win.selected_id() == big["id"]
    dlg.close()
    win.open_path(V1)  # as the other tests found it
    wait_jobs(win, qtbot)


# ----------------------------------------------------------------------- a patient over 4 visits
def test_compare_with_an_unanalysed_visit_offers_to_analyse_it(qtbot, monkeypatch):
    """Compare with a scan that has no analysis: the Compare tab says so and its button starts
    the analysis of that visit (after which the visits are tracked)."""
    w = make_window(qtbot)
    w.open_path(V1)
    wait_jobs(w, qtbot)
    w.add_visit(str(SCAN1.parent.parent / "visit2" / "scan.obj"))
    wait_jobs(w, qtbot)
    assert len(w.scans) == 2 and w.tabs.currentWidget() is w.compare
    assert w.compare.analyse_btn.isVisible() and "visit 2" in w.compare.offer_text.text()
    asked = []
    monkeypatch.setattr(w, "run_analysis", lambda k=None, anatomy=True: asked.append(k))
    w.compare.analyse_btn.click()
    assert asked == [1]
    w.history.mark_clean()
    w.close()


@pytest.fixture(scope="module")
def four(qapp, home, tmp_path_factory):
    """A window holding the 4-visit patient of tests/gui_project.py (one scan read), visit 4
    shown: (window, project path, what the project holds)."""
    from gui.mainwindow import MainWindow
    from gui.workers import wait_events
    from tests.gui_project import four_visit_project

    path, truth = four_visit_project(tmp_path_factory.mktemp("four_visits"))
    w = MainWindow(recover=False)
    w._no_prompts = True
    w.resize(1400, 900)
    w.show()
    QTest.qWaitForWindowExposed(w)
    t0 = time.time()
    w.open_path(path)
    while w.runner.running and time.time() - t0 < 300:
        wait_events(50)
    assert len(w.scans) == 4, getattr(w, "last_error", "")
    w.show_visit(3)
    while w.runner.running and time.time() - t0 < 300:  # the body diagram (drawn once, in a worker)
        wait_events(50)
    yield w, path, truth
    w.history.mark_clean()
    w.close()


def test_four_visits_triage_keyboard_and_body_diagram(four, qtbot):
    """A patient with 4 visits opens as one project; the visit-4 triage list puts the grown and
    recoloured lesions first and N / P walk it, F / B turn the view; the body diagram's dots
    select lesions and its regions filter the table, whose filter the 3D markers follow."""
    from bodymap import taxonomy as tx
    from bodymap.overview import region_key, region_text

    w, _, truth = four
    assert w.visit_combo.count() == 4 and "2026-01-20" in w.visit_combo.itemText(3)
    assert w.scans[0] is w.scans[3]  # one scan file, read once
    assert w.project.patient.name == "pseudonym A" and w.project.link_tracking(3) is not None
    order = [c.lesion_id for c in w.triage]
    assert set(order[:3]) == set(truth["grow"]) and order[3] == truth["colour"]  # grown, then colour change
    assert all(i not in order for i in truth["new"])  # new at visit 3, not at visit 4
    assert w.overview.list.count() == len(order)
    # the keyboard: N, N, P walk the triage list; B / F turn the 3D view
    w.activateWindow()
    qtbot.waitUntil(lambda: QtWidgets.QApplication.activeWindow() is w, timeout=5000)
    w.view.setFocus()
    QTest.keyClick(w, QtCore.Qt.Key.Key_N)
    assert w.selected_id() == order[0] and w.view.selected == order[0]
    QTest.keyClick(w, QtCore.Qt.Key.Key_N)
    assert w.selected_id() == order[1] and w.overview.list.currentRow() == 1
    QTest.keyClick(w, QtCore.Qt.Key.Key_P)
    assert w.selected_id() == order[0]
    QTest.keyClick(w, QtCore.Qt.Key.Key_B)
    assert w.view.plotter.camera.position[1] > w.scans[3].bounds.mean(0)[1]  # the camera behind the body
    QTest.keyClick(w, QtCore.Qt.Key.Key_F)
    assert w.view.plotter.camera.position[1] < w.scans[3].bounds.mean(0)[1]
    # the body diagram: a click on a dot selects its lesion; a click on its region filters the table
    d = w.overview.diagram
    assert d.diagram is not None and d.points.registered and len(d.points.ids) == len(w.project.visits[3].lesions)
    k = int(np.flatnonzero(d.points.ids == order[1])[0])
    view = int(d.points.side[k])
    pos = d.to_widget(view, *d.points.xy[k])
    QTest.mouseClick(d, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, pos.toPoint())
    assert w.selected_id() == order[1]
    key = region_key(w.project.visits[3].lesion(order[1]).region)
    ys, xs = np.nonzero(d.diagram.sites[view] == tx.SITE_INDEX[key[0]] * 3 + tx.LATERALITY.index(key[1]))
    dots = d.points.xy[d.points.side == view]
    far = np.argmax(np.min(np.hypot(xs[:, None] - dots[:, 0], ys[:, None] - dots[:, 1]), axis=1))
    d.click(view, xs[far], ys[far])  # the region, away from every dot
    shown = w.table.visible_ids()
    assert w.table.region_edit.text() == region_text(*key) and order[1] in shown
    assert 0 < len(shown) < len(w.project.visits[3].lesions)
    assert {l.id for l in w.view.shown_lesions()} == shown  # the markers follow the table's filter
    assert sum(d.counts.values()) == len(shown)
    w.table.region_edit.setText("back")  # an everyday word
    assert w.table.visible_ids() and all(w.project.visits[3].lesion(i).region["code"] == "trunk/posterior"
                                         for i in w.table.visible_ids())
    w.table.region_edit.setText("")
    assert len(w.view.shown_lesions()) == len(w.project.visits[3].lesions)


def test_four_visits_history_status_photo_and_reopen(four, qtbot, tmp_path):
    """The History tab shows the grown lesion's 4 close-ups at one scale and its rate per year;
    a status and a photograph set there are saved and found again when the project is reopened
    in another window, with the same triage list and persistent ids."""
    from PIL import Image

    w, _, truth = four
    g = truth["grow"][0]
    w.select_lesion(g, source="table")
    w.tabs.setCurrentWidget(w.history_panel)
    wait_jobs(w, qtbot)
    h = w.history_panel.history
    assert h is not None, w.history_panel.title.text()
    assert [s.visit for s in h.sightings] == [0, 1, 2, 3] and len({s.closeup.shape for s in h.sightings}) == 1
    assert [s.status for s in h.sightings][1:] == ["grown"] * 3
    assert h.diameter_rate_mm_per_year == pytest.approx(3 * 1.2 / ((2026 - 2023) + 10 / 365.25), rel=0.02)
    assert w.history_panel.strip.count() >= 4  # the close-ups side by side
    w.history_panel.set_status("biopsied", "2026-01-21")
    photo = tmp_path / "dermoscopy.png"
    Image.new("RGB", (8, 8), "brown").save(photo)
    assert w.history_panel.attach_dialog(str(photo), "dermoscopy")
    assert "biopsied" in w.history_panel.notes.text() and "dermoscopy.png" in w.history_panel.notes.text()
    out = tmp_path / "saved.bodymap"
    assert w.save_to(out, wait=True)
    w.tabs.setCurrentIndex(0)
    w2 = make_window(qtbot)
    w2.open_path(out)
    wait_jobs(w2, qtbot)
    assert len(w2.scans) == 4 and w2.project.patient.name == "pseudonym A"
    assert w2.project.visits[3].status[g]["status"] == "biopsied"
    assert Path(w2.project.visits[3].attachments[g][0]["path"]) == photo
    w2.show_visit(3)
    assert [c.lesion_id for c in w2.triage] == [c.lesion_id for c in w.triage]
    series = w2.project.series()
    assert len({series.ids[k][g] for k in range(4)}) == 1  # one persistent id over the 4 visits
    w2.history.mark_clean()
    w2.close()
