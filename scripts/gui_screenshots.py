"""Screenshots of the desktop application on a sample comparison, for docs/images/:

    gui_main.png     the Visit tab: 3D body with numbered lesions, lesion table, detail panel
    gui_compare.png  the Compare tab: both visits side by side, matches, new and grown lesions
    gui_photo.png    photo mode on a close-up of the ear
    gui_overview.png the Visit tab of visit 4 of a 4-visit patient: body diagram (front / back,
                     counts per region), triage list, the first flagged lesion
                     that truly is new or grown (truth.json) selected
    gui_diagram.png  the overview panel alone (body diagram and triage list)
    gui_history.png  the History tab: a lesion that grew (by the generator's truth) at all 4
                     visits: close-ups, measures, growth rates

Runs on its own virtual display when there is none (Xvfb):

    .venv/bin/python scripts/gui_screenshots.py [--out docs/images] [--follow-up-only]

The comparison comes from tests/data/gui (analysis folders of sample patient SYN00101 written by
`bodymap analyze`): about a minute. The 4-visit patient is a real synthetic follow-up, built
once and cached under out/shots/ (ignored by git; delete it to rebuild): `bodymap synth
--seed 9451 --visits 4` (60k faces, 2048 texture, 100 lesions), `bodymap analyze` of each visit
(one registration each), each link tracked in date order (bodymap.session.Project.track_links,
second look included) and saved as out/shots/follow_up.bodymap. Building it took 14 minutes on
the shared, loaded 2-core machine (synth 1, analysis 2-4.5 per visit, tracking 0.4); a rerun
reuses it: 2.5 minutes (2 with --follow-up-only).
The History tab shows the persistent lesion that grew most by truth.json among those present,
detected and tracked to one id at all 4 visits."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "out" / "shots"
SEED = 9451
SYNTH = ["--visits", "4", "--faces", "60000", "--texture", "2048", "--lesions", "100"]


def _bodymap(*args: str) -> None:
    """Run the bodymap CLI of this checkout in a process of its own (its memory goes with it)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bodymap.cli", *args, "--quiet"], check=True, env=env, cwd=ROOT)
    print(f"bodymap {' '.join(args[:2])}: {time.perf_counter() - t0:.0f} s", flush=True)


def follow_up(cache: Path = CACHE) -> Path:
    """The synthetic 4-visit patient as a project file (cache/follow_up.bodymap), built when
    missing: generated (cache/synth), each visit analysed (cache/analysis/visitN), the links
    tracked visit to visit in date order. Each step is skipped when its files are there."""
    project = cache / "follow_up.bodymap"
    if project.exists():
        return project
    from bodymap.pipeline import load_visit
    from bodymap.session import Patient, Project, VisitState

    t0 = time.perf_counter()
    pdir = cache / "synth" / f"SYN{SEED:05d}"
    vdirs = [pdir / f"visit{k}" for k in range(1, 5)]
    if not (vdirs[-1] / "truth.json").exists():
        _bodymap("synth", str(cache / "synth"), "--seed", str(SEED), *SYNTH)
    adirs = [cache / "analysis" / f"visit{k}" for k in range(1, 5)]
    for v, a in zip(vdirs, adirs):
        if not (a / "lesions.json").exists():
            _bodymap("analyze", str(v / "scan.obj"), "--out", str(a))
    truth = json.loads((vdirs[0] / "truth.json").read_text())
    body = truth["body"]
    visits = [load_visit(a) for a in adirs]
    p = Project(patient=Patient(truth["patient_id"], "pseudonym B", body["sex"],
                                int(truth["visit_date"][:4]) - round(body["age_years"]),
                                f"synthetic patient (bodymap synth --seed {SEED})"))
    for k, (v, a, vd) in enumerate(zip(visits, adirs, vdirs)):
        date = json.loads((vd / "truth.json").read_text())["visit_date"]
        # the project's lesion list is the tracked one: the second look adds to it in place
        p.add_visit(VisitState(str(vd / "scan.obj"), v.lesions, str(a), f"visit {k + 1}", date=date))
    t1 = time.perf_counter()
    p.track_links(visits)
    print(f"tracking 3 links: {time.perf_counter() - t1:.0f} s", flush=True)
    p.save(project)
    print(f"{project}: built in {time.perf_counter() - t0:.0f} s", flush=True)
    return project


