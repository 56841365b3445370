"""Anatomic-site taxonomy and the labelled template body."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from bodymap import taxonomy as tx


def test_hierarchy_is_consistent():
    codes = [s.code for s in tx.SITES]
    assert len(codes) == len(set(codes))
    for s in tx.SITES:
        if s.parent is not None:
            assert s.parent in tx.SITE_INDEX and tx.site(s.parent).level == s.level - 1
    level1 = {s.code for s in tx.SITES if s.level == 1} - {"unknown"}
    assert level1 == {"head_neck", "trunk", "upper_extremity", "lower_extremity", "anogenital"}
    level2 = {s.name for s in tx.SITES if s.level == 2}
    assert {"head", "neck", "anterior torso", "lateral torso", "posterior torso", "shoulder", "upper arm",
            "elbow", "forearm", "wrist", "hand", "buttock", "thigh", "knee", "lower leg", "ankle", "foot"} <= level2
    assert tx.ancestor(tx.SITE_INDEX["upper_extremity/hand/palm"], 1) == tx.SITE_INDEX["upper_extremity"]
    assert tx.ancestor(tx.SITE_INDEX["upper_extremity/hand/palm"], 2) == tx.SITE_INDEX["upper_extremity/hand"]
    assert tx.ancestor(tx.SITE_INDEX["trunk/anterior"], 3) == tx.SITE_INDEX["trunk/anterior"]
    assert tx.macro(tx.SITE_INDEX["upper_extremity/hand/palm"]) == "hand"
    assert tx.macro(tx.SITE_INDEX["upper_extremity/forearm"]) == "arm"
    assert tx.macro(tx.SITE_INDEX["head_neck/neck"]) == "head"
    assert set(tx.macro(i) for i in range(1, len(tx.SITES))) == set(tx.MACRO) - {"other"}
    assert len(tx.EAR_REGIONS) == 13 and len(tx.EAR_COLOURS) == 13
    assert tx.describe(tx.SITE_INDEX["upper_extremity/forearm"], 1) == "left forearm"
    with pytest.raises(KeyError, match="no_such"):
        tx.site("no_such")


@pytest.fixture(scope="module")
def template():
    from bodymap.anatomy.template import load_template

    return load_template()


def test_every_template_vertex_is_labelled(template):
    t = template
    assert len(t.site) == len(t.vertices) and (t.site > 0).all()
    present = set(np.unique(t.site).tolist())
    leaves = {i for i, s in enumerate(tx.SITES) if s.code != "unknown"
              and not any(o.parent == s.code for o in tx.SITES)}
    assert leaves <= present  # every finest site occurs on the body
    for region in range(1, 13):  # every ear region on both ears
        on = t.ear == region
        assert (t.vertices[on, 0] > 0).sum() >= 5 and (t.vertices[on, 0] < 0).sum() >= 5, tx.EAR_REGIONS[region]
    assert (t.site[t.ear > 0] == tx.SITE_INDEX["head_neck/head/ear"]).all()


def test_labels_are_left_right_symmetric(template):
    t = template
    mirror = t.vertices * np.array([-1, 1, 1])
    d, j = cKDTree(t.vertices).query(mirror)
    ok = d < 3.0
    assert ok.mean() > 0.95  # the template body is symmetric
    assert (t.site[ok] == t.site[j[ok]]).mean() > 0.97
    assert (t.ear[ok] == t.ear[j[ok]]).mean() > 0.95
    lat = t.side[ok] != 0
    swapped = {(1, 2), (2, 1)}
    assert np.mean([(a, b) in swapped for a, b in zip(t.side[ok][lat], t.side[j[ok]][lat])]) > 0.97


def test_sites_sit_where_anatomy_says(template):
    t = template
    z = t.vertices[:, 2]
    mean_z = {c: z[t.site == tx.SITE_INDEX[c]].mean() for c in
              ("head_neck/head/scalp", "head_neck/neck", "trunk/anterior", "lower_extremity/thigh",
               "lower_extremity/knee", "lower_extremity/lower_leg", "lower_extremity/foot/sole")}
    order = sorted(mean_z, key=mean_z.get, reverse=True)
    assert order == ["head_neck/head/scalp", "head_neck/neck", "trunk/anterior", "lower_extremity/thigh",
                     "lower_extremity/knee", "lower_extremity/lower_leg", "lower_extremity/foot/sole"]
    y = t.vertices[:, 1]  # the body faces -y
    assert y[t.site == tx.SITE_INDEX["trunk/anterior"]].mean() < y[t.site == tx.SITE_INDEX["trunk/posterior"]].mean() - 80
    assert y[t.site == tx.SITE_INDEX["head_neck/head/face"]].mean() < y[t.site == tx.SITE_INDEX["head_neck/head/scalp"]].mean()
