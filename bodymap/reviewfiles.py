"""Where a clinician's reviews of a tracking live, so that no later `bodymap track` misses them.

A review (confirm, reject, reassign, mark new; bodymap.track.Reviews) is about two lesion lists,
not about an output folder. `bodymap review DIR` therefore writes it twice, atomically:

    DIR/reviews.json                      beside the tracking it reviews
    <data dir>/reviews/<pair key>.json    the per-user store, keyed by the two scans' paths

and every tracking of the same two visits (`bodymap track` with any --out, or none, from any
folder; `analyze --previous`; `report --previous`) gathers the reviews from its output folder,
the store and any file given with --reviews, merges them (the newer file wins where two disagree)
and writes the merged set back to both places. A reviews file records the two scans and the
position of every lesion it names, so reviews made for other scans (an output folder reused for
another patient) or for lesions whose ids now name another lesion (a re-run detection) are left
out, each with a note saying so, never applied silently to the wrong lesion.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np

from bodymap.jsonfile import read_json, write_json

REVIEW_SCHEMA = "bodymap.reviews/1"
# A reviewed lesion id still names the same lesion when its point moved less than this (mm):
# ids of a re-run analysis can name other lesions.
SAME_LESION_MM = 5.0


def _resolved(p) -> str:
    return str(Path(p).resolve()) if p else ""


def store_path(scan1: str | Path, scan2: str | Path) -> Path:
    """The store's file for reviews of scan2's lesions against scan1's (<data dir>/reviews/)."""
    from bodymap.session import data_dir

    key = hashlib.sha1(f"{_resolved(scan1)}\n{_resolved(scan2)}".encode()).hexdigest()[:16]
    return data_dir() / "reviews" / f"{key}.json"


@dataclasses.dataclass
class VisitIds:
    """What a review needs of one visit: its scan file and, per lesion id, its point (3,) mm."""

    scan: str
    points: dict[int, list[float]]

    @classmethod
    def of(cls, visit) -> "VisitIds":
        """From a bodymap.track.Visit (scan + LesionSet)."""
        return cls(_resolved(visit.scan.meta.source),
                   {int(l.id): [round(float(x), 2) for x in l.point_mm] for l in visit.lesions.lesions})

    def to_dict(self) -> dict:
        return {"scan": self.scan, "points": {str(k): v for k, v in self.points.items()}}

    @classmethod
    def from_dict(cls, d: dict, source) -> "VisitIds":
        try:
            return cls(str(d.get("scan") or ""), {int(k): [float(x) for x in v] for k, v in (d.get("points") or {}).items()})
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{source}: malformed visit record (corrupt file?)") from None


def write_reviews(rv, path: str | Path, visit1: VisitIds | None, visit2: VisitIds | None) -> Path:
    """Write reviews rv (bodymap.track.Reviews) to path atomically, recording the two visits'
    scans and the points of the lesions the reviews name."""
    d = rv.to_dict()
    if visit1 is not None and visit2 is not None:
        ids1 = {i for _, i in rv.confirmed.items()} | {i for _, i in rv.rejected}
        ids2 = set(rv.confirmed) | {j for j, _ in rv.rejected} | set(rv.new)
        d["visit1"] = {"scan": visit1.scan, "points": {str(i): visit1.points[i] for i in sorted(ids1) if i in visit1.points}}
        d["visit2"] = {"scan": visit2.scan, "points": {str(j): visit2.points[j] for j in sorted(ids2) if j in visit2.points}}
    d["saved"] = time.time()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, d)
    return path


def read_reviews(path: str | Path):
    """(Reviews, visit1 VisitIds or None, visit2 VisitIds or None, saved time) of a reviews file.
    ValueError naming the file when it is not a readable reviews file."""
    from bodymap.track import Reviews

    d = read_json(path, REVIEW_SCHEMA, "reviews file")
    rv = Reviews.from_dict(d, path)
    v1 = VisitIds.from_dict(d["visit1"], path) if isinstance(d.get("visit1"), dict) else None
    v2 = VisitIds.from_dict(d["visit2"], path) if isinstance(d.get("visit2"), dict) else None
    saved = d.get("saved")
    return rv, v1, v2, float(saved) if isinstance(saved, (int, float)) else Path(path).stat().st_mtime


