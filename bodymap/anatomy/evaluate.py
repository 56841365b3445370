"""Scores a registration against synthetic ground truth (truth.npz's vertex -> template map)."""
from __future__ import annotations

import numpy as np

from bodymap import taxonomy as tx
from bodymap.anatomy.labels import RegionLabels
from bodymap.anatomy.register import Correspondence
from bodymap.anatomy.template import LabelledTemplate


def score(corr: Correspondence, labels: RegionLabels, truth_face: np.ndarray, truth_bary: np.ndarray,
          template: LabelledTemplate) -> dict:
    """Agreement of labels and correspondence with the truth, per scan vertex.

    truth_face (n,) / truth_bary (n, 3): the true template point of each scan vertex. Returns
    level-1 / level-2 / laterality agreement, ear sub-region agreement on true ear vertices, and
    the correspondence error in mm on the template (median, 95th percentile).
    """
    true_corner = template.faces[truth_face, np.argmax(truth_bary, axis=1)]
    site_t = template.site[true_corner]
    l1, l2 = tx.level_lut(1), tx.level_lut(2)
    ear_t = template.ear[true_corner]
    on_ear = ear_t > 0
    tri = template.vertices[template.faces[truth_face]]
    p_true = np.einsum("nj,njd->nd", truth_bary.astype(np.float64), tri)
    err = np.linalg.norm(corr.template_points(template.vertices, template.faces) - p_true, axis=1)
    return {
        "vertices": int(len(site_t)),
        "level1": float(np.mean(l1[labels.site] == l1[site_t])),
        "level2": float(np.mean(l2[labels.site] == l2[site_t])),
        "laterality": float(np.mean(labels.side == template.side[true_corner])),
        "ear_vertices": int(on_ear.sum()),
        "ear": float(np.mean(labels.ear[on_ear] == ear_t[on_ear])) if on_ear.any() else float("nan"),
        "corr_median_mm": float(np.median(err)),
        "corr_p95_mm": float(np.percentile(err, 95)),
    }
