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
   mean of the model's vertices within DISTAL_MM (on the model's surface) of its fingertip;
5. the hand alone leaves the forearm free: a straight arm through the trunk reaches a hand
   held before the thighs as well as the bent arm does, and the hand hangs where the scan's
   lies flat. So the arm between shoulder and tip gives keypoints too: on each surface the arm
   is the band of points whose geodesic distances from the shoulder and from the tip add up to
   little more than the arm's length, and at each fraction of ARM_RINGS of that length the ring
   of the band at that distance from the shoulder (RING_MM either way) has its centre inside
   the arm. The scan's ring centre is the target of the model's ring centre: the same
   construction on both surfaces, so its bias (the rings are slanted, the shoulder point is on
   the skin) is much the same on both;
6. and two rings either side of the elbow, placed by their geodesic distance from the tip (at
   ELBOW_RINGS of the model's fingertip-to-elbow distance): hand and forearm are as long on
   both surfaces wherever the fit put the shoulder, so these find the scan's elbow where a
   forearm swung up before the face hides it from the shoulder's distances.

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
# ring keypoints at these fractions of shoulder -> fingertip: 0.85 is the wrist, which with the
# hand's keypoint sets the forearm's direction (rings at the elbow and upper arm by this
# measure, tried on FAUST, pulled the trunk out of place: the two surfaces' rings differ more
# there, and register lets such rings move the arm only)
ARM_RINGS = (0.85,)
RING_MM = 10.0  # a ring: points within this of its geodesic distance from the shoulder
TUBE_SLACK_MM = 60.0  # the arm: d(shoulder) + d(tip) within this of the arm's length
ELBOW_RINGS = (0.8, 1.3)  # rings at these fractions of the model's fingertip -> elbow distance (step 6)
MIN_RING = 6  # vertices a ring needs on each surface (a hole or a merged arm leaves fewer)


def hand_keypoints(scan_vertices: np.ndarray, scan_faces: np.ndarray, body: np.ndarray,
                   log: list | None = None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The scan's hands as keypoints for the body model.

    scan_vertices (n, 3) mm and scan_faces (m, 3): the scan; body (13718, 3) mm: the body model
    as fitted so far, in the same frame. Returns {"left" / "right": [(model vertex indices (k,),
    target (3,) mm), ...]}: the mean of those model vertices belongs at the target; the hand's
    keypoint first, then the arm's rings (step 5) that both surfaces have. A hand not found, or
    found at an arm length the fitted arm does not have, gives none. log, if given, gets one
    dict per arm (side, arm lengths, kept or not, rings found).
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
        from_tip = dijkstra(graph, indices=[tip_of[k]], limit=arm_scan + TUBE_SLACK_MM)[0]
        model_from_tip = dijkstra(body_graph, indices=[fingertip])[0]
        model_end = np.flatnonzero(model_from_tip < DISTAL_MM)
        out[side] = [(model_end, scan_vertices[from_tip < DISTAL_MM].mean(0))]
        elbow = np.flatnonzero((l2 == names.index("elbow")) & (t.side == k))
        to_elbow = float(np.median(model_from_tip[elbow]))  # the model's fingertip -> elbow
        scan_rings = _rings(from_shoulder[k - 1], from_tip, arm_scan, to_elbow)
        model_rings = _rings(along, model_from_tip, arm_model, to_elbow)
        for ring_s, ring_m in zip(scan_rings, model_rings):
            if len(ring_s) >= MIN_RING and len(ring_m) >= MIN_RING:
                out[side].append((ring_m, scan_vertices[ring_s].mean(0)))
        if log is not None:
            log[-1]["rings"] = len(out[side]) - 1
    return out


def _rings(from_shoulder: np.ndarray, from_tip: np.ndarray, length: float, to_elbow: float) -> list[np.ndarray]:
    """Vertex indices of the arm's rings on one surface: at ARM_RINGS of the shoulder -> tip
    length from the shoulder, then at ELBOW_RINGS of to_elbow (the model's fingertip -> elbow
    distance, mm) from the fingertip (hand and forearm have the same length on both surfaces,
    wherever the fit put the shoulder). from_shoulder, from_tip (n,) geodesic mm on that
    surface; length the shoulder -> tip distance (mm)."""
    tube = from_shoulder + from_tip <= length + TUBE_SLACK_MM
    return ([np.flatnonzero(tube & (np.abs(from_shoulder - f * length) <= RING_MM)) for f in ARM_RINGS]
            + [np.flatnonzero(tube & (np.abs(from_tip - f * to_elbow) <= RING_MM)) for f in ELBOW_RINGS])
