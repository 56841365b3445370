"""Hand keypoints found on the scan's surface, to pull a misfitted arm's hand where it is.

The body-model fit is a local descent on surface distances: an arm that starts hanging cannot
reach hands raised above the head, and the distance is as happy with an arm laid on the trunk.
``register`` calls this only for an arm the fit verdict finds off the scan (a pull on every
hand moved hands the fit had right). A hand, though, is where the surface ends: walking along
the skin from the trunk, legs and head, the farthest points are the fingertips. So:

1. on the scan's edge graph, the geodesic distance from every scan point the current fit
   already explains with trunk, legs or head (within 20 mm of them);
2. the two farthest points, one after the other (the second farthest from the first too),
   are the hands' tips;
3. each is given to the arm whose shoulder is geodesically nearer (the pair with the smaller
   sum), and kept only when that shoulder-to-tip length is within 30 % of the fitted arm's;
4. the keypoint is the mean of the scan points within DISTAL_MM of the tip, its partner the
   mean of the model's vertices within DISTAL_MM (on the model's surface) of its fingertip.

Dijkstra on edges overestimates geodesics by about 8 %; that is far below what tells a hand
from an elbow, and it needs no factorisation of a 300k-face scan.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from bodymap.geodesic import mesh_graph

DISTAL_MM = 60.0  # the hand's end, both sides: a fist and an open hand differ by a few cm
EXPLAINED_MM = 20.0  # scan points this close to the fitted trunk, legs or head are not hands
ARM_LENGTH_TOLERANCE = 0.3  # shoulder -> tip on the scan within 30 % of the fitted arm's


def hand_keypoints(scan_vertices: np.ndarray, scan_faces: np.ndarray, body: np.ndarray,
                   log: list | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The scan's hands as keypoints for the body model.

    scan_vertices (n, 3) mm and scan_faces (m, 3): the scan; body (13718, 3) mm: the body model
    as fitted so far, in the same frame. Returns {"left" / "right": (model vertex indices (k,),
    target (3,) mm)}: the mean of those model vertices belongs at the target. A hand not found, or found
    at an arm length the fitted arm does not have, gives none. log, if given, gets one dict per
    arm (side, arm lengths, kept or not).
    """
    from bodymap import taxonomy as tx
    from bodymap.anatomy.template import load_template

    t = load_template()
    l1, l2 = tx.level_lut(1)[t.site], tx.level_lut(2)[t.site]
    names = [s.name for s in tx.SITES]
    graph = mesh_graph(scan_vertices, scan_faces, shortcuts=False)
    tree = cKDTree(scan_vertices)
    not_arm = l1 != names.index("upper extremity")
    d, i = tree.query(body[not_arm], distance_upper_bound=EXPLAINED_MM)
    sources = np.unique(i[np.isfinite(d)])
    if len(sources) == 0:
        return {}
    dmin = dijkstra(graph, indices=sources, min_only=True)
    tips = []
    for _ in range(2):
        far = np.where(np.isfinite(dmin), dmin, -1.0)  # unreachable islands are no hands
        tip = int(np.argmax(far))
        tips.append(tip)
        dmin = np.minimum(dmin, dijkstra(graph, indices=[tip], limit=float(far.max()) + 1.0)[0])
    shoulder_v = {k: np.flatnonzero((l2 == names.index("shoulder")) & (t.side == k)) for k in (1, 2)}
    shoulders = [int(tree.query(body[shoulder_v[k]].mean(0))[1]) for k in (1, 2)]
    from_shoulder = dijkstra(graph, indices=shoulders)  # (2, n)
    straight = from_shoulder[0, tips[0]] + from_shoulder[1, tips[1]]
    crossed = from_shoulder[0, tips[1]] + from_shoulder[1, tips[0]]
    tip_of = dict(zip((1, 2), tips if straight <= crossed else tips[::-1]))
    body_graph = mesh_graph(body, t.faces, shortcuts=False)
    out = {}
    for k, side in ((1, "left"), (2, "right")):
        sv = shoulder_v[k]
        start = int(sv[np.argmin(np.linalg.norm(body[sv] - body[sv].mean(0), axis=1))])
        along = dijkstra(body_graph, indices=[start])[0]
        hand = np.flatnonzero((l2 == names.index("hand")) & (t.side == k))
        fingertip = int(hand[np.argmax(along[hand])])
        arm_model = float(along[fingertip])
        arm_scan = float(from_shoulder[k - 1, tip_of[k]])
        kept = abs(arm_scan - arm_model) <= ARM_LENGTH_TOLERANCE * arm_model
        if log is not None:
            log.append({"side": side, "arm_model_mm": round(arm_model), "arm_scan_mm": round(arm_scan)
                        if np.isfinite(arm_scan) else None, "kept": bool(kept)})
        if not kept:
            continue
        near_tip = dijkstra(graph, indices=[tip_of[k]], limit=DISTAL_MM)[0] < DISTAL_MM
        model_end = np.flatnonzero(dijkstra(body_graph, indices=[fingertip], limit=DISTAL_MM)[0] < DISTAL_MM)
        out[side] = (model_end, scan_vertices[near_tip].mean(0))
    return out
