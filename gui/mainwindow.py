"""The main window: one visit in 3D with its lesion table and detail panel, the comparison of
two visits, photo mode; menus for opening, analysing, editing, exporting and saving.

State lives in a bodymap.session.Project changed only through its History (undo / redo); every
change is autosaved. Heavy work (reading scans, analysis, tracking, rendering, models, exports)
runs in gui.workers Jobs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bodymap.jsonfile import BackgroundWriter
from bodymap.session import (SUFFIX, AddLesion, AutosaveSlot, DeleteLesion, Project, ProjectError, Review,
                             SetField, VisitState, data_dir, manual_lesion, orphaned_autosaves, region_for_site)
from gui.compare import CompareWidget, legend_html, marks
from gui.detail import DetailPanel
from gui.diagram import OverviewPanel
from gui.history import HistoryPanel
from gui.lesiontable import LesionTable, change_status
from gui.photo import PhotoWidget
from gui.view3d import CACHED_SCANS, OVERLAYS, View3D, legend_items
from gui.workers import Job, JobRunner

MESH_EXT = (".obj", ".ply", ".off", ".glb", ".gltf")
MAX_RECENT = 8


def analysis_dir_for(scan_path: str) -> Path:
    """Where the GUI writes a scan's analysis (labels, lesions, region maps): under data_dir(),
    named after the scan and a hash of its path, so two scans never share a folder."""
    import hashlib

    p = Path(scan_path).resolve()
    h = hashlib.sha1(str(p).encode()).hexdigest()[:8]
    return data_dir() / "analyses" / f"{p.parent.name}_{p.stem}_{h}"


class MainWindow(QtWidgets.QMainWindow):
    """The BodyMap window. recover: offer to restore autosaves left by windows that did not
    close cleanly (checked once the window is shown, also when a path is opened at start)."""

    _open_windows: list = []  # windows made to hold recovered work (kept alive here)
    # first-run notices of the body model (cache build, kernel compile) come from worker threads
    notice = QtCore.Signal(str)
    # a background write ended (from the writer thread): kind "autosave" | "save", path, the
    # error ("" when written), the undo depth the data had
    written = QtCore.Signal(str, str, str, int)

    def __init__(self, recover: bool = True, path: str | Path | None = None):
        super().__init__()
        self.setWindowTitle("BodyMap")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self._new_project(Project())
        self.current = 0  # the visit shown in the Visit tab
        self.add_mode = False
        self.runner = JobRunner(self)
        self.settings = QtCore.QSettings("BodyMap", "BodyMap")
        # this window's own autosave file (locked while it lives: two windows never share one)
        self.autosave_slot = AutosaveSlot()
        # saves and autosaves are encoded and written off the UI thread, in order
        self.writer = BackgroundWriter()
        self.written.connect(self._written)
        self._recovering = None  # (orphaned autosave, its lock) until this window's autosave holds the work
        self._build()
        self._update_actions()
        self.statusBar().showMessage("Open a scan, an analysis folder or a project (File > Open)")
        self.notice.connect(lambda m: self.statusBar().showMessage(m, 120000))
        from bodymap.anatomy import body as _body  # light: numpy only until a body is built

        _body.notice = self.notice.emit  # "building the body model cache (first run, ...)" in the status bar
        self._startup_path = path  # opened after the recovery question (recovered work then gets its own window)
        self._recover_at_start = recover
        if recover or path:
            QtCore.QTimer.singleShot(0, self._start)

    def _start(self) -> None:
        """At start: offer autosaves left by a crash, then open the path given on the command line."""
        if self._recover_at_start:
            self.offer_recovery()
        path, self._startup_path = self._startup_path, None
        if path:
            self.open_path(path)

    # ================================================================== layout
    def _build(self) -> None:
        self.tabs = QtWidgets.QTabWidget()
        self.setCentralWidget(self.tabs)
        visit = QtWidgets.QWidget()
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        vl = QtWidgets.QVBoxLayout(visit)
        vl.setContentsMargins(2, 2, 2, 2)
        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        bar = QtWidgets.QHBoxLayout()
        self.visit_combo = QtWidgets.QComboBox()
        self.visit_combo.setMinimumWidth(160)
        self.visit_combo.currentIndexChanged.connect(self.show_visit)
        self.overlay_combo = QtWidgets.QComboBox()
        self.overlay_combo.addItems(OVERLAYS)
        self.overlay_combo.currentTextChanged.connect(self.set_overlay)
        self.markers_check = QtWidgets.QCheckBox("lesion markers")
        self.markers_check.setChecked(True)
        self.markers_check.toggled.connect(lambda on: self.view.set_markers_visible(on))
        bar.addWidget(self.visit_combo)
        bar.addWidget(QtWidgets.QLabel("overlay:"))
        bar.addWidget(self.overlay_combo)
        bar.addWidget(self.markers_check)
        for name in ("front", "back", "left", "right", "top", "reset"):
            b = QtWidgets.QToolButton(text=name)
            b.clicked.connect(lambda _=False, n=name: self.view.view(n))
            bar.addWidget(b)
        self.add_btn = QtWidgets.QToolButton(text="+ add lesion")
        self.add_btn.setCheckable(True)
        self.add_btn.setToolTip("Click on the body to add a lesion there")
        self.add_btn.toggled.connect(self.set_add_mode)
        bar.addWidget(self.add_btn)
        bar.addStretch(1)
        ll.addLayout(bar)
        self.view = View3D()
        # the 3D view above the overview (body diagram + triage list)
        vsplit = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        vsplit.addWidget(self.view)
        self.overview = OverviewPanel()
        vsplit.addWidget(self.overview)
        vsplit.setSizes([500, 360])
        ll.addWidget(vsplit, 1)
        self._diagram, self._diagram_job = None, None  # bodymap.overview.BodyDiagram (drawn once, in a worker)
        self.triage = []  # bodymap.overview.Concern of the visit shown, most concerning first
        self.legend = QtWidgets.QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(QtCore.Qt.TextFormat.RichText)
        ll.addWidget(self.legend)
        split.addWidget(left)
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        self.table = LesionTable()
        self.detail = DetailPanel()
        right.addWidget(self.table)
        right.addWidget(self.detail)
        right.setSizes([480, 420])
        split.addWidget(right)
        split.setSizes([860, 620])
        vl.addWidget(split)
        self.tabs.addTab(visit, "Visit")
        self.compare = CompareWidget()
        self.tabs.addTab(self.compare, "Compare")
        self.photo = PhotoWidget(self.runner)
        self.tabs.addTab(self.photo, "Photo")
        self.history_panel = HistoryPanel(self.runner, self.edit)
        self.tabs.addTab(self.history_panel, "History")
        self.photo.attach.connect(lambda path, kind: self.history_panel.attach_dialog(path, kind) or self.statusBar(
            ).showMessage("Select a lesion in the Visit tab to attach the photo to", 5000))
        # links
        self.table.selected.connect(lambda i: self.select_lesion(i, source="table"))
        self.table.filtered.connect(self._filter_changed)
        self.overview.lesion_selected.connect(lambda i: self.select_lesion(i, source="overview"))
        self.overview.region_clicked.connect(self.table.region_edit.setText)
        self.view.lesion_clicked.connect(lambda i: self.select_lesion(i, source="view") if not self.add_mode else None)
        self.view.picked.connect(self._picked)
        self.detail.set_note.connect(lambda i, t: self.edit(SetField(self.current, i, "note", t, f"note on lesion {i}")))
        self.detail.set_site.connect(self.correct_site)
        self.detail.delete.connect(self.delete_lesion)
        self.detail.diagnose.connect(self.diagnose)
        self.compare.review.connect(self.review)
        self.compare.rematch.connect(self.run_tracking)
        self.compare.analyse.connect(lambda k: self.run_analysis(k))
        self._menus()

    def _menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.act = {}

        def add(menu, key, text, slot, shortcut=None):
            a = QtGui.QAction(text, self)
            if shortcut:
                a.setShortcut(QtGui.QKeySequence(shortcut))
            a.triggered.connect(slot)
            menu.addAction(a)
            self.act[key] = a
            return a

        add(f, "open", "&Open scan, analysis folder or project…", self.open_dialog, QtGui.QKeySequence.StandardKey.Open)
        add(f, "open_dir", "Open analysis &folder…", self.open_folder_dialog)
        self.recent_menu = f.addMenu("Open &recent")
        add(f, "compare", "&Compare with a later visit…", self.compare_dialog)
        add(f, "photo", "Open &photo…", lambda: (self.tabs.setCurrentWidget(self.photo), self.photo.open_dialog()))
        add(f, "archive", "Search an &archive (bodymap batch)…", lambda: self.open_archive())
        f.addSeparator()
        add(f, "save", "&Save project", self.save, QtGui.QKeySequence.StandardKey.Save)
        add(f, "save_as", "Save project &as…", self.save_as, QtGui.QKeySequence.StandardKey.SaveAs)
        add(f, "recover", "Recover autosave…", lambda: self.offer_recovery(always=True))
        ex = f.addMenu("&Export")
        add(ex, "exp_png", "Region map (PNG)…", lambda: self.export_dialog("png"))
        add(ex, "exp_svg", "Region map (SVG)…", lambda: self.export_dialog("svg"))
        add(ex, "exp_glb", "Annotated mesh (GLB)…", lambda: self.export_dialog("glb"))
        add(ex, "exp_ply", "Annotated mesh (PLY)…", lambda: self.export_dialog("ply"))
        add(ex, "exp_csv", "Lesion table (CSV)…", lambda: self.export_dialog("csv"))
        add(ex, "exp_json", "Lesion table (JSON)…", lambda: self.export_dialog("json"))
        add(ex, "exp_pdf", "PDF report…", lambda: self.export_dialog("pdf"))
        ex.addSeparator()
        add(ex, "exp_slice3d", "SLICE-3D lesion table (CSV + tiles)…", lambda: self.export_dialog("slice3d"))
        add(ex, "exp_dicom", "DICOM (close-ups, body maps, report)…", lambda: self.export_dialog("dicom"))
        add(ex, "exp_fhir", "FHIR Bundle (JSON)…", lambda: self.export_dialog("fhir"))
        f.addSeparator()
        add(f, "quit", "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        e = mb.addMenu("&Edit")
        add(e, "undo", "&Undo", self.undo, QtGui.QKeySequence.StandardKey.Undo)
        add(e, "redo", "&Redo", self.redo, QtGui.QKeySequence.StandardKey.Redo)
        e.addSeparator()
        add(e, "delete", "&Delete selected lesion", lambda: self.delete_lesion(self.selected_id()),
            QtGui.QKeySequence.StandardKey.Delete)
        e.addAction(self.add_btn.text(), lambda: self.add_btn.toggle())
        a = mb.addMenu("&Analysis")
        add(a, "analyze", "&Run analysis (regions + lesions)", lambda: self.run_analysis(self.current), "Ctrl+R")
        add(a, "track", "Re-&match visits", self.run_tracking)
        v = mb.addMenu("&View")
        for name in ("front", "back", "left", "right", "top", "reset"):
            add(v, f"view_{name}", f"{name.capitalize()} view", lambda _=False, n=name: self.view.view(n))
        self.act["view_front"].setShortcut(QtGui.QKeySequence("F"))
        self.act["view_back"].setShortcut(QtGui.QKeySequence("B"))
        v.addSeparator()
        add(v, "next_flagged", "&Next flagged lesion", lambda: self.walk_flagged(True))
        add(v, "prev_flagged", "&Previous flagged lesion", lambda: self.walk_flagged(False))
        # single keys: a line edit with the focus takes them as text (Qt's shortcut override)
        self.act["next_flagged"].setShortcuts([QtGui.QKeySequence("N"), QtGui.QKeySequence("]")])
        self.act["prev_flagged"].setShortcuts([QtGui.QKeySequence("P"), QtGui.QKeySequence("[")])
        self._refresh_recent()

    # ================================================================== start-up
    def showEvent(self, e):
        super().showEvent(e)
        if getattr(self, "_vtk_thread", None) is None:
            # pyvista / VTK take a second or two to import: a thread imports them while the
            # window paints and answers; the 3D widget is made on the GUI thread once they are in
            import threading

            def preimport():
                import pyvista  # noqa: F401
                import pyvistaqt  # noqa: F401
                # also what the first close-up and tracking jobs import (not torch: the window
                # opens without it): a worker importing trimesh for the first time while the
                # GUI thread was inside a VTK render hung the window (gui_screenshots, py-spy)
                import trimesh  # noqa: F401

                import renderers.raycast  # noqa: F401

            self._vtk_thread = threading.Thread(target=preimport, name="import-vtk", daemon=True)
            self._vtk_thread.start()
            self._vtk_timer = QtCore.QTimer(self, interval=50)
            self._vtk_timer.timeout.connect(self._vtk_ready)
            self._vtk_timer.start()

    def _vtk_ready(self) -> None:
        if not self._vtk_thread.is_alive():
            self._vtk_timer.stop()
            self.view.init_vtk()

    def _imports_done(self) -> None:
        """Wait for the start-up import of VTK (see showEvent) before the first drawing of a body,
        so the main thread never imports it beside that thread; at once when it is done."""
        t = getattr(self, "_vtk_thread", None)
        if t is not None and t.is_alive():
            t.join()

    def offer_recovery(self, always: bool = False) -> bool:
        """Offer to restore each autosave left by a window that did not close cleanly (newest
        first): Yes restores it (here when this window is empty, else in a new window), No keeps
        it for the next start, Discard deletes it. Returns whether any was restored."""
        Btn = QtWidgets.QMessageBox.StandardButton
        orphans = orphaned_autosaves()
        if not orphans and always:
            QtWidgets.QMessageBox.information(self, "Recover", "There is no autosave.")
        restored = False
        for p, lock in orphans:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
            ans = QtWidgets.QMessageBox.question(
                self, "Recover unsaved work",
                f"BodyMap did not close cleanly. Restore the work autosaved at {when} ({_autosave_titles(p)})?",
                Btn.Yes | Btn.No | Btn.Discard)
            if ans == Btn.Yes:
                busy = bool(self.project.visits) or self.runner.running or self._startup_path is not None
                target = self if not busy else MainWindow(recover=False)
                if target is not self:
                    target._no_prompts = getattr(self, "_no_prompts", False)
                    MainWindow._open_windows.append(target)
                    target.show()
                if target.open_project(p, recovered=True):
                    target._recovering = (p, lock)  # deleted once target's own autosave holds it
                    restored = True
                    continue
            if ans == Btn.Discard:
                p.unlink(missing_ok=True)
                lock.release(remove=True)
            else:
                lock.release(remove=False)  # kept: offered again next time
        return restored

    # ================================================================== opening
    def open_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open", str(self.settings.value("last_dir", "")),
            f"Scans and projects (*{' *'.join(MESH_EXT)} *{SUFFIX});;All files (*)")
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open analysis folder",
                                                          str(self.settings.value("last_dir", "")))
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> Job | bool | None:
        """Open a scan file, an analysis folder (written by `bodymap analyze` or the GUI) or a
        project file. Scans are read in a worker; returns the Job (or the project's result)."""
        path = Path(path)
        if not self._can_discard():
            return None
        self.settings.setValue("last_dir", str(path.parent))
        if path.suffix == SUFFIX:
            return self.open_project(path)
        if path.is_dir() or path.suffix.lower() in MESH_EXT:
            return self._load_visits([str(path)], replace=True)
        self.error("Open", f"{path}: not a scan ({', '.join(MESH_EXT)}), analysis folder or project ({SUFFIX})")
        return None

    def open_archive(self, folder: str | Path | None = None):
        """The archive dialog (gui.archive) over a batch folder's lesion index; a double-click
        opens the lesion's visit here and selects the lesion. Returns the dialog."""
        from gui.archive import ArchiveDialog

        if getattr(self, "archive", None) is None:
            self.archive = ArchiveDialog(parent=self)
            self.archive.open_visit.connect(self._open_from_archive)
        if folder is not None:
            self.archive.set_folder(folder)
        self.archive.show()
        self.archive.raise_()
        if folder is None and self.archive.folder is None:
            self.archive.browse()
        return self.archive

    def _open_from_archive(self, analysis_dir: str, lesion_id: int):
        job = self.open_path(analysis_dir)
        if isinstance(job, Job):
            job.signals.done.connect(lambda _r: self.select_lesion(lesion_id, "archive"))
        return job

    def _load_visits(self, paths: list[str], replace: bool, states: list[VisitState] | None = None,
                     before_show=None, project: Project | None = None) -> Job:
        """Read visits in a worker: each a scan file or an analysis folder (its lesions and
        labels), or a VisitState of a project (project: the project they belong to, any number
        of visits). replace: a new project; else appended (compare)."""

        def run(progress):
            from bodymap.workspace import read_visit
            from gui.view3d import prepare_display

            out, read = [], {}  # read: scan file -> Scan (visits of one scan file share it)
            items = states if states is not None else [None] * len(paths)
            for k, (p, st) in enumerate(zip(paths, items)):
                progress(f"reading {Path(p).name}", k / len(paths))
                key = str(Path(st.scan_path).resolve()) if st is not None else None
                v = read_visit(p, state=st, scan=read.get(key))  # the CLI's reader and checks
                if key is not None:
                    read[key] = v.scan
                progress(f"preparing the display of {Path(p).name}", (k + 0.7) / len(paths))
                prepare_display(v.scan)  # kept on the scan: once per scan
                out.append(v)
            progress("done", 1.0)
            return out

        def done(items):
            if replace:
                self._new_project(project if project is not None else Project())
            for v in items:
                self.ws.add(v)
            if before_show is not None:
                before_show()
            else:
                for p in paths:
                    self._add_recent(p)
            self._after_load(replace)

        return self.runner.start(Job(run, "open"), "Opening", done, lambda m: self.error("Open", m))

    def _after_load(self, replace: bool) -> None:
        if replace:  # nothing of the previous session stays selected
            self.view.select(None, fly=False)
            self.detail.show_lesion(None, None)
        self._refresh_visits()
        self.show_visit(0 if replace else len(self.scans) - 1)
        shown = self.scans[self.current]
        others = {id(x): x for x in self.scans if x is not shown}  # visits of one scan file share it
        for k, scan in enumerate(list(others.values())[:CACHED_SCANS - 1]):
            # one body per turn of the event loop, after the visit shown is drawn: switching to
            # another visit later builds nothing, and the window answers in between
            QtCore.QTimer.singleShot(50 * (k + 1), self.view, lambda scan=scan: self.view.prepare(scan))
        self.autosave()
        if self.ws.can_track and self.tracking is None:
            self.run_tracking()
        v = self.project.visits[self.current]
        if v.lesions is None:
            self.statusBar().showMessage(f"{v.scan_path}: not analysed yet: Analysis > Run analysis (Ctrl+R)")
            if not replace and len(self.scans) >= 2:  # Compare with an unanalysed visit: offer to analyse it
                self.tabs.setCurrentWidget(self.compare)

    def open_project(self, path: str | Path, recovered: bool = False) -> Job | bool:
        """Open a project file; a corrupt or newer one gives a message naming it and changes nothing."""
        try:
            pr = Project.load(path)
        except ProjectError as e:
            self.error("Open project", str(e))
            return False
        if recovered:
            pr.path = None
        states = list(pr.visits)

        def before_show():
            self.ws.load_tracking()  # an unreadable old tracking is dropped: it can be computed again
            if recovered:
                self.history.clean_index = -1  # recovered work is unsaved work: closing asks to save it

        # the project itself (patient, every visit, each link's tracking and reviews) becomes the window's
        job = self._load_visits([s.scan_path for s in states], replace=True, states=states, before_show=before_show,
                                project=pr)
        if not recovered:
            self._add_recent(str(path))
        return job

    def compare_dialog(self) -> None:
        if not self.scans:
            self.error("Compare", "Open the earlier visit first.")
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Later visit (scan or lesions.json of an analysis folder)", str(self.settings.value("last_dir", "")),
            f"Scans or lesion lists (*{' *'.join(MESH_EXT)} lesions.json)")
        if path:
            self.add_visit(str(Path(path).parent) if Path(path).name == "lesions.json" else path)

    def add_visit(self, path: str) -> Job:
        """Open a later visit beside the current one (the comparison); replaces an earlier second visit."""
        self.ws.truncate(1)
        return self._load_visits([path], replace=False)

    def _new_project(self, p: Project) -> None:
        """A new session: a bodymap.workspace.Workspace over project p."""
        from bodymap.workspace import Workspace

        self.ws = Workspace(p)
        self.history.listeners.append(self._changed)
        self.pending_reviews = 0
        self.current = 0
        self._edits = 0  # edits, undos and redos so far (what the Compare tab shows depends on them)
        self._compare_shown = None

    # the window's view of its Workspace (the visits, their scans and labels, the tracking)
    project = property(lambda self: self.ws.project)
    history = property(lambda self: self.ws.history)
    scans = property(lambda self: self.ws.scans)
    labels = property(lambda self: self.ws.labels)
    tracking = property(lambda self: self.ws.tracking)

    # ================================================================== showing
    def _refresh_visits(self) -> None:
        self.visit_combo.blockSignals(True)
        self.visit_combo.clear()
        for k, v in enumerate(self.project.visits):
            self.visit_combo.addItem(f"visit {k + 1}: {v.title or Path(v.scan_path).name}"
                                     + (f" ({v.date})" if v.date else ""))
        self.visit_combo.blockSignals(False)

    def show_visit(self, k: int) -> None:
        """Show visit k in the Visit tab."""
        if not 0 <= k < len(self.scans):
            return
        self.current = k
        self._imports_done()
        self.visit_combo.blockSignals(True)
        self.visit_combo.setCurrentIndex(k)
        self.visit_combo.blockSignals(False)
        self.view.set_scan(self.scans[k], self.labels[k])
        self.view.set_overlay(self.overlay_combo.currentText())
        self._refresh_all()
        self.view.view("front")

    def _link(self, k: int):
        """The Tracking that says what changed at visit k: link k (visit k against visit k - 1)
        for a later visit; for the first visit, link 1 (which of its lesions went missing)."""
        return self.ws.link_tracking(k) if k >= 1 else self.tracking

    def _changes(self, k: int) -> dict:
        t = self._link(k)
        return change_status(t, 1 if k >= 1 else 0) if t is not None else {}

    def _colours(self, k: int) -> dict:
        """Marker colours of visit k's lesions by their status (as in the comparison), {} untracked."""
        t = self._link(k)
        return {} if t is None else marks(t)[2 if k >= 1 else 0]

    def _refresh_all(self) -> None:
        """Table, markers, detail, compare view and title from the project."""
        if not self.scans:
            return
        k = self.current
        v = self.project.visits[k]
        changes = self._changes(k)
        self.table.set_visit(v, changes)
        # colours by status as in the comparison; numbers stay this visit's own, as in the table
        self.view.set_lesions(v.lesions, self._colours(k), {}, visible=self.table.visible_ids())
        self._show_detail(self.selected_id())
        self._legend()
        self._refresh_overview()
        unanalysed = [j for j, x in enumerate(self.project.visits[:2]) if x.lesions is None]
        self.compare.offer_analysis(unanalysed[0] if len(self.scans) >= 2 and unanalysed else None,
                                    self.project.visits[unanalysed[0]].title if unanalysed else "")
        if len(self.scans) >= 2 and not unanalysed:
            if self.compare.view1.scan is not self.scans[0] or self.compare.view2.scan is not self.scans[1]:
                self.compare.set_visits(self.scans[0], self.labels[0], self.scans[1], self.labels[1],
                                        tuple(f"visit {i + 1}: {x.title}" for i, x in enumerate(self.project.visits)))
            shown = (self.tracking, self.project.visits[0].lesions, self.project.visits[1].lesions, self._edits)
            if self._compare_shown is None or any(a is not b for a, b in zip(shown[:3], self._compare_shown)) \
                    or shown[3] != self._compare_shown[3]:  # redrawn only when what it shows changed
                self.compare.set_tracking(*shown[:3], self.pending_reviews)
                self._compare_shown = shown
        self._title()

    def _title(self) -> None:
        name = self.project.path.name if self.project.path else "unsaved project"
        self.setWindowTitle(f"BodyMap - {name}{' *' if self.history.dirty else ''}")
        self._update_actions()

    def _legend(self) -> None:
        k = self.current
        items = legend_items(self.labels[k] if self.scans else None, self.overlay_combo.currentText())
        sw = "".join(f"<span style='color:rgb{tuple(c)}'>■</span>&nbsp;{n} &nbsp; " for n, c in items)
        v = self.project.visits[k] if self.project.visits else None
        n = len(v.lesions) if v is not None and v.lesions is not None else 0
        mk = f"<b>{n}</b> lesions (markers numbered as in the table"
        if self._colours(k):
            mk += "; " + legend_html()
        self.legend.setText(mk + ")" + ("<br>" + sw if sw else ""))

    def set_overlay(self, mode: str) -> None:
        if self.scans and self.labels[self.current] is None and mode != "texture":
            self.statusBar().showMessage("Region overlays need the analysis (Analysis > Run analysis)", 5000)
        self.view.set_overlay(mode)
        self._legend()

    def selected_id(self) -> int | None:
        return self.detail.lid

    # ================================================================== overview
    def _refresh_overview(self) -> None:
        """The triage list and the body diagram of the visit shown (bodymap.overview); the
        diagram itself is drawn once, in a worker."""
        from bodymap.overview import triage

        k = self.current
        v, lv = self.project.visits[k], self.ws.visits[k]
        self.triage = triage(v.lesions, self.ws.link_tracking(k) if k >= 1 else None, v.diagnoses)
        self.overview.set_triage(self.triage)
        if self._diagram is None:
            self._start_diagram()
            return
        pts = self._diagram.place(v.lesions, lv.scan, lv.correspondence())
        self.overview.diagram.set_points(pts, v.lesions.lesions if v.lesions is not None else [], self._colours(k),
                                         {c.lesion_id for c in self.triage})
        self.overview.diagram.set_visible(self.table.visible_ids())
        self.overview.select(self.selected_id())
        self.overview.note.setText("" if pts.registered or v.lesions is None else
                                   "not registered: lesions placed by the scan's own frame (approximate)")

    def _start_diagram(self) -> Job | None:
        if self._diagram_job is not None:
            return None

        def run(progress):
            from bodymap.overview import body_diagram

            progress("drawing the body diagram", 0.1)
            return body_diagram()

        def done(d):
            self._diagram = d
            self.overview.diagram.set_diagram(d)
            if self.scans:
                self._refresh_overview()

        def failed(m):
            self.overview.diagram.message = f"body diagram not available: {m}"
            self.overview.diagram.update()

        self._diagram_job = self.runner.start(Job(run, "diagram"), "Body diagram", done, failed, dialog=False)
        return self._diagram_job

    def _filter_changed(self) -> None:
        """The table's filter reaches the 3D markers and the diagram's dots and counts."""
        ids = self.table.visible_ids()
        self.view.set_visible(ids)
        self.overview.diagram.set_visible(ids)

    def walk_flagged(self, forward: bool = True) -> int | None:
        """Select the next (previous) lesion of the triage list after the selected one (wraps
        around); the camera flies to it. Returns its id (None: nothing flagged)."""
        from bodymap.overview import step

        order = [c.lesion_id for c in self.triage]
        lid = step(order, self.selected_id(), forward)
        if lid is None:
            self.statusBar().showMessage("nothing flagged at this visit", 4000)
            return None
        self.select_lesion(lid, source="triage")
        c = self.triage[order.index(lid)]
        self.statusBar().showMessage(f"flagged {order.index(lid) + 1} of {len(order)}: lesion {lid}: "
                                     + "; ".join(c.reasons), 8000)
        return lid

    def select_lesion(self, lid: int | None, source: str = "") -> None:
        """Select a lesion everywhere: table row, marker (camera flies to it unless the click
        came from the view), detail panel."""
        if source != "table":
            if not self.table.select_id(lid) and lid is not None:
                self.table.clear_filters()
                self.table.select_id(lid)
        self.view.select(lid, fly=source != "view")
        self.overview.select(lid)
        self._show_detail(lid)

    def _show_detail(self, lid: int | None) -> None:
        k = self.current
        v = self.project.visits[k] if self.project.visits else None
        try:
            l = v.lesion(lid) if v is not None and lid is not None else None
        except KeyError:
            l = None
        ch = self._changes(k).get(lid, ("", ""))[0] if l is not None else ""
        self.detail.show_lesion(self.scans[k] if l is not None else None, l, ch,
                                v.diagnoses.get(lid) if l is not None else None)
        self.history_panel.show_lesion(self.project, self.scans, k, lid if l is not None else None)
        if l is not None:
            self._closeup(k, l)

    def _closeup(self, k: int, lesion) -> None:
        visit = self.ws.visits[k]

        def run(progress):
            from renderers.camera import point_camera

            r = visit.renderer()
            cam = point_camera(np.asarray(lesion.point_mm), np.asarray(lesion.normal),
                               max(25.0, 5 * lesion.diameter_mm), 192, 192)
            return r.render(cam, ambient=0.6).rgb

        self.runner.start(Job(run, "close-up"), "Close-up", lambda img, lid=lesion.id: self.detail.show_closeup(lid, img),
                          on_failed=lambda m: None, dialog=False)

    # ================================================================== analysis and tracking
    def run_analysis(self, k: int | None = None, anatomy: bool = True) -> Job | None:
        """Analyse visit k (regions + lesions) in a worker, its progress and Cancel in the status bar.
        A visit with edits asks first: analysis replaces its lesion list."""
        k = self.current if k is None else k
        if not self.scans:
            self.error("Analysis", "Open a scan first.")
            return None
        v = self.project.visits[k]
        if v.lesions is not None and any(l.source == "manual" or l.note for l in v.lesions.lesions):
            if QtWidgets.QMessageBox.question(
                    self, "Analysis", "This visit has edited lesions. Analyse again and replace them? "
                    "(Save the project first to keep a copy.)") != QtWidgets.QMessageBox.StandardButton.Yes:
                return None
        visit = self.ws.visits[k]
        out = analysis_dir_for(v.scan_path)

        def run(progress):
            from bodymap.workspace import analyse_visit

            return analyse_visit(visit, out, progress, anatomy=anatomy)

        ws = self.ws

        def done(r):
            # the window stays usable while it runs: the visit may have been closed meanwhile
            if self.ws is not ws or k >= len(ws.visits) or ws.visits[k] is not visit:
                self.statusBar().showMessage(f"analysis of {Path(v.scan_path).name} dropped: the visit was closed", 10000)
                return
            self.ws.set_analysis(k, r, out)  # new lesion list: the undo history and the tracking start again
            self.view.set_scan(self.scans[k], self.labels[k]) if k == self.current else None
            self.view.set_overlay(self.overlay_combo.currentText())
            self._refresh_all()
            self.autosave()
            fit = ""
            if r.correspondence is not None:
                from bodymap.anatomy.register import fit_summary

                fit = f"; {fit_summary(r.correspondence.info)}"
            self.statusBar().showMessage(f"{len(r.lesions)} lesions found in {r.timings.get('total_s', 0):.0f} s{fit}",
                                         30000)
            if k < 2 and self.ws.can_track:
                self.run_tracking()

        return self.runner.start(Job(run, "analysis"), f"Analysing {Path(v.scan_path).name}", done,
                                 lambda m: self.error("Analysis", m))

    def run_tracking(self) -> Job | None:
        """Match visit 2's lesions to visit 1's (respecting the reviews) in a worker."""
        if not self.ws.can_track:
            self.error("Compare", "Two analysed visits are needed (File > Compare with a later visit).")
            return None
        # copies the lesion lists and reviews now; every review of the pair is applied (the
        # project's, the analysis folders', the per-user store's), as by `bodymap track`
        run, ws = self.ws.tracking_job(), self.ws

        def done(t):
            if self.ws is not ws:  # another project was opened meanwhile
                return
            self.ws.set_tracking(t)
            self.pending_reviews = 0
            self._refresh_all()
            self.autosave()
            self.tabs.setCurrentWidget(self.compare)

        return self.runner.start(Job(run, "tracking"), "Matching lesions between visits", done,
                                 lambda m: self.error("Compare", m))

    def review(self, action: str, id2: int, id1: int) -> None:
        """A clinician's decision on a match (undoable; applied by the next re-match)."""
        self.edit(Review(action, id2, None if id1 < 0 else id1))  # = self.ws.review, with the window's error message
        self.pending_reviews += 1
        self.compare.set_pending(self.pending_reviews)

    # ================================================================== edits
    def edit(self, cmd) -> None:
        """Apply an undoable change."""
        try:
            self.history.push(cmd)
        except (KeyError, StopIteration) as e:
            self.error("Edit", f"cannot {cmd.text}: {e}")

    def undo(self) -> None:
        c = self.history.undo()
        self.statusBar().showMessage(f"undone: {c.text}" if c else "nothing to undo", 4000)

    def redo(self) -> None:
        c = self.history.redo()
        self.statusBar().showMessage(f"redone: {c.text}" if c else "nothing to redo", 4000)

    def _changed(self, cmd) -> None:
        """After every edit, undo and redo: refresh the views and autosave."""
        if isinstance(cmd, (AddLesion, DeleteLesion)) and cmd.k < 2 and self.tracking is not None:
            self.pending_reviews += 1  # the matches shown predate this lesion list: Re-match
        if isinstance(cmd, Review):  # applied by the next re-match: nothing drawn changes yet
            self.compare.set_pending(self.pending_reviews)
            self._title()
        else:
            self._edits += 1
            self._refresh_all()
        if isinstance(cmd, AddLesion) and cmd.k == self.current:
            self.select_lesion(cmd.lesion.id, source="view")
        self.autosave()

    def set_add_mode(self, on: bool) -> None:
        self.add_mode = on
        self.add_btn.setChecked(on)
        self.statusBar().showMessage("Click on the body to add a lesion (toggle '+ add lesion' to stop)" if on else "",
                                     0 if on else 1)

    def _picked(self, face: int, bary, point) -> None:
        if not self.add_mode:
            return
        self.add_lesion_at(face, bary)

    def add_lesion_at(self, face: int, bary, diameter_mm: float = 3.0) -> int | None:
        """Add a manual lesion at surface point (face, bary) of the shown visit. Returns its id."""
        k = self.current
        v = self.project.visits[k]
        if v.lesions is None:
            from bodymap.lesions import LesionSet

            v.lesions = LesionSet([], scan=v.scan_path, detector="clinician")
        lid = v.next_id()
        self.edit(AddLesion(k, manual_lesion(self.scans[k], face, bary, lid, diameter_mm, self.labels[k])))
        return lid

    def delete_lesion(self, lid: int | None) -> None:
        if lid is None:
            return
        self.edit(DeleteLesion(self.current, lid))
        self.select_lesion(None)

    def correct_site(self, lid: int, code: str, side: str) -> None:
        v = self.project.visits[self.current]
        ear = (v.lesion(lid).region or {}).get("ear", "non_ear")
        self.edit(SetField(self.current, lid, "region", region_for_site(code, side, ear if code.endswith("ear") else
                                                                          "non_ear"), f"site of lesion {lid}"))

    def diagnose(self, lid: int) -> Job | None:
        """Run the diagnosis model on a lesion's texture crop (worker); 'model not available' otherwise."""
        from gui import models

        k = self.current
        scan, lesion = self.scans[k], self.project.visits[k].lesion(lid)
        self.detail.show_diagnosis(None, message="running…")

        def run(progress):
            progress("loading the model", 0.1)
            model = models.get("diagnosis")
            progress("predicting", 0.5)
            _, (crop,), (d,) = models.module("diagnosis").diagnose_scan(scan, [lesion], model, 128)
            crop = np.asarray(crop)
            return {"label": d.label, "probs": {k: float(v) for k, v in d.probs.items()},
                    "saliency": np.asarray(d.saliency), "crop": crop,
                    "model": getattr(model, "description", ""), "ood": bool(getattr(d, "ood", False)),
                    "ood_reason": getattr(d, "ood_reason", None),
                    "melanoma_flag": getattr(d, "melanoma_flag", None),
                    "melanoma_check": getattr(d, "melanoma_check", None)}

        def done(d):
            self.project.visits[k].diagnoses[lid] = {key: d[key] for key in ("label", "probs", "ood", "ood_reason",
                                                                               "melanoma_flag", "melanoma_check")}
            if self.detail.lid == lid:
                self.detail.show_diagnosis(d)
            self.table.set_visit(self.project.visits[self.current], self._changes(self.current))
            self.autosave()

        return self.runner.start(Job(run, "diagnosis"), "Diagnosis", done,
                                 lambda m: self.detail.show_diagnosis(None, message=m), dialog=False)

    # ================================================================== saving
    def autosave(self) -> None:
        """Write the project to this window's autosave file (atomic, in the background writer);
        never raises. Once it holds recovered work, the recovered file is deleted."""
        if self.project.visits:
            self._write("autosave", self.autosave_slot.path)

    def _write(self, kind: str, path: Path, wait: bool = False) -> str:
        """Snapshot the project here (the writer must not see later edits) and write it in the
        background writer; its end comes back as `written` on the UI thread (wait: block until
        it is written and handle its end here). Returns the error of a waited-for write ("" when
        written, and always without wait)."""
        depth = len(self.history.done)
        fut = self.writer.submit(path, self.project.to_dict(Path(path).parent))
        error = lambda e: "" if e is None else f"{path}: cannot write ({e})"  # noqa: E731
        if wait:
            try:
                fut.result(120)
                e = None
            except OSError as x:
                e = x
            self._written(kind, str(path), error(e), depth)
            return error(e)

        def done(f):
            e = f.exception()
            if e is None and not f.result():
                return  # superseded by a newer write of the same file
            try:
                self.written.emit(kind, str(path), error(e), depth)
            except RuntimeError:  # the window is gone
                pass

        fut.add_done_callback(done)
        return ""

    def _written(self, kind: str, path: str, error: str, depth: int) -> None:
        if kind == "autosave":
            if error:
                self.statusBar().showMessage(f"autosave failed: {error}", 10000)
            elif self._recovering is not None:
                p, lock = self._recovering
                p.unlink(missing_ok=True)
                lock.release(remove=True)
                self._recovering = None
        elif error:
            self.error("Save", error)
        else:
            self._saved(Path(path), depth)

    def _saved(self, path: Path, depth: int) -> None:
        self.project.path = path
        self.history.clean_index = depth  # edits made while it was written stay unsaved
        self._add_recent(str(path))
        self._title()
        self.statusBar().showMessage(f"saved {path}", 5000)

    def save(self, wait: bool = False) -> bool:
        if self.project.path is None:
            return self.save_as(wait)
        return self.save_to(self.project.path, wait)

    def save_as(self, wait: bool = False) -> bool:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save project", str(self.settings.value("last_dir", "")),
                                                        f"BodyMap project (*{SUFFIX})")
        return self.save_to(path, wait) if path else False

    def save_to(self, path: str | Path, wait: bool = False) -> bool:
        """Save the project (tracking included) to path, written in the background (wait: now;
        False when it could not be written, with a message naming the file)."""
        path = Path(path)
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        if wait:
            return not self._write("save", path, wait=True)
        self._write("save", path)
        self.statusBar().showMessage(f"saving {path}…")
        return True

    def _can_discard(self) -> bool:
        if not self.history.dirty or not self.isVisible() or getattr(self, "_no_prompts", False):
            return True
        ans = QtWidgets.QMessageBox.question(
            self, "Unsaved changes", "Save the changes to the current project first?",
            QtWidgets.QMessageBox.StandardButton.Save | QtWidgets.QMessageBox.StandardButton.Discard
            | QtWidgets.QMessageBox.StandardButton.Cancel)
        if ans == QtWidgets.QMessageBox.StandardButton.Save:
            return self.save(wait=True)
        return ans == QtWidgets.QMessageBox.StandardButton.Discard

    def closeEvent(self, e):
        if not self._can_discard():
            e.ignore()
            return
        self.runner.cancel_all()
        self.runner.wait(30000)
        self.writer.flush(60)  # nothing queued may bring the autosave file back after close()
        # a clean exit: nothing to recover next time (unsaved work stays for the next start)
        self.autosave_slot.close(keep=self.history.dirty and bool(self.project.visits))
        if self._recovering is not None:  # recovered but never autosaved here: leave it to offer again
            self._recovering[1].release(remove=False)
            self._recovering = None
        self.view.close_vtk()
        self.compare.view1.close_vtk()
        self.compare.view2.close_vtk()
        super().closeEvent(e)

    # ================================================================== export
    def export_dialog(self, kind: str) -> None:
        if not self.scans or self.project.visits[self.current].lesions is None:
            self.error("Export", "Open and analyse a scan first.")
            return
        filters = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)", "glb": "glTF binary (*.glb)",
                   "ply": "PLY mesh (*.ply)", "csv": "CSV table (*.csv)", "json": "JSON (*.json)",
                   "pdf": "PDF report (*.pdf)", "slice3d": "CSV table (*.csv)", "fhir": "FHIR Bundle (*.json)"}
        if kind == "dicom":  # a folder of files
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Export DICOM into",
                                                              str(self.settings.value("last_dir", "")))
        else:
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export", str(self.settings.value("last_dir", "")),
                                                            filters[kind])
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> Job | None:
        """Export the shown visit (the comparison for a PDF when two visits are tracked) in a
        worker: png / svg (region map with numbered lesions), glb / ply (annotated mesh), csv /
        json (lesion table), pdf (report), slice3d / dicom / fhir (the standards, with the change
        since visit 1 when visit 2 is shown and tracked: bodymap.export.standard_export)."""
        path = Path(path)
        k = self.current
        v, scan, labels = self.project.visits[k], self.scans[k], self.labels[k]
        from copy import deepcopy

        lesions = deepcopy(v.lesions)
        # the visit shown is the one exported (its notes and diagnoses); a later visit whose link
        # to the visit before is tracked carries that change (the PDF's change pages, the standards')
        link = self.ws.link_tracking(k) if k >= 1 else None
        comparison = (self.scans[k - 1], deepcopy(self.project.visits[k - 1].lesions), link) \
            if kind == "pdf" and link is not None else None
        colours = self._colours(k) or None
        diagnoses = dict(v.diagnoses)
        tracking, previous = (link, self.project.visits[k - 1].scan_path) if link is not None else (None, None)
        pt = self.project.patient
        who = f"{pt.id} {pt.name}".strip() if pt is not None else ""
        title = f"BodyMap report: visit {k + 1}" + (f": {v.title}" if v.title else "") + (f" ({v.date})" if v.date else "")
        if kind in ("png", "svg") and labels is None:
            self.error("Export", "Region maps need the analysis (Analysis > Run analysis).")
            return None

        def run(progress):
            from bodymap.export import annotated, report

            progress(f"writing {path.name}", 0.1)
            if kind == "png":
                report.write_region_png(scan, labels, lesions, path)
            elif kind == "svg":
                report.write_region_svg(scan, labels, lesions, path)
            elif kind in ("glb", "ply"):
                annotated.write_annotated_mesh(scan, lesions, path, colours=colours)
            elif kind == "csv":
                lesions.save_csv(path)
            elif kind == "json":
                lesions.save_json(path)
            elif kind == "pdf":
                from bodymap.anatomy.labels import view_frame

                # each visit upright from its own labels (from its extent when it has none yet)
                frames = (view_frame(scan.vertices, labels),
                          view_frame(comparison[0].vertices, self.labels[k - 1]) if comparison is not None else None)
                report.write_report(path, scan, lesions, title=title, patient=who, comparison=comparison,
                                    diagnoses=diagnoses, progress=progress, frames=frames)
            elif kind in ("slice3d", "dicom", "fhir"):
                from bodymap.export import standard_export
                from bodymap.export.record import export_visit

                ev = export_visit(scan, lesions, v.analysis_dir or Path(v.scan_path).parent, labels,
                                  tracking=tracking, previous_source=previous)
                tiles = path.with_name(path.stem + "_tiles") if kind == "slice3d" else None
                standard_export(kind, None, path, tiles=tiles, visit=ev, progress=progress)
            else:
                raise ValueError(f"unknown export {kind}")
            return path

        return self.runner.start(Job(run, "export"), f"Exporting {path.name}",
                                 lambda p: self.statusBar().showMessage(f"exported {p}", 8000),
                                 lambda m: self.error("Export", m))

    # ================================================================== misc
    def error(self, title: str, message: str) -> None:
        """One clear message naming the file and the problem (also in the status bar)."""
        self.statusBar().showMessage(message, 15000)
        self.last_error = message
        if not getattr(self, "_no_prompts", False):
            QtWidgets.QMessageBox.warning(self, title, message)

    def _update_actions(self) -> None:
        has = bool(self.scans)
        for k in ("analyze", "compare", "save", "save_as") + tuple(a for a in self.act if a.startswith("exp_")):
            self.act[k].setEnabled(has)
        self.act["undo"].setEnabled(bool(self.history.done))
        self.act["redo"].setEnabled(bool(self.history.undone))
        self.act["undo"].setText(f"&Undo {self.history.done[-1].text}" if self.history.done else "&Undo")
        self.act["redo"].setText(f"&Redo {self.history.undone[-1].text}" if self.history.undone else "&Redo")
        self.act["track"].setEnabled(len(self.scans) >= 2)

    def _add_recent(self, path: str) -> None:
        rec = [p for p in (self.settings.value("recent") or []) if p != path]
        self.settings.setValue("recent", [path, *rec][:MAX_RECENT])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        rec = self.settings.value("recent") or []
        if isinstance(rec, str):
            rec = [rec]
        for p in rec:
            self.recent_menu.addAction(p, lambda p=p: self.open_path(p))
        self.recent_menu.setEnabled(bool(rec))

    def dragEnterEvent(self, e):
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e):
        urls = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if urls:
            e.acceptProposedAction()
            p = Path(urls[0])
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") and not p.name.startswith("scan"):
                self.tabs.setCurrentWidget(self.photo)
                self.photo.open_photo(str(p))
            else:
                self.open_path(p)


def _autosave_titles(path: Path) -> str:
    """The visits an autosave holds, for the recovery question (file names; '?' if unreadable)."""
    import json

    try:
        d = json.loads(path.read_text())
        names = [v.get("title") or Path(v.get("scan", "?")).name for v in d.get("visits", [])]
        return ", ".join(names) or "no visits"
    except (OSError, ValueError, AttributeError, TypeError):
        return "unreadable"
