"""Longitudinal tracking: which lesions of a later visit are which of an earlier one.

    track(visit1, visit2, reviews=...) -> Tracking (pairs with change and flags, new, missing)

Both scans are registered to the template (bodymap.anatomy.register), so every scan point has a
template point. Scan 2's vertices are carried onto scan 1 through the template (closest point on
scan 1 laid out in template coordinates) and that map is made to keep scan 2's own surface (the
pair map, bodymap.pairmap: both scans are the same person's skin). A visit-2 lesion's mapped
point is then refined by its constellation: lesions matched confidently so far (anchors) tell
how far the map is off around each lesion, and that local offset, averaged with geodesic
weights, moves the mapped point. The cost of a
candidate pair is its geodesic distance after mapping, how well its geodesic distances to nearby
anchors agree between the two scans, and its change in size and colour; pairs are assigned one
to one (Hungarian) within a gate. Pairs that come out of this neither confident nor backed by
neighbouring anchors, and lesions left without a partner, are matched again by the far pass:
by their geodesic distances to the nearest trusted pairs at any range, with a tolerance for
the skin's stretch across joints, so that a region the registration put on the wrong body part
is still paired (see _far_pass); the far pass's pairs are then priced again by their nearest
standing pairs, trusted and far alike, which undoes swaps among neighbours (see _settle).
Last, each visit-2 lesion's position on scan 1 (the mapped point) is set from the pair map
and the pairs that stand around it, never from its own (see _place). A
clinician's reviews (confirm, reject, reassign, mark new) are kept and respected on every run.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from bodymap.geodesic import SurfaceGeodesics
from bodymap.jsonfile import read_json, write_json
from bodymap.lesions import LesionSet
from bodymap.project import clean_barycentric
from bodymap.records import (CONFIDENT, FLAG_COLOUR, FLAG_GROWN, UNCERTAIN, MissingLesion, NewLesion,  # noqa: F401
                             Status, TrackedPair, flag_new)
from bodymap.scan import Scan
from bodymap.threads import process_threads

Progress = Callable[[str, float], None]
SCHEMA = "bodymap.tracking/1"
REVIEW_SCHEMA = "bodymap.reviews/1"

# What a clinician acts on (issue: grown by >= 1 mm or >= 20 %, new lesion >= 3 mm)
GROWN_MM = 1.0
GROWN_FRACTION = 0.20
NEW_FLAG_MM = 3.0
COLOUR_FLAG_DE = 10.0  # CIELAB Delta E of the lesion's mean colour
# A pair's confidence is the calibrated probability that it is right (see calibrated_confidence);
# below UNCERTAIN (bodymap.records) it is shown as "uncertain, please review" instead of as a
# match, and from CONFIDENT up it may be trusted without review.
CALIBRATION_FILE = Path(__file__).resolve().parent / "data" / "tracking_calibration.json"
# a pair neither backed by nearby anchors nor confirmed by the far pass reports at most this,
# below UNCERTAIN: it is shown as "uncertain, please review"
UNCONFIRMED_CONFIDENCE = 0.45
# the doubtful lesions' distances are first computed this far on scan 2 (_Doubtful)
FAR_FIRST_MM = 250.0
# distance scale (geodesic on scan 2) over which a standing pair's residual moves a lesion's
# final position (_place)
PLACE_MM = 40.0
# what a pair's confidence is computed from (pair_features)
FEATURES = ("cost", "margin", "support", "agreeing", "distance", "leftover")


@dataclasses.dataclass
class TrackOptions:
    """Matching parameters (mm unless stated). gate_mm: largest geodesic distance on scan 1
    between a mapped lesion and its partner (the gate also grows with the lesion's size);
    search_mm: radius of the first, registration-only search; neighbour_mm: anchors this close
    (geodesic, scan 2) vote on a lesion's local offset and on its distance consistency;
    rounds: constellation refinements."""

    gate_mm: float = 20.0
    search_mm: float = 80.0
    neighbour_mm: float = 120.0
    neighbours: int = 8
    far_mm: float = 300.0  # anchors this far may place a lesion that has too few near ones
    rounds: int = 5
    sigma_mm: float = 4.0  # distance scale of the position cost
    consistency_mm: float = 3.0  # distance scale of neighbour-distance disagreement (plus 4 % of the distance)
    max_cost: float = 9.0
    # leftover pass: lesions the rounds left without a partner may still pair within gate_mm
    # when their distances to >= leftover_neighbours anchors agree on both scans
    leftover_neighbours: int = 3
    leftover_cost: float = 6.0
    # far pass: pairs below far_confidence (and lesions left without a partner) are matched
    # again by their geodesic distances to the far_neighbours nearest trusted pairs, at any
    # distance up to far_reach_mm, with a looser scale: on real bodies distances across a joint
    # stretch by 5-20 % between poses (FAUST: armpit, hip), where the registration slides most
    far_confidence: float = CONFIDENT
    far_neighbours: int = 12
    far_min_anchors: int = 8  # fewer trusted pairs in reach do not pin a lesion down (sparse lists)
    far_reach_mm: float = 900.0
    far_scale_mm: float = 5.0
    far_stretch: float = 0.12  # FAUST dev placements: 0.08 -> 0.12 matched 0.937 -> 0.959 (seeds 100-111)
    far_cost: float = 2.0
    far_rounds: int = 3
    # settling: the far pass's pairs priced again by their nearest standing pairs, trusted and
    # far alike (FAUST dev placements, 4 series: matched 0.957-0.977 -> 0.965-0.984)
    settle_neighbours: int = 12
    settle_stretch: float = 0.15
    # fitting steps when track() registers a scan itself: half of analyze's 400, since the
    # constellation corrects what a shorter fit leaves (labels always come from the full fit)
    registration_steps: int = 200
    # steps of the pair map: the template's map from scan 2 to scan 1 made to keep scan 2's own
    # surface before matching (bodymap.pairmap; FAUST dense correspondence, 12 pairs: worst
    # median 10.6 -> 4.1 mm, pooled 7.3 -> 2.8 mm); 0 keeps the template's map (an ablation)
    pair_iterations: int = 100


@dataclasses.dataclass
class Visit:
    """What tracking needs of one visit: the scan, its lesions and its template correspondence
    (bodymap.anatomy.register.Correspondence; None: registered on demand)."""

    scan: Scan
    lesions: LesionSet
    correspondence: object | None = None


@dataclasses.dataclass
class Reviews:
    """A clinician's decisions, keyed by lesion id: confirmed {id2: id1} (confirmed or
    reassigned pairs: always kept), rejected {(id2, id1)} (never proposed again), new {id2}
    (not in visit 1)."""

    confirmed: dict = dataclasses.field(default_factory=dict)
    rejected: set = dataclasses.field(default_factory=set)
    new: set = dataclasses.field(default_factory=set)

    def confirm(self, id2: int, id1: int) -> None:
        """Keep the pair (id2 of visit 2 is id1 of visit 1); reassigning is confirming another id1."""
        self.new.discard(id2)
        self.rejected.discard((int(id2), int(id1)))  # a later confirmation overrides an earlier rejection
        for k in [k for k, v in self.confirmed.items() if v == id1 and k != id2]:
            del self.confirmed[k]  # id1 can have one partner only
        self.confirmed[int(id2)] = int(id1)

    def reject(self, id2: int, id1: int) -> None:
        """Never pair id2 with id1 again."""
        if self.confirmed.get(id2) == id1:
            del self.confirmed[id2]
        self.rejected.add((int(id2), int(id1)))

    def mark_new(self, id2: int) -> None:
        """id2 has no partner in visit 1."""
        self.confirmed.pop(id2, None)
        self.new.add(int(id2))

    def to_dict(self) -> dict:
        return {"schema": REVIEW_SCHEMA, "confirmed": [[k, v] for k, v in sorted(self.confirmed.items())],
                "rejected": sorted([list(p) for p in self.rejected]), "new": sorted(self.new)}

    def save(self, path: str | Path) -> None:
        """Write the reviews as JSON (atomically: a crash never leaves half a file)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Reviews":
        """Read reviews written by save(). Raises ValueError naming the file when it is not one."""
        d = read_json(path, REVIEW_SCHEMA, "reviews file")
        return cls.from_dict(d, path)

    @classmethod
    def from_dict(cls, d: dict, source="reviews") -> "Reviews":
        """Reviews from to_dict()'s form; ValueError naming source and the field when malformed."""
        def ints(v, n: int, field: str) -> list:
            if not isinstance(v, list):
                raise ValueError(f"{source}: '{field}' is not a list (corrupt reviews file?)")
            out = []
            for x in v:
                t = x if n > 1 else [x]
                if not isinstance(t, list) or len(t) != n or not all(
                        isinstance(y, int) and not isinstance(y, bool) and y >= 0 for y in t):
                    want = "[visit-2 id, visit-1 id] pairs" if n == 2 else "lesion ids"
                    raise ValueError(f"{source}: '{field}' holds {x!r}; expected {want} (corrupt reviews file?)")
                out.append(tuple(t) if n > 1 else t[0])
            return out

        rv = cls()
        for j, i in ints(d.get("confirmed", []), 2, "confirmed"):
            rv.confirm(j, i)
        for j, i in ints(d.get("rejected", []), 2, "rejected"):
            rv.rejected.add((j, i))
        for j in ints(d.get("new", []), 1, "new"):
            rv.new.add(j)
        return rv


