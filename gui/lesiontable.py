"""The lesion table: a Qt model over a visit's LesionSet (plus diagnoses and tracking status),
and a filter proxy (region text, size, type, change, confidence; suppressed candidates hidden
unless asked for)."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from bodymap.lesions import suppression_text
from bodymap.overview import diagnosis_name
from bodymap.taxonomy import region_matches
from bodymap.records import ATTENTION, STYLES, Status, changes

COLUMNS = ["#", "region", "diameter mm", "area mm²", "type", "change", "confidence", "note"]
SORT_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
ID_ROLE = QtCore.Qt.ItemDataRole.UserRole + 2


def change_status(tracking, visit: int) -> dict:
    """{lesion id: (text, status)} for visit 0 (earlier) or 1 (later) from a Tracking
    (bodymap.records.changes; status a bodymap.records.Status)."""
    return changes(tracking, visit)


class LesionModel(QtCore.QAbstractTableModel):
    """Rows: the lesions of one visit (bodymap.session.VisitState), then its suppressed
    candidates; change from a Tracking."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.visit = None
        self.changes: dict = {}

    def set_visit(self, visit, changes: dict | None = None) -> None:
        self.beginResetModel()
        self.visit, self.changes = visit, changes or {}
        self.endResetModel()

    def lesions(self) -> list:
        return self.visit.lesions.all if self.visit is not None and self.visit.lesions is not None else []

    def rowCount(self, parent=QtCore.QModelIndex()):
        return 0 if parent.isValid() else len(self.lesions())

    def columnCount(self, parent=QtCore.QModelIndex()):
        return len(COLUMNS)

    def headerData(self, section, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def lesion_type(self, l) -> str:
        """Why it is not counted (a suppressed candidate), else the diagnosis label when the
        model ran on it, else where it came from."""
        if l.suppressed:
            return f"suppressed: {suppression_text(l.suppressed)}"
        d = self.visit.diagnoses.get(l.id) if self.visit else None
        return diagnosis_name(d["label"]) if d else ("manual" if l.source == "manual" else "detected")

    def data(self, index, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        l = self.lesions()[index.row()]
        c = index.column()
        change = self.changes.get(l.id, ("", ""))
        if role == ID_ROLE:
            return l.id
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            return [str(l.id), (l.region or {}).get("description", ""), f"{l.diameter_mm:.1f}", f"{l.area_mm2:.1f}",
                    self.lesion_type(l), change[0], f"{l.confidence:.2f}", l.note][c]
        if role == SORT_ROLE:
            return [l.id, (l.region or {}).get("description", ""), l.diameter_mm, l.area_mm2, self.lesion_type(l),
                    str(change[1]), l.confidence, l.note][c]
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and l.suppressed:
            return QtGui.QBrush(QtGui.QColor("#808080"))
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and c == 5:
            st = change[1]
            return QtGui.QBrush(QtGui.QColor(STYLES[st].hex)) if st and st is not Status.MATCHED else None
        if role == QtCore.Qt.ItemDataRole.TextAlignmentRole and c in (0, 2, 3, 6):
            return int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        return None

    def row_of(self, lid: int) -> int:
        for i, l in enumerate(self.lesions()):
            if l.id == lid:
                return i
        return -1


class LesionFilter(QtCore.QSortFilterProxyModel):
    """Filters: region (bodymap.taxonomy.region_matches: a site name, its part, or an everyday
    word such as 'back'; 'left' / 'right' first), min_diameter (mm), type ('' any), change ('' any, 'flagged':
    grown or new), min_confidence, suppressed (show suppressed candidates: off by default).
    Sorts numbers as numbers."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.region, self.min_diameter, self.type, self.change, self.min_confidence = "", 0.0, "", "", 0.0
        self.suppressed = False
        self.setSortRole(SORT_ROLE)

    def set_filter(self, **kw) -> None:
        for k, v in kw.items():
            setattr(self, k, v)
        self.invalidate()  # invalidateFilter() is deprecated in Qt 6.10+

    def filterAcceptsRow(self, row, parent):
        m: LesionModel = self.sourceModel()
        l = m.lesions()[row]
        if l.suppressed and not self.suppressed:
            return False
        if self.region and not region_matches(self.region, l.region):
            return False
        if l.diameter_mm < self.min_diameter or l.confidence < self.min_confidence:
            return False
        if self.type and m.lesion_type(l) != self.type:
            return False
        st = m.changes.get(l.id, ("", ""))[1]
        if self.change == "flagged":
            return st in ATTENTION
        return not self.change or st == self.change


class LesionTable(QtWidgets.QWidget):
    """Filter controls over a sortable table. Signal selected(id) when the user picks a row."""

    selected = QtCore.Signal(int)
    filtered = QtCore.Signal()  # the rows shown changed (a filter, another visit): see visible_ids

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = LesionModel(self)
        self.proxy = LesionFilter(self)
        self.proxy.setSourceModel(self.model)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QtWidgets.QHBoxLayout()
        self.region_edit = QtWidgets.QLineEdit(placeholderText="region…")
        self.size_spin = QtWidgets.QDoubleSpinBox(suffix=" mm", minimum=0, maximum=50, singleStep=0.5)
        self.size_spin.setPrefix("≥ ")
        self.type_combo = QtWidgets.QComboBox()
        self.type_combo.addItems(["any type", "detected", "manual"])
        self.change_combo = QtWidgets.QComboBox()
        self.change_combo.addItems(["any change", "flagged", *(s.value for s in Status)])
        self.conf_spin = QtWidgets.QDoubleSpinBox(minimum=0, maximum=1, singleStep=0.1, decimals=2)
        self.conf_spin.setPrefix("conf ≥ ")
        self.suppressed_check = QtWidgets.QCheckBox("suppressed")
        self.suppressed_check.setToolTip("also list candidates that are not counted as lesions (too large, "
                                         "on a nipple, lip, nail or eye), with the reason")
        for w in (self.region_edit, self.size_spin, self.type_combo, self.change_combo, self.conf_spin,
                  self.suppressed_check):
            row.addWidget(w)
        lay.addLayout(row)
        self.view = QtWidgets.QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, QtCore.Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setAlternatingRowColors(True)
        lay.addWidget(self.view)
        self.count = QtWidgets.QLabel("")
        lay.addWidget(self.count)
        self.region_edit.textChanged.connect(lambda t: self._filter(region=t))
        self.size_spin.valueChanged.connect(lambda v: self._filter(min_diameter=v))
        self.type_combo.currentTextChanged.connect(lambda t: self._filter(type="" if t == "any type" else t))
        self.change_combo.currentTextChanged.connect(lambda t: self._filter(change="" if t == "any change" else t))
        self.conf_spin.valueChanged.connect(lambda v: self._filter(min_confidence=v))
        self.suppressed_check.toggled.connect(lambda on: self._filter(suppressed=on))
        self.view.selectionModel().currentRowChanged.connect(self._row_changed)
        self._quiet = False

    def _filter(self, **kw):
        self.proxy.set_filter(**kw)
        self._count()
        self.filtered.emit()

    def visible_ids(self) -> set[int]:
        """Ids of the lesions the filters let through (what the 3D markers and the diagram show)."""
        return {self.proxy.data(self.proxy.index(r, 0), ID_ROLE) for r in range(self.proxy.rowCount())}

    def clear_filters(self) -> None:
        """Every filter back to 'all' (the controls too); suppressed candidates stay as they were."""
        for w in (self.region_edit, self.size_spin, self.type_combo, self.change_combo, self.conf_spin):
            w.blockSignals(True)
        self.region_edit.setText("")
        self.size_spin.setValue(0.0)
        self.type_combo.setCurrentIndex(0)
        self.change_combo.setCurrentIndex(0)
        self.conf_spin.setValue(0.0)
        for w in (self.region_edit, self.size_spin, self.type_combo, self.change_combo, self.conf_spin):
            w.blockSignals(False)
        self._filter(region="", min_diameter=0.0, type="", change="", min_confidence=0.0)

    def _count(self):
        n_sup = sum(1 for l in self.model.lesions() if l.suppressed)
        n = self.model.rowCount() - n_sup
        if not n_sup:
            self.count.setText(f"{self.proxy.rowCount()} of {n} lesions shown")
        elif self.proxy.suppressed:
            self.count.setText(f"{self.proxy.rowCount()} of {n} lesions + {n_sup} suppressed candidates shown")
        else:
            self.count.setText(f"{self.proxy.rowCount()} of {n} lesions shown ({n_sup} suppressed candidates hidden)")

    def set_visit(self, visit, changes: dict | None = None) -> None:
        """Show a visit's lesions (keeps the selection when the lesion is still there)."""
        keep = self.current_id()
        self._quiet = True
        self.model.set_visit(visit, changes)
        types = sorted({self.model.lesion_type(l) for l in self.model.lesions()} | {"detected", "manual"})
        cur = self.type_combo.currentText()
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItems(["any type", *types])
        self.type_combo.setCurrentText(cur if cur in types else "any type")
        self.type_combo.blockSignals(False)
        if keep is not None:
            self.select_id(keep, emit=False)
        self._quiet = False
        self._count()
        self.filtered.emit()

    def current_id(self) -> int | None:
        idx = self.view.currentIndex()
        return None if not idx.isValid() else self.proxy.data(idx, ID_ROLE)

    def select_id(self, lid: int | None, emit: bool = False) -> bool:
        """Select the row of lesion lid (scrolls to it). False when it is filtered out or absent."""
        quiet, self._quiet = self._quiet, not emit
        try:
            if lid is None:
                self.view.clearSelection()
                return False
            r = self.model.row_of(lid)
            if r < 0:
                return False
            idx = self.proxy.mapFromSource(self.model.index(r, 0))
            if not idx.isValid():
                return False
            self.view.setCurrentIndex(idx)
            self.view.scrollTo(idx)
            return True
        finally:
            self._quiet = quiet

    def _row_changed(self, cur, prev):
        if self._quiet or not cur.isValid():
            return
        self.selected.emit(self.proxy.data(cur, ID_ROLE))
