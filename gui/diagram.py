"""The overview under the 3D view: the body diagram (front and back, a dot per lesion shown in the
table, the count of each region) and the triage list (lesions by concern, walked with N / P).
A thin view over bodymap.overview: the diagram, the lesions' places, the counts and the order
are computed there; this draws them and turns clicks into signals."""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bodymap.overview import VIEWS, region_counts, region_text
from bodymap.records import LESION_RGB

ID_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1


def _qimage(img: np.ndarray) -> QtGui.QImage:
    img = np.ascontiguousarray(img[..., :3], np.uint8)
    h, w = img.shape[:2]
    return QtGui.QImage(img.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class BodyDiagramView(QtWidgets.QWidget):
    """The diagram's two views side by side, scaled to the widget. Signals: lesion_clicked(id)
    (a click within a few pixels of a dot), region_clicked(text) (a click on the body elsewhere:
    the region's name for the table's search; '' off the body)."""

    lesion_clicked = QtCore.Signal(int)
    region_clicked = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.diagram = None  # bodymap.overview.BodyDiagram
        self.points = None  # bodymap.overview.DiagramPoints of the visit shown
        self.lesions = []  # the visit's counted lesions (same order as points)
        self.colours: dict = {}
        self.visible: set | None = None
        self.flagged: set = set()
        self.selected: int | None = None
        self.counts: dict = {}
        self.message = "body diagram: drawing…"
        self._images = []
        self.setMinimumSize(220, 180)
        self.setToolTip("Lesions shown in the table, front and back (the front view has the subject's left on the "
                        "right); numbers: lesions per region. Click a dot to select its lesion, a region to filter "
                        "the table to it, outside the body to clear the filter.")
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)

    # ------------------------------------------------------------------ content
    def set_diagram(self, diagram) -> None:
        self.diagram = diagram
        self._images = [_qimage(im) for im in diagram.images] if diagram is not None else []
        self.update()

    def set_points(self, points, lesions, colours: dict, flagged: set) -> None:
        """The visit's lesions placed on the diagram (DiagramPoints, the LesionSet's counted
        lesions in the same order), their colours {id: rgb} and the flagged ids."""
        self.points, self.lesions, self.colours, self.flagged = points, list(lesions), colours, set(flagged)
        self._recount()

    def set_visible(self, ids: set | None) -> None:
        """Show (and count) only these lesion ids: the table's filter (None: all)."""
        self.visible = None if ids is None else set(ids)
        self._recount()

    def select(self, lid: int | None) -> None:
        self.selected = lid
        self.update()

    def _recount(self) -> None:
        self.counts = region_counts(self.lesions, self.points.side, self.visible) if self.points is not None else {}
        self.update()

    # ------------------------------------------------------------------ geometry
    def _layout(self) -> tuple[float, float, float]:
        """(scale, x0, y0): diagram pixel (x, y) of view v is drawn at x0 + (v * W + x) * scale, y0 + y * scale."""
        W, H = self.diagram.size
        top = 16  # the views' names
        s = min(self.width() / (2 * W), (self.height() - top) / H)
        return s, (self.width() - 2 * W * s) / 2, top + (self.height() - top - H * s) / 2

    def to_widget(self, view: int, x: float, y: float) -> QtCore.QPointF:
        s, x0, y0 = self._layout()
        return QtCore.QPointF(x0 + (view * self.diagram.size[0] + x) * s, y0 + y * s)

    def from_widget(self, pos: QtCore.QPointF) -> tuple[int, float, float] | None:
        """(view, x, y) in diagram pixels of a widget position; None outside both views."""
        if self.diagram is None:
            return None
        s, x0, y0 = self._layout()
        W, H = self.diagram.size
        u, y = (pos.x() - x0) / s, (pos.y() - y0) / s
        if not (0 <= u < 2 * W and 0 <= y < H):
            return None
        view = int(u // W)
        return view, u - view * W, y

    # ------------------------------------------------------------------ drawing
    def paintEvent(self, e):
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor("white"))
        if self.diagram is None:
            p.setPen(QtGui.QColor("#666"))
            p.drawText(self.rect(), QtCore.Qt.AlignmentFlag.AlignCenter, self.message)
            return
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
        s, x0, y0 = self._layout()
        W, H = self.diagram.size
        for v, img in enumerate(self._images):
            p.drawImage(QtCore.QRectF(x0 + v * W * s, y0, W * s, H * s), img)
            p.setPen(QtGui.QColor("#333"))
            p.drawText(QtCore.QRectF(x0 + v * W * s, 0, W * s, 16), QtCore.Qt.AlignmentFlag.AlignCenter, VIEWS[v])
        pts = self.points
        if pts is not None:
            r = max(2.0, 4.5 * s)
            for k, lid in enumerate(pts.ids):
                lid = int(lid)
                if self.visible is not None and lid not in self.visible:
                    continue
                c = self.to_widget(int(pts.side[k]), *pts.xy[k])
                col = QtGui.QColor(*self.colours.get(lid, LESION_RGB))
                p.setBrush(col)
                flagged = lid in self.flagged
                p.setPen(QtGui.QPen(QtGui.QColor("black"), 1.2) if flagged else QtCore.Qt.PenStyle.NoPen)
                rr = r * (1.35 if flagged else 1.0)
                p.drawEllipse(c, rr, rr)
                if lid == self.selected:
                    p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
                    p.setPen(QtGui.QPen(QtGui.QColor(230, 200, 0), 2.5))
                    p.drawEllipse(c, rr + 4, rr + 4)
        # the count of each region (of the lesions shown), at the middle of the region
        f = p.font()
        f.setBold(True)
        f.setPointSizeF(max(6.0, 8.0 * min(1.0, s * 1.6)))
        p.setFont(f)
        fm = p.fontMetrics()
        for (view, code, side), n in self.counts.items():
            a = self.diagram.anchors[view].get((code, side))
            if a is None:
                continue
            c = self.to_widget(view, *a)
            tw, th = fm.horizontalAdvance(str(n)) + 4, fm.height()
            rect = QtCore.QRectF(c.x() - tw / 2, c.y() - th / 2, tw, th)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(255, 255, 255, 170))
            p.drawRoundedRect(rect, 3, 3)
            p.setPen(QtGui.QColor("#222"))
            p.drawText(rect, QtCore.Qt.AlignmentFlag.AlignCenter, str(n))
        p.end()

    # ------------------------------------------------------------------ clicks
    def click(self, view: int, x: float, y: float) -> None:
        """A click at diagram pixel (x, y) of view: a lesion's dot selects it, a region filters."""
        if self.diagram is None:
            return
        s = self._layout()[0]
        if self.points is not None:
            on = self.points
            if self.visible is not None:  # only the dots drawn can be clicked
                keep = np.array([int(i) in self.visible for i in on.ids], bool)
                on = type(on)(on.ids[keep], on.side[keep], on.xy[keep], on.registered)
            lid = on.nearest(view, x, y, max_px=max(6.0, 7.0 / max(s, 1e-6)))
            if lid is not None:
                self.lesion_clicked.emit(lid)
                return
        reg = self.diagram.region_at(view, x, y)
        self.region_clicked.emit(region_text(*reg) if reg is not None else "")

    def mousePressEvent(self, e):
        if e.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        hit = self.from_widget(e.position())
        if hit is not None:
            self.click(*hit)
        elif self.diagram is not None:
            self.region_clicked.emit("")


