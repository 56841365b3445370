"""The History tab: the selected lesion over every visit of the project, a thin view over
bodymap.history (close-ups side by side at one scale with the body's up, measures and growth
rates per year, the plot over time), with its status and attached photographs (edits go through
the main window's History, so they undo and autosave like every other edit)."""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bodymap.session import LESION_STATUSES, Attach, SetStatus
from gui.workers import Job


def _pixmap(img: np.ndarray) -> QtGui.QPixmap:
    img = np.ascontiguousarray(img[..., :3])
    h, w = img.shape[:2]
    q = QtGui.QImage(img.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
    return QtGui.QPixmap.fromImage(q.copy())


class HistoryPanel(QtWidgets.QWidget):
    """show_lesion(project, scans, k, lid): the history of lesion lid of visit k (computed in a
    worker when the panel is visible; otherwise when it is next shown). edit: the main window's
    edit(command) for status and attachment changes."""

    def __init__(self, runner, edit, parent=None):
        super().__init__(parent)
        self.runner, self.edit = runner, edit
        self.request = None  # (project, scans, k, lid)
        self.history = None  # bodymap.history.LesionHistory shown
        self._visits = {}  # id(scan) -> HistoryVisit of the scan (close-up structures and registration kept)
        lay = QtWidgets.QVBoxLayout(self)
        self.title = QtWidgets.QLabel("Select a lesion to see its history over the visits.")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        self.strip = QtWidgets.QHBoxLayout()
        box = QtWidgets.QWidget()
        box.setLayout(self.strip)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(box)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(260)
        lay.addWidget(scroll)
        low = QtWidgets.QHBoxLayout()
        self.plot = QtWidgets.QLabel()
        low.addWidget(self.plot)
        right = QtWidgets.QVBoxLayout()
        self.table = QtWidgets.QTableWidget(0, 0)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        right.addWidget(self.table, 1)
        st = QtWidgets.QHBoxLayout()
        self.status_combo = QtWidgets.QComboBox()
        self.status_combo.addItems(["(no status)", *LESION_STATUSES])
        self.status_date = QtWidgets.QDateEdit(QtCore.QDate.currentDate())
        self.status_date.setCalendarPopup(True)
        self.status_date.setDisplayFormat("yyyy-MM-dd")
        set_btn = QtWidgets.QPushButton("Set status")
        set_btn.clicked.connect(self.set_status)
        self.attach_btn = QtWidgets.QPushButton("Attach photo…")
        self.attach_btn.clicked.connect(lambda: self.attach_dialog())
        for w in (QtWidgets.QLabel("status:"), self.status_combo, self.status_date, set_btn, self.attach_btn):
            st.addWidget(w)
        right.addLayout(st)
        self.notes = QtWidgets.QLabel("")
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(QtCore.Qt.TextFormat.RichText)
        right.addWidget(self.notes)
        low.addLayout(right, 1)
        lay.addLayout(low, 1)
        self.setEnabled(True)

    # ------------------------------------------------------------------ requests
    def show_lesion(self, project, scans, k: int, lid: int | None) -> None:
        """Show the history of lesion lid of visit k (None: clear). The history shown is kept
        (only its statuses and photos redrawn) while nothing it was computed from changed."""
        self.request = (project, scans, k, lid) if lid is not None else None
        if self.request is None:
            self._clear("Select a lesion to see its history over the visits.")
        elif self.history is not None and self._signature() == self._computed:
            self._notes(project)
        elif self.isVisible():
            self.refresh()

    _computed = None

    def _signature(self):
        """What a history depends on: the lesion asked for, each visit's scan and lesion list
        (contents), and every link's tracking."""
        project, scans, k, lid = self.request
        return (k, lid, tuple(id(s) for s in scans),
                tuple(tuple((l.id, l.diameter_mm, l.face) for l in v.lesions.lesions) if v.lesions else None
                      for v in project.visits),
                tuple(id(project.link_tracking(j)) for j in range(1, len(project.visits))))

    def showEvent(self, e):
        super().showEvent(e)
        if self.request is not None and (self.history is None or self._signature() != self._computed):
            self.refresh()

    _shown = None

    def _hv(self, v, scan):
        """The HistoryVisit of visit state v with its scan (registration read from its analysis);
        visits of one scan file share its close-up structures (see _share)."""
        import dataclasses

        from bodymap.export.record import visit_date_of
        from bodymap.history import HistoryVisit

        base = self._visits.get(id(scan))
        if base is None:
            corr = None
            if v.analysis_dir and (Path(v.analysis_dir) / "labels.npz").is_file():
                from bodymap.anatomy.labels import load_correspondence

                corr = load_correspondence(Path(v.analysis_dir) / "labels.npz", scan.n_vertices)
            base = self._visits[id(scan)] = HistoryVisit(scan, None, None, corr)
        return dataclasses.replace(base, lesions=v.lesions, date=v.date or visit_date_of(scan) or None, title=v.title,
                                   _closeups=None, _tree=None, _template_points=None), base

    @staticmethod
    def _share(hv, base) -> None:
        """Build the scan's close-up structure and registration lookups once (on base) and give
        them to the visit's HistoryVisit hv (slow: in the worker)."""
        base.closeups()
        if base.correspondence is not None and base._tree is None:
            base.body_up(np.full(3, 1e9), np.array([0.0, 0.0, 1.0]))  # builds the tree and template points
        hv._closeups, hv._tree, hv._template_points = base._closeups, base._tree, base._template_points

    def refresh(self) -> Job | None:
        """Compute and show the requested history in a worker."""
        if self.request is None:
            return None
        project, scans, k, lid = self.request
        self._shown = (k, lid)
        self._computed = self._signature()
        try:
            series = project.series()
            pid = series.ids[k][lid]
        except (KeyError, IndexError):
            self._clear(f"lesion {lid} is not in the visit's list")
            return None
        n = len(project.visits)
        pairs = [self._hv(v, scans[j]) if j < len(scans) and scans[j] is not None and v.lesions is not None
                 else None for j, v in enumerate(project.visits)]
        visits = [p[0] if p is not None else None for p in pairs]
        for j, v in enumerate(visits):  # a visit not read or not analysed: history over the others
            if v is None:
                series.ids[j] = {}
        self.title.setText(f"Lesion {lid} of visit {k + 1}: persistent lesion {pid} over {n} visit(s) - computing…")

        def run(progress):
            from bodymap.history import lesion_history

            for p in pairs:
                if p is not None:
                    self._share(*p)
            return lesion_history(visits, series, pid, size_px=200)

        return self.runner.start(Job(run, "history"), "Lesion history", lambda h: self._show(h, project, k, lid),
                                 on_failed=lambda m: self._clear(f"history not available: {m}"), dialog=False)

    # ------------------------------------------------------------------ display
    def _clear(self, text: str) -> None:
        self.history = None
        self.title.setText(text)
        while self.strip.count():
            w = self.strip.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.plot.clear()
        self.table.setRowCount(0)
        self.notes.setText("")

    def _show(self, h, project, k: int, lid: int) -> None:
        if self.request is None or self.request[2:] != (k, lid):
            return  # another lesion was selected meanwhile
        self._clear("")
        self.history = h
        rate = h.diameter_rate_mm_per_year
        self.title.setText(f"<b>Lesion {h.pid}</b> over {len(h.sightings)} visit(s); close-ups {h.field_mm:.0f} mm "
                           f"wide, {'the body' if h.body_up else 'the scan'}'s up at the top; diameter "
                           + (f"{rate:+.2f} mm/year since the first visit" if rate is not None else
                              "rate unknown (visit dates missing)"))
        for s in h.sightings:
            cell = QtWidgets.QLabel()
            cell.setPixmap(_pixmap(s.closeup) if s.closeup is not None else QtGui.QPixmap())
            cap = QtWidgets.QLabel(f"{s.title or f'visit {s.visit + 1}'}  {s.date or ''}\n#{s.lesion_id}  "
                                   f"{s.diameter_mm:.1f} mm  {s.status}")
            col = QtWidgets.QVBoxLayout()
            w = QtWidgets.QWidget()
            w.setLayout(col)
            col.addWidget(cell)
            col.addWidget(cap)
            self.strip.addWidget(w)
        self.strip.addStretch(1)
        pm = QtGui.QPixmap()
        pm.loadFromData(h.plot_png(5.0, 3.6))
        self.plot.setPixmap(pm)
        cols, rows = h.rows()
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, c in enumerate(r):
                self.table.setItem(i, j, QtWidgets.QTableWidgetItem(c))
        self.table.resizeColumnsToContents()
        self._notes(project)

    def _notes(self, project) -> None:
        """Statuses and attachments of every sighting."""
        lines = []
        for s in self.history.sightings if self.history else []:
            v = project.visits[s.visit]
            st = v.status.get(s.lesion_id)
            if st:
                lines.append(f"visit {s.visit + 1}: <b>{st['status']}</b> {st['date']} {st['note']}")
            for a in v.attachments.get(s.lesion_id, []):
                lines.append(f"visit {s.visit + 1}: {a['kind']} photo <a href='file://{a['path']}'>"
                             f"{Path(a['path']).name}</a> {a.get('date', '')}")
        self.notes.setText("<br>".join(lines) or "no status, no attached photographs")
        self.notes.setOpenExternalLinks(True)

    # ------------------------------------------------------------------ edits
    def set_status(self, status: str | None = None, date: str | None = None) -> None:
        """Set the selected lesion's status (the combo's, or status) at the visit it was selected on."""
        if self.request is None:
            return
        project, _, k, lid = self.request
        status = status if status is not None else self.status_combo.currentText()
        date = date if date is not None else self.status_date.date().toString("yyyy-MM-dd")
        self.edit(SetStatus(k, lid, None if status.startswith("(") else status, date))
        self._notes(project)

    def attach_dialog(self, path: str | None = None, kind: str | None = None) -> bool:
        """Attach a photograph to the selected lesion (a file dialog unless path is given; photo
        mode gives its photo and kind). Returns whether one was attached (False: no lesion
        selected, or cancelled)."""
        if self.request is None:
            return False
        project, _, k, lid = self.request
        if path is None:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Attach a photograph", "",
                                                            "Images (*.jpg *.jpeg *.png *.tif *.tiff *.bmp)")
            if not path:
                return False
        if kind is None:
            kind, ok = QtWidgets.QInputDialog.getItem(self, "Attach", "kind of photograph:",
                                                      ["dermoscopy", "clinical", "other"], 0, False)
            if not ok:
                return False
        self.edit(Attach(k, lid, path, kind, datetime.date.today().isoformat()))
        self._notes(project)
        return True
