"""The labelled template body: anny's default body in rest pose (mm, z up, facing -y, subject's
left = +x) with an anatomic site, a laterality and an ear sub-region on every vertex.

The labels are data (bodymap/data/template_labels.npz), made by
scripts/make_template_labels.py from the body model's own skinning weights, joints, normals and
morph targets; the geometry comes from anny at run time.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from bodymap import taxonomy

LABELS_FILE = Path(__file__).resolve().parents[1] / "data" / "template_labels.npz"


@dataclasses.dataclass(frozen=True)
class LabelledTemplate:
    """vertices (n, 3) mm; faces (m, 3); site (n,) uint8 index into taxonomy.SITES (finest level);
    side (n,) uint8 index into taxonomy.LATERALITY; ear (n,) uint8 index into taxonomy.EAR_REGIONS."""

    vertices: np.ndarray
    faces: np.ndarray
    site: np.ndarray
    side: np.ndarray
    ear: np.ndarray

    def site_at_level(self, level: int) -> np.ndarray:
        """(n,) site indices at taxonomy level 1, 2 or 3 (a coarser site where 3 does not apply)."""
        return taxonomy.level_lut(level)[self.site]

    def face_site(self) -> np.ndarray:
        """(m,) the majority site of each face's corners (first corner on a three-way tie)."""
        s = self.site[self.faces]
        return np.where(s[:, 1] == s[:, 2], s[:, 1], s[:, 0])


@functools.lru_cache(maxsize=1)
def load_template() -> LabelledTemplate:
    """The labelled template (the body model is built on first use; labels from the data file)."""
    from bodymap.anatomy.body import body_model

    tm = body_model().template()
    with np.load(LABELS_FILE) as z:
        site, side, ear = z["site"], z["side"], z["ear"]
    if len(site) != len(tm.vertices):
        raise RuntimeError(f"{LABELS_FILE}: labels for {len(site)} vertices, template has {len(tm.vertices)}; "
                           "rerun scripts/make_template_labels.py")
    return LabelledTemplate(tm.vertices, tm.faces, site, side, ear)


# Non-skin tissue kinds of non_skin_kind(), index = code (0: skin).
NON_SKIN_KINDS = ("skin", "lips", "nipple", "nail", "eye")


@functools.lru_cache(maxsize=1)
def non_skin_kind() -> np.ndarray:
    """(13718,) uint8: the non-skin tissue each template vertex lies on, as an index into
    NON_SKIN_KINDS (0 skin; lips, nipples and areolae, nails, eyes), from the body model's morph
    targets, hand geometry and UV segmentation (the same sources scripts/make_template_labels.py
    uses)."""
    from bodymap.anatomy.body import body_model, landmark_weights

    bm = body_model()
    w = landmark_weights(bm)
    out = np.zeros(len(w["lips"]), np.uint8)
    for name in ("lips", "nipple", "nail"):
        out[(w[name] > 0.2) & (out == 0)] = NON_SKIN_KINDS.index(name)
    eyes = bm._faces_labelled(("eye_front.L", "eye_front.R", "eye_back.L", "eye_back.R"))
    out[np.unique(bm.faces[eyes])] = NON_SKIN_KINDS.index("eye")
    return out


def non_skin_vertices() -> np.ndarray:
    """(13718,) bool: template vertices on tissue that is not skin for lesion counting (lips,
    nipples and areolae, nails, eyes); see non_skin_kind."""
    return non_skin_kind() > 0
