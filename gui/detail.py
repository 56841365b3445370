"""The lesion detail panel: texture crop, rendered close-up, size, site path, diagnosis with
saliency, and the edits of one lesion (site correction, note, delete)."""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bodymap import taxonomy as tx
from bodymap.overview import diagnosis_name


def to_pixmap(img: np.ndarray, size: int | None = None) -> QtGui.QPixmap:
    """QPixmap of an (H, W, 3) uint8 image, scaled to fit size x size when given."""
    img = np.ascontiguousarray(img[..., :3], np.uint8)
    h, w = img.shape[:2]
    q = QtGui.QImage(img.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()
    pm = QtGui.QPixmap.fromImage(q)
    if size:
        pm = pm.scaled(size, size, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                       QtCore.Qt.TransformationMode.SmoothTransformation)
    return pm


def texture_crop(scan, lesion, margin: float = 1.5, min_px: int = 24) -> np.ndarray | None:
    """(h, w, 3) uint8: the lesion's box on the texture grown by margin x its size (None when
    the scan has no texture)."""
    if scan.texture is None or scan.uv is None:
        return None
    H, W = scan.texture.shape[:2]
    if lesion.box_px:
        x0, y0, x1, y1 = lesion.box_px
    else:
        from bodymap.scan import uv_to_pixel

        x, y = uv_to_pixel(scan.uv_from_barycentric(np.array([lesion.face]), np.array([lesion.bary])),
                           scan.texture.shape)[0]
        x0, y0, x1, y1 = x - 4, y - 4, x + 4, y + 4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = max(min_px / 2, (1 + 2 * margin) * max(x1 - x0, y1 - y0) / 2)
    X0, X1 = int(max(0, cx - r)), int(min(W, cx + r + 1))
    Y0, Y1 = int(max(0, cy - r)), int(min(H, cy + r + 1))
    return scan.texture[Y0:Y1, X0:X1].copy()


def saliency_overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 3) uint8 with a saliency map ((h, w) in [0, 1], resized) blended in
    red-yellow, so the clinician sees what the model looked at."""
    from PIL import Image

    h, w = image.shape[:2]
    s = np.asarray(Image.fromarray((np.clip(saliency, 0, 1) * 255).astype(np.uint8)).resize((w, h))) / 255.0
    heat = np.stack([np.ones_like(s), s, np.zeros_like(s)], -1) * 255
    a = (alpha * s)[..., None]
    return (image * (1 - a) + heat * a).astype(np.uint8)


def escape(text) -> str:
    """``text`` safe inside Qt rich text: &, < and > as entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def melanoma_check_html(check: str | None, flag: bool | None) -> str:
    """The diagnosis model's melanoma check (Diagnosis.melanoma_check) as a line of rich text,
    red when the score is over the validated threshold; "" when there is no verdict."""
    if not check:
        return ""
    text = escape(check)
    colour = "#c01020" if flag else "#2a6a2a"
    return f"<br><b>melanoma check:</b> <span style='color:{colour}'>{text}</span>"


def site_path(region: dict) -> str:
    """'lower extremity > thigh (left)': the site's ancestors down to it, with laterality and ear."""
    code = (region or {}).get("code")
    if not code or code not in tx.SITE_INDEX:
        return "unknown"
    parts = code.split("/")
    names = [tx.site("/".join(parts[:k])).name for k in range(1, len(parts) + 1)]
    text = " > ".join(names)
    if region.get("side") and region["side"] != "midline":
        text += f" ({region['side']})"
    if region.get("ear") and region["ear"] != "non_ear":
        text += f", ear: {region['ear']}"
    if region.get("manual"):
        text += "  [corrected]"
    return text


