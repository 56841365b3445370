"""Photo mode: a thin view over bodymap.photo.analyse_file (what `bodymap photo` runs): what kind of
photo it is, its quality, site (the user's or the macro classifier's), ears found and
segmented, a diagnosis of the photo (close-ups) or of a lesion the clinician clicks on, and
for each model its name, training data, licence and held-out scores. The analysis runs in a
worker; a missing model says so in its own line and the rest still works."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bodymap import photo as bp
from gui import models
from gui.detail import escape as _esc, melanoma_check_html, saliency_overlay, to_pixmap
from gui.workers import Job

CROP_PX = bp.CROP_PX


def analyse_file(path: str | Path, progress, site: str | None = None) -> bp.PhotoResult:
    """bodymap.photo.analyse_file (what `bodymap photo` runs) with the models of gui.models
    (bodymap.photo's loader). Slow: run in a worker."""
    return bp.analyse_file(path, site, models=models.get, progress=progress)


def ear_overlay(image: np.ndarray, result: bp.PhotoResult) -> np.ndarray | None:
    """The photo with the found ears' regions coloured, None when no ear was found."""
    if result.ears is None or not result.ears.found:
        return None
    return np.asarray(models.module("earseg").overlay(image, result.ears.labels))


def model_lines(result: bp.PhotoResult) -> str:
    """Rich text: one line per model used (name, trained on, licence, held-out scores)."""
    out = []
    for role, c in result.models.items():
        bits = [f"<b>{_esc(c.get('name', role))}</b>", f"trained on {_esc(c.get('trained_on', '?'))}"]
        if c.get("licence"):
            bits.append(f"licence {_esc(c['licence'])}")
        if c.get("held_out"):
            bits.append(f"held-out: {_esc(c['held_out'])}")
        out.append("; ".join(bits))
    return "<br>".join(out)


class PhotoLabel(QtWidgets.QLabel):
    """Shows the photo scaled; clicked(x, y) in image pixels."""

    clicked = QtCore.Signal(int, int)

    def __init__(self):
        super().__init__("Open a photograph (Open photo…) of a body region")
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(320, 320)
        self.setStyleSheet("background: #f4f4f4; color: #666; font-size: 13pt")
        self.image: np.ndarray | None = None
        self.mark: tuple[int, int] | None = None

    def set_image(self, img: np.ndarray | None) -> None:
        self.image = img
        self._update()

    def resizeEvent(self, e):
        super().resizeEvent(e)
        self._update()

    def _scale(self) -> float:
        h, w = self.image.shape[:2]
        return min(self.width() / w, self.height() / h)

    def _update(self) -> None:
        if self.image is None:
            return
        pm = to_pixmap(self.image)
        s = self._scale()
        pm = pm.scaled(int(pm.width() * s), int(pm.height() * s), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                       QtCore.Qt.TransformationMode.SmoothTransformation)
        if self.mark is not None:
            p = QtGui.QPainter(pm)
            p.setPen(QtGui.QPen(QtGui.QColor("yellow"), 2))
            half = CROP_PX / 2 * s
            p.drawRect(QtCore.QRectF(self.mark[0] * s - half, self.mark[1] * s - half, 2 * half, 2 * half))
            p.end()
        self.setPixmap(pm)

    def _origin(self) -> tuple[float, float]:
        """Widget position (pixels) of the image's top-left corner: the image is centred."""
        h, w = self.image.shape[:2]
        s = self._scale()
        return (self.width() - w * s) / 2, (self.height() - h * s) / 2

    def image_to_widget(self, x: float, y: float) -> QtCore.QPoint:
        """Widget point of image pixel (x, y) (a script or test clicks there)."""
        ox, oy = self._origin()
        s = self._scale()
        return QtCore.QPoint(int(ox + x * s), int(oy + y * s))

    def mousePressEvent(self, e):
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        s = self._scale()
        ox, oy = self._origin()
        x, y = (e.position().x() - ox) / s, (e.position().y() - oy) / s
        if 0 <= x < w and 0 <= y < h:
            self.mark = (int(x), int(y))
            self._update()
            self.clicked.emit(int(x), int(y))


crop_at = bp.crop_at


class PhotoWidget(QtWidgets.QWidget):
    """Photo mode. runner: the window's JobRunner (workers with progress and cancel). attach
    (path, kind) is emitted by "Attach to selected lesion" (the main window attaches the photo
    to the lesion selected in the Visit tab)."""

    attach = QtCore.Signal(str, str)

    def __init__(self, runner, parent=None):
        super().__init__(parent)
        self.runner = runner
        self.path: str | None = None
        self.image: np.ndarray | None = None
        self.result: bp.PhotoResult | None = None
        lay = QtWidgets.QHBoxLayout(self)
        left = QtWidgets.QVBoxLayout()
        bar = QtWidgets.QHBoxLayout()
        self.open_btn = QtWidgets.QPushButton("Open photo…")
        self.site_combo = QtWidgets.QComboBox()
        self.site_combo.setToolTip("Where on the body the photo was taken (used for the region and the "
                                   "site-aware diagnosis)")
        from bodymap import taxonomy as tx

        self.site_combo.addItem("site: from the photo", None)
        for st in tx.SITES[1:]:
            self.site_combo.addItem(st.name, st.code)
        self.ear_check = QtWidgets.QCheckBox("ear overlay")
        self.ear_check.setChecked(True)
        self.attach_btn = QtWidgets.QPushButton("Attach to selected lesion")
        self.attach_btn.setToolTip("Attach this photo to the lesion selected in the Visit tab (shown in its history)")
        self.attach_btn.clicked.connect(lambda: self.path and self.attach.emit(self.path, self.photo_kind()))
        bar.addWidget(self.open_btn)
        bar.addWidget(self.site_combo)
        bar.addWidget(self.ear_check)
        bar.addWidget(self.attach_btn)
        bar.addStretch(1)
        left.addLayout(bar)
        self.photo = PhotoLabel()
        left.addWidget(self.photo, 1)
        self.hint = QtWidgets.QLabel("Click a lesion on the photo to diagnose it.")
        left.addWidget(self.hint)
        lay.addLayout(left, 3)
        right = QtWidgets.QVBoxLayout()
        self.kind = QtWidgets.QLabel("kind: -")
        self.quality = QtWidgets.QLabel("quality: -")
        self.macro = QtWidgets.QLabel("region: -")
        self.ear = QtWidgets.QLabel("ear: -")
        self.diag = QtWidgets.QLabel("diagnosis: click a lesion")
        self.notes = QtWidgets.QLabel("")
        self.cards = QtWidgets.QLabel("")
        self.cards.setStyleSheet("color: #555; font-size: 9pt")
        for w in (self.kind, self.quality, self.macro, self.ear, self.diag, self.notes, self.cards):
            w.setWordWrap(True)
            w.setTextFormat(QtCore.Qt.TextFormat.RichText)
            w.setMinimumWidth(300)
        pics = QtWidgets.QHBoxLayout()
        self.crop = QtWidgets.QLabel()
        self.sal = QtWidgets.QLabel()
        for w in (self.crop, self.sal):
            w.setFixedSize(128, 128)
            w.setStyleSheet("background: #eee; border: 1px solid #ccc")
            pics.addWidget(w)
        pics.addStretch(1)
        for w in (self.kind, self.quality, self.macro, self.ear):
            right.addWidget(w)
        right.addLayout(pics)
        right.addWidget(self.diag)
        right.addWidget(self.notes)
        right.addStretch(1)
        right.addWidget(self.cards)
        lay.addLayout(right, 2)
        self.open_btn.clicked.connect(self.open_dialog)
        self.photo.clicked.connect(self.diagnose_at)
        self.ear_check.toggled.connect(self._toggle_ear)
        self.site_combo.currentIndexChanged.connect(lambda _i: self.reanalyse())

    def photo_kind(self) -> str:
        """The open photo's kind for an attachment: 'dermoscopy', 'clinical' or 'other'."""
        k = getattr(getattr(self.result, "kind", None), "label", None) or str(getattr(self.result, "kind", "") or "")
        return "dermoscopy" if "dermoscopy" in k else "clinical" if k and "other" not in k else "other"

    @property
    def site(self) -> str | None:
        """The site the user chose (taxonomy code), None for "from the photo"."""
        return self.site_combo.currentData()

    def open_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open photo", "",
                                                        "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)")
        if path:
            self.open_photo(path)

    def open_photo(self, path: str) -> Job | None:
        """Read the photo and run the models in a worker. Returns the job (None on a bad file)."""
        try:
            img = bp.read_photo(path)  # the CLI's reader: the same checks, the same pixels
        except (ValueError, OSError) as e:
            QtWidgets.QMessageBox.warning(self, "Open photo", str(e))
            return None
        self.path, self.image, self.result = path, img, None
        self.photo.mark = None
        self.photo.set_image(img)
        return self.reanalyse()

    def reanalyse(self) -> Job | None:
        """Analyse the open photo again (after opening it, or when the site changes)."""
        if self.image is None:
            return None
        path, site = self.path, self.site
        for w, t in ((self.kind, "kind: checking…"), (self.quality, "quality: checking…"), (self.macro, "region: …"),
                     (self.ear, "ear: …"), (self.diag, "diagnosis: …"), (self.notes, ""), (self.cards, "")):
            w.setText(t)
        self.crop.clear()
        self.sal.clear()
        return self.runner.start(Job(lambda progress: analyse_file(path, progress, site), "photo"), "Analysing photo",
                                 self._show, dialog=False)

    def _show(self, r: bp.PhotoResult) -> None:
        self.result = r
        msg = r.messages
        k = r.kind
        self.kind.setText(f"<b>kind:</b> {_esc(k.description)} ({100 * k.probs[k.label]:.0f} %)" if k is not None
                          else f"<b>kind:</b> {_esc(msg.get('kind', '-'))}")
        q = r.quality
        if q is not None:
            self.quality.setText("<b>quality:</b> " + ("<span style='color:#208020'>good</span>" if q.ok else
                                 "<span style='color:#c01020'>" + _esc("; ".join(q.problems)) + "</span>"))
        else:
            self.quality.setText(f"<b>quality:</b> {_esc(msg.get('quality', '-'))}")
        m = r.macro
        src = {"user": "given", "macro classifier": "region model"}.get(r.site_source or "", "")
        region = f"{_esc(r.region)} ({src})" if r.site else "unknown"
        if m is not None:
            top = ", ".join(f"{a} {100 * v:.0f} %" for a, v in sorted(m.probs.items(), key=lambda t: -t[1])[:3])
            self.macro.setText(f"<b>region:</b> {region}<br>region model: {top}")
        elif "macro" in msg:
            self.macro.setText(f"<b>region:</b> {region}; region model: {_esc(msg['macro'])}")
        else:
            self.macro.setText(f"<b>region:</b> {region}")
        if r.ears is not None and r.ears.found:
            present = r.ear_regions()
            self.ear.setText(f"<b>ear:</b> {len(r.ears.boxes)} found; {len(present)} sub-regions shown: "
                             f"{', '.join(present)}")
        elif "earfind" in msg or "earseg" in msg:
            self.ear.setText(f"<b>ear:</b> {_esc(msg.get('earfind') or msg.get('earseg'))}")
        elif r.ears is not None:
            self.ear.setText("<b>ear:</b> no ear in this photo")
        elif k is not None and k.label in bp.EAR_KINDS:  # a kind searched, not searched: its site (searches_ears)
            self.ear.setText(f"<b>ear:</b> not searched (a close-up of the {_esc(r.region)})")
        else:
            self.ear.setText("<b>ear:</b> not searched (" + (k.description if k is not None else "-") + ")")
        if r.diagnosis is not None:  # the whole photo was diagnosed: it is the crop, with its Grad-CAM
            if self.image is not None:
                self.crop.setPixmap(to_pixmap(self.image, 128))
            self._show_diag(r.diagnosis, self.image, r.ood)
        elif "diagnosis" in msg:
            self.diag.setText(f"<b>diagnosis:</b> {_esc(msg['diagnosis'])}")
        else:
            self.diag.setText("<b>diagnosis:</b> click a lesion")
        self.notes.setText("<br>".join(f"<i>{_esc(n)}</i>" for n in r.notes))
        self.cards.setText(model_lines(r))
        self._toggle_ear(self.ear_check.isChecked())

    def _toggle_ear(self, on: bool) -> None:
        if self.image is None or self.result is None:
            return
        ov = ear_overlay(self.image, self.result) if on else None
        self.photo.set_image(ov if ov is not None else self.image)

    def diagnose_at(self, x: int, y: int) -> Job | None:
        """Diagnose the 128-pixel crop around (x, y) of the photo (in a worker)."""
        if self.image is None:
            return None
        img, result = self.image, self.result
        crop = crop_at(img, x, y)
        self.crop.setPixmap(to_pixmap(crop, 128))
        self.sal.clear()
        self.diag.setText("diagnosis: running…")

        def run(progress):
            progress("diagnosis", 0.1)
            return bp.diagnose_at(img, x, y, result, models.get)

        def done(r):
            c, d, ood, note = r
            self._show_diag(d, c, ood, note)

        return self.runner.start(Job(run, "diagnosis"), "Diagnosis", done,
                                 on_failed=lambda m: self.diag.setText(f"<b>diagnosis:</b> {_esc(m)}"), dialog=False)

    def _show_diag(self, d, crop, ood: bool = False, note: str = "") -> None:
        probs = sorted(d.probs.items(), key=lambda t: -t[1])[:6]
        bars = "<br>".join(f"{k}: {'█' * int(round(20 * v))} {100 * v:.0f} %" for k, v in probs)
        if ood:
            head = "<b>diagnosis:</b> <span style='color:#c01020'>out of distribution: no confident label</span>"
            body = f"<br><span style='color:#888'>model's view:<br>{bars}</span>"
        else:
            head = f"<b>diagnosis:</b> {_esc(d.label)}"
            body = f"<br>{bars}" + melanoma_check_html(getattr(d, "melanoma_check", None),
                                                        getattr(d, "melanoma_flag", None))
        self.diag.setText(head + body + (f"<br><i>{_esc(note)}</i>" if note else ""))
        if crop is not None and getattr(d, "saliency", None) is not None:
            self.sal.setPixmap(to_pixmap(saliency_overlay(crop, np.asarray(d.saliency)), 128))
