"""The second look (bodymap.secondlook): a lesion the detector missed on one visit is found
where its partner says it should be, and paired; a truly new lesion stays new."""
from __future__ import annotations

import numpy as np
import pytest

from bodymap.pipeline import load_visit, track_visits


@pytest.fixture(scope="module")
def detected(small_analysed, small_patient):
    """Both visits of the small patient with their detected lesions and registrations
    (conftest.small_analysed), tracked once without the second look, and each visit's true
    lesions (bodymap.trackeval.truth_lesion_set)."""
    from bodymap.trackeval import truth_lesion_set

    v1, v2 = (load_visit(d) for d in small_analysed)
    t = track_visits(v1, v2, second_look=False)
    return v1, v2, t, [truth_lesion_set(p) for p in small_patient]


def _copy(v):
    import copy

    from bodymap.track import Visit

    return Visit(v.scan, copy.deepcopy(v.lesions), v.correspondence)


def _visible_pair(v1, t) -> dict:
    """A confidently paired, clearly visible lesion (what a detector may still miss on one visit)."""
    by1 = {l.id: l for l in v1.lesions.lesions}
    return max((p for p in t.pairs if p.confidence > 0.5 and by1[p.id1].box_px is not None),
               key=lambda p: min(p.diameter1_mm, p.diameter2_mm) * by1[p.id1].contrast_de)


def test_a_lesion_deleted_from_one_visit_is_found_again_and_paired(detected):
    v1, v2, t, _ = detected
    p = _visible_pair(v1, t)
    gone = next(l for l in v1.lesions.lesions if l.id == p.id1)
    a, b = _copy(v1), _copy(v2)
    a.lesions.lesions = [l for l in a.lesions.lesions if l.id != gone.id]
    before = track_visits(_copy(a), _copy(b), second_look=False)
    assert p.id2 in {n.id2 for n in before.new}  # without the second look: called new
    after = track_visits(a, b)
    rec = after.info["second_look"]["visit1"]
    assert [r["from_id"] for r in rec].count(p.id2) == 1
    rid = next(r["id"] for r in rec if r["from_id"] == p.id2)
    assert after.partner()[p.id2] == rid
    found = next(l for l in a.lesions.lesions if l.id == rid)
    assert found.source == "second look" and str(p.id2) in found.note
    assert np.linalg.norm(np.subtract(found.point_mm, gone.point_mm)) < 2.0
    assert abs(found.diameter_mm - gone.diameter_mm) < 0.5 * gone.diameter_mm and found.region
    assert rid > max(l.id for l in v1.lesions.all)  # a new id, never one of the list's
    assert p.id2 not in {n.id2 for n in after.new}