class DetailPanel(QtWidgets.QWidget):
    """Shows one lesion. Signals ask the window to act (it owns the undo history):
    set_note(id, text), set_site(id, code, side), delete(id), diagnose(id), closeup(id)."""

    set_note = QtCore.Signal(int, str)
    set_site = QtCore.Signal(int, str, str)
    delete = QtCore.Signal(int)
    diagnose = QtCore.Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lid: int | None = None
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.title = QtWidgets.QLabel("No lesion selected")
        self.title.setStyleSheet("font-weight: bold; font-size: 12pt")
        lay.addWidget(self.title)
        pics = QtWidgets.QHBoxLayout()
        self.crop = QtWidgets.QLabel("texture")
        self.close = QtWidgets.QLabel("close-up")
        self.sal = QtWidgets.QLabel("saliency")
        for w, tip in ((self.crop, "texture crop"), (self.close, "rendered close-up"),
                       (self.sal, "diagnosis saliency")):
            w.setFixedSize(128, 128)
            w.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            w.setStyleSheet("background: #eee; color: #888; border: 1px solid #ccc")
            w.setToolTip(tip)
            pics.addWidget(w)
        pics.addStretch(1)
        lay.addLayout(pics)
        self.info = QtWidgets.QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.info)
        self.diag = QtWidgets.QLabel("diagnosis: not run")
        self.diag.setWordWrap(True)
        lay.addWidget(self.diag)
        form = QtWidgets.QGridLayout()
        self.site_combo = QtWidgets.QComboBox()
        for s in tx.SITES[1:]:
            self.site_combo.addItem("  " * (s.level - 1) + s.name, s.code)
        self.side_combo = QtWidgets.QComboBox()
        self.side_combo.addItems(list(tx.LATERALITY))
        self.site_btn = QtWidgets.QPushButton("Correct site")
        form.addWidget(QtWidgets.QLabel("site"), 0, 0)
        form.addWidget(self.site_combo, 0, 1)
        form.addWidget(self.side_combo, 0, 2)
        form.addWidget(self.site_btn, 0, 3)
        self.note_edit = QtWidgets.QLineEdit(placeholderText="note (Enter to save)")
        form.addWidget(QtWidgets.QLabel("note"), 1, 0)
        form.addWidget(self.note_edit, 1, 1, 1, 3)
        lay.addLayout(form)
        btns = QtWidgets.QHBoxLayout()
        self.diag_btn = QtWidgets.QPushButton("Diagnose")
        self.del_btn = QtWidgets.QPushButton("Delete (false positive)")
        btns.addWidget(self.diag_btn)
        btns.addWidget(self.del_btn)
        btns.addStretch(1)
        lay.addLayout(btns)
        lay.addStretch(1)
        self.site_btn.clicked.connect(lambda: self.lid is not None and self.set_site.emit(
            self.lid, self.site_combo.currentData(), self.side_combo.currentText()))
        self.note_edit.returnPressed.connect(lambda: self.lid is not None and self.set_note.emit(
            self.lid, self.note_edit.text()))
        self.del_btn.clicked.connect(lambda: self.lid is not None and self.delete.emit(self.lid))
        self.diag_btn.clicked.connect(lambda: self.lid is not None and self.diagnose.emit(self.lid))
        self.show_lesion(None, None)

    def show_lesion(self, scan, lesion, change: str = "", diagnosis: dict | None = None) -> None:
        """Fill the panel for lesion (bodymap Lesion) on scan; None clears it."""
        on = lesion is not None
        for w in (self.site_btn, self.note_edit, self.diag_btn, self.del_btn, self.site_combo, self.side_combo):
            w.setEnabled(on)
        self.close.clear()
        self.close.setText("close-up")
        if not on:
            self.lid = None
            self.title.setText("No lesion selected")
            self.info.setText("Click a row of the table or a marker on the body.")
            self.crop.clear()
            self.crop.setText("texture")
            self.sal.clear()
            self.sal.setText("saliency")
            self.diag.setText("diagnosis: not run")
            # nothing of the previous lesion stays in the edit fields (a note typed now would go nowhere)
            self.note_edit.clear()
            self.site_combo.setCurrentIndex(-1)
            self.side_combo.setCurrentIndex(-1)
            return
        self.lid = lesion.id
        self.title.setText(f"Lesion {lesion.id}" + (f"  —  {change}" if change else ""))
        crop = texture_crop(scan, lesion)
        if crop is not None and crop.size:
            self.crop.setPixmap(to_pixmap(crop, 128))
        r = lesion.region or {}
        lab = lesion.colour_lab or [0, 0, 0]
        self.info.setText(
            f"<b>site:</b> {site_path(r)}<br>"
            f"<b>size:</b> {lesion.diameter_mm:.1f} mm longest diameter, {lesion.area_mm2:.1f} mm² area<br>"
            f"<b>colour:</b> L* {lab[0]:.0f}, a* {lab[1]:.0f}, b* {lab[2]:.0f}; contrast ΔE {lesion.contrast_de:.1f}<br>"
            f"<b>found by:</b> {lesion.source} {lesion.detector}, confidence {lesion.confidence:.2f}<br>"
            f"<b>position:</b> {', '.join(f'{x:.0f}' for x in lesion.point_mm)} mm")
        if r.get("code") in tx.SITE_INDEX:
            self.site_combo.setCurrentIndex(max(0, self.site_combo.findData(r["code"])))
        self.side_combo.setCurrentText(r.get("side", "midline") or "midline")
        self.note_edit.setText(lesion.note or "")
        self.show_diagnosis(diagnosis, crop)

    def show_diagnosis(self, d: dict | None, crop: np.ndarray | None = None, message: str | None = None) -> None:
        """Diagnosis probabilities ({label, probs, saliency?}) or a message (model not available)."""
        self.sal.clear()
        self.sal.setText("saliency")
        if message:
            self.diag.setText(f"diagnosis: {message}")
            return
        if not d:
            self.diag.setText("diagnosis: not run (Diagnose)")
            return
        probs = sorted(d["probs"].items(), key=lambda t: -t[1])
        bars = "<br>".join(f"{diagnosis_name(k)}: {'█' * int(round(20 * v))} {100 * v:.0f} %" for k, v in probs[:6])
        why = escape(d.get("ood_reason") or "unlike the model's training images")
        head = (f"<b>diagnosis:</b> {diagnosis_name(d['label'])}" if not d.get("ood") else
                f"<b>diagnosis:</b> <span style='color:#c01020'>out of distribution ({why}): no confident "
                "label</span>")
        model = f"<br><span style='color:#666; font-size: 9pt'>{d['model']}</span>" if d.get("model") else ""
        # out of distribution: the probabilities are only the model's view, shown greyed
        style = "font-family: monospace" + ("; color:#888" if d.get("ood") else "")
        view = "model's view:<br>" if d.get("ood") else ""
        self.diag.setText(f"{head}<br><span style='{style}'>{view}{bars}</span>"
                          f"{melanoma_check_html(d.get('melanoma_check'), d.get('melanoma_flag'))}{model}")
        sal = d.get("saliency")
        img = d.get("crop") if d.get("crop") is not None else crop
        if sal is not None and img is not None:
            self.sal.setPixmap(to_pixmap(saliency_overlay(np.asarray(img), np.asarray(sal)), 128))

    def show_closeup(self, lid: int, img: np.ndarray) -> None:
        if lid == self.lid:
            self.close.setPixmap(to_pixmap(img, 128))
