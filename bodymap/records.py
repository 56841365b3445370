"""Tracking records and how every output shows them: the one definition of a lesion's status
and of its colour and marker label.

    Status         matched | grown | uncertain | new | missing (exactly one per tracked lesion)
    TrackedPair    a visit-2 lesion matched to a visit-1 lesion (sizes, change, flags, confidence)
    NewLesion      a visit-2 lesion without a partner
    MissingLesion  a visit-1 lesion without a partner
    STYLES         Status -> Style (RGB, marker label, legend text); LESION_RGB: an untracked lesion
    markers(tracking), changes(tracking, visit): what the 3D views, the maps, the PDF and the
                   lesion table show for each lesion

"Reviewed" is not a status but a mark on a record: a clinician's confirmed pair can still be
grown, and a lesion they marked new is still new. A reviewed pair is never uncertain. A pair is
uncertain while its calibrated confidence is below UNCERTAIN and nobody reviewed it (the match
itself is in doubt, so its growth is not shown until it is confirmed); otherwise grown when its
flags say so, else matched. Flags (FLAG_*) are the findings a clinician acts on; a pair may carry
several (grown and colour change).

Records are built once by bodymap.track.track() and read back by Tracking.from_dict / load_json
(files of older versions, with or without a status, load the same way). No Qt in here.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Iterable

# a pair below this calibrated confidence is shown as "uncertain, please review" instead of as
# a match (bodymap.track.calibrated_confidence); from CONFIDENT up it may be trusted unreviewed
UNCERTAIN = 0.5
CONFIDENT = 0.9

FLAG_GROWN = "grown"
FLAG_COLOUR = "colour change"
FLAG_MISSING = "missing"


def flag_new(min_mm: float) -> str:
    """The flag of a new lesion at least min_mm across (e.g. 'new >= 3 mm')."""
    return f"new >= {min_mm:g} mm"


class Status(str, enum.Enum):
    """What a tracking says about one lesion (str-valued: 'matched', ... in JSON, CSV, the index)."""

    MATCHED = "matched"
    GROWN = "grown"
    UNCERTAIN = "uncertain"
    NEW = "new"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


def pair_status(flags: Iterable[str], confidence: float, reviewed: bool) -> Status:
    """The status of a matched pair (see the module docstring): uncertain below UNCERTAIN unless
    reviewed, else grown when flagged so, else matched."""
    if not reviewed and confidence < UNCERTAIN:
        return Status.UNCERTAIN
    return Status.GROWN if FLAG_GROWN in flags else Status.MATCHED


@dataclasses.dataclass(frozen=True)
class Style:
    """How a status is shown. rgb: marker, circle and text colour (0-255); label: the marker's
    text, formatted with id1 / id2 (the visit-1 number on both visits for a pair); legend: the
    word and marker hint in legends."""

    rgb: tuple[int, int, int]
    label: str
    legend: str

    @property
    def hex(self) -> str:
        return "#%02x%02x%02x" % self.rgb


# ASCII-free markers ("↑") need a font that has them: the GUI's and the maps' fonts do (DejaVu)
STYLES: dict[Status, Style] = {
    Status.MATCHED: Style((40, 150, 60), "{id1}", "matched (same number on both visits)"),
    Status.GROWN: Style((230, 120, 0), "{id1}↑", "grown (↑)"),
    Status.UNCERTAIN: Style((190, 0, 190), "{id1}~", "uncertain match (~): please review"),
    Status.NEW: Style((220, 20, 40), "N{id2}", "new (N…)"),
    Status.MISSING: Style((60, 60, 220), "{id1}?", "missing (…?)"),
}
# a lesion shown without a tracking (visit maps, the annotated mesh, the 3D view of one visit)
LESION_RGB = (220, 20, 40)
# statuses the lesion table's "flagged" filter shows: what asks for a clinician's look
ATTENTION = (Status.GROWN, Status.NEW, Status.UNCERTAIN)


def change_word(flags: Iterable[str]) -> str:
    """One word for a matched lesion's change over a series of visits, from its flags: 'grown',
    'changed' (another flag, e.g. colour change) or 'stable'. With 'new' and 'untracked' these
    are the words of the archive index (bodymap.followup) and the standards' exports
    (bodymap.export.record.lesion_status)."""
    flags = list(flags)
    if FLAG_GROWN in flags:
        return Status.GROWN.value
    return "changed" if flags else "stable"


def _num(x, default=None):
    return default if x is None else x


@dataclasses.dataclass
class TrackedPair:
    """Visit-2 lesion id2 is visit-1 lesion id1. confidence: calibrated probability that the
    pair is right (1 when reviewed); distance_mm: geodesic distance on scan 1 between id1 and
    id2's mapped position (None when unknown); diameters mm, areas mm^2, their change;
    colour_delta_e: CIELAB Delta E of the mean colours (None when unknown); region: where (text);
    flags: FLAG_GROWN / FLAG_COLOUR; reviewed: a clinician confirmed it; features: the values
    its confidence was computed from (bodymap.track.FEATURES)."""

    id1: int
    id2: int
    confidence: float = 1.0
    distance_mm: float | None = None
    reviewed: bool = False
    diameter1_mm: float | None = None
    diameter2_mm: float | None = None
    diameter_change_mm: float | None = None
    diameter_change_pct: float | None = None
    area1_mm2: float | None = None
    area2_mm2: float | None = None
    area_change_mm2: float | None = None
    colour_delta_e: float | None = None
    region: str = ""
    flags: list[str] = dataclasses.field(default_factory=list)
    features: list[float] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> Status:
        return pair_status(self.flags, self.confidence, self.reviewed)

    @property
    def grown(self) -> bool:
        """Flagged grown (whatever its status: an uncertain pair may have grown too)."""
        return FLAG_GROWN in self.flags

    def to_dict(self) -> dict:
        return {"id1": self.id1, "id2": self.id2, "confidence": self.confidence, "status": self.status.value,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)[3:]}}

    @classmethod
    def from_dict(cls, d: dict) -> "TrackedPair":
        """From to_dict()'s form or an older file's (missing fields None / empty; a stored
        status is ignored: it is always worked out by pair_status)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["id1"], kw["id2"] = int(d["id1"]), int(d["id2"])
        kw["confidence"] = float(_num(d.get("confidence"), 1.0))
        kw["reviewed"] = bool(d.get("reviewed", False))
        kw["flags"] = list(d.get("flags") or [])
        kw["region"] = d.get("region") or ""
        return cls(**kw)


