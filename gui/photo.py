"""Photo mode: a photograph of one body region. Quality check, predicted macro region, ear
segmentation overlay when it shows an ear, and diagnosis of a lesion the clinician clicks on.
Each model runs in a worker; a missing model says so in its own line and the rest still works."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from gui import models
from gui.detail import saliency_overlay, to_pixmap
from gui.workers import Job

# share of ear pixels above which the ear overlay is shown (a head photo showing a small ear counts)
EAR_MIN_SHARE = 0.02
CROP_PX = 128


def read_photo(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (EXIF rotation applied). ValueError naming the file
    when it is not a readable image or is too small to analyse."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            img = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: not a readable photo ({type(e).__name__}: {e})") from None
    if min(img.shape[:2]) < 64:
        raise ValueError(f"{path}: the photo is {img.shape[1]}x{img.shape[0]} pixels, too small (at least 64x64)")
    return img


def analyse_photo(image: np.ndarray, progress) -> dict:
    """Run quality, macro region and (for an ear) ear segmentation on image (H, W, 3) uint8.
    Returns {quality, macro, region, ear_labels, ear_overlay, messages{kind: why unavailable}};
    region: the macro label, or "head" when an ear was found."""
    out = {"quality": None, "macro": None, "region": None, "ear_labels": None, "ear_overlay": None, "messages": {}}
    progress("photo quality", 0.05)
    try:
        out["quality"] = models.get("quality")(image)
    except models.ModelUnavailable as e:
        out["messages"]["quality"] = str(e)
    progress("macro region", 0.3)
    try:
        out["macro"] = models.get("macro").classify(image)
    except models.ModelUnavailable as e:
        out["messages"]["macro"] = str(e)
    # the ear segmenter itself decides whether an ear is in the photo (enough ear pixels): the
    # macro classifier, trained on framed region photos, is not reliable on tight ear close-ups
    progress("ear segmentation", 0.6)
    try:
        labels = np.asarray(models.get("earseg").segment(image))
        if (labels > 0).mean() >= EAR_MIN_SHARE:
            out["ear_labels"] = labels
            out["ear_overlay"] = np.asarray(models.module("earseg").overlay(image, labels))
    except models.ModelUnavailable as e:
        out["messages"]["earseg"] = str(e)
    # an ear is on the head: when the ear model finds one, the region is head whatever the
    # tiles say (tight ear close-ups are the region classifier's weakest views); both are shown
    out["region"] = "head" if out["ear_labels"] is not None else (out["macro"].label if out["macro"] else None)
    progress("done", 1.0)
    return out


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


def crop_at(image: np.ndarray, x: int, y: int, size: int = CROP_PX) -> np.ndarray:
    """(size, size, 3) crop centred on (x, y), shifted to stay inside the image (padded when
    the image is smaller)."""
    h, w = image.shape[:2]
    x0 = int(np.clip(x - size // 2, 0, max(w - size, 0)))
    y0 = int(np.clip(y - size // 2, 0, max(h - size, 0)))
    c = image[y0:y0 + size, x0:x0 + size]
    if c.shape[:2] != (size, size):
        c = np.pad(c, ((0, size - c.shape[0]), (0, size - c.shape[1]), (0, 0)), mode="edge")
    return c


class PhotoWidget(QtWidgets.QWidget):
    """Photo mode. runner: the window's JobRunner (workers with progress and cancel)."""

    def __init__(self, runner, parent=None):
        super().__init__(parent)
        self.runner = runner
        self.path: str | None = None
        self.result: dict | None = None
        self.show_ear = True
        lay = QtWidgets.QHBoxLayout(self)
        left = QtWidgets.QVBoxLayout()
        bar = QtWidgets.QHBoxLayout()
        self.open_btn = QtWidgets.QPushButton("Open photo…")
        self.ear_check = QtWidgets.QCheckBox("ear overlay")
        self.ear_check.setChecked(True)
        bar.addWidget(self.open_btn)
        bar.addWidget(self.ear_check)
        bar.addStretch(1)
        left.addLayout(bar)
        self.photo = PhotoLabel()
        left.addWidget(self.photo, 1)
        self.hint = QtWidgets.QLabel("Click a lesion on the photo to diagnose it.")
        left.addWidget(self.hint)
        lay.addLayout(left, 3)
        right = QtWidgets.QVBoxLayout()
        self.quality = QtWidgets.QLabel("quality: -")
        self.macro = QtWidgets.QLabel("region: -")
        self.ear = QtWidgets.QLabel("ear: -")
        self.diag = QtWidgets.QLabel("diagnosis: click a lesion")
        for w in (self.quality, self.macro, self.ear, self.diag):
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
        for w in (self.quality, self.macro, self.ear):
            right.addWidget(w)
        right.addLayout(pics)
        right.addWidget(self.diag)
        right.addStretch(1)
        lay.addLayout(right, 2)
        self.open_btn.clicked.connect(self.open_dialog)
        self.photo.clicked.connect(self.diagnose_at)
        self.ear_check.toggled.connect(self._toggle_ear)

    def open_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open photo", "",
                                                        "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)")
        if path:
            self.open_photo(path)

    def open_photo(self, path: str) -> Job | None:
        """Read the photo and run the models in a worker. Returns the job (None on a bad file)."""
        try:
            img = read_photo(path)
        except ValueError as e:
            QtWidgets.QMessageBox.warning(self, "Open photo", str(e))
            return None
        self.path, self.result = path, None
        self.photo.mark = None
        self.photo.set_image(img)
        for w, t in ((self.quality, "quality: checking…"), (self.macro, "region: …"), (self.ear, "ear: …"),
                     (self.diag, "diagnosis: click a lesion")):
            w.setText(t)
        self.crop.clear()
        self.sal.clear()
        return self.runner.start(Job(lambda progress: analyse_photo(img, progress), "photo"), "Analysing photo",
                                 self._show, dialog=False)

    def _show(self, r: dict) -> None:
        self.result = r
        msg = r["messages"]
        q = r["quality"]
        if q is not None:
            self.quality.setText("<b>quality:</b> " + ("<span style='color:#208020'>good</span>" if q.ok else
                                 "<span style='color:#c01020'>" + "; ".join(q.problems) + "</span>"))
        else:
            self.quality.setText(f"<b>quality:</b> {msg.get('quality', '-')}")
        m = r["macro"]
        if m is not None:
            top = ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(m.probs.items(), key=lambda t: -t[1])[:3])
            region = r.get("region") or m.label
            if region != m.label:  # the ear model overruled the tiles: say so
                self.macro.setText(f"<b>region:</b> {region}, an ear is in the photo (region model: {top})")
            else:
                self.macro.setText(f"<b>region:</b> {region} ({top})")
        else:
            self.macro.setText(f"<b>region:</b> {msg.get('macro', '-')}")
        if r["ear_labels"] is not None:
            from bodymap import taxonomy as tx

            present = [tx.EAR_REGIONS[i] for i in np.unique(r["ear_labels"]) if 0 < i < len(tx.EAR_REGIONS)]
            self.ear.setText(f"<b>ear:</b> {len(present)} sub-regions shown: {', '.join(present)}")
        elif "earseg" in msg:
            self.ear.setText(f"<b>ear:</b> {msg['earseg']}")
        else:
            self.ear.setText("<b>ear:</b> no ear in this photo")
        self._toggle_ear(self.ear_check.isChecked())

    def _toggle_ear(self, on: bool) -> None:
        if self.photo.image is None or self.result is None:
            return
        base = read_photo(self.path)
        ov = self.result.get("ear_overlay")
        self.photo.set_image(ov if on and ov is not None else base)

    def diagnose_at(self, x: int, y: int) -> Job | None:
        """Diagnose the 128-pixel crop around (x, y) of the photo (in a worker)."""
        if self.path is None:
            return None
        crop = crop_at(read_photo(self.path), x, y)
        self.crop.setPixmap(to_pixmap(crop, 128))
        self.sal.clear()
        self.diag.setText("diagnosis: running…")
        m = self.result.get("macro") if self.result else None
        site = m.label if m is not None else None

        def run(progress):
            progress("diagnosis", 0.1)
            model = models.get("diagnosis")
            return model.predict([crop], [site])[0]

        return self.runner.start(Job(run, "diagnosis"), "Diagnosis", lambda d: self._show_diag(d, crop),
                                 on_failed=lambda m: self.diag.setText(f"<b>diagnosis:</b> {m}"), dialog=False)

    def _show_diag(self, d, crop) -> None:
        probs = sorted(d.probs.items(), key=lambda t: -t[1])[:6]
        self.diag.setText(f"<b>diagnosis:</b> {d.label}<br>" + "<br>".join(
            f"{k}: {'█' * int(round(20 * v))} {100 * v:.0f} %" for k, v in probs))
        if getattr(d, "saliency", None) is not None:
            self.sal.setPixmap(to_pixmap(saliency_overlay(crop, np.asarray(d.saliency)), 128))