def test_a_truly_new_lesion_stays_new(detected):
    """The same lesion, deleted from visit 1's list and painted over on scan 1's texture (skin
    there now, as for a lesion that appeared since): the second look finds nothing and it stays new."""
    from bodymap.track import Visit

    v1, v2, t, _ = detected
    p = _visible_pair(v1, t)
    gone = next(l for l in v1.lesions.lesions if l.id == p.id1)
    scan = v1.scan.copy()
    tex = scan.texture
    x0, y0, x1, y1 = (int(round(c)) for c in gone.box_px)
    m = max(3, (x1 - x0) // 2)
    X0, Y0, X1, Y1 = max(0, x0 - m), max(0, y0 - m), x1 + m + 1, y1 + m + 1
    ring = np.concatenate([tex[Y0:Y1, X0], tex[Y0:Y1, X1 - 1], tex[Y0, X0:X1], tex[Y1 - 1, X0:X1]])
    tex[Y0:Y1, X0:X1] = np.median(ring, axis=0).astype(np.uint8)  # skin where the lesion was
    a = _copy(v1)
    a = Visit(scan, a.lesions, a.correspondence)
    a.lesions.lesions = [l for l in a.lesions.lesions if l.id != gone.id]
    after = track_visits(a, _copy(v2))
    assert p.id2 in {n.id2 for n in after.new}
    assert p.id2 not in {r["from_id"] for r in after.info["second_look"]["visit1"]}


def test_reviews_of_lesions_the_second_look_found_apply_to_the_next_tracking(detected, small_analysed, tmp_path,
                                                                            monkeypatch):
    """`bodymap review` of a tracking may name a lesion its second look found; the next `bodymap
    track` of the same visits finds it again and applies the review (a confirmed pair stays
    reviewed, a rejected pair is never made again, the found lesion stays) and keeps it in
    reviews.json."""
    import json
    import shutil

    from bodymap.cli import main
    from bodymap.lesions import LesionSet
    from bodymap.pipeline import folder_scan, write_tracking
    from bodymap.track import Reviews

    monkeypatch.setenv("BODYMAP_HOME", str(tmp_path / "home"))  # a review store of its own
    v1, v2, t, _ = detected
    p = _visible_pair(v1, t)
    d1 = tmp_path / "visit1"  # visit 1 analysed again, its detector missing a visible lesion
    shutil.copytree(small_analysed[0], d1, ignore=shutil.ignore_patterns("reviews.json"))
    ls = LesionSet.load_json(d1 / "lesions.json")
    ls.lesions = [l for l in ls.lesions if l.id != p.id1]
    ls.scan = str(folder_scan(small_analysed[0], ls).resolve())
    ls.save_json(d1 / "lesions.json")
    out = tmp_path / "tracking"
    track = ["track", str(d1), str(small_analysed[1]), "--out", str(out), "--quiet"]

    def tracked() -> tuple[dict, dict]:
        assert main(track) == 0
        t = json.loads((out / "tracking.json").read_text())
        return t, {(q["id1"], q["id2"]): q for q in t["pairs"]}

    first = track_visits(load_visit(d1), load_visit(small_analysed[1]))  # what `bodymap track` wrote (no map)
    write_tracking(first, out)
    rid = next(r["id"] for r in first.info["second_look"]["visit1"] if r["from_id"] == p.id2)
    assert first.partner()[p.id2] == rid  # found again (a new id) and paired
    assert main(["review", str(out), "--confirm", f"{rid}:{p.id2}"]) == 0
    t2, pairs = tracked()
    assert pairs[(rid, p.id2)]["reviewed"] and pairs[(rid, p.id2)]["confidence"] == 1.0
    assert t2["info"]["reviews"]["confirmed"] == [[p.id2, rid]]
    assert Reviews.load(out / "reviews.json").confirmed == {p.id2: rid}
    assert main(["review", str(out), "--reject", f"{rid}:{p.id2}"]) == 0
    t3, pairs = tracked()
    assert (rid, p.id2) not in pairs
    assert rid in {m["id1"] for m in t3["missing"]} | {i for i, _ in pairs}  # kept: the clinician saw it
    kept = Reviews.load(out / "reviews.json")
    assert kept.rejected == {(p.id2, rid)} and not kept.confirmed


def test_a_visit_1_lesion_is_looked_for_where_the_pair_map_puts_it_on_scan_2(monkeypatch):
    """place_on_scan2 reads the tracking's pair map (scan 2's vertices on scan 1) backwards:
    scan 2 here is scan 1 turned and moved, and the pair map the true one, so each visit-1
    lesion lands on the same face of scan 2 with the same weights; with no pair map (a tracking
    read from a file) the registrations' template positions are used."""
    from types import SimpleNamespace

    import trimesh
    from scipy.spatial.transform import Rotation

    from bodymap.scan import Scan, ScanMeta
    from bodymap.secondlook import SecondLookOptions, place_on_scan2
    from bodymap.track import Tracking

    m = trimesh.creation.icosphere(3, radius=100.0)
    s1 = Scan(np.asarray(m.vertices), np.asarray(m.faces), meta=ScanMeta(source="one"), validate=False)
    R = Rotation.from_euler("xyz", [40, 10, -70], degrees=True).as_matrix()
    s2 = Scan(s1.vertices @ R.T + [0.0, 400.0, 0.0], s1.faces, meta=ScanMeta(source="two"), validate=False)
    rng = np.random.default_rng(5)
    face = rng.choice(s1.n_faces, 12, replace=False)
    bary = rng.dirichlet([4, 4, 4], 12)
    lesions = [SimpleNamespace(id=k, face=int(f), bary=b, point_mm=s1.points_from_barycentric(f[None], b[None])[0])
               for k, (f, b) in enumerate(zip(face, bary))]
    t = Tracking([], [], [], np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3)), pair_points=s1.vertices.copy())
    visit1 = SimpleNamespace(scan=s1, lesions=SimpleNamespace(lesions=lesions))
    visit2 = SimpleNamespace(scan=s2, lesions=SimpleNamespace(lesions=[]))
    f2, b2 = place_on_scan2(t, visit1, visit2, lesions, SecondLookOptions())
    expect = s2.points_from_barycentric(face, bary)
    assert np.abs(s2.points_from_barycentric(f2, b2) - expect).max() < 1e-6
    # without it (a tracking read from a file) the registrations' template positions carry them
    import bodymap.track

    calls = []
    monkeypatch.setattr(bodymap.track, "template_positions", lambda scan, corr: calls.append(scan) or scan.vertices)
    t.pair_points = None
    place_on_scan2(t, SimpleNamespace(**vars(visit1), correspondence=None),
                   SimpleNamespace(**vars(visit2), correspondence=None), lesions, SecondLookOptions())
    assert calls == [s1, s2]