@dataclasses.dataclass
class Tracking:
    """The result. pairs: TrackedPair per matched lesion (bodymap.records); new: NewLesion per
    visit-2 lesion without a partner; missing: MissingLesion per visit-1 lesion without one;
    mapped: (k2, 3) mm, each visit-2 lesion's position on scan 1 (mapped_face (k2,),
    mapped_bary (k2, 3)); info: parameters, timings. Records given as dicts (to_dict()'s
    form) are read into records."""

    pairs: list[TrackedPair]
    new: list[NewLesion]
    missing: list[MissingLesion]
    mapped: np.ndarray
    mapped_face: np.ndarray
    mapped_bary: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)
    # scan 2's vertices on scan 1 (n2, 3) mm by the pair map; in memory only (the second look
    # reads it, a second tracking of the same scans reuses it), None when read from a file
    pair_points: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.pairs = [p if isinstance(p, TrackedPair) else TrackedPair.from_dict(p) for p in self.pairs]
        self.new = [n if isinstance(n, NewLesion) else NewLesion.from_dict(n) for n in self.new]
        self.missing = [m if isinstance(m, MissingLesion) else MissingLesion.from_dict(m) for m in self.missing]

    def partner(self) -> dict:
        """{id2: id1} of the matched pairs."""
        return {p.id2: p.id1 for p in self.pairs}

    @property
    def flagged(self) -> list:
        """Pairs and new lesions with at least one flag."""
        return [p for p in [*self.pairs, *self.new] if p.flags]

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "info": self.info, "pairs": [p.to_dict() for p in self.pairs],
                "new": [n.to_dict() for n in self.new], "missing": [m.to_dict() for m in self.missing],
                "mapped": [{"id2": i, "point_mm": [round(float(x), 3) for x in p], "face": int(f),
                            "bary": [round(float(x), 6) for x in b]}
                           for i, p, f, b in zip(self.info.get("ids2", []), self.mapped, self.mapped_face,
                                                 self.mapped_bary)]}

    @classmethod
    def from_dict(cls, d: dict, source="tracking") -> "Tracking":
        """A Tracking from to_dict()'s form (also as kept in a project file, and files of older
        versions). ValueError naming source when a record is malformed."""
        try:
            m = d.get("mapped", [])
            return cls(d["pairs"], d["new"], d["missing"], np.array([x["point_mm"] for x in m], float).reshape(-1, 3),
                       np.array([x["face"] for x in m], np.int64), np.array([x["bary"] for x in m], float).reshape(-1, 3),
                       d.get("info", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{source}: not a readable tracking ({type(e).__name__}: {e})") from None

    def save_json(self, path: str | Path) -> None:
        """Write the result as JSON (schema bodymap.tracking/1)."""
        write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> "Tracking":
        """Read a file written by save_json. Raises ValueError naming the file when it is not one."""
        return cls.from_dict(read_json(path, SCHEMA, "tracking file"), path)

    def save_csv(self, path: str | Path) -> None:
        """One row per lesion of either visit: status (matched, grown, uncertain, new, missing),
        ids, sizes, change, flags."""
        import csv

        cols = ["status", "id1", "id2", "confidence", "distance_mm", "reviewed", "diameter1_mm", "diameter2_mm",
                "diameter_change_mm", "diameter_change_pct", "area1_mm2", "area2_mm2", "colour_delta_e", "region",
                "flags"]
        from bodymap.atomic import open_atomic

        with open_atomic(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, cols, extrasaction="ignore")
            w.writeheader()
            for p in self.pairs:
                w.writerow({**p.to_dict(), "flags": ";".join(p.flags)})
            for p in self.new:
                w.writerow({**p.to_dict(), "diameter2_mm": p.diameter_mm, "flags": ";".join(p.flags)})
            for p in self.missing:
                w.writerow({**p.to_dict(), "diameter1_mm": p.diameter_mm, "flags": ";".join(p.flags)})


def _arrays(ls: LesionSet) -> dict:
    """Per-lesion arrays of a LesionSet: ids (k,), face (k,), bary (k, 3), diameter (k,) mm,
    area (k,) mm^2, lab (k, 3) (nan when unknown)."""
    L = ls.lesions
    lab = np.array([l.colour_lab if l.colour_lab and len(l.colour_lab) == 3 else [np.nan] * 3 for l in L],
                   np.float64).reshape(-1, 3)
    return {"ids": np.array([l.id for l in L], np.int64), "face": np.array([l.face for l in L], np.int64),
            "bary": np.array([l.bary for l in L], np.float64).reshape(-1, 3),
            "diameter": np.array([l.diameter_mm for l in L], np.float64),
            "area": np.array([l.area_mm2 for l in L], np.float64), "lab": lab,
            "region": [(l.region or {}).get("description", "") if isinstance(l.region, dict) else "" for l in L]}


def template_positions(scan: Scan, correspondence) -> np.ndarray:
    """(n, 3) mm: the template (rest pose) point of every scan vertex."""
    from bodymap.anatomy.template import load_template

    t = load_template()
    return correspondence.template_points(t.vertices, t.faces)


def map_between(tp_from: np.ndarray, faces_from: np.ndarray, face: np.ndarray, bary: np.ndarray,
                tp_to: np.ndarray, scan_to: Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carry surface points (face (k,), bary (k, 3)) of one scan to another through the template.
    tp_from (n1, 3) / tp_to (n2, 3): template positions of each scan's vertices. Returns face
    (k,), bary (k, 3) on scan_to and the template-space gap (k,) mm (how far the nearest
    point of scan_to lies in template space: large where scan_to has a hole)."""
    import gpytoolbox as gp

    t = np.einsum("kj,kjd->kd", bary, tp_from[faces_from[face]])
    if len(t) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0)
    sqd, f, b = gp.squared_distance(t, tp_to, F=scan_to.faces, use_cpp=True, use_aabb=True)
    return np.asarray(f, np.int64).ravel(), clean_barycentric(b), np.sqrt(np.asarray(sqd).ravel())


def pair_map(scan_from: Scan, tp_from: np.ndarray, scan_to: Scan, tp_to: np.ndarray, iterations: int = 100):
    """The dense map of scan_from's vertices onto scan_to (bodymap.pairmap.PairMap): the
    template's map (tp_from (n1, 3), tp_to (n2, 3) template positions of each scan's vertices)
    made to keep scan_from's own surface."""
    from bodymap.pairmap import refine_map

    vc = scan_from.vertex_corners
    f, b, _ = map_between(tp_from, scan_from.faces, vc // 3, np.eye(3)[vc % 3], tp_to, scan_to)
    return refine_map(scan_from, scan_to.points_from_barycentric(f, b), scan_to, iterations)


def _timed_pair_map(*args) -> tuple[np.ndarray, float]:
    """pair_map(*args)'s points (n, 3) mm and the seconds it took."""
    t = time.perf_counter()
    return pair_map(*args).points, time.perf_counter() - t


def _beside(fn, *args) -> Future:
    """fn(*args) on a second thread, its result from the Future this returns; in this thread
    first (a done Future) when the process computes on one thread (bodymap.threads: a batch
    worker's share of the cores, bodymap.batch; a one-core machine)."""
    if process_threads() < 2:
        done = Future()
        try:
            done.set_result(fn(*args))
        except Exception as e:  # (raised on result(), as a thread's would be)
            done.set_exception(e)
        return done
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bodymap-track")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)  # the job runs on; a cancelled tracking does not wait for it


def _snap(scan: Scan, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point of scan to each point (k, 3): face (k,), bary (k, 3)."""
    f, b, _ = scan.locator.closest(points)
    return f, b


def register_scans(scans: list[Scan], steps: int = 400, progress: Progress | None = None) -> list:
    """Correspondences of scans (bodymap.anatomy.register.register with `steps` fitting steps),
    one after the other: the fit is mostly serial work, and two side by side on a 2-core machine
    were measured 4x slower than in turn (138 s against 2 x 31 s at 300k faces)."""
    from bodymap.anatomy.register import register

    say = progress or (lambda s, f: None)
    out = []
    for k, s in enumerate(scans):
        out.append(register(s, steps=steps, progress=lambda st, f, k=k: say(f"scan {k + 1}: {st}", (k + f) / len(scans))))
    return out


def track(visit1: Visit, visit2: Visit, reviews: Reviews | None = None, options: TrackOptions | None = None,
          progress: Progress | None = None, pair_points: np.ndarray | None = None) -> Tracking:
    """Match visit 2's lesions to visit 1's (see the module docstring). Scans are registered
    when a Visit has no correspondence. pair_points (n2, 3) mm: the pair map of an earlier
    tracking of these two scans (Tracking.pair_points), not computed again. Returns the Tracking
    (pairs, new, missing, mapped points)."""
    o = options or TrackOptions()
    rv = reviews or Reviews()
    say = progress or (lambda s, f: None)
    times = {}
    t0 = time.perf_counter()
    todo = [v for v in (visit1, visit2) if v.correspondence is None]
    if todo:
        say(f"registering {len(todo)} scan{'s' if len(todo) > 1 else ''}", 0.0)
        for v, c in zip(todo, register_scans([v.scan for v in todo], o.registration_steps,
                                             lambda st, f: say(f"registering: {st}", 0.8 * f))):
            v.correspondence = c
    times["registration_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    s1, s2 = visit1.scan, visit2.scan
    a, b = _arrays(visit1.lesions), _arrays(visit2.lesions)
    k1, k2 = len(a["ids"]), len(b["ids"])
    say("geodesics", 0.8)
    tp1, tp2 = template_positions(s1, visit1.correspondence), template_positions(s2, visit2.correspondence)
    mapping = o.pair_iterations > 0 and k1 and k2  # (nothing to map, or nothing to map onto)
    if mapping and (pair_points is None or len(pair_points) != s2.n_vertices):
        # the pair map needs only the scans and their template points: it runs beside the
        # geodesics below (both spend their time in numpy, scipy and k-d trees, which release
        # the interpreter lock; 290k faces, 500 lesions: 9.6 -> 7.0 s, the same map)
        pair_job = _beside(_timed_pair_map, s2, tp2, s1, tp1, o.pair_iterations)
    else:
        pair_job = None
    g1, g2 = s1.geodesics, s2.geodesics
    p1 = g1.points(a["face"], a["bary"])
    # distances among each visit's own lesions (neighbour consistency, anchor weights)
    # scan-1 fields reach further than scan-2 neighbourhoods: a neighbour just inside
    # neighbour_mm on scan 2 may lie a little beyond it on scan 1 (stretch, fit error)
    reach = o.neighbour_mm + o.search_mm
    D2 = g2.between(b["face"], b["bary"], b["face"], b["bary"], o.neighbour_mm)
    fields1 = g1.from_points(a["face"], a["bary"], reach)  # visit-1 lesions -> scan 1 vertices
    src1 = (a["face"], a["bary"])
    D1 = g1.at_points(fields1, a["face"], a["bary"], src1)
    say("mapping", 0.85)
    mf, mb, gap = map_between(tp2, s2.faces, b["face"], b["bary"], tp1, s1)
    if mapping:
        say("pair map", 0.86)
        if pair_job is not None:
            pair_points, times["pair_map_s"] = pair_job.result()
        mf, mb = _snap(s1, np.einsum("kj,kjd->kd", b["bary"], pair_points[s2.faces[b["face"]]]))
    else:
        pair_points = None
    m0 = g1.points(mf, mb)
    idx1 = {int(i): n for n, i in enumerate(a["ids"])}
    idx2 = {int(i): n for n, i in enumerate(b["ids"])}
    fixed = {idx2[j]: idx1[i] for j, i in rv.confirmed.items() if j in idx2 and i in idx1}
    banned = np.zeros((k1, k2), bool)
    for j, i in rv.rejected:
        if j in idx2 and i in idx1:
            banned[idx1[i], idx2[j]] = True
    for j in rv.new:
        if j in idx2:
            banned[:, idx2[j]] = True
    # seeds: pairs near each other after registration whose geodesic distances to other such
    # pairs agree on both scans (a wrong pair agrees with few); then rounds of placing lesions
    # from the anchors and assigning, with a position scale that shrinks as placement improves
    X = g1.at_points(fields1, mf, mb, src1)
    cand = (X <= o.search_mm) & ~banned
    anchors = {**_seed_anchors(cand, X, D1, D2, fixed, o), **fixed}
    m = m0
    far = _FarAnchors(g1, g2, a, b, o.far_mm, o.far_mm + o.search_mm)
    lost: list[int] = []  # visit-2 lesions without a partner in the last round
    for rnd in range(1, o.rounds + 1):
        m, mf, mb = _refine(m0, p1, anchors, D2, fields1, o, s1, lost, far)
        sigma = max(o.sigma_mm, 12.0 / 2 ** (rnd - 1))
        X = g1.at_points(fields1, mf, mb, src1)  # (k1, k2) geodesic, inf beyond reach
        gate = np.maximum(max(o.gate_mm, 3 * sigma), 0.75 * np.maximum(a["diameter"][:, None], b["diameter"][None]))
        C = _cost(X, gate, sigma, a, b, D1, D2, anchors, o)
        C[banned] = np.inf
        assign, conf, second = _assign(C, fixed, o.max_cost)
        lost = [j for j in range(k2) if j not in assign]
        # anchors for the next round: confident pairs (a clear margin to the next candidate)
        anchors = dict(fixed)
        for j, i in assign.items():
            if j not in fixed and second[j] - C[i, j] > 1.0 and C[i, j] < 0.5 * o.max_cost:
                anchors[j] = i
    extra = _leftover_pairs(assign, X, a, b, D1, D2, anchors, banned, o)
    costs = {j: (float(C[i, j]), float(min(second[j], o.max_cost) - C[i, j])) for j, i in assign.items()}
    for j, (i, c, cost, margin) in extra.items():
        assign[j] = i
        costs[j] = (cost, margin)
    feats = pair_features(assign, costs, X, gate, D1, D2, anchors, set(extra), o)
    say("far pass", 0.9)
    # which pairs stand is decided on the cost-and-margin confidence, the same whether or not a
    # calibration is shipped (the calibrated probability is what each pair reports, below)
    nearby = np.isfinite(D2).sum(1) - 1  # other visit-2 lesions within neighbour_mm
    trusted = {j: i for j, i in assign.items()
               if j in fixed or _trusted(_confidence(*_cost_second(feats[j])), feats[j], int(nearby[j]), o)}
    # (too few trusted pairs to place anything: no far pass, and no distance fields for it)
    doubt = _Doubtful(trusted, g1, g2, a, b, o) if len(trusted) >= o.far_min_anchors else None
    far_pairs, placed = _far_pass(trusted, banned, doubt, o)
    far_pairs = _settle(trusted, far_pairs, banned, doubt, o)
    taken = set(trusted.values()) | {v[0] for v in far_pairs.values()}
    unconfirmed = set()  # doubtful pairs kept as the rounds made them: neither backed nor confirmed
    for j in [j for j in assign if j not in trusted]:
        # doubtful pairs: the far pass decides those it could place (>= far_min_anchors trusted
        # pairs within reach); the others keep the rounds' partner when it is still free
        if j in placed or assign[j] in taken:
            del assign[j]
        else:
            unconfirmed.add(j)
    for j, (i, cost, margin) in far_pairs.items():
        assign[j] = i
        feats[j] = pair_features({j: i}, {j: (cost, margin)}, X, gate, D1, D2, anchors, {j}, o)[j]
    prob = calibrated_confidence({j: feats[j] for j in assign})
    for j in unconfirmed:
        # no anchor near it agrees and too few far ones to check it (a registration that put
        # the body upside down gave such pairs, cheap and wrong): shown as uncertain, for review
        prob[j] = min(prob[j], UNCONFIRMED_CONFIDENCE)
    # where each visit-2 lesion lies on scan 1 (shown to the user, searched by the second look):
    # placed once more from the pairs that stand, never from its own
    standing = {j: i for j, i in assign.items() if j not in unconfirmed}
    m, mf, mb = _place(m0, p1, g2.points(b["face"], b["bary"]), standing, D2, s1, o)
    times["matching_s"] = time.perf_counter() - t1
    say("changes", 0.95)
    pairs, new, missing = [], [], []
    for j, i in sorted(assign.items(), key=lambda t: b["ids"][t[0]]):
        p = _pair(a, b, i, j, float(X[i, j]), 1.0 if j in fixed else float(prob[j]), j in fixed)
        p.features = [round(float(x), 4) for x in feats[j]]
        pairs.append(p)
    matched1 = set(assign.values())
    for j in range(k2):
        if j not in assign:
            d = float(b["diameter"][j])
            new.append(NewLesion(int(b["ids"][j]), round(d, 2), b["region"][j], int(b["ids"][j]) in rv.new,
                                 [flag_new(NEW_FLAG_MM)] if d >= NEW_FLAG_MM else []))
    for i in range(k1):
        if i not in matched1:
            missing.append(MissingLesion(int(a["ids"][i]), round(float(a["diameter"][i]), 2), a["region"][i]))
    times["total_s"] = time.perf_counter() - t0
    info = {"scan1": s1.meta.source, "scan2": s2.meta.source, "lesions1": k1, "lesions2": k2,
            "options": dataclasses.asdict(o), "timings": {k: round(v, 2) for k, v in times.items()},
            "anchors": len(anchors), "leftover_pairs": len(extra), "far_pairs": len(far_pairs),
            "unconfirmed_pairs": len(unconfirmed), "reviews": rv.to_dict(), "ids2": [int(x) for x in b["ids"]],
            "template_gap_mm_median": round(float(np.median(gap)), 2) if len(gap) else None,
            # each visit's registration verdict: a fair or poor fit makes every match there less sure
            "fit": [(v.correspondence.info.get("quality") or {}).get("verdict") for v in (visit1, visit2)],
            "uncertain": sum(p.status is Status.UNCERTAIN for p in pairs)}
    say("done", 1.0)
    return Tracking(pairs, new, missing, m, mf, mb, info, pair_points)


class _FarAnchors:
    """Anchors beyond neighbour_mm for lesions that have fewer than 3 nearby (a region the
    registration put far off, with its lesions still unmatched): distances up to far_mm on
    scan 2 from the lesion, and scan-1 fields of the anchors' partners (computed on demand and
    kept across rounds)."""

    def __init__(self, g1: SurfaceGeodesics, g2: SurfaceGeodesics, a: dict, b: dict, far_mm: float, reach_mm: float):
        self.g1, self.g2, self.a, self.b, self.far, self.reach = g1, g2, a, b, far_mm, reach_mm
        self._fields: dict[int, sp.csr_matrix] = {}
        self._from: dict[int, sp.csr_matrix] = {}  # visit-2 lesion -> its scan-2 field to far_mm

    def distances(self, j: int, j_a: np.ndarray) -> np.ndarray:
        """(A,) mm from visit-2 lesion j to the anchors' visit-2 points (inf beyond far_mm).
        j's field is kept across rounds: a lesion without a partner asks again each round with
        other anchors (fields beyond KEEP_LIMIT_MM are not kept by the geodesics; clinic 9763,
        300 lesions: 123 fields in 3.6 s for 38 lesions, now 38 in 1.1 s; the same tracking)."""
        src = (self.b["face"][[j]], self.b["bary"][[j]])
        if j not in self._from:
            self._from[j] = self.g2.from_points(*src, self.far)
        return self.g2.at_points(self._from[j], self.b["face"][j_a], self.b["bary"][j_a], src)[0]

    def fields(self, i_sel: np.ndarray) -> sp.csr_matrix:
        """(K, n1) scan-1 fields of visit-1 lesions i_sel, limit reach_mm."""
        todo = [int(i) for i in i_sel if int(i) not in self._fields]
        if todo:
            F = self.g1.from_points(self.a["face"][todo], self.a["bary"][todo], self.reach)
            for k, i in enumerate(todo):
                self._fields[i] = F[k]
        return sp.vstack([self._fields[int(i)] for i in i_sel], format="csr")


def _rows_at(F: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols)) dense values of F (CSR, no duplicate entries) at rows x cols, 0
    where nothing is stored. Each row is scattered into one dense scratch row and the columns
    gathered from it: scipy's fancy indexing of a row set, then of a column set, cost about
    1 ms a call, and the matching makes thousands of calls on fields of ~10^4 vertices each."""
    scratch = np.zeros(F.shape[1])
    out = np.empty((len(rows), len(cols)))
    for k, r in enumerate(rows):
        ind = F.indices[F.indptr[r]:F.indptr[r + 1]]
        scratch[ind] = F.data[F.indptr[r]:F.indptr[r + 1]]
        out[k] = scratch[cols]
        scratch[ind] = 0.0
    return out


def _trilaterate(F: sp.csr_matrix, target: np.ndarray, prior: np.ndarray, s1: Scan, o: TrackOptions,
                 rows: np.ndarray | None = None) -> int:
    """The scan-1 vertex (or -1) whose distances in fields F (K, n1) to K anchors best agree with
    target (K,) mm, among the vertices all K reach; prior (3,) mm breaks near-ties. rows (K,):
    the anchors' rows of F when F holds more fields than theirs (its indices sorted)."""
    if rows is None:
        F = F.tocsr()
        F.sort_indices()
        rows = np.arange(F.shape[0])
    first = rows[0]
    cand = F.indices[F.indptr[first]:F.indptr[first + 1]]  # the nearest anchor's reach on scan 1
    rows = _rows_at(F, rows, cand)  # (K, c), 0 = beyond the limit
    keep = (rows > 0).all(0)
    if not keep.any():
        return -1
    cand, rows = cand[keep], rows[:, keep]
    t = target[:, None]
    wt = 1.0 / (o.consistency_mm + 0.04 * t) ** 2
    res = (wt * (rows - t) ** 2).sum(0) / wt.sum()
    res = res + (np.linalg.norm(s1.vertices[cand] - prior, axis=1) / o.search_mm) ** 2
    return int(cand[np.argmin(res)])


def _nearest(d: np.ndarray, j: int, j_a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The anchors nearest visit-2 lesion j, never its own pair: d (A,) mm from j to the anchors
    (visit-2 indices j_a (A,)), inf where out of reach. Returns d with j's own pair set to inf,
    and the indices into the anchors of the (at most) k nearest within reach, nearest first."""
    d = np.where(j_a == j, np.inf, d)
    near = np.argsort(d)[:k]
    return d, near[np.isfinite(d[near])]


def _refine(m0: np.ndarray, p1: np.ndarray, anchors: dict, D2: np.ndarray, F1: "sp.csr_matrix",
            o: TrackOptions, s1: Scan, lost=(), far: _FarAnchors | None = None):
    """Better positions on scan 1 for the visit-2 lesions (k2), given anchors {j: i} (pairs
    trusted so far). Where a lesion has at least 3 anchors within neighbour_mm on scan 2, it is
    placed by geodesic trilateration: the scan-1 vertex whose geodesic distances to those anchors'
    visit-1 partners (fields F1 (k1, n1)) best agree with its own distances to them on scan 2
    (pose changes bend the body but keep geodesic distances). A lesion in `lost` (no partner
    last round) with fewer near anchors uses the 4 nearest within far's reach. Elsewhere the
    registration's mapping m0 (k2, 3) is moved by the geodesically weighted mean offset of
    nearby anchors. Returns points (k2, 3), face (k2,), bary (k2, 3) on scan 1."""
    if not anchors:
        f, b = _snap(s1, m0)
        return m0, f, b
    j_a = np.fromiter(anchors.keys(), np.int64)
    i_a = np.fromiter(anchors.values(), np.int64)
    off = p1[i_a] - m0[j_a]  # (A, 3)
    d = D2[:, j_a]  # (k2, A), inf beyond neighbour_mm
    w = np.exp(-0.5 * (d / (0.5 * o.neighbour_mm)) ** 2)
    w[~np.isfinite(d)] = 0.0
    shift = (w @ off) / (w.sum(1, keepdims=True) + 0.05)
    f, b = _snap(s1, m0 + shift)
    pts = s1.points_from_barycentric(f, b)
    vface = s1.vertex_corners
    F1 = F1.tocsr()
    F1.sort_indices()  # (in place, once; _trilaterate reads rows by their sorted indices)
    lost = set(int(j) for j in lost)
    for j in range(len(m0)):
        dj, near = _nearest(d[j], j, j_a, o.neighbours)
        if len(near) >= 3:
            v = _trilaterate(F1, dj[near], pts[j], s1, o, rows=i_a[near])
        elif j in lost and far is not None:
            dj, near = _nearest(far.distances(j, j_a), j, j_a, 4)
            if len(near) < 3:
                continue
            v = _trilaterate(far.fields(i_a[near]), dj[near], pts[j], s1, o)
        else:
            continue
        if v >= 0:
            pts[j] = s1.vertices[v]
            f[j], b[j] = vface[v] // 3, np.eye(3)[vface[v] % 3]
    return pts, f, b


def _place(m0: np.ndarray, p1: np.ndarray, p2: np.ndarray, standing: dict, D2: np.ndarray, s1: Scan,
           o: TrackOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final positions on scan 1 of the visit-2 lesions (points p2 (k2, 3) mm on scan 2) from
    the pairs that stand {j: i} (p1 (k1, 3): visit-1 points), by two estimates that fail in
    different places, averaged: (a) the lesion's mapped point m0 (k2, 3) mm (the pair map)
    moved by the Gaussian-weighted mean of its nearest standing pairs' residuals (partner minus
    their own mapped point; weights over PLACE_MM), which trusts the map's shape nearby; (b) the
    rigid motion (weighted least squares, Kabsch; weights over 60 mm) that takes those pairs'
    visit-2 points to their partners, applied to the lesion, which trusts the skin to move
    rigidly nearby and needs >= 3 pairs. Up to o.neighbours pairs within neighbour_mm (geodesic
    on scan 2, D2 (k2, k2)). Its own pair is never used, so the position says where the rest of
    the skin puts the lesion, whether or not it was matched; with no standing pair near, the
    mapped point stays. FAUST placements 1100 / 1200 (development), within 10 mm pooled: (a)
    0.849 / 0.836, the mean 0.844 / 0.844, its worst pair 0.726 / 0.778 against 0.711 / 0.748;
    (b) alone 0.793 (1100). Returns points (k2, 3), face (k2,), bary (k2, 3)."""
    q = m0.copy()
    if standing:
        j_a = np.fromiter(standing.keys(), np.int64)
        i_a = np.fromiter(standing.values(), np.int64)
        off = p1[i_a] - m0[j_a]  # (A, 3) residuals of the map
        for j in range(len(m0)):
            d, near = _nearest(D2[j, j_a], j, j_a, o.neighbours)
            if not len(near):
                continue
            w = np.exp(-0.5 * (d[near] / PLACE_MM) ** 2)
            q[j] = m0[j] + (w @ off[near]) / (w.sum() + 0.05)
            if len(near) >= 3:
                rigid = _rigid_motion(p2[j_a[near]], p1[i_a[near]], np.exp(-0.5 * (d[near] / 60.0) ** 2))
                q[j] = 0.5 * (q[j] + rigid(p2[j]))
    f, b = _snap(s1, q)
    return s1.points_from_barycentric(f, b), f, b


def _rigid_motion(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """The rigid motion (rotation and translation, no scaling) taking points src (K, 3) to dst
    (K, 3) in weighted least squares (weights w (K,) >= 0; Kabsch): a function of (3,) points."""
    w = (w + 1e-9) / (w + 1e-9).sum()
    cs, cd = w @ src, w @ dst
    U, _, Vt = np.linalg.svd(((src - cs) * w[:, None]).T @ (dst - cd))
    R = Vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))]) @ U.T
    return lambda x: R @ (np.asarray(x, np.float64) - cs) + cd


def _seed_anchors(cand: np.ndarray, X: np.ndarray, D1: np.ndarray, D2: np.ndarray, fixed: dict, o: TrackOptions) -> dict:
    """First anchors {j: i} from candidate pairs cand (k1, k2) bool (close after registration;
    X (k1, k2) their distances, mm):
    each pair's support is the number of other visit-2 lesions with a candidate partner whose
    geodesic distances agree (|D1 - D2| <= consistency_mm + 4 %); pairs are taken greedily by
    support, one partner each, when at least 3 others support them. D1 (k1, k1), D2 (k2, k2) mm."""
    # at most the 3 candidates nearest each visit-2 lesion (keeps the pair-by-pair tables small)
    rank = np.argsort(np.argsort(np.where(cand, X, np.inf), axis=0, kind="stable"), axis=0, kind="stable")
    ii, jj = np.nonzero(cand & (rank < 3))
    if len(ii) < 4:
        return {}
    d1 = D1[ii][:, ii]  # (P, P)
    d2 = D2[jj][:, jj]
    ok = np.isfinite(d2) & (np.abs(np.where(np.isfinite(d1), d1, 1e9) - d2) <= o.consistency_mm + 0.04 * d2)
    ok &= (ii[:, None] != ii[None]) & (jj[:, None] != jj[None])
    # support counts distinct visit-2 lesions (one lesion's several candidates count once)
    onehot = np.zeros((len(jj), D2.shape[0]), np.float32)
    onehot[np.arange(len(jj)), jj] = 1.0
    support = ((ok.astype(np.float32) @ onehot) > 0).sum(1)
    taken1, taken2 = set(fixed.values()), set(fixed.keys())
    out = {}
    for p in np.argsort(-support, kind="stable"):
        if support[p] < 3:
            break
        i, j = int(ii[p]), int(jj[p])
        if i in taken1 or j in taken2:
            continue
        out[j] = i
        taken1.add(i)
        taken2.add(j)
    return out


def _cost(X, gate, sigma: float, a, b, D1, D2, anchors, o: TrackOptions) -> np.ndarray:
    """(k1, k2) cost of each candidate pair (inf outside the gate): position, neighbour-distance
    agreement, size change (shrinking costs more than growing) and colour change."""
    C = np.full(X.shape, np.inf)
    ii, jj = np.nonzero(X <= gate)
    if len(ii) == 0:
        return C
    c = (X[ii, jj] / sigma) ** 2 / 2
    # neighbour consistency: distances to the nearest anchors must agree on both scans
    if anchors:
        j_a = np.fromiter(anchors.keys(), np.int64)
        i_a = np.fromiter(anchors.values(), np.int64)
        d2 = D2[jj][:, j_a]  # (P, A)
        d1 = D1[ii][:, i_a]
        d2 = np.where(j_a[None] == jj[:, None], np.inf, d2)  # not itself
        order = np.argsort(d2, axis=1)[:, :o.neighbours]
        d2n = np.take_along_axis(d2, order, 1)
        d1n = np.take_along_axis(d1, order, 1)
        ok = np.isfinite(d2n)
        scale = o.consistency_mm + 0.04 * np.where(ok, d2n, 0)
        dis = np.where(ok, np.minimum(np.abs(np.where(np.isfinite(d1n), d1n, 1e9) - d2n) / scale, 4.0), 0.0)
        n = ok.sum(1)
        c = c + np.where(n > 0, dis.sum(1) / np.maximum(n, 1), 0.0) ** 2 / 2 * np.minimum(n, 3) / 3
    C[ii, jj] = c + _change_cost(a, b, ii, jj)
    return C


def _trusted(prob: float, features: np.ndarray, nearby: int, o: TrackOptions) -> bool:
    """Whether a pair from the rounds is kept as it is: confident (>= o.far_confidence) and
    backed by its neighbourhood: >= 2 anchors near it on scan 2 (fewer when fewer lesions lie
    within neighbour_mm: `nearby`), at least half of those with agreeing distances. A cheap pair
    with no anchor among its neighbours is cheap only because the registration put it there; on
    FAUST such pairs were a third of the confident wrong ones."""
    support, agree = features[FEATURES.index("support")] * o.neighbours, features[FEATURES.index("agreeing")]
    if prob < o.far_confidence or (support > 0 and agree < 0.5):
        return False
    return support >= min(2, nearby)


class _Doubtful:
    """The doubtful lesions of both visits (those not in a trusted pair {j: i}) and their
    geodesic distances to every lesion of their own visit, up to o.far_reach_mm: free2 (f2,),
    free1 (f1,), E2 (f2, k2), E1 (f1, k1) mm, change (f1, f2) size-and-colour cost. Computed
    once for the far pass and the settling after it (fields only from the doubtful lesions)."""

    def __init__(self, trusted: dict, g1: SurfaceGeodesics, g2: SurfaceGeodesics, a: dict, b: dict,
                 o: TrackOptions):
        self.free2 = np.setdiff1d(np.arange(len(b["ids"])), list(trusted)).astype(np.int64)
        self.free1 = np.setdiff1d(np.arange(len(a["ids"])), list(trusted.values())).astype(np.int64)
        # costs() looks at each lesion's k nearest anchors only, and anchors always include the
        # trusted pairs: where k trusted pairs lie within a short reach on scan 2, nothing
        # beyond it is read, and the lesion's distances stop there (Dijkstra to 900 mm settles
        # most of a scan: 27 ms a lesion at 145k vertices, 7 ms to 250 mm). Scan-1 distances
        # are needed only as far as they can still agree with the longest distance read on
        # scan 2; beyond that every pair costs the same capped 4. The costs are those of the
        # full reach, in a quarter of the time (patient 9201, 500 lesions: 4.8 -> 1.2 s)
        k = max(o.far_neighbours, o.settle_neighbours)
        t2 = np.fromiter(trusted.keys(), np.int64, len(trusted))
        short = FAR_FIRST_MM < o.far_reach_mm
        first = FAR_FIRST_MM if short else o.far_reach_mm
        self.E2 = g2.between(b["face"][self.free2], b["bary"][self.free2], b["face"], b["bary"], first)
        reach1 = o.far_reach_mm
        if short:
            _within(self.E2, first)
            r = _kth(self.E2[:, t2], k)
            redo = ~np.isfinite(r)
            if redo.any():
                f2 = self.free2[redo]
                self.E2[redo] = g2.between(b["face"][f2], b["bary"][f2], b["face"], b["bary"], o.far_reach_mm)
                r = _kth(self.E2[:, t2], k)
            if len(r) and np.isfinite(r).all():
                longest = float(r.max())
                reach1 = min(reach1, longest + 4 * (o.far_scale_mm + max(o.far_stretch, o.settle_stretch) * longest))
        self.E1 = g1.between(a["face"][self.free1], a["bary"][self.free1], a["face"], a["bary"], reach1)
        if reach1 < o.far_reach_mm:
            _within(self.E1, reach1)
        self.change = _change_cost(a, b, self.free1[:, None], self.free2[None])

    def costs(self, anchors: dict, k: int, scale_mm: float, stretch: float) -> tuple[np.ndarray, np.ndarray]:
        """(f1, f2) cost of each doubtful pair from its geodesic distances to the k nearest
        anchors {j: i} (on scan 2, not itself; an anchor whose visit-1 lesion is the candidate
        itself is left out): mean of min(|d1 - d2| / (scale_mm + stretch * d2), 4) ** 2 / 2,
        plus the change cost; and (f2,) how many anchors each lesion had within reach."""
        j_a = np.fromiter(anchors.keys(), np.int64, len(anchors))
        i_a = np.fromiter(anchors.values(), np.int64, len(anchors))
        d2 = np.where(j_a[None] == self.free2[:, None], np.inf, self.E2[:, j_a])  # (f2, A)
        near = np.argsort(d2, axis=1)[:, :k]
        d2n = np.take_along_axis(d2, near, 1)  # (f2, K)
        ok = np.isfinite(d2n)
        d1n = self.E1[:, i_a][:, near]  # (f1, f2, K)
        use = ok[None] & (self.free1[:, None, None] != i_a[near][None])
        R = np.minimum(np.abs(np.where(np.isfinite(d1n), d1n, 1e9) - np.where(ok, d2n, 0)[None])
                       / (scale_mm + stretch * np.where(ok, d2n, 0)[None]), 4.0)
        C = np.where(use, R ** 2, 0.0).sum(2) / np.maximum(use.sum(2), 1) / 2 + self.change
        return C, ok.sum(1)

    def assign(self, C: np.ndarray, o: TrackOptions) -> dict:
        """One-to-one pairs from the (f1, f2) costs C: {j: (i, cost, margin)} (lesion indices),
        "no partner" at far_cost; the margin on the rounds' scale (their no-partner cost is
        max_cost, here far_cost)."""
        C = np.where(C >= o.far_cost, np.inf, C)
        out = {}
        if not np.isfinite(C).any():
            return out
        for c, ri in _assign(C, {}, o.far_cost)[0].items():
            cost = float(C[ri, c])
            second = min(np.delete(C[:, c], ri).min(initial=np.inf), np.delete(C[ri], c).min(initial=np.inf), o.far_cost)
            out[int(self.free2[c])] = (int(self.free1[ri]), cost, (second - cost) * o.max_cost / o.far_cost)
        return out


def _within(D: np.ndarray, reach_mm: float) -> np.ndarray:
    """D (r, k) mm with every distance beyond reach_mm set to inf (in place). A surface point
    beyond a field's limit may still get a value through one of its face's corners that was
    reached; such values (> reach_mm) are upper bounds, not distances."""
    D[D > reach_mm] = np.inf
    return D


def _kth(D: np.ndarray, k: int) -> np.ndarray:
    """(r,) mm: the k-th smallest entry of each row of D (r, c), inf where a row has fewer than
    k finite entries (or c < k)."""
    if D.shape[1] < k:
        return np.full(D.shape[0], np.inf)
    return np.partition(D, k - 1, axis=1)[:, k - 1]


def _far_pass(trusted: dict, banned: np.ndarray, doubt: _Doubtful | None, o: TrackOptions) -> tuple[dict, set]:
    """Matches for the doubtful lesions, ({j: (i, cost, margin)}, set of the visit-2 lesions it
    could place): visit-2 lesions not in a trusted pair {j: i} (see _trusted), against the
    visit-1 lesions not in one (a clinician's confirmed pairs are among the trusted ones).

    Where the registration put a whole region on the wrong body part (FAUST's pose 003: both
    arms, raised in front), no nearby anchor exists to correct it and the rounds cannot reach the
    right partner. Here a lesion is placed by its geodesic distances to its far_neighbours
    nearest trusted pairs at any distance up to far_reach_mm, scaled far_scale_mm + far_stretch
    of the distance: long paths cross joints, whose skin stretches between poses. One-to-one
    assignment (Hungarian) with a "no partner" cost of far_cost, in far_rounds rounds that add
    clear pairs to the trusted ones. Size and colour changes cost as in the rounds."""
    if doubt is None or not len(doubt.free2) or not len(doubt.free1) or len(trusted) < o.far_min_anchors:
        return {}, set()
    free1, free2 = doubt.free1, doubt.free2
    anchors = dict(trusted)
    out: dict = {}
    for _ in range(o.far_rounds):
        C, n = doubt.costs(anchors, o.far_neighbours, o.far_scale_mm, o.far_stretch)
        C[:, n < o.far_min_anchors] = np.inf  # too few trusted pairs within reach to place it
        placed = set(free2[n >= o.far_min_anchors].tolist())
        C[banned[np.ix_(free1, free2)]] = np.inf
        out = doubt.assign(C, o)
        anchors = dict(trusted)
        for j, (i, cost, margin) in out.items():
            if margin * o.far_cost / o.max_cost > 0.5 and cost < 0.5:  # clear pairs anchor the next round
                anchors[j] = i
    return out, placed


def _settle(trusted: dict, far_pairs: dict, banned: np.ndarray, doubt: _Doubtful | None, o: TrackOptions) -> dict:
    """The far pass's pairs {j: (i, cost, margin)} checked against their neighbourhood.

    The far pass places a doubtful lesion from trusted pairs only, which on a poorly registered
    region (FAUST: an arm raised in front, the torso of a twisted pose) are few and far, so
    lesions 30-50 mm apart swap partners. Here each doubtful lesion is priced again by its
    settle_neighbours nearest standing pairs, trusted and far alike (near ones tell neighbours
    apart), in two assignments: the first, against every far pair, keeps the pairs their
    neighbourhood agrees with (a wrong far pair disagrees with its neighbours and drops out);
    the second, against the trusted pairs and those, decides. Only lesions the far pass paired
    are reassigned. Returns the new {j: (i, cost, margin)}."""
    if not far_pairs or doubt is None:
        return far_pairs
    cur = {j: v[0] for j, v in far_pairs.items()}
    cols = np.isin(doubt.free2, list(far_pairs))
    out = far_pairs
    for _ in range(2):
        C, _n = doubt.costs({**trusted, **cur}, o.settle_neighbours, o.far_scale_mm, o.settle_stretch)
        C[:, ~cols] = np.inf
        C[banned[np.ix_(doubt.free1, doubt.free2)]] = np.inf
        out = doubt.assign(C, o)
        cur = {j: v[0] for j, v in out.items()}
    return out


def _change_cost(a: dict, b: dict, i, j) -> np.ndarray:
    """Cost of the size and colour change from visit-1 lesions i to visit-2 lesions j (index
    arrays, broadcast together): shrinking costs more than growing; no colour, no colour cost."""
    r = np.log(np.maximum(b["diameter"][j], 0.1) / np.maximum(a["diameter"][i], 0.1))
    de = np.linalg.norm(a["lab"][i] - b["lab"][j], axis=-1)
    return np.where(r < 0, 2.0 * r * r, 0.3 * r * r) * 4 + np.where(np.isfinite(de), (de / 25.0) ** 2, 0.0)


def _leftover_pairs(assign: dict, X: np.ndarray, a: dict, b: dict, D1: np.ndarray, D2: np.ndarray,
                    anchors: dict, banned: np.ndarray, o: TrackOptions) -> dict:
    """Pairs among the lesions the rounds left without a partner {j: (i, confidence, cost, margin)}.

    A persistent lesion whose placement went wrong (too few anchors around it, or anchors in a
    row along a limb, so that trilateration mirrors it) is left out of the gate, and would be
    counted once as new and once as missing. Here it may pair with a free visit-1 lesion within
    the gate (X (k1, k2), geodesic on scan 1, mm) when its geodesic distances to at least
    leftover_neighbours nearby anchors agree on both scans (on average within twice the
    consistency scale, none beyond three times) and size and colour allow it; position is
    priced on the gate's scale rather than the rounds' few mm. A new lesion and an excised one
    a few cm apart disagree with most anchors, so they stay apart."""
    k1, k2 = X.shape
    lost = [j for j in range(k2) if j not in assign]
    free1 = np.setdiff1d(np.arange(k1), list(assign.values()))
    if not lost or not len(free1) or len(anchors) < o.leftover_neighbours:
        return {}
    j_a = np.fromiter(anchors.keys(), np.int64)
    i_a = np.fromiter(anchors.values(), np.int64)
    C = np.full((len(free1), len(lost)), np.inf)
    for c, j in enumerate(lost):
        d2, near = _nearest(D2[j, j_a], j, j_a, o.neighbours)
        if len(near) < o.leftover_neighbours:
            continue
        gate = np.maximum(o.gate_mm, 0.75 * np.maximum(a["diameter"][free1], b["diameter"][j]))
        rows = free1[(X[free1, j] <= gate) & ~banned[free1, j]]
        if not len(rows):
            continue
        d1 = D1[np.ix_(rows, i_a[near])]  # (r, n) inf beyond the fields' reach
        dis = np.abs(np.where(np.isfinite(d1), d1, 1e9) - d2[near]) / (o.consistency_mm + 0.04 * d2[near])
        ok = (dis <= 3.0).all(1) & (dis.mean(1) <= 2.0)
        cost = (X[rows, j] / (0.5 * o.gate_mm)) ** 2 / 2 + (dis ** 2).mean(1) / 2 + _change_cost(a, b, rows, j)
        C[np.searchsorted(free1, rows), c] = np.where(ok & (cost <= o.leftover_cost), cost, np.inf)
    if not np.isfinite(C).any():
        return {}
    big = np.where(np.isfinite(C), C, 1e6)
    r, c = linear_sum_assignment(big)
    out = {}
    for ri, ci in zip(r, c):
        if big[ri, ci] < 1e6:
            # confidence as in _assign, against the next candidate of either lesion
            s = min(np.delete(C[:, ci], ri).min(initial=np.inf), np.delete(C[ri], ci).min(initial=np.inf),
                    o.leftover_cost)
            out[lost[ci]] = (int(free1[ri]), _confidence(C[ri, ci], s),
                             float(C[ri, ci]), float(s - C[ri, ci]))
    return out


def pair_features(assign: dict, costs: dict, X: np.ndarray, gate: np.ndarray, D1: np.ndarray, D2: np.ndarray,
                  anchors: dict, leftover: set, o: TrackOptions) -> dict:
    """{j: (len(FEATURES),) array} for each assigned pair j -> i: its cost and margin to the next
    choice (costs {j: (cost, margin)}), how many anchors lie near it on scan 2 (of
    o.neighbours) and the share of those whose geodesic distances agree on both scans, its
    distance after mapping over the gate, and whether the leftover pass made it."""
    j_a = np.fromiter(anchors.keys(), np.int64, len(anchors))
    i_a = np.fromiter(anchors.values(), np.int64, len(anchors))
    out = {}
    for j, i in assign.items():
        cost, margin = costs[j]
        support = agree = 0.0
        if len(j_a):
            d2, near = _nearest(D2[j, j_a], j, j_a, o.neighbours)
            if len(near):
                d1 = D1[i, i_a[near]]
                ok = np.abs(np.where(np.isfinite(d1), d1, 1e9) - d2[near]) <= o.consistency_mm + 0.04 * d2[near]
                support, agree = len(near) / o.neighbours, float(ok.mean())
        out[j] = np.array([min(cost, o.max_cost), min(max(margin, 0.0), o.max_cost), support, agree,
                           min(float(X[i, j] / gate[i, j]), 2.0) if np.isfinite(X[i, j]) else 2.0,
                           float(j in leftover)])
    return out


@functools.lru_cache(maxsize=1)
def _calibration() -> dict | None:
    """The fitted confidence model (scripts/calibrate_tracking.py), or None when absent."""
    if not CALIBRATION_FILE.exists():
        return None
    d = read_json(CALIBRATION_FILE, "bodymap.tracking-calibration/1", "tracking calibration")
    if tuple(d["features"]) != FEATURES:
        raise ValueError(f"{CALIBRATION_FILE}: made for features {d['features']}, this BodyMap has {list(FEATURES)}")
    return d


def _cost_second(f: np.ndarray) -> tuple[float, float]:
    """A pair's cost and the cost of the next choice, from its pair_features row."""
    return float(f[0]), float(f[0] + f[1])


def calibrated_confidence(features: dict) -> dict:
    """{j: probability the pair is right} from pair_features: a logistic model fitted on
    development visit pairs (its file records the data and its measured calibration). Without
    the file: the cost-and-margin heuristic (high when cheap and clearly better than the next)."""
    cal = _calibration()
    out = {}
    for j, f in features.items():
        if cal is None:
            out[j] = _confidence(*_cost_second(f))
        else:
            z = float(np.dot(cal["weights"], (f - cal["mean"]) / cal["scale"]) + cal["bias"])
            out[j] = float(1.0 / (1.0 + np.exp(-z)))
    return out


def _assign(C: np.ndarray, fixed: dict, max_cost: float):
    """One-to-one assignment minimising total cost, pairs above max_cost refused; reviewed
    pairs (fixed {j: i}) kept as they are. Returns {j: i}, confidence (k2,), second-best cost (k2,)."""
    k1, k2 = C.shape
    free1 = np.setdiff1d(np.arange(k1), list(fixed.values()))
    free2 = np.setdiff1d(np.arange(k2), list(fixed.keys()))
    assign = dict(fixed)
    sub = C[np.ix_(free1, free2)]
    if sub.size:
        # dummy "no partner" columns/rows at max_cost make unmatched a choice, not a failure
        big = np.where(np.isfinite(sub), sub, 1e6)
        n1, n2 = sub.shape
        M = np.full((n1 + n2, n2 + n1), 1e6)
        M[:n1, :n2] = big
        M[:n1, n2:] = np.where(np.eye(n1) > 0, max_cost, 1e6)
        M[n1:, :n2] = np.where(np.eye(n2) > 0, max_cost, 1e6)
        M[n1:, n2:] = 0.0
        r, c = linear_sum_assignment(M)
        for ri, ci in zip(r, c):
            if ri < n1 and ci < n2 and big[ri, ci] < max_cost:
                assign[int(free2[ci])] = int(free1[ri])
    conf = np.zeros(k2)
    second = np.full(k2, np.inf)
    for j, i in assign.items():
        if j in fixed:
            conf[j] = 1.0
            continue
        col = np.delete(C[:, j], i)
        row = np.delete(C[i], j)
        s = min(col.min(initial=np.inf), row.min(initial=np.inf), max_cost)
        second[j] = s
        conf[j] = _confidence(C[i, j], s)
    return assign, conf, second


def _confidence(cost: float, second: float) -> float:
    """A pair's confidence in [0, 1]: high when the pair is cheap and clearly better than the next
    candidate or no partner (second: the cheaper of those). A pair the one-to-one assignment
    forced although a cheaper alternative exists (second < cost, e.g. after a rejection) gets 0,
    never a negative number; an infinite cost gets 0."""
    if not np.isfinite(cost):
        return 0.0
    margin = max(float(second) - float(cost), 0.0)
    return float(np.clip(np.exp(-cost / 4) * (1 - np.exp(-margin)), 0.0, 1.0))


def _pair(a: dict, b: dict, i: int, j: int, dist: float, conf: float, reviewed: bool) -> TrackedPair:
    """The record of one matched pair: sizes, change and the flags a clinician acts on."""
    d1, d2 = float(a["diameter"][i]), float(b["diameter"][j])
    dd = d2 - d1
    pct = 100 * dd / max(d1, 1e-6)
    de = float(np.linalg.norm(a["lab"][i] - b["lab"][j]))
    flags = []
    if dd >= GROWN_MM or pct >= 100 * GROWN_FRACTION:
        flags.append(FLAG_GROWN)
    if np.isfinite(de) and de >= COLOUR_FLAG_DE:
        flags.append(FLAG_COLOUR)
    return TrackedPair(int(a["ids"][i]), int(b["ids"][j]), round(float(np.clip(conf, 0.0, 1.0)), 3),
                       round(dist, 2) if np.isfinite(dist) else None, reviewed, round(d1, 2), round(d2, 2), round(dd, 2),
                       round(pct, 1), round(float(a["area"][i]), 2), round(float(b["area"][j]), 2),
                       round(float(b["area"][j] - a["area"][i]), 2), round(de, 2) if np.isfinite(de) else None,
                       b["region"][j] or a["region"][i], flags)
