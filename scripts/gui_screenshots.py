"""Screenshots of the desktop application on a sample comparison, for docs/images/:

    gui_main.png     the Visit tab: 3D body with numbered lesions, lesion table, detail panel
    gui_compare.png  the Compare tab: both visits side by side, matches, new and grown lesions
    gui_photo.png    photo mode on a close-up of the ear
    gui_overview.png the Visit tab of visit 4 of a 4-visit patient: body diagram (front / back,
                     counts per region), triage list, the first flagged lesion selected
    gui_diagram.png  the overview panel alone (body diagram and triage list)
    gui_history.png  the History tab: a grown lesion's close-ups at all 4 visits, measures, rates

Runs on its own virtual display when there is none (Xvfb):

    .venv/bin/python scripts/gui_screenshots.py [--out docs/images]

Visits come from tests/data/gui (analysis folders of sample patient SYN00101 written by
`bodymap analyze`), so this takes about a minute, not the five of a fresh analysis; the 4-visit
patient is tests/gui_project.py's (visit 2's scan at every visit, lesions grown and added by hand,
each link tracked as tracking would)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BODYMAP_HOME", tempfile.mkdtemp(prefix="bodymap_shots_"))
    from gui.xvfb import ensure_display

    ensure_display("1600x1000x24")
    from PySide6 import QtCore, QtGui, QtWidgets
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
    # a patient over 4 visits: the overview of visit 4 and the history of its first flagged lesion
    from tests.gui_project import four_visit_project

    project, _ = four_visit_project(Path(tempfile.mkdtemp()))
    w.history.mark_clean()
    w.open_path(project)
    settle()
    w.tabs.setCurrentIndex(0)
    w.show_visit(3)
    settle()
    lid = w.walk_flagged(True)
    les = w.project.visits[3].lesion(lid)
    w.view.fly_to(np.asarray(les.point_mm), np.asarray(les.normal), 600.0)
    settle()
    shot("gui_overview.png")
    w.overview.grab().save(str(out / "gui_diagram.png"))
    print(out / "gui_diagram.png")
    w.tabs.setCurrentWidget(w.history_panel)
    settle()
    shot("gui_history.png")
    w.history.mark_clean()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
