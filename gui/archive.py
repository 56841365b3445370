"""The archive: a batch output folder's lesion index (bodymap.index), searchable from the
application. A query box takes a WHERE clause over lesion_view (as `bodymap query`); the table
lists the matching lesions; a double-click opens the lesion's visit (its analysis folder)
through the main window's usual open path and selects the lesion."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

# rows shown at most (the query itself is not limited; the count says how many matched)
MAX_ROWS = 2000
EXAMPLE = "site = 'ear' and diameter_mm >= 4 and status = 'grown'"


class ArchiveDialog(QtWidgets.QDialog):
    """Search a batch folder's lesion index. open_visit(analysis folder, lesion id) is emitted
    on a double-click; the window opens it."""

    open_visit = QtCore.Signal(str, int)

    def __init__(self, folder: str | Path | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Archive")
        self.resize(900, 500)
        self.folder: Path | None = None
        self.result = None
        self.where_label = QtWidgets.QLabel("No archive open")
        browse = QtWidgets.QPushButton("Open archive folder…")
        browse.clicked.connect(self.browse)
        self.query_edit = QtWidgets.QLineEdit()
        self.query_edit.setPlaceholderText(f"WHERE clause over the lesions, e.g. {EXAMPLE}")
        self.query_edit.returnPressed.connect(self.search)
        go = QtWidgets.QPushButton("Search")
        go.clicked.connect(self.search)
        self.table = QtWidgets.QTableWidget(0, 0)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.cellDoubleClicked.connect(self._double_clicked)
        self.status = QtWidgets.QLabel("")
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.where_label, 1)
        top.addWidget(browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.query_edit, 1)
        row.addWidget(go)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(row)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.status)
        if folder is not None:
            self.set_folder(folder)

    def browse(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open archive (the --out folder of bodymap batch)")
        if path:
            self.set_folder(path)

    def set_folder(self, folder: str | Path) -> bool:
        """Open an archive folder (it must hold index.duckdb) and list every lesion."""
        from bodymap.index import index_path

        try:
            index_path(folder)
        except FileNotFoundError as e:
            self.status.setText(str(e))
            return False
        self.folder = Path(folder)
        self.where_label.setText(f"Archive: {self.folder}")
        self.search()
        return True

    def search(self) -> None:
        """Run the query box's WHERE clause (empty: every lesion) and fill the table."""
        from bodymap.index import SHOWN, QueryError, query

        if self.folder is None:
            self.status.setText("Open an archive folder first")
            return
        try:
            res = query(self.folder, self.query_edit.text().strip() or None, columns=SHOWN + ["analysis_dir"])
        except (QueryError, FileNotFoundError) as e:
            self.status.setText(f"query: {e}")
            return
        self.result = res
        cols = [c for c in SHOWN if c in res.columns]
        idx = [res.columns.index(c) for c in cols]
        rows = res.rows[:MAX_ROWS]  # (a QTableWidget of many thousand rows is slow to fill)
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, i in enumerate(idx):
                v = row[i]
                item = QtWidgets.QTableWidgetItem("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
                item.setData(QtCore.Qt.ItemDataRole.UserRole, r)  # the result row, whatever the sort
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.setSortingEnabled(True)
        more = f" (first {MAX_ROWS} shown)" if len(res) > MAX_ROWS else ""
        self.status.setText(f"{len(res)} lesions{more}; double-click one to open its visit")

    def _double_clicked(self, row: int, _col: int) -> None:
        r = self.table.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)
        rec = dict(zip(self.result.columns, self.result.rows[r]))
        if rec.get("analysis_dir"):
            self.open_visit.emit(str(rec["analysis_dir"]), int(rec["lesion_id"]))
