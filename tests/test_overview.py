"""bodymap.overview (triage order, the body diagram's geometry, region counts, the 3D marks)
and the region search's everyday words (bodymap.taxonomy.region_matches). Fast: a box stands
in for the template, records are made by hand."""
from __future__ import annotations

import numpy as np
import pytest

from bodymap import overview as ov
from bodymap import taxonomy as tx
from bodymap.lesions import Lesion, LesionSet
from bodymap.records import FLAG_COLOUR, FLAG_GROWN, MissingLesion, NewLesion, TrackedPair


def lesion(i, d=2.0, point=(0, 0, 0), normal=(0, -1, 0), code="trunk/anterior", side="left", face=0,
           bary=(1, 0, 0)):
    return Lesion(i, list(point), face, list(bary), list(normal), d, d * d, [50, 10, 10], [70, 8, 12], 10.0, 0.9,
                  region={"code": code, "side": side, "description": tx.describe(tx.SITE_INDEX[code],
                                                                               tx.LATERALITY.index(side))})


class _Tracking:  # the public face of bodymap.track.Tracking that triage reads
    def __init__(self, pairs=(), new=(), missing=()):
        self.pairs, self.new, self.missing = list(pairs), list(new), list(missing)


def test_triage_orders_by_concern():
    ls = LesionSet([lesion(1, 5.0), lesion(2, 2.0), lesion(3, 4.0), lesion(4, 6.0), lesion(5, 3.5), lesion(6, 3.0),
                    lesion(7, 8.0)])
    tr = _Tracking(
        pairs=[TrackedPair(10, 3, diameter_change_mm=1.2, flags=[FLAG_GROWN], confidence=0.95),
               TrackedPair(11, 4, diameter_change_mm=0.1, flags=[FLAG_COLOUR], colour_delta_e=9.0, confidence=0.95),
               TrackedPair(12, 5, diameter_change_mm=2.0, flags=[FLAG_GROWN, FLAG_COLOUR], confidence=0.95),
               TrackedPair(13, 7, diameter_change_mm=0.0, confidence=0.95)],
        new=[NewLesion(1, 5.0), NewLesion(2, 2.0)], missing=[MissingLesion(20)])
    diag = {7: {"label": "melanoma", "probs": {"melanoma": 0.7, "common_nevus": 0.3}},
            6: {"label": "seborrheic_keratosis", "probs": {"seborrheic_keratosis": 0.9, "melanoma": 0.1}},
            4: {"label": "mel", "probs": {"mel": 0.9, "nv": 0.1}, "ood": True}}  # ood: not trusted
    items = ov.triage(ls, tr, diag)
    # new >= 3 mm, then grown + colour, grown, colour, then the diagnosis alone; a new 2 mm lesion,
    # a stable one and a benign diagnosis are not listed
    assert [c.lesion_id for c in items] == [1, 5, 3, 4, 7]
    # a melanoma check over the threshold lists a lesion and ranks it above any suspicion alone
    diag[6] = {**diag[6], "melanoma_flag": True}
    items = ov.triage(ls, tr, diag)
    assert [c.lesion_id for c in items] == [1, 5, 3, 4, 6, 7]
    assert items[4].reasons[0] == "melanoma check: over the model's threshold"
    diag[6]["melanoma_flag"] = False
    diag[4]["melanoma_flag"] = True  # out of distribution: no verdict to act on
    assert [c.lesion_id for c in ov.triage(ls, tr, diag)] == [1, 5, 3, 4, 7]
    assert items[0].reasons == ["new, 5.0 mm"]
    assert "grown +2.0 mm" in items[1].reasons and any("colour" in r for r in items[1].reasons)
    assert items[-1].reasons == ["diagnosis: melanoma (70 % suspicious)"]
    assert ov.triage(ls, None, None) == []  # first visit, no diagnosis: nothing to say
    # keyboard walk over the list wraps around
    order = [c.lesion_id for c in items]
    assert ov.step(order, None) == 1 and ov.step(order, None, forward=False) == 7
    assert ov.step(order, 1) == 5 and ov.step(order, 7) == 1 and ov.step(order, 1, forward=False) == 7
    assert ov.step([], 3) is None


def test_diagnosis_names_are_readable():
    assert ov.diagnosis_name("seborrheic_keratosis") == "seborrheic keratosis"
    assert ov.diagnosis_name("mel") == "melanoma" and ov.diagnosis_name(None) == ""


def _box_template():
    """A box standing on z = 0 (x: -200..200 left-right, y: -100..100, z: 0..1000), its front
    half anterior torso and back half posterior torso, left half left."""
    import trimesh

    m = trimesh.creation.box(extents=(400, 200, 1000))
    m = m.subdivide().subdivide().subdivide()
    v = np.asarray(m.vertices) + [0, 0, 500]
    site = np.where(v[:, 1] < 0, tx.SITE_INDEX["trunk/anterior"], tx.SITE_INDEX["trunk/posterior"]).astype(np.uint8)
    side = np.where(v[:, 0] > 0, 1, 2).astype(np.uint8)  # +x: the subject's left
    return v, np.asarray(m.faces), site, side


