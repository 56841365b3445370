"""A clinician's reviews always apply: made with `bodymap review`, respected by the next
`bodymap track` however it is called (default output folder from another current folder, another
--out, `analyze --previous`), never applied to other scans or to lesions that changed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bodymap.cli import main
from bodymap.reviewfiles import VisitIds, gather, store_path, write_reviews
from bodymap.track import Reviews


def _tracking(folder: Path) -> dict:
    return json.loads((folder / "tracking.json").read_text())


def _respected(t: dict, rejected, confirmed: list, new: int) -> None:
    pairs = {(p["id1"], p["id2"]): p for p in t["pairs"]}
    assert rejected not in pairs
    for i, j in confirmed:
        assert (i, j) in pairs and pairs[(i, j)]["reviewed"] and pairs[(i, j)]["confidence"] == 1.0
    assert new in [p["id2"] for p in t["new"]] and [p for p in t["new"] if p["id2"] == new][0]["reviewed"]
    assert all(0.0 <= p["confidence"] <= 1.0 for p in t["pairs"])


@pytest.mark.slow
def test_reviews_made_with_the_cli_apply_to_every_later_tracking(small_analysed, small_patient, tmp_path):
    d1, d2 = small_analysed
    first = tmp_path / "a"
    first.mkdir()
    os.chdir(first)
    assert main(["track", str(d1), str(d2), "--quiet"]) == 0
    tdir = next((first / "bodymap-out").glob("*/tracking-vs-*"))  # the default folder, under the current one
    t0 = _tracking(tdir)
    pairs = sorted((p["id1"], p["id2"]) for p in t0["pairs"])
    # five pairs are all the reviews below need (how many the small patient yields varies by one or
    # two with the number of threads its scans were made with)
    assert len(pairs) >= 5
    (ri, rj), (ci, cj), (ai, aj), (bi, bj), (_, nj) = pairs[:5]
    # reject one pair, confirm one, reassign one lesion to another's partner, mark one new
    assert main(["review", str(tdir), "--reject", f"{ri}:{rj}", "--confirm", f"{ci}:{cj}",
                 "--reassign", f"{bi}:{aj}", "--new", str(nj)]) == 0
    want = dict(rejected=(ri, rj), confirmed=[(ci, cj), (bi, aj)], new=nj)

    # 1. the same command again, same folder
    assert main(["track", str(d1), str(d2), "--quiet"]) == 0
    _respected(_tracking(tdir), **want)
    # 2. from another current folder (another default output folder): found in the review store
    other = tmp_path / "b"
    other.mkdir()
    os.chdir(other)
    assert main(["track", str(d1), str(d2), "--quiet"]) == 0
    _respected(_tracking(next((other / "bodymap-out").glob("*/tracking-vs-*"))), **want)
    # 3. with an explicit, new --out
    assert main(["track", str(d1), str(d2), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    _respected(_tracking(tmp_path / "c"), **want)
    assert Reviews.load(tmp_path / "c" / "reviews.json").new == {nj}  # a copy is kept there too
    # 4. analyze --previous (the registration saved in the output folder is reused)
    e = tmp_path / "e"
    shutil.copytree(d2, e)
    assert main(["analyze", str(small_patient[1] / "scan.obj"), "--previous", str(d1), "--out", str(e),
                 "--quiet"]) == 0
    _respected(_tracking(e), **want)


def _ids(scan: str, n: int) -> VisitIds:
    return VisitIds(scan, {i: [0.0, 0.0, 10.0 * i] for i in range(1, n + 1)})


def test_reviews_of_other_scans_or_moved_lesions_are_left_out_with_a_note(tmp_path):
    v1, v2 = _ids("/p/v1.obj", 5), _ids("/p/v2.obj", 5)
    rv = Reviews()
    rv.confirm(2, 1)
    rv.reject(3, 3)
    rv.mark_new(4)
    write_reviews(rv, tmp_path / "reviews.json", v1, v2)
    got, used, notes = gather(v1, v2, [tmp_path])
    assert got.confirmed == {2: 1} and got.rejected == {(3, 3)} and got.new == {4} and not notes
    # the same folder reused for another patient: its reviews are not applied
    got, used, notes = gather(_ids("/q/v1.obj", 5), _ids("/q/v2.obj", 5), [tmp_path])
    assert not got.confirmed and not got.new and "other scans" in notes[0]
    # a re-run analysis whose lesion 4 is now elsewhere (ids name other lesions): that review is left out
    moved = _ids("/p/v2.obj", 5)
    moved.points[4] = [500.0, 0.0, 0.0]
    got, used, notes = gather(v1, moved, [tmp_path])
    assert got.confirmed == {2: 1} and not got.new and "visit-2 lesion 4" in notes[0]
    # the newer decision wins where two copies disagree
    later = Reviews()
    later.reject(2, 1)
    write_reviews(later, store_path(v1.scan, v2.scan), v1, v2)
    got, used, _ = gather(v1, v2, [tmp_path])
    assert 2 not in got.confirmed and (2, 1) in got.rejected and len(used) == 2


def test_forced_pairs_never_get_a_negative_confidence():
    from bodymap.track import _confidence

    assert _confidence(9.24, 0.5) == 0.0  # an alternative was cheaper: the pair was forced
    assert 0.0 < _confidence(1.0, 5.0) <= 1.0 and _confidence(float("inf"), 1.0) == 0.0