def truth_matches(p) -> tuple[list[dict], list[dict]]:
    """The generator's truth of each visit of project p (bodymap.session.Project) and, per
    visit, {truth lesion id: the detected lesion within max(3 mm, its radius)} (one to one)."""
    import numpy as np

    from bodymap.detect.evaluate import match

    truths = [json.loads((Path(v.scan_path).parent / "truth.json").read_text()) for v in p.visits]
    det = []
    for v, t in zip(p.visits, truths):
        ls = v.lesions.lesions
        tl = [l for l in t["lesions"] if l["on_scan"]]
        i, j = match(np.array([l.point_mm for l in ls]), np.array([l["point_mm"] for l in tl]),
                     np.array([l["diameter_mm"] for l in tl]))
        det.append({tl[b]["id"]: ls[a] for a, b in zip(i, j)})
    return truths, det


def grown_lesion(project_path: Path) -> tuple[int, str]:
    """The lesion to show in the History tab: of the lesions that truly grew (truth.json
    changes 'grown') and are on the scan at all 4 visits, those detected at every visit with
    the 4 detections tracked to one persistent id; the one whose true diameter grew most.
    Returns (its lesion id at the last visit, a summary)."""
    from bodymap.session import Project

    p = Project.load(project_path)
    series = p.series()
    truths, det = truth_matches(p)
    tdiam = [{l["id"]: l["diameter_mm"] for l in t["lesions"]} for t in truths]
    grew = {l["id"] for t in truths for l in t["lesions"] if "grown" in l["changes"]}
    best = None
    for tid in sorted(grew):
        if not all(tid in d for d in det):
            continue
        if len({series.ids[k][det[k][tid].id] for k in range(len(det))}) != 1:
            continue
        g = tdiam[-1][tid] - tdiam[0][tid]
        if best is None or g > best[0]:
            best = (g, tid)
    if best is None:
        raise SystemExit(f"{project_path}: no grown lesion detected and tracked at every visit")
    tid = best[1]
    say = (f"truth lesion {tid}: diameter " + " -> ".join(f"{d[tid]:.1f}" for d in tdiam) + " mm (truth), "
           + " -> ".join(f"{d[tid].diameter_mm:.1f}" for d in det) + " mm (measured), ids "
           + ", ".join(str(d[tid].id) for d in det))
    return det[-1][tid].id, say