@dataclasses.dataclass
class NewLesion:
    """Visit-2 lesion id2 has no partner in visit 1. reviewed: a clinician marked it new."""

    id2: int
    diameter_mm: float | None = None
    region: str = ""
    reviewed: bool = False
    flags: list[str] = dataclasses.field(default_factory=list)

    status = Status.NEW

    def to_dict(self) -> dict:
        return {"status": self.status.value, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "NewLesion":
        return cls(int(d["id2"]), d.get("diameter_mm"), d.get("region") or "", bool(d.get("reviewed", False)),
                   list(d.get("flags") or []))


@dataclasses.dataclass
class MissingLesion:
    """Visit-1 lesion id1 has no partner in visit 2 (excised, hidden, or missed)."""

    id1: int
    diameter_mm: float | None = None
    region: str = ""
    flags: list[str] = dataclasses.field(default_factory=lambda: [FLAG_MISSING])

    status = Status.MISSING
    reviewed = False

    def to_dict(self) -> dict:
        return {"status": self.status.value, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MissingLesion":
        return cls(int(d["id1"]), d.get("diameter_mm"), d.get("region") or "", list(d.get("flags") or []))


Record = TrackedPair | NewLesion | MissingLesion


def marker(record: Record) -> tuple[tuple[int, int, int], str]:
    """(rgb, label) of a record's marker, the same on both visits for a pair."""
    st = STYLES[record.status]
    return st.rgb, st.label.format(id1=getattr(record, "id1", ""), id2=getattr(record, "id2", ""))


def markers(tracking) -> tuple[dict, dict, dict, dict]:
    """Marker colours and labels of both visits from a Tracking (or None): (colours1, labels1,
    colours2, labels2), each {lesion id: rgb / text}. A pair's two lesions share colour and
    label (the visit-1 number)."""
    c1, l1, c2, l2 = {}, {}, {}, {}
    if tracking is None:
        return c1, l1, c2, l2
    for r in [*tracking.pairs, *tracking.new, *tracking.missing]:
        col, text = marker(r)
        if not isinstance(r, NewLesion):
            c1[r.id1], l1[r.id1] = col, text
        if not isinstance(r, MissingLesion):
            c2[r.id2], l2[r.id2] = col, text
    return c1, l1, c2, l2


def changes(tracking, visit: int) -> dict:
    """{lesion id: (text, Status)} of visit 0 (earlier) or 1 (later) from a Tracking (or None):
    what the lesion table's change column and the detail panel say."""
    out: dict = {}
    if tracking is None:
        return out
    for p in tracking.pairs:
        st = p.status
        me, other = (p.id2, p.id1) if visit == 1 else (p.id1, p.id2)
        if st is Status.UNCERTAIN:
            out[me] = (f"uncertain match #{other}: review", st)
            continue
        if visit == 1:
            txt = f"grown (#{p.id1}, {p.diameter_change_mm:+.1f} mm)" if st is Status.GROWN else f"matched #{p.id1}"
            if FLAG_COLOUR in p.flags:
                txt += ", colour"
        else:
            txt = f"grown (#{p.id2})" if st is Status.GROWN else f"matched #{p.id2}"
        out[me] = (txt + (" ✓" if p.reviewed else ""), st)
    if visit == 1:
        for n in tracking.new:
            out[n.id2] = ("new" + (" (flagged)" if n.flags else "") + (" ✓" if n.reviewed else ""), n.status)
    else:
        for m in tracking.missing:
            out[m.id1] = ("missing", m.status)
    return out


def counts(tracking) -> dict[Status, int]:
    """How many lesions of each status a Tracking holds."""
    out = {s: 0 for s in Status}
    for r in [*tracking.pairs, *tracking.new, *tracking.missing]:
        out[r.status] += 1
    return out


def summary(tracking) -> str:
    """One line: '120 matched (5 grown, 2 uncertain), 3 new, 1 missing; 8 flagged'."""
    c = counts(tracking)
    return (f"{len(tracking.pairs)} matched ({c[Status.GROWN]} grown, {c[Status.UNCERTAIN]} uncertain), "
            f"{c[Status.NEW]} new, {c[Status.MISSING]} missing; {len(tracking.flagged)} flagged")