class OverviewPanel(QtWidgets.QWidget):
    """The body diagram beside the triage list. Signals: lesion_selected(id) (a dot or a triage
    row), region_clicked(text)."""

    lesion_selected = QtCore.Signal(int)
    region_clicked = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.diagram = BodyDiagramView()
        lay.addWidget(self.diagram, 5)
        right = QtWidgets.QVBoxLayout()
        self.head = QtWidgets.QLabel("<b>Triage</b>")
        self.head.setToolTip("Lesions by concern: new >= 3 mm, grown, colour change, diagnosis. "
                             "N / ] next, P / [ previous; F / B front / back view")
        right.addWidget(self.head)
        self.list = QtWidgets.QListWidget()
        self.list.setWordWrap(True)
        right.addWidget(self.list, 1)
        self.note = QtWidgets.QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #666; font-size: 9pt")
        right.addWidget(self.note)
        lay.addLayout(right, 2)
        self.items = []
        self.diagram.lesion_clicked.connect(self.lesion_selected.emit)
        self.diagram.region_clicked.connect(self.region_clicked.emit)
        self.list.currentItemChanged.connect(
            lambda cur, _prev: cur is not None and self.lesion_selected.emit(int(cur.data(ID_ROLE))))

    def set_triage(self, items) -> None:
        """The triage list (bodymap.overview.Concern, most concerning first)."""
        self.items = list(items)
        self.list.blockSignals(True)
        self.list.clear()
        for n, c in enumerate(self.items, 1):
            it = QtWidgets.QListWidgetItem(f"{n}. #{c.lesion_id}: {'; '.join(c.reasons)}")
            it.setData(ID_ROLE, c.lesion_id)
            self.list.addItem(it)
        self.list.blockSignals(False)
        self.head.setText(f"<b>Triage</b>: {len(self.items)} flagged (N / P to walk them)" if self.items else
                          "<b>Triage</b>: nothing flagged at this visit")

    def order(self) -> list[int]:
        return [c.lesion_id for c in self.items]

    def select(self, lid: int | None) -> None:
        """Show lesion lid as selected (its dot ringed, its triage row current) without signals."""
        self.diagram.select(lid)
        self.list.blockSignals(True)
        row = self.order().index(lid) if lid in self.order() else -1
        self.list.setCurrentRow(row)
        self.list.blockSignals(False)