def test_body_diagram_places_lesions_front_and_back():
    from bodymap.scan import Scan

    v, f, site, side = _box_template()
    d = ov.BodyDiagram(v, f, site, side, height_px=220)
    W, H = d.size
    assert H == 220 and d.images[0].shape == (H, W, 3)
    # the subject's left (+x) is on the viewer's right from the front, on the left from the back
    front_left = d.to_pixels(0, [[150, -100, 500]])[0]
    back_left = d.to_pixels(1, [[150, 100, 500]])[0]
    assert front_left[0] > W / 2 > back_left[0] and abs(front_left[1] - H / 2) < 2
    assert d.region_at(0, *front_left) == ("trunk/anterior", "left")
    assert d.region_at(1, *back_left) == ("trunk/posterior", "left")
    assert d.region_at(0, 1, 1) is None
    assert ("trunk/anterior", "right") in d.anchors[0] and ("trunk/posterior", "left") in d.anchors[1]
    # lesions of a scan in the template's frame: a registration that is the identity
    scan = Scan(v, f)
    fi = [int(np.argmin(np.linalg.norm(v[f].mean(1) - p, axis=1))) for p in ([150, -100, 500], [-150, 100, 800])]
    pts = [v[f[k]].mean(0) for k in fi]
    ls = LesionSet([lesion(1, point=pts[0], face=fi[0], bary=(1 / 3,) * 3, normal=(0, -1, 0)),
                    lesion(2, point=pts[1], face=fi[1], bary=(1 / 3,) * 3, normal=(0, 1, 0), code="trunk/posterior",
                           side="right")])

    class Corr:
        def template_points(self, tv, tf):
            return tv  # scan vertex k is template vertex k

    p = d.place(ls, scan, Corr())
    assert p.registered and list(p.side) == [0, 1]
    assert d.region_at(0, *p.xy[0]) == ("trunk/anterior", "left")
    assert d.region_at(1, *p.xy[1]) == ("trunk/posterior", "right")
    assert p.nearest(0, *p.xy[0]) == 1 and p.nearest(1, *p.xy[0]) != 1
    q = d.place(ls, scan, None)  # unregistered: the scan's own frame (here the same)
    assert not q.registered and list(q.side) == [0, 1] and np.allclose(q.xy, p.xy, atol=1.5)
    counts = ov.region_counts(ls, p.side)
    assert counts == {(0, "trunk/anterior", "left"): 1, (1, "trunk/posterior", "right"): 1}
    assert ov.region_counts(ls, p.side, ids={2}) == {(1, "trunk/posterior", "right"): 1}
    assert ov.region_text("trunk/posterior", "right") == "right posterior torso"


@pytest.mark.parametrize("query,code,side,hit", [
    ("back", "trunk/posterior", "left", True),
    ("back", "upper_extremity/hand/dorsal", "left", False),  # 'back' is the back, not the back of a hand
    ("back of hand", "upper_extremity/hand/dorsal", "left", True),
    ("posterior torso", "trunk/posterior", "right", True),
    ("chest", "trunk/anterior", "left", True),
    ("arm", "upper_extremity/forearm", "right", True),
    ("left arm", "upper_extremity/forearm", "right", False),
    ("hand", "upper_extremity/hand/palm", "right", True),
    ("left hand", "upper_extremity/hand/palm", "left", True),
    ("shin", "lower_extremity/lower_leg", "left", True),
    ("thigh", "lower_extremity/knee", "left", False),
    ("", "lower_extremity/knee", "left", True),
])
def test_region_search_knows_everyday_words(query, code, side, hit):
    region = lesion(1, code=code, side=side).region
    assert tx.region_matches(query, region) is hit


def test_surface_ring_follows_curved_skin_and_marker_leaves_the_centre_free():
    from scipy.spatial import cKDTree

    # the inside of a cylinder of radius 40 mm along z (concave skin: the bend of an elbow, a
    # neck's fold): a flat 12 mm ring around a point on it goes under the skin at its sides; the
    # surface ring stays lift_mm off the skin all round
    a, z = np.meshgrid(np.linspace(0, 2 * np.pi, 400, endpoint=False), np.linspace(-60, 60, 121))
    verts = np.c_[40 * np.cos(a).ravel(), 40 * np.sin(a).ravel(), z.ravel()]
    p, n = np.array([40.0, 0, 0]), np.array([-1.0, 0, 0])
    ring = ov.surface_ring(verts, cKDTree(verts), p, n, 12.0, lift_mm=0.8)
    r = np.hypot(ring[:, 0], ring[:, 1])
    assert np.all(np.abs(r - 39.2) < 0.3), (r.min(), r.max())
    flat = p + 0.8 * n + 12.0 * np.c_[np.zeros(65), np.sin(np.linspace(0, 2 * np.pi, 65)), np.zeros(65)]
    assert np.hypot(flat[:, 0], flat[:, 1]).max() > 40.5  # what the old flat disc did: under the skin
    m = ov.marker_offsets([p], [n], [4.0])[0]
    assert np.linalg.norm(m - p) > 4.0 / 2 + 2  # beside the lesion, not on its centre


def test_report_rows_say_when_the_melanoma_check_is_over_the_threshold():
    from bodymap.export.report import lesion_rows

    ls = LesionSet([lesion(1, 5.0), lesion(2, 3.0)])
    cols, rows = lesion_rows(ls, {1: {"label": "mel", "melanoma_flag": True}, 2: {"label": "nv", "melanoma_flag": False}})
    dx = cols.index("diagnosis")
    assert rows[0][dx] == "melanoma (melanoma check: over)"
    assert rows[1][dx] and "melanoma check" not in rows[1][dx]
