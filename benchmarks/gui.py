"""Desktop application figures: how fast the window opens, and how smoothly a big scan turns.

    .venv/bin/python benchmarks/gui.py [--faces 300000] [--texture 4096] [--frames 40] [--runs 3]

1. Window open: `python -m gui.app --startup-check --wait-3d` (a fresh process each run):
   seconds from the start of main() until the window is on screen and painted, and until the
   3D view is ready (VTK imported in a thread meanwhile); whether torch was imported.
2. Rotation: the 3D view (gui.view3d.View3D, 1000 x 800 pixels) shows a scan of --faces faces
   with a --texture texture (sample SYN00101 visit 1, 53.7k faces / 2048 texture, subdivided and
   upscaled to reach them); the camera turns 3 degrees per frame, each frame rendered to the end
   (glFinish). Frames per second while the camera moves (the light display mesh, as during a
   mouse drag) and with full detail (what is drawn once the camera stops).
3. Stalls (--stalls): the window with a 4-visit project (tests/gui_project.py: its lesions and
   tracked links, on the scans of SYN00101 visits 1 and 2 in turn, 53.7k faces, 2048 texture) driven as a clinician drives
   it: switch visit, overlay change, select a lesion, open the Compare tab, select a pair in it
   (both views fly to their lesion), confirm / reject the pair selected, save.
   The stall of an action is the longest time the UI thread is away from its event loop from
   the click until every job it started has finished (the action's own call, then each round of
   event processing, worker results included); the target is < 200 ms. Then the linked Compare
   view turning: frames per second of both views (the dragged one and the one that follows).

Runs on its own Xvfb display (Mesa software OpenGL) when there is no display.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def startup(runs: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    inside, outside, torch, view3d = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "gui.app", "--startup-check", "--wait-3d"], env=env,
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        outside.append(time.perf_counter() - t0)
        line = [l for l in out.stdout.splitlines() if l.startswith("window shown in")]
        if not line:
            print(out.stderr[-2000:])
            raise SystemExit("the application did not start")
        inside.append(float(line[0].split()[3]))
        torch.append("torch imported: True" in line[0])
        ready = [l for l in out.stdout.splitlines() if l.startswith("3D view ready in")]
        view3d.append(float(ready[0].split()[4]) if ready else float("nan"))
    print(f"window open: {statistics.median(inside):.2f} s median inside the process "
          f"(runs: {', '.join(f'{x:.2f}' for x in inside)}); 3D view ready {statistics.median(view3d):.2f} s; "
          f"{statistics.median(outside):.2f} s from process start to exit; torch imported at start: {any(torch)}")


def dense_scan(faces: int, texture: int):
    """Sample SYN00101 visit 1 subdivided (midpoints, UVs per corner) to at least `faces` faces,
    its texture resized to texture x texture."""
    from PIL import Image

    from bodymap.io import load_scan
    from bodymap.scan import Scan

    s = load_scan(ROOT / "sample_meshes" / "SYN00101" / "visit1" / "scan.obj")
    V, F, UV = s.vertices, s.faces, s.uv
    while len(F) < faces:
        k = min(len(F), (faces - len(F) + 2) // 3)  # split the first k faces in four
        sel, keep = F[:k], F[k:]
        tri, uvt = V[sel], UV[:k]
        mids = np.stack([(tri[:, 0] + tri[:, 1]) / 2, (tri[:, 1] + tri[:, 2]) / 2, (tri[:, 2] + tri[:, 0]) / 2], 1)
        muv = np.stack([(uvt[:, 0] + uvt[:, 1]) / 2, (uvt[:, 1] + uvt[:, 2]) / 2, (uvt[:, 2] + uvt[:, 0]) / 2], 1)
        base = len(V)
        V = np.concatenate([V, mids.reshape(-1, 3)])
        m = base + np.arange(3 * k).reshape(k, 3)
        a, b, c = sel[:, 0], sel[:, 1], sel[:, 2]
        m0, m1, m2 = m[:, 0], m[:, 1], m[:, 2]
        newF = np.concatenate([np.stack([a, m0, m2], 1), np.stack([m0, b, m1], 1), np.stack([m2, m1, c], 1),
                               np.stack([m0, m1, m2], 1)])
        u = lambda *cols: np.stack(cols, 1)
        newUV = np.concatenate([u(uvt[:, 0], muv[:, 0], muv[:, 2]), u(muv[:, 0], uvt[:, 1], muv[:, 1]),
                                u(muv[:, 2], muv[:, 1], uvt[:, 2]), u(muv[:, 0], muv[:, 1], muv[:, 2])])
        F = np.concatenate([keep, newF])
        UV = np.concatenate([UV[k:], newUV])
    tex = np.asarray(Image.fromarray(s.texture).resize((texture, texture), Image.BILINEAR))
    return Scan(V, F, UV.astype(np.float32), tex, meta=s.meta, validate=False)


def rotation(faces: int, texture: int, frames: int) -> None:
    from PySide6 import QtWidgets
    from PySide6.QtTest import QTest

    from gui.view3d import View3D, prepare_display

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv)
    t0 = time.perf_counter()
    scan = dense_scan(faces, texture)
    t1 = time.perf_counter()
    prepare_display(scan)
    t2 = time.perf_counter()
    v = View3D()
    v.resize(1000, 800)
    v.show()
    QTest.qWaitForWindowExposed(v)
    v.init_vtk()
    app.processEvents()
    v.set_scan(scan)
    app.processEvents()
    rw = v.plotter.ren_win
    rw.Render()
    t3 = time.perf_counter()
    print(f"scan: {scan.n_faces} faces, texture {texture}x{texture}; built in {t1 - t0:.1f} s, display meshes "
          f"{t2 - t1:.1f} s (worker), first frame {t3 - t2:.1f} s; light mesh "
          f"{len(v._light.regular_faces) if v._light is not None else 0} faces; renderer: "
          f"{rw.ReportCapabilities().splitlines()[1].strip() if rw.ReportCapabilities() else '?'}")
    style = v.plotter.iren.interactor.GetInteractorStyle()

    def turn(n):
        cam = v.plotter.camera
        t = time.perf_counter()
        for _ in range(n):
            cam.Azimuth(3.0)
            rw.Render()
            app.processEvents()  # the widget's paint that shows the frame (a blit, no second render)
            rw.WaitForCompletion()
        return n / (time.perf_counter() - t)

    turn(3)  # warm-up (texture upload)
    style.InvokeEvent("StartInteractionEvent")  # what a mouse drag does: light mesh, labels off
    moving = turn(frames)
    t = time.perf_counter()
    style.InvokeEvent("EndInteractionEvent")  # the camera stops: full detail drawn again
    app.processEvents()
    rw.WaitForCompletion()
    stop = time.perf_counter() - t
    full = turn(max(frames // 4, 5))
    print(f"rotation: {moving:.1f} frames/s while the camera moves (light mesh), {full:.1f} frames/s at full detail; "
          f"full detail back {1000 * stop:.0f} ms after the camera stops")
    v.close_vtk()


def _settle(app, runner, started: float, min_ms: float = 300.0) -> float:
    """Process events until no job runs and min_ms have passed; the longest single round of
    event processing in ms (the longest the UI thread was unresponsive)."""
    longest = 0.0
    while True:
        t = time.perf_counter()
        app.processEvents()
        longest = max(longest, 1000 * (time.perf_counter() - t))
        if not runner.running and time.perf_counter() - started > min_ms / 1000:
            return longest
        time.sleep(0.002)


def stalls(rounds: int) -> None:
    import tempfile

    from PySide6 import QtCore, QtWidgets
    from PySide6.QtTest import QTest

    home = Path(tempfile.mkdtemp(prefix="bodymap_gui_bench_"))
    os.environ["BODYMAP_HOME"] = str(home)  # autosaves and settings stay out of the user's
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope, str(home))
    from gui.mainwindow import MainWindow
    from gui.view3d import OVERLAYS
    from tests.gui_project import four_visit_project

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv)
    path, _ = four_visit_project(home)
    # visits 1 and 3 on the other scan of the patient (SYN00101 visit 1, its own labels), so that
    # switching visit changes the body shown, as between real visits
    from bodymap.session import Project

    pr = Project.load(path)
    for k in (0, 2):
        pr.visits[k].scan_path = str(ROOT / "sample_meshes" / "SYN00101" / "visit1" / "scan.obj")
        pr.visits[k].analysis_dir = str(ROOT / "tests" / "data" / "gui" / "SYN00101_visit1")
    pr.save(path)
    w = MainWindow(recover=False)
    w._no_prompts = True
    w.resize(1400, 900)
    w.show()
    QTest.qWaitForWindowExposed(w)
    while w.view.plotter is None:  # the 3D view is ready (its start-up imports done), as when a user opens
        _settle(app, w.runner, time.perf_counter(), 50)
    t0 = time.perf_counter()
    w.open_project(path)
    opened = _settle(app, w.runner, t0)
    print(f"stalls: project of {len(w.project.visits)} visits opened in {time.perf_counter() - t0:.1f} s "
          f"(longest stall {opened:.0f} ms)")
    lesions = [l.id for l in w.project.visits[0].lesions.lesions]

    def compare_tab():
        w.tabs.setCurrentWidget(w.compare)

    def select_pair(i):
        if w.tabs.currentWidget() is not w.compare:
            compare_tab()
        w.compare.select_pair(id2=w.tracking.pairs[i].id2)  # both views fly to their lesion

    def review(i):  # the click on Confirm or Reject, the pair selected before
        (w.compare.reject_btn if i % 2 else w.compare.confirm_btn).click()

    actions = {
        "switch visit": lambda i: w.visit_combo.setCurrentIndex((w.current + 1) % len(w.project.visits)),
        "overlay change": lambda i: w.overlay_combo.setCurrentText(OVERLAYS[(i + 1) % len(OVERLAYS)]),
        "select a lesion": lambda i: w.select_lesion(lesions[(7 * i) % len(lesions)], source="table"),
        "Compare tab": lambda i: (compare_tab() if i % 2 == 0 else w.tabs.setCurrentIndex(0)),
        "select a pair": select_pair,
        "confirm / reject": review,
        "save": lambda i: w.save_to(home / "saved.bodymap"),
    }
    worst = {}
    for name, act in actions.items():
        if name not in ("confirm / reject", "select a pair", "Compare tab"):
            w.tabs.setCurrentIndex(0)
            _settle(app, w.runner, time.perf_counter(), 50)
        times = []
        for i in range(rounds):
            if name == "confirm / reject":
                select_pair(i)
                _settle(app, w.runner, time.perf_counter(), 100)
            t = time.perf_counter()
            act(i)
            call = 1000 * (time.perf_counter() - t)
            times.append(max(call, _settle(app, w.runner, t)))
        worst[name] = max(times)
        print(f"  {name}: longest stall {max(times):.0f} ms (median {statistics.median(times):.0f} ms, "
              f"{rounds} times)")
    print(f"stalls: longest {max(worst.values()):.0f} ms ({max(worst, key=worst.get)}); target < 200 ms")

    # the linked Compare view while the user drags visit 1: both views drawn every frame
    compare_tab()
    _settle(app, w.runner, time.perf_counter(), 200)
    v1, v2 = w.compare.view1, w.compare.view2
    style = v1.plotter.iren.interactor.GetInteractorStyle()
    rws = [v1.plotter.ren_win, v2.plotter.ren_win]

    def turn(n):
        t = time.perf_counter()
        for _ in range(n):
            v1.plotter.camera.Azimuth(3.0)  # the other view follows (camera_moved -> its own render)
            rws[0].Render()
            app.processEvents()  # the follower draws on the next turn of the event loop
            for rw in rws:
                rw.WaitForCompletion()
        return n / (time.perf_counter() - t)

    turn(3)
    style.InvokeEvent("StartInteractionEvent")
    moving = turn(40)
    style.InvokeEvent("EndInteractionEvent")
    app.processEvents()
    print(f"Compare rotation: {moving:.1f} frames/s while visit 1 is dragged (visit 2 follows; target >= 10)")
    w.history.mark_clean()
    w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=300_000)
    ap.add_argument("--texture", type=int, default=4096)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stalls", action="store_true", help="only the UI-thread stalls and the Compare rotation")
    ap.add_argument("--rounds", type=int, default=6, help="times each action is done (--stalls)")
    args = ap.parse_args()
    from gui.xvfb import ensure_display

    ensure_display("1600x1000x24")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; display {os.environ['DISPLAY']}")
    if args.stalls:
        stalls(args.rounds)
        return 0
    startup(args.runs)
    rotation(args.faces, args.texture, args.frames)
    stalls(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