def _same(points: dict, recorded: VisitIds | None, i: int) -> bool:
    """Lesion i of the current visit is the one the review recorded (no record: trusted)."""
    if recorded is None or i not in recorded.points:
        return True
    return i in points and float(np.linalg.norm(np.subtract(points[i], recorded.points[i]))) <= SAME_LESION_MM


def gather(visit1, visit2, folders=(), explicit: str | Path | None = None):
    """Every review of visit 2's lesions against visit 1's (bodymap.track.Visit, or VisitIds),
    merged.

    Looks in ``explicit`` (a reviews file the user named: an error when missing), in
    reviews.json of each folder in ``folders`` (the output folder, the analysis folder) and in
    the store. Returns (Reviews, files read, notes: one line per review or file left out).
    """
    from bodymap.track import Reviews

    ids1 = visit1 if isinstance(visit1, VisitIds) else VisitIds.of(visit1)
    ids2 = visit2 if isinstance(visit2, VisitIds) else VisitIds.of(visit2)
    cands = []  # (file, say so when it holds another pair's reviews)
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"{explicit}: reviews file not found")
        cands.append((Path(explicit), True))
    folders = [f for f in folders if f is not None]
    # the first folder is the output folder; others (analysis folders) may hold their own
    # tracking against another visit, which is no news
    cands += [(Path(f) / "reviews.json", k == 0) for k, f in enumerate(folders)]
    cands.append((store_path(ids1.scan, ids2.scan), True))
    seen, found, notes = set(), [], []
    for p, say in cands:
        key = _resolved(p)
        if key in seen or not p.is_file():
            continue
        seen.add(key)
        rv, r1, r2, saved = read_reviews(p)  # a corrupt reviews file is an error: never skipped silently
        if (r1 is not None and r1.scan and r1.scan != ids1.scan) or (r2 is not None and r2.scan and r2.scan != ids2.scan):
            if say:
                notes.append(f"{p}: reviews of other scans ({r1.scan if r1 else '?'} -> {r2.scan if r2 else '?'}); "
                             "not applied")
            continue
        found.append((saved, p, rv, r1, r2))
    merged = Reviews()
    for _, p, rv, r1, r2 in sorted(found, key=lambda t: t[0]):  # oldest first: the newest decision wins
        def ok(j=None, i=None, what=""):
            bad = []
            if i is not None and (i not in ids1.points or not _same(ids1.points, r1, i)):
                bad.append(f"visit-1 lesion {i}")
            if j is not None and (j not in ids2.points or not _same(ids2.points, r2, j)):
                bad.append(f"visit-2 lesion {j}")
            if bad:
                notes.append(f"{p}: {what} left out: {' and '.join(bad)} "
                             f"{'is' if len(bad) == 1 else 'are'} not in this tracking's lesion lists any more "
                             "(or moved: another analysis?)")
            return not bad

        for j, i in rv.confirmed.items():
            if ok(j, i, f"confirmed pair {i}:{j}"):
                merged.confirm(j, i)
        for j, i in rv.rejected:
            if ok(j, i, f"rejected pair {i}:{j}"):
                merged.reject(j, i)
        for j in rv.new:
            if ok(j, None, f"'new' mark of {j}"):
                merged.mark_new(j)
    return merged, [t[1] for t in sorted(found, key=lambda t: t[0])], notes


def keep(rv, visit1, visit2, folders=()) -> list[Path]:
    """Write merged reviews rv of these visits to each folder's reviews.json and to the store
    (only when rv holds any decision). Returns the files written."""
    if not (rv.confirmed or rv.rejected or rv.new):
        return []
    ids1, ids2 = VisitIds.of(visit1), VisitIds.of(visit2)
    out = []
    for p in [*(Path(f) / "reviews.json" for f in folders if f is not None), store_path(ids1.scan, ids2.scan)]:
        if p.is_file():
            try:
                _, r1, r2, _ = read_reviews(p)
            except ValueError:
                continue  # never overwrite a file we cannot read (gather has reported it)
            if (r1 is not None and r1.scan and r1.scan != ids1.scan) or (r2 is not None and r2.scan and r2.scan != ids2.scan):
                continue  # another pair's reviews: they stay (and are in the store under that pair)
        out.append(write_reviews(rv, p, ids1, ids2))
    return out
