"""Typed tracking records (bodymap.records): one status per lesion, worked out in one place, one
palette for every output, and tracking files of older versions still loading."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bodymap.records import (STYLES, UNCERTAIN, MissingLesion, NewLesion, Status, TrackedPair, changes, counts,
                             markers, summary)
from bodymap.track import Tracking

ROOT = Path(__file__).resolve().parents[1]


def _pair(id1, id2, conf=0.9, flags=(), reviewed=False, **kw) -> dict:
    """A pair as older tracking.json files wrote it (no status key)."""
    return {"id1": id1, "id2": id2, "confidence": conf, "distance_mm": 1.0, "reviewed": reviewed,
            "diameter1_mm": 3.0, "diameter2_mm": 4.5, "diameter_change_mm": 1.5, "diameter_change_pct": 50.0,
            "flags": list(flags), "region": "back", **kw}


def _tracking() -> Tracking:
    pairs = [_pair(1, 11), _pair(2, 12, flags=["grown", "colour change"]), _pair(3, 13, conf=UNCERTAIN - 0.1),
             _pair(4, 14, conf=0.2, flags=["grown"], reviewed=True),
             _pair(5, 15, flags=["grown"], status="matched")]  # a file of the version before grown was a status
    new = [{"id2": 16, "diameter_mm": 3.5, "flags": ["new >= 3 mm"]}, {"id2": 17, "diameter_mm": 1.0, "flags": [],
                                                                       "reviewed": True}]
    missing = [{"id1": 6, "diameter_mm": 2.0, "flags": ["missing"]}]
    return Tracking(pairs, new, missing, np.zeros((7, 3)), np.zeros(7, np.int64), np.zeros((7, 3)),
                    {"ids2": list(range(11, 18))})


def test_status_is_worked_out_once_and_older_files_load_the_same(tmp_path):
    t = _tracking()
    assert all(isinstance(p, TrackedPair) for p in t.pairs)
    assert [p.status for p in t.pairs] == [Status.MATCHED, Status.GROWN, Status.UNCERTAIN, Status.GROWN, Status.GROWN]
    # reviewed is a mark, not a status: a confirmed pair is never uncertain, and still grown
    assert t.pairs[3].reviewed and t.pairs[3].status is Status.GROWN
    assert isinstance(t.new[0], NewLesion) and t.new[1].reviewed and isinstance(t.missing[0], MissingLesion)
    assert counts(t) == {Status.MATCHED: 1, Status.GROWN: 3, Status.UNCERTAIN: 1, Status.NEW: 2, Status.MISSING: 1}
    assert summary(t) == "5 matched (3 grown, 1 uncertain), 2 new, 1 missing; 4 flagged"
    t.save_json(tmp_path / "t.json")
    back = Tracking.load_json(tmp_path / "t.json")
    assert back.pairs == t.pairs and back.new == t.new and back.missing == t.missing
    assert back.to_dict()["pairs"][1]["status"] == "grown"
    t.save_csv(tmp_path / "t.csv")
    st = [r.split(",")[0] for r in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    assert st == ["matched", "grown", "uncertain", "grown", "grown", "new", "new", "missing"]


def test_a_malformed_tracking_names_its_source():
    import pytest

    with pytest.raises(ValueError, match="project.bodymap"):
        Tracking.from_dict({"pairs": [{"id1": 1}], "new": [], "missing": []}, "project.bodymap")


def test_one_palette_for_markers_table_and_maps():
    from bodymap.export.changemap import _marks

    t = _tracking()
    c1, l1, c2, l2 = markers(t)
    for p in t.pairs:  # a pair shows the same colour and label (its visit-1 number) on both visits
        assert c1[p.id1] == c2[p.id2] == STYLES[p.status].rgb and l1[p.id1] == l2[p.id2]
    assert l2[12] == "2↑" and l2[13] == "3~" and l2[16] == "N16" and l1[6] == "6?" and l1[1] == "1"
    assert c2[16] == STYLES[Status.NEW].rgb and c1[6] == STYLES[Status.MISSING].rgb
    m1, m2 = _marks(t)  # the exported change map (PNG, PDF) marks exactly as the GUI does
    assert m1 == {i: (l1[i], c1[i]) for i in c1} and m2 == {i: (l2[i], c2[i]) for i in c2}
    ch2, ch1 = changes(t, 1), changes(t, 0)
    assert ch2[12] == ("grown (#2, +1.5 mm), colour", Status.GROWN) and ch2[13][1] is Status.UNCERTAIN
    assert ch2[14][0].endswith("✓") and ch2[16][1] is Status.NEW and ch1[6] == ("missing", Status.MISSING)
    assert len({s.rgb for s in STYLES.values()}) == len(Status)  # every status its own colour


def test_no_other_module_defines_a_status_colour():
    """Status colours live in bodymap.records only (issue 17): no dict of status -> colour elsewhere."""
    pat = re.compile(r"""["'](matched|grown|new|missing|uncertain)["']\s*:\s*(\(\s*\d|["']#[0-9a-fA-F]{3,6})""")
    hits = [f"{f.relative_to(ROOT)}:{n}" for d in ("bodymap", "gui") for f in sorted((ROOT / d).rglob("*.py"))
            if f.name != "records.py" for n, line in enumerate(f.read_text().splitlines(), 1) if pat.search(line)]
    assert hits == []
