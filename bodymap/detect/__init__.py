"""Lesion detection on texture maps (and, through the face-id buffer, on rendered views).

Every detector takes an RGB image and a mask of the pixels that show skin of the scan, and
returns ``Boxes`` in that image's pixels. ``texture.detect_texture`` runs a detector tile by
tile over a scan's UV atlas, and ``bodymap.lesions.measure_boxes`` turns boxes into lesion
records on the 3D surface.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


@dataclasses.dataclass
class Boxes:
    """Axis-aligned boxes in image pixels (x = column, y = row, row 0 at the top).

    xyxy : (k, 4) float32 x0, y0, x1, y1 (x1, y1 exclusive)
    score : (k,) float32 detector confidence in [0, 1]
    masks : None, or k bool arrays (y1 - y0, x1 - x0) of integer boxes: the pixels the detector
        gave each lesion (so two lesions that touch, or a lesion and the patch it touches,
        stay apart when they are measured)
    """

    xyxy: np.ndarray
    score: np.ndarray
    masks: list | None = None

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.score)

    def shifted(self, dx: float, dy: float) -> "Boxes":
        """The same boxes moved by (dx, dy) pixels."""
        return Boxes(self.xyxy + np.array([dx, dy, dx, dy], np.float32), self.score, self.masks)

    @staticmethod
    def concat(parts: list["Boxes"]) -> "Boxes":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Boxes.empty()
        masks = [m for p in parts for m in p.masks] if all(p.masks is not None for p in parts) else None
        return Boxes(np.concatenate([p.xyxy for p in parts]).astype(np.float32),
                     np.concatenate([p.score for p in parts]).astype(np.float32), masks)

    def select(self, keep: np.ndarray) -> "Boxes":
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Boxes(self.xyxy[idx], self.score[idx], None if self.masks is None else [self.masks[i] for i in idx])


class Detector(Protocol):
    """Finds lesions in an image: ``detect(image (h, w, 3) uint8, mask (h, w) bool) -> Boxes``.

    ``name`` identifies the detector in lesion records; ``tile`` is the tile side (pixels) it
    wants when run over a large texture, ``overlap`` the margin tiles share (pixels).
    """

    name: str
    tile: int
    overlap: int

    def detect(self, image: np.ndarray, mask: np.ndarray) -> Boxes: ...


def nms(boxes: Boxes, iou: float = 0.3) -> Boxes:
    """Greedy non-maximum suppression: keep the highest-scoring of boxes overlapping more than
    ``iou`` (intersection over the smaller box, so a box inside another counts as a duplicate).
    Boxes with masks overlap by their masks' pixels: a lesion beside a larger patch, whose box
    lies inside the patch's box, is not the patch's duplicate."""
    if len(boxes) == 0:
        return boxes
    b = boxes.xyxy.astype(np.float64)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    order = np.argsort(-boxes.score, kind="stable")
    keep = []
    alive = np.ones(len(b), bool)
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        w = np.clip(np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0]), 0, None)
        h = np.clip(np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1]), 0, None)
        over = w * h / np.maximum(np.minimum(area[i], area), 1e-9)
        if boxes.masks is not None:
            for j in np.flatnonzero(alive & (over > iou)):
                over[j] = _mask_overlap(b[i], boxes.masks[i], b[j], boxes.masks[j]) if j != i else 1.0
        alive &= ~(over > iou)
    return boxes.select(np.array(keep, dtype=np.int64))


def _mask_overlap(bi: np.ndarray, mi: np.ndarray, bj: np.ndarray, mj: np.ndarray) -> float:
    """Shared pixels of two masked boxes (x0, y0, x1, y1) over the smaller mask's pixels."""
    x0, y0 = int(max(bi[0], bj[0])), int(max(bi[1], bj[1]))
    x1, y1 = int(min(bi[2], bj[2])), int(min(bi[3], bj[3]))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    a = mi[y0 - int(bi[1]):y1 - int(bi[1]), x0 - int(bi[0]):x1 - int(bi[0])]
    c = mj[y0 - int(bj[1]):y1 - int(bj[1]), x0 - int(bj[0]):x1 - int(bj[0])]
    return float((a & c).sum()) / max(min(mi.sum(), mj.sum()), 1)


def get_detector(name: str = "classical", **kwargs) -> Detector:
    """A detector by name: 'classical' (contrast blobs, no weights) or 'yolo' (shipped or given
    weights: kwargs weights=PATH)."""
    if name == "classical":
        from bodymap.detect.classical import ContrastDetector

        return ContrastDetector(**kwargs)
    if name == "yolo":
        from bodymap.detect.yolo import YoloDetector

        return YoloDetector(**kwargs)
    raise ValueError(f"unknown detector {name!r} (choose 'classical' or 'yolo')")