def true_changes(project_path: Path) -> set[int]:
    """Ids of the last visit's lesions that match a truth lesion new or grown at that visit."""
    from bodymap.session import Project

    truths, det = truth_matches(Project.load(project_path))
    return {det[-1][l["id"]].id for l in truths[-1]["lesions"]
            if l["id"] in det[-1] and {"new", "grown"} & set(l["changes"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--follow-up-only", action="store_true", help="only the 4-visit screenshots")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the patient is built (or read) before the window starts: no heavy work beside the first drawing
    project = follow_up()
    grown_id, grown_say = grown_lesion(project)
    print("history of", grown_say, flush=True)
    # the close-up worker's first `import trimesh` while the 3D view renders under llvmpipe can
    # hang the window (seen here once in two runs): import it before the window exists
    import renderers.raycast  # noqa: F401
    os.environ.setdefault("BODYMAP_HOME", tempfile.mkdtemp(prefix="bodymap_shots_"))
    from gui.xvfb import ensure_display

    ensure_display("1600x1000x24")
    from PySide6 import QtGui, QtWidgets
    from PySide6.QtTest import QTest

    from gui.workers import wait_events

    from gui.mainwindow import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv)
    w = MainWindow(recover=False)
    w._no_prompts = True
    w.resize(1560, 960)
    w.move(0, 0)
    w.show()
    QTest.qWaitForWindowExposed(w)

    def settle(timeout=900):
        t0 = time.time()
        while w.runner.running and time.time() - t0 < timeout:
            wait_events(100)
        wait_events(400)

    def shot(name):
        app.processEvents()
        # the X server's pixels: the OpenGL views are in them (QWidget.grab leaves them black)
        img = QtGui.QGuiApplication.primaryScreen().grabWindow(w.winId())
        img.save(str(out / name))
        print(out / name)

    if not args.follow_up_only and comparison_shots(w, app, settle, shot) != 0:
        return 1
    # a patient over 4 visits: the overview of visit 4 and the history of a lesion that grew
    import numpy as np

    w.history.mark_clean()
    w.open_path(project)
    settle()
    w.tabs.setCurrentIndex(0)
    w.show_visit(3)
    settle()
    # the first flagged lesion that truly is new or grown (the list's top may be false detections)
    real = true_changes(project)
    lid = first = w.walk_flagged(True)
    while lid not in real:
        settle()  # as a clinician pressing N: each close-up done before the next
        lid = w.walk_flagged(True)
        if lid == first:
            break
    les = w.project.visits[3].lesion(lid)
    w.view.fly_to(np.asarray(les.point_mm), np.asarray(les.normal), 600.0)
    settle()
    shot("gui_overview.png")
    w.overview.grab().save(str(out / "gui_diagram.png"))
    print(out / "gui_diagram.png")
    w.select_lesion(grown_id)  # the table row, marker, detail panel and History tab follow
    w.statusBar().clearMessage()
    w.tabs.setCurrentWidget(w.history_panel)
    settle()
    shot("gui_history.png")
    w.history.mark_clean()
    w.close()
    return 0


def comparison_shots(w, app, settle, shot) -> int:
    """gui_main.png, gui_compare.png, gui_photo.png from the sample comparison of tests/data/gui."""
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    from gui.workers import wait_events

    data = ROOT / "tests" / "data" / "gui"
    w.open_path(data / "SYN00101_visit1")
    settle()
    w.add_visit(str(data / "SYN00101_visit2"))
    settle()
    if w.tracking is None:
        print("tracking failed:", getattr(w, "last_error", ""), file=sys.stderr)
        return 1
    import numpy as np

    # visit 2 in the Visit tab: the grown lesions stand out in the change column
    w.tabs.setCurrentIndex(0)
    w.show_visit(1)
    grown = sorted((p for p in w.tracking.pairs if p.grown), key=lambda p: -p.diameter2_mm)
    lid = grown[0].id2 if grown else w.project.visits[1].lesions.lesions[0].id
    w.table.view.sortByColumn(2, QtCore.Qt.SortOrder.DescendingOrder)
    w.select_lesion(lid, source="table")
    les = w.project.visits[1].lesion(lid)
    w.view.fly_to(np.asarray(les.point_mm), np.asarray(les.normal), 900.0)  # where on the body it is
    settle()
    shot("gui_main.png")
    w.tabs.setCurrentWidget(w.compare)
    wait_events(200)
    for v in (w.compare.view1, w.compare.view2):
        v.view("front")
    w.compare.select_pair(id2=lid)
    id1 = w.tracking.partner().get(lid)
    for v, k, i in ((w.compare.view1, 0, id1), (w.compare.view2, 1, lid)):
        if i is not None:
            les = w.project.visits[k].lesion(i)
            w.compare._linking = True
            v.fly_to(np.asarray(les.point_mm), np.asarray(les.normal), 1100.0)
            w.compare._linking = False
    settle()
    shot("gui_compare.png")
    # photo mode on a rendered close-up of the left ear (a stand-in for a clinic photograph)
    from PIL import Image

    from renderers import RaycastRenderer
    from renderers.camera import framing_camera

    scan, labels = w.scans[0], w.labels[0]
    ear = scan.vertices[(labels.ear > 0) & (labels.side == 1)] if labels is not None else scan.vertices[:10]
    if len(ear) == 0:
        ear = scan.vertices[labels.ear > 0]
    cam = framing_camera(ear, np.array([-1.0, 0, 0]), 640, 640, margin=2.6)
    photo = Path(tempfile.mkdtemp()) / "ear_photo.png"
    Image.fromarray(RaycastRenderer(scan).render(cam, ambient=0.6).rgb).save(photo)
    w.tabs.setCurrentWidget(w.photo)
    w.photo.open_photo(str(photo))
    settle()
    # click the darkest spot of the photo (the mole), as a clinician would
    from scipy import ndimage

    rgb = np.asarray(Image.open(photo).convert("RGB"), np.float64)
    dark = ndimage.uniform_filter(rgb.mean(2), 9)
    y, x = np.unravel_index(np.argmin(dark), dark.shape)
    lbl = w.photo.photo
    QTest.mouseClick(lbl, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier,
                     lbl.image_to_widget(x, y))
    settle()
    shot("gui_photo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
