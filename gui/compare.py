"""Compare two visits side by side: linked cameras, lesions marked by status (bodymap.records:
a matched pair with the same number on both bodies, grown, uncertain, new and missing each in
its colour); a match table where the clinician confirms, rejects or reassigns a match or marks
a lesion new."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from bodymap.records import STYLES, Status, counts, markers
from gui.view3d import View3D



def marks(tracking) -> tuple[dict, dict, dict, dict]:
    """Marker colours and labels of both visits (bodymap.records.markers: one palette for the
    GUI, the maps and the PDF)."""
    return markers(tracking)


def legend_html() -> str:
    """The status legend: a coloured dot and text per status (bodymap.records.STYLES)."""
    return " &nbsp; ".join(f"<span style='color:{s.hex}'>●</span> {s.legend}" for s in STYLES.values())


MATCH_COLUMNS = ["status", "visit 2", "visit 1", "region", "diam. 1", "diam. 2", "change mm", "flags", "confidence",
                 "reviewed"]


class CompareWidget(QtWidgets.QWidget):
    """Two 3D views and the match table. Signals: review(action, id2, id1) with action
    confirm / reject / new; rematch() to run tracking again with the reviews."""

    review = QtCore.Signal(str, int, int)
    rematch = QtCore.Signal()
    analyse = QtCore.Signal(int)  # the user asks to analyse visit k (offered when one is not analysed)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tracking = None
        self.lesions1 = self.lesions2 = None
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        top = QtWidgets.QWidget()
        tl = QtWidgets.QGridLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        self.title1, self.title2 = QtWidgets.QLabel("visit 1"), QtWidgets.QLabel("visit 2")
        for t in (self.title1, self.title2):
            t.setStyleSheet("font-weight: bold")
        self.view1, self.view2 = View3D(), View3D()
        tl.addWidget(self.title1, 0, 0)
        tl.addWidget(self.title2, 0, 1)
        tl.addWidget(self.view1, 1, 0)
        tl.addWidget(self.view2, 1, 1)
        tl.setRowStretch(1, 1)
        self.legend = QtWidgets.QLabel(legend_html() + " &nbsp; cameras are linked")
        tl.addWidget(self.legend, 2, 0, 1, 2)
        split.addWidget(top)
        bottom = QtWidgets.QWidget()
        bl = QtWidgets.QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        self.summary = QtWidgets.QLabel("No comparison yet: File > Compare with a later visit…")
        bl.addWidget(self.summary)
        # a visit without analysis cannot be compared: say so and offer to analyse it here
        offer = QtWidgets.QHBoxLayout()
        self.offer_text = QtWidgets.QLabel("")
        self.offer_text.setStyleSheet("color: #a05000; font-weight: bold")
        self.analyse_btn = QtWidgets.QPushButton("Analyse it now")
        self.analyse_btn.hide()
        self._offer_k = None
        self.analyse_btn.clicked.connect(lambda: self._offer_k is not None and self.analyse.emit(self._offer_k))
        offer.addWidget(self.offer_text)
        offer.addWidget(self.analyse_btn)
        offer.addStretch(1)
        bl.addLayout(offer)
        self.table = QtWidgets.QTableWidget(0, len(MATCH_COLUMNS))
        self.table.setHorizontalHeaderLabels(MATCH_COLUMNS)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        bl.addWidget(self.table)
        btns = QtWidgets.QHBoxLayout()
        self.confirm_btn = QtWidgets.QPushButton("Confirm match")
        self.reject_btn = QtWidgets.QPushButton("Reject match")
        self.reassign_btn = QtWidgets.QPushButton("Reassign…")
        self.new_btn = QtWidgets.QPushButton("Mark new")
        self.rematch_btn = QtWidgets.QPushButton("Re-match with reviews")
        for b in (self.confirm_btn, self.reject_btn, self.reassign_btn, self.new_btn, self.rematch_btn):
            btns.addWidget(b)
        btns.addStretch(1)
        self.pending = QtWidgets.QLabel("")
        self.pending.setStyleSheet("color: #a05000")
        btns.addWidget(self.pending)
        bl.addLayout(btns)
        split.addWidget(bottom)
        split.setSizes([620, 260])
        lay.addWidget(split)
        self._linking = False
        self.view1.camera_moved.connect(lambda: self._link(self.view1, self.view2))
        self.view2.camera_moved.connect(lambda: self._link(self.view2, self.view1))
        # the view that follows a drag draws its light mesh too (two full-detail renders a frame
        # made rotation crawl at about 1 frame/s)
        self.view1.interacting.connect(self.view2.set_moving)
        self.view2.interacting.connect(self.view1.set_moving)
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.view1.lesion_clicked.connect(lambda i: self.select_pair(id1=i))
        self.view2.lesion_clicked.connect(lambda i: self.select_pair(id2=i))
        self.confirm_btn.clicked.connect(lambda: self._act("confirm"))
        self.reject_btn.clicked.connect(lambda: self._act("reject"))
        self.new_btn.clicked.connect(lambda: self._act("new"))
        self.reassign_btn.clicked.connect(self._reassign)
        self.rematch_btn.clicked.connect(self.rematch.emit)

    # ------------------------------------------------------------------ content
    def set_visits(self, scan1, labels1, scan2, labels2, titles=("visit 1", "visit 2")) -> None:
        self.view1.set_scan(scan1, labels1)
        self.view2.set_scan(scan2, labels2)
        self.title1.setText(titles[0])
        self.title2.setText(titles[1])

    def set_tracking(self, tracking, lesions1, lesions2, pending: int = 0) -> None:
        """Show a Tracking of lesions2 (later visit) against lesions1; pending: reviews made
        since it was computed."""
        self.tracking, self.lesions1, self.lesions2 = tracking, lesions1, lesions2
        c1, l1, c2, l2 = marks(tracking)
        self.view1.set_lesions(lesions1, c1, l1)
        self.view2.set_lesions(lesions2, c2, l2)
        self.set_pending(pending)
        if tracking is None:
            self.table.setRowCount(0)
            return
        n = counts(tracking)
        col = {st: STYLES[st].hex for st in Status}
        text = (f"<b>{len(tracking.pairs)}</b> matched (<b style='color:{col[Status.GROWN]}'>{n[Status.GROWN]} grown</b>), "
                f"<b style='color:{col[Status.NEW]}'>{n[Status.NEW]} new</b>, "
                f"<b style='color:{col[Status.MISSING]}'>{n[Status.MISSING]} missing</b>; {len(tracking.flagged)} flagged")
        if n[Status.UNCERTAIN]:
            text += f"; <b style='color:{col[Status.UNCERTAIN]}'>{n[Status.UNCERTAIN]} uncertain: please review</b>"
        self.summary.setText(text)
        rows = []
        for p in tracking.pairs:
            rows.append([p.status.value, p.id2, p.id1, p.region, p.diameter1_mm, p.diameter2_mm,
                         p.diameter_change_mm, ", ".join(p.flags), p.confidence, "yes" if p.reviewed else ""])
        for n in tracking.new:
            rows.append([n.status.value, n.id2, "", n.region, "", n.diameter_mm, "", ", ".join(n.flags), "",
                         "yes" if n.reviewed else ""])
        for m in tracking.missing:
            rows.append([m.status.value, "", m.id1, m.region, m.diameter_mm, "", "", ", ".join(m.flags), "", ""])
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        colours = {st.value: STYLES[st].hex for st in Status if st is not Status.MATCHED}
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                it = QtWidgets.QTableWidgetItem()
                it.setData(QtCore.Qt.ItemDataRole.DisplayRole, v if isinstance(v, (int, float)) else str(v))
                if c == 0 and row[0] in colours:
                    it.setForeground(QtGui.QBrush(QtGui.QColor(colours[row[0]])))
                self.table.setItem(r, c, it)
        self.table.setSortingEnabled(True)

    def offer_analysis(self, k: int | None, title: str = "") -> None:
        """Say that visit k (0 or 1) is not analysed and offer a button to analyse it (None: hide)."""
        self._offer_k = k
        self.analyse_btn.setVisible(k is not None)
        self.offer_text.setText("" if k is None else f"visit {k + 1} ({title}) is not analysed yet: the comparison "
                                "needs its lesions.")
        if k is not None:
            self.summary.setText("No comparison yet.")

    def set_pending(self, n: int) -> None:
        self.pending.setText(f"{n} review(s) or edit(s) not applied yet: Re-match" if n else "")

    # ------------------------------------------------------------------ interaction
    def _link(self, src: View3D, dst: View3D) -> None:
        """Same camera (relative to each body's centre) on the other view."""
        if self._linking or src.scan is None or dst.scan is None or dst.plotter is None:
            return
        self._linking = True
        try:
            dst.set_camera_state(src.camera_state())
        finally:
            self._linking = False

    def current_pair(self) -> tuple[int | None, int | None, str]:
        """(id2, id1, status) of the selected table row."""
        r = self.table.currentRow()
        if r < 0:
            return None, None, ""
        get = lambda c: self.table.item(r, c).data(QtCore.Qt.ItemDataRole.DisplayRole)
        id2, id1 = get(1), get(2)
        return (id2 if isinstance(id2, int) else None), (id1 if isinstance(id1, int) else None), get(0)

    def select_pair(self, id1: int | None = None, id2: int | None = None) -> bool:
        """Select the table row of a visit-1 or visit-2 lesion."""
        for r in range(self.table.rowCount()):
            a = self.table.item(r, 1).data(QtCore.Qt.ItemDataRole.DisplayRole)
            b = self.table.item(r, 2).data(QtCore.Qt.ItemDataRole.DisplayRole)
            if (id2 is not None and a == id2) or (id1 is not None and b == id1):
                self.table.setCurrentCell(r, 0)
                self.table.selectRow(r)
                self.table.scrollToItem(self.table.item(r, 0))
                return True
        return False

    def _row_selected(self) -> None:
        """Each view flies to its own lesion of the pair (the bodies' poses differ, so the cameras
        are not linked for this move)."""
        id2, id1, _ = self.current_pair()
        self._linking = True
        try:
            self.view1.select(id1, fly=id1 is not None)
            self.view2.select(id2, fly=id2 is not None)
        finally:
            self._linking = False

    def _act(self, action: str) -> None:
        id2, id1, st = self.current_pair()
        if id2 is None or (action != "new" and id1 is None):
            QtWidgets.QMessageBox.information(self, "Review", "Select a matched pair first (or a new lesion to mark new).")
            return
        self.review.emit(action, id2, id1 if id1 is not None else -1)

    def _reassign(self) -> None:
        id2, id1, _ = self.current_pair()
        if id2 is None:
            QtWidgets.QMessageBox.information(self, "Reassign", "Select a visit-2 lesion first.")
            return
        ids = [l.id for l in self.lesions1.lesions] if self.lesions1 else []
        new, ok = QtWidgets.QInputDialog.getInt(self, "Reassign", f"Visit-2 lesion {id2} is visit-1 lesion:",
                                                id1 or (ids[0] if ids else 1), 1, max(ids or [1]))
        if ok:
            if new not in ids:
                QtWidgets.QMessageBox.warning(self, "Reassign", f"Visit 1 has no lesion {new}.")
                return
            self.review.emit("confirm", id2, new)
