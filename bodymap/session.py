"""A clinician's working session, with no Qt in it: the project file and undoable edits.

    Project: a patient (id, name or pseudonym, sex, birth year, notes) and any number of dated
             visits in date order: their scans, lesion lists (with every edit), each lesion's
             status (monitor, biopsied, excised, benign by review) and attached photographs, the
             tracking results and the clinician's reviews of each link between consecutive
             visits; saved as one JSON file (atomically)
    History: undo / redo of edits (add or delete a lesion, correct a site, add a note, review a match)

The GUI shows a Project and changes it only through History.push(command), so every change can
be undone and every change is autosaved. The project format carries a version; a file from a
newer BodyMap, or one that is not a project, gives a ProjectError naming the file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bodymap import taxonomy as tx
from bodymap.jsonfile import write_json

SCHEMA = "bodymap.project"
# 2: patient record, visit dates, any number of visits (links 2.. in "links"), lesion statuses and
# attachments. Format 1 files (one or two visits, no patient) open unchanged.
FORMAT_VERSION = 2
SUFFIX = ".bodymap"
SEXES = ("", "female", "male", "other")
LESION_STATUSES = ("monitor", "biopsied", "excised", "benign by review")


class ProjectError(ValueError):
    """A project file cannot be used; the message names the file and the problem."""


def data_dir() -> Path:
    """Where BodyMap keeps autosaves and analysis folders made from the GUI: $BODYMAP_HOME or
    ~/.local/share/bodymap (created on demand)."""
    d = Path(os.environ.get("BODYMAP_HOME") or Path.home() / ".local" / "share" / "bodymap")
    d.mkdir(parents=True, exist_ok=True)
    return d


class AutosaveSlot:
    """One window's autosave file, <data dir>/autosave/<start time>-<pid>-<n>.bodymap, locked
    (an OS file lock on the .lock beside it) while its window lives: two windows never write
    the same file, and a file whose lock nobody holds was left by a window that did not close
    cleanly (a crash), which the next start offers back (``orphaned_autosaves``). The lock dies
    with the process, so a crash never leaves a file looking alive."""

    _count = 0

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else data_dir() / "autosave"
        self.folder.mkdir(parents=True, exist_ok=True)
        AutosaveSlot._count += 1
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{AutosaveSlot._count}"
        self.path = self.folder / f"{name}{SUFFIX}"
        self.lock = _Lock(self.folder / f"{name}.lock")
        if not self.lock.acquire():  # cannot happen for a fresh name, but never share a file
            raise OSError(f"{self.lock.path}: autosave slot already in use")

    def save(self, project: "Project") -> Path:
        """Write project to this slot's file (atomically)."""
        return project.save(self.path)

    def close(self, keep: bool) -> None:
        """Release the slot; keep: leave the file (unsaved work) for the next start to offer."""
        if not keep:
            self.path.unlink(missing_ok=True)
        self.lock.release(remove=not keep)


class _Lock:
    """An exclusive, non-blocking OS lock on a file (fcntl.flock; on Windows msvcrt.locking);
    released by the OS when the process ends."""

    def __init__(self, path: Path):
        self.path, self._fh = Path(path), None

    def acquire(self) -> bool:
        fh = open(self.path, "a+")
        try:
            if os.name == "nt":  # pragma: no cover
                import msvcrt

                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return True

    def release(self, remove: bool = True) -> None:
        if self._fh is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            self._fh.close()  # closing drops the lock
            self._fh = None


def orphaned_autosaves(folder: str | Path | None = None) -> list[tuple[Path, "_Lock"]]:
    """Autosave files no living window owns (left by a crash), newest first, each with its lock
    now held by the caller (so two starting windows never both recover one file): release it
    with ``lock.release()`` when done (after deleting the file, or to leave it for later).
    Includes the single autosave.bodymap of older BodyMap versions."""
    folder = Path(folder) if folder else data_dir() / "autosave"
    out = []
    files = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    legacy = data_dir() / f"autosave{SUFFIX}"
    if legacy.is_file():
        files.append(legacy)
    for f in files:
        lock = _Lock(f.with_suffix(".lock"))
        if lock.acquire():
            out.append((f, lock))
    return out


@dataclasses.dataclass
class VisitState:
    """One visit in a project. scan_path: the mesh file; analysis_dir: the folder analyze wrote
    (labels.npz with the correspondence; None before analysis); lesions: the lesion list with
    the clinician's edits (None before analysis); diagnoses {lesion id: {label, probs}}."""

    scan_path: str
    lesions: "LesionSet | None" = None  # noqa: F821
    analysis_dir: str | None = None
    title: str = ""
    diagnoses: dict = dataclasses.field(default_factory=dict)
    # ISO date of the visit (YYYY-MM-DD; "" unknown)
    date: str = ""
    # {lesion id: {"status": one of LESION_STATUSES, "date": ISO date, "note": str}}
    status: dict = dataclasses.field(default_factory=dict)
    # {lesion id: [{"path": photo file, "kind": "dermoscopy" | "clinical" | ..., "date", "note"}]}
    attachments: dict = dataclasses.field(default_factory=dict)

    def lesion(self, lid: int) -> "Lesion":  # noqa: F821
        """The lesion with id lid. KeyError when there is none."""
        for l in self.lesions.lesions if self.lesions else []:
            if l.id == lid:
                return l
        raise KeyError(f"no lesion {lid} on {self.title or self.scan_path}")

    def next_id(self) -> int:
        """An id no lesion of this visit has (ids of deleted lesions are never reused while the
        edit can be undone, so reviews keyed by id stay right)."""
        used = [l.id for l in self.lesions.lesions] if self.lesions else []
        return max(used + [self.lesions.info.get("max_id", 0) if self.lesions else 0]) + 1

    def to_dict(self, base: Path | None) -> dict:
        ls = self.lesions
        return {"scan": _rel(self.scan_path, base), "scan_abs": str(Path(self.scan_path).resolve()),
                "analysis_dir": _rel(self.analysis_dir, base) if self.analysis_dir else None,
                "analysis_dir_abs": str(Path(self.analysis_dir).resolve()) if self.analysis_dir else None,
                "title": self.title, "date": self.date,
                "lesions": None if ls is None else ls.to_dict(),
                "diagnoses": {str(k): v for k, v in self.diagnoses.items()},
                "status": {str(k): v for k, v in self.status.items()},
                "attachments": {str(k): [{**a, "path": _rel(a["path"], base), "path_abs": str(Path(a["path"]).resolve())}
                                         for a in v] for k, v in self.attachments.items()}}

    @classmethod
    def from_dict(cls, d: dict, base: Path | None, source="project") -> "VisitState":
        from bodymap.lesions import LesionSet

        ls = d.get("lesions")
        if ls is not None and not (isinstance(ls, dict) and isinstance(ls.get("lesions"), list)):
            raise ValueError("a visit's 'lesions' is not a lesion list")
        if not isinstance(d.get("scan"), str) or not isinstance(d.get("diagnoses", {}), dict):
            raise ValueError("a visit has no scan path, or malformed diagnoses")
        lesions = None if ls is None else LesionSet.from_dict(ls, source)
        date = d.get("date") or ""
        if not isinstance(date, str) or (date and _iso_date(date) is None):
            raise ValueError(f"a visit's date {date!r} is not a date (YYYY-MM-DD)")
        status = {int(k): _check_status(v) for k, v in (d.get("status") or {}).items()}
        att = {}
        for k, v in (d.get("attachments") or {}).items():
            if not isinstance(v, list) or not all(isinstance(a, dict) and isinstance(a.get("path"), str) for a in v):
                raise ValueError(f"the attachments of lesion {k} are not a list of files")
            att[int(k)] = [{**{x: y for x, y in a.items() if x != "path_abs"},
                            "path": _resolve(a["path"], a.get("path_abs"), base)} for a in v]
        return cls(_resolve(d["scan"], d.get("scan_abs"), base), lesions,
                   _resolve(d["analysis_dir"], d.get("analysis_dir_abs"), base) if d.get("analysis_dir") else None,
                   d.get("title", ""), {int(k): v for k, v in d.get("diagnoses", {}).items()}, date, status, att)


def _iso_date(text: str):
    import datetime

    try:
        return datetime.date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def _check_status(v) -> dict:
    """A lesion status record, checked: {"status": one of LESION_STATUSES, "date": ISO or "", "note"}."""
    if not isinstance(v, dict) or v.get("status") not in LESION_STATUSES:
        raise ValueError(f"lesion status {v!r} is not one of {', '.join(LESION_STATUSES)}")
    if v.get("date") and _iso_date(v["date"]) is None:
        raise ValueError(f"lesion status date {v['date']!r} is not a date (YYYY-MM-DD)")
    return {"status": v["status"], "date": v.get("date") or "", "note": v.get("note") or ""}


@dataclasses.dataclass
class Patient:
    """The patient of a project: id (the clinic's, or a pseudonym's code), name (a name or a
    pseudonym), sex (one of SEXES), birth_year (or None), notes."""

    id: str = ""
    name: str = ""
    sex: str = ""
    birth_year: int | None = None
    notes: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Patient":
        """A checked record (ValueError naming the bad field)."""
        if not isinstance(d, dict):
            raise ValueError("'patient' is not a record")
        p = cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        for f in ("id", "name", "notes"):
            if not isinstance(getattr(p, f), str):
                raise ValueError(f"patient {f} is not text")
        if p.sex not in SEXES:
            raise ValueError(f"patient sex {p.sex!r} is not one of {', '.join(repr(x) for x in SEXES)}")
        if p.birth_year is not None and (not isinstance(p.birth_year, int) or not 1880 <= p.birth_year <= 2200):
            raise ValueError(f"patient birth year {p.birth_year!r} is not a year")
        return p


def _rel(p: str | None, base: Path | None) -> str | None:
    """p relative to base when that is shorter to move with the project (same tree), else absolute."""
    if p is None:
        return None
    if base is not None:
        try:
            return os.path.relpath(Path(p).resolve(), base.resolve())
        except ValueError:  # another drive
            pass
    return str(Path(p).resolve())


def _resolve(p: str, absolute: str | None, base: Path | None) -> str:
    """The path recorded as p (relative to the project's folder) or, when that is gone, absolute."""
    if base is not None and not Path(p).is_absolute() and (base / p).exists():
        return str((base / p).resolve())
    if absolute and Path(absolute).exists():
        return absolute
    return str(base / p) if base is not None and not Path(p).is_absolute() else p


@dataclasses.dataclass
class Project:
    """Everything a clinician made for one patient. visits: in date order (add_visit keeps it;
    visits without a date after the dated ones); link k (k = 1 .. len(visits) - 1) is visit k
    tracked against visit k - 1: link 1's reviews (bodymap.track.Reviews) and tracking
    (Tracking.to_dict() or None) are the fields reviews and tracking (the pair the Compare tab
    shows, as in format 1), later links' are in links {k: {"tracking", "reviews"}} (use
    link_reviews / link_tracking / set_link); detached_reviews: reviews of links a visit added
    later split (kept, with the two visits' scans, never lost); patient: Patient or None;
    path: the file it was saved to."""

    visits: list[VisitState] = dataclasses.field(default_factory=list)
    reviews: object = None
    tracking: dict | None = None
    notes: str = ""
    path: Path | None = None
    patient: Patient | None = None
    links: dict = dataclasses.field(default_factory=dict)
    detached_reviews: list = dataclasses.field(default_factory=list)

    # --------------------------------------------------------------- visits and links
    def link_reviews(self, k: int):
        """The Reviews of link k (visit k against visit k - 1), made on first use."""
        self._check_link(k)
        if k == 1:
            return self.ensure_reviews()
        rec = self.links.setdefault(k, {"tracking": None, "reviews": None})
        if rec["reviews"] is None:
            from bodymap.track import Reviews

            rec["reviews"] = Reviews()
        return rec["reviews"]

    def link_tracking(self, k: int) -> dict | None:
        """The tracking of link k (Tracking.to_dict()) or None when not tracked yet."""
        self._check_link(k)
        return self.tracking if k == 1 else self.links.get(k, {}).get("tracking")

    def set_link(self, k: int, tracking: dict | None) -> None:
        """Record link k's tracking (Tracking.to_dict() or None)."""
        self._check_link(k)
        if k == 1:
            self.tracking = tracking
        else:
            self.links.setdefault(k, {"tracking": None, "reviews": None})["tracking"] = tracking

    def _check_link(self, k: int) -> None:
        if not 1 <= k < len(self.visits):
            raise IndexError(f"link {k}: the project has {len(self.visits)} visits (links 1..{len(self.visits) - 1})")

    def _all_links(self) -> list[dict]:
        return [{"tracking": self.link_tracking(k),
                 "reviews": self.reviews if k == 1 else self.links.get(k, {}).get("reviews")}
                for k in range(1, len(self.visits))]

    def _set_all_links(self, links: list[dict]) -> None:
        self.reviews = links[0]["reviews"] if links else None
        self.tracking = links[0]["tracking"] if links else None
        self.links = {k: dict(rec) for k, rec in enumerate(links[1:], 2)}

    def add_visit(self, visit: VisitState) -> int:
        """Insert visit in date order (after visits of the same date; undated visits go last)
        and return its index. A visit landing between two tracked visits splits their link: its
        tracking is dropped (track again) and its reviews go to detached_reviews."""
        from bodymap.history import parse_date

        d = parse_date(visit.date)
        i = len(self.visits)
        if d is not None:
            for j, v in enumerate(self.visits):
                dv = parse_date(v.date)
                if dv is None or dv > d:
                    i = j
                    break
        links = self._all_links()
        empty = {"tracking": None, "reviews": None}
        if i == len(self.visits):
            links = links + [dict(empty)] if self.visits else links
        elif i == 0:
            links = [dict(empty)] + links
        else:
            split = links[i - 1]
            if split["reviews"] is not None and (split["reviews"].confirmed or split["reviews"].rejected
                                                 or split["reviews"].new):
                self.detached_reviews.append({"scan1": self.visits[i - 1].scan_path,
                                              "scan2": self.visits[i].scan_path,
                                              "reviews": split["reviews"].to_dict()})
            links = links[:i - 1] + [dict(empty), dict(empty)] + links[i:]
        self.visits.insert(i, visit)
        self._set_all_links(links)
        return i

    def track_links(self, visits: list, progress=None, retrack: bool = False) -> list[int]:
        """Track every link not tracked yet (all with retrack) with its own reviews respected
        (bodymap.pipeline.track_visits) and record the results. visits: bodymap.track.Visit per
        project visit (same order; scan + lesions, correspondence when analysed). Returns the
        links tracked. progress(stage, fraction) over all of them."""
        from bodymap.pipeline import track_visits

        if len(visits) != len(self.visits):
            raise ValueError(f"track_links: {len(self.visits)} visits in the project, {len(visits)} given")
        todo = [k for k in range(1, len(self.visits)) if retrack or self.link_tracking(k) is None]
        for n, k in enumerate(todo):
            sub = (lambda s, f, n=n, k=k: progress(f"visit {k + 1} against {k}: {s}", (n + f) / len(todo))
                   if progress else None)
            t = track_visits(visits[k - 1], visits[k], reviews=self.link_reviews(k), progress=sub)
            self.set_link(k, t.to_dict())
        return todo

    def series(self):
        """bodymap.followup.Series of the visits from the recorded link trackings (a link not
        tracked yet numbers the later visit's lesions anew, status 'untracked'). Visits without
        a lesion list count as having no lesions."""
        from bodymap.followup import chain_ids

        ids = [[l.id for l in v.lesions.lesions] if v.lesions is not None else [] for v in self.visits]
        trs = [_StoredTracking(t) if (t := self.link_tracking(k)) else None for k in range(1, len(self.visits))]
        return chain_ids(ids, trs)

    def ensure_reviews(self):
        """The Reviews, made on first use (bodymap.track is imported then, not at start-up)."""
        if self.reviews is None:
            from bodymap.track import Reviews

            self.reviews = Reviews()
        return self.reviews

    def to_dict(self, base: Path | None = None) -> dict:
        """JSON-ready; paths relative to base (the project file's folder) where possible."""
        return {"schema": SCHEMA, "version": FORMAT_VERSION, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "patient": self.patient.to_dict() if self.patient is not None else None,
                "visits": [v.to_dict(base) for v in self.visits],
                "reviews": self.reviews.to_dict() if self.reviews is not None else None,
                "tracking": self.tracking, "notes": self.notes,
                "links": {str(k): {"tracking": r.get("tracking"),
                                   "reviews": r["reviews"].to_dict() if r.get("reviews") is not None else None}
                          for k, r in sorted(self.links.items())},
                "detached_reviews": self.detached_reviews}

    def save(self, path: str | Path) -> Path:
        """Write the project (atomically: a crash mid-write leaves the previous file whole)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict(path.parent))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Project":
        """Read a project file. Raises ProjectError naming the file when it is missing, not
        JSON, not a BodyMap project, or written by a newer BodyMap."""
        from bodymap.track import Reviews

        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProjectError(f"{path}: project file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ProjectError(f"{path}: cannot read the project file ({e})") from None
        except json.JSONDecodeError as e:
            raise ProjectError(f"{path}: the project file is corrupt (not valid JSON: {e.msg} at line {e.lineno}); "
                               "an autosave may hold your work (File > Recover autosave)") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ProjectError(f"{path}: not a BodyMap project file")
        v = d.get("version")
        if not isinstance(v, int):
            raise ProjectError(f"{path}: project file has no format version; corrupt?")
        if v > FORMAT_VERSION:
            raise ProjectError(f"{path}: written by a newer BodyMap (project format {v}; this version reads up to "
                               f"{FORMAT_VERSION}); update BodyMap to open it")
        try:
            rv = d.get("reviews") or {}
            if not isinstance(rv, dict):
                raise ValueError("'reviews' is not a record")
            reviews = Reviews.from_dict(rv, "reviews")
            visits = d.get("visits")
            if not isinstance(visits, list) or not all(isinstance(x, dict) for x in visits):
                raise ValueError("'visits' is not a list of visit records")
            if v < 2 and len(visits) > 2:
                raise ValueError(f"{len(visits)} visits; a format-1 project holds one or two")
            visits = [VisitState.from_dict(x, path.parent, path) for x in visits]
            patient = Patient.from_dict(d["patient"]) if d.get("patient") is not None else None
            links = {}
            raw = d.get("links") or {}
            if not isinstance(raw, dict):
                raise ValueError("'links' is not a record")
            for k, rec in raw.items():
                if not isinstance(rec, dict) or not 2 <= int(k) < len(visits):
                    raise ValueError(f"link {k} does not join two of the {len(visits)} visits")
                links[int(k)] = {"tracking": rec.get("tracking"),
                                 "reviews": Reviews.from_dict(rec["reviews"], "reviews") if rec.get("reviews") else None}
            detached = d.get("detached_reviews") or []
            if not isinstance(detached, list):
                raise ValueError("'detached_reviews' is not a list")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            msg = str(e).replace(f"{path}: ", "")
            if isinstance(e, KeyError):
                msg = f"missing {e}"
            raise ProjectError(f"{path}: the project file is corrupt ({msg})") from None
        return cls(visits, reviews, d.get("tracking"), d.get("notes", ""), path, patient, links, detached)


class _StoredTracking:
    """A tracking as the project stores it (Tracking.to_dict()), with what chain_ids reads."""

    def __init__(self, d: dict):
        from bodymap.records import MissingLesion, NewLesion, TrackedPair

        self.pairs = [TrackedPair.from_dict(p) for p in d.get("pairs", [])]
        self.new = [NewLesion.from_dict(n) for n in d.get("new", [])]
        self.missing = [MissingLesion.from_dict(m) for m in d.get("missing", [])]

    def partner(self) -> dict:
        return {int(p.id2): int(p.id1) for p in self.pairs}


def patient_project(folder: str | Path, analyses: list | None = None) -> Project:
    """A new project of a patient folder: FOLDER/patient.json (BodyMap's record or a synthetic
    patient's from `bodymap synth`) and one sub-folder per visit holding its scan (scan.obj,
    .ply, .glb, .gltf or .off); each visit's date from its truth.json (synthetic visits) when
    there is one; visits in date order. analyses: an analysis folder per visit (same order as
    the sorted sub-folders) or None. ValueError naming the folder when it holds no visit."""
    from bodymap.export.record import Patient as Record, _truth_date

    folder = Path(folder)
    visits = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        scan = next((d / f"scan{e}" for e in (".obj", ".ply", ".glb", ".gltf", ".off") if (d / f"scan{e}").is_file()),
                    None)
        if scan is not None:
            visits.append(VisitState(str(scan), title=d.name, date=_truth_date(d)))
    if not visits:
        raise ValueError(f"{folder}: no visit folders with a scan (VISIT/scan.obj)")
    if analyses is not None:
        if len(analyses) != len(visits):
            raise ValueError(f"{folder}: {len(visits)} visits but {len(analyses)} analysis folders")
        for v, a in zip(visits, analyses):
            v.analysis_dir = str(a) if a else None
    p = Project()
    if (folder / "patient.json").is_file():
        r = Record.from_json(folder / "patient.json")
        dates = [v.date for v in visits if v.date]
        birth = r.birth_year or (int(min(dates)[:4]) - int(round(r.age_years)) if dates and r.age_years else None)
        p.patient = Patient(r.id, r.name, {"F": "female", "M": "male", "O": "other"}.get(r.sex, ""), birth, r.notes)
    for v in visits:
        p.add_visit(v)
    return p


# ---------------------------------------------------------------------------------- edits
class Command:
    """One undoable change of a Project. text: what the Edit menu shows."""

    text = ""

    def apply(self, project: Project) -> None:
        raise NotImplementedError

    def revert(self, project: Project) -> None:
        raise NotImplementedError


class AddLesion(Command):
    """Add a lesion (made by manual_lesion) to visit k."""

    def __init__(self, k: int, lesion: "Lesion"):  # noqa: F821
        self.k, self.lesion, self.text = k, lesion, f"add lesion {lesion.id}"

    def apply(self, p):
        ls = p.visits[self.k].lesions
        ls.lesions.append(copy.deepcopy(self.lesion))
        ls.info["max_id"] = max(ls.info.get("max_id", 0), self.lesion.id)

    def revert(self, p):
        ls = p.visits[self.k].lesions
        ls.lesions = [l for l in ls.lesions if l.id != self.lesion.id]


class DeleteLesion(Command):
    """Delete lesion lid of visit k (a false positive); its position in the list is restored on undo."""

    def __init__(self, k: int, lid: int):
        self.k, self.lid, self.text = k, lid, f"delete lesion {lid}"
        self._saved = None  # (index, Lesion)

    def apply(self, p):
        ls = p.visits[self.k].lesions
        i = next(i for i, l in enumerate(ls.lesions) if l.id == self.lid)
        self._saved = (i, ls.lesions.pop(i))
        ls.info["max_id"] = max(ls.info.get("max_id", 0), self.lid)

    def revert(self, p):
        i, l = self._saved
        p.visits[self.k].lesions.lesions.insert(i, l)


class SetField(Command):
    """Set one field of lesion lid of visit k (region: a site correction; note: a note)."""

    def __init__(self, k: int, lid: int, field: str, value, text: str | None = None):
        self.k, self.lid, self.field, self.value = k, lid, field, copy.deepcopy(value)
        self.text = text or f"set {field} of lesion {lid}"
        self._old = None

    def apply(self, p):
        l = p.visits[self.k].lesion(self.lid)
        self._old = copy.deepcopy(getattr(l, self.field))
        setattr(l, self.field, copy.deepcopy(self.value))

    def revert(self, p):
        setattr(p.visits[self.k].lesion(self.lid), self.field, self._old)


class Review(Command):
    """A clinician's decision on a match of visit 2 (id2) to visit 1 (id1): "confirm" (also
    reassign: confirm another id1), "reject", or "new" (id1 ignored). link: which pair of
    consecutive visits (k: visit k against visit k - 1; 1 = the first two)."""

    def __init__(self, action: str, id2: int, id1: int | None = None, link: int = 1):
        if action not in ("confirm", "reject", "new"):
            raise ValueError(f"unknown review action {action!r}")
        self.action, self.id2, self.id1 = action, int(id2), None if id1 is None else int(id1)
        self.link = int(link)
        self.text = {"confirm": f"confirm {id2} = {id1}", "reject": f"reject {id2} = {id1}",
                     "new": f"mark {id2} new"}[action]
        self._old = None

    def apply(self, p):
        rv = p.ensure_reviews() if self.link == 1 else p.link_reviews(self.link)
        self._old = copy.deepcopy(rv)
        if self.action == "confirm":
            rv.confirm(self.id2, self.id1)
        elif self.action == "reject":
            rv.reject(self.id2, self.id1)
        else:
            rv.mark_new(self.id2)

    def revert(self, p):
        if self.link == 1:
            p.reviews = self._old
        else:
            p.links[self.link]["reviews"] = self._old


class SetStatus(Command):
    """Set the status of lesion lid of visit k: status one of LESION_STATUSES (or None to
    clear it), date (ISO, "" unknown), note."""

    def __init__(self, k: int, lid: int, status: str | None, date: str = "", note: str = ""):
        self.k, self.lid = k, int(lid)
        self.value = None if status is None else _check_status({"status": status, "date": date, "note": note})
        self.text = f"set status of lesion {lid}" if status else f"clear status of lesion {lid}"
        self._old = None

    def apply(self, p):
        v = p.visits[self.k]
        v.lesion(self.lid)  # KeyError for a lesion the visit does not have
        self._old = v.status.get(self.lid)
        _put(v.status, self.lid, self.value)

    def revert(self, p):
        _put(p.visits[self.k].status, self.lid, self._old)


class Attach(Command):
    """Attach a photograph (a file: dermoscopy, clinical close-up, ...) to lesion lid of visit k."""

    def __init__(self, k: int, lid: int, path: str | Path, kind: str = "clinical", date: str = "", note: str = ""):
        if date and _iso_date(date) is None:
            raise ValueError(f"attachment date {date!r} is not a date (YYYY-MM-DD)")
        self.k, self.lid = k, int(lid)
        self.record = {"path": str(Path(path).resolve()), "kind": kind, "date": date, "note": note}
        self.text = f"attach {Path(path).name} to lesion {lid}"

    def apply(self, p):
        p.visits[self.k].lesion(self.lid)
        p.visits[self.k].attachments.setdefault(self.lid, []).append(dict(self.record))

    def revert(self, p):
        a = p.visits[self.k].attachments
        a[self.lid].pop()
        if not a[self.lid]:
            del a[self.lid]


class SetPatient(Command):
    """Set the project's patient record (a Patient; None clears it)."""

    text = "edit patient"

    def __init__(self, patient: "Patient | None"):
        self.value = copy.deepcopy(patient)
        self._old = None

    def apply(self, p):
        self._old, p.patient = p.patient, copy.deepcopy(self.value)

    def revert(self, p):
        p.patient = self._old


def _put(d: dict, key, value) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


class History:
    """Undo / redo over a Project. listeners: called with the command after every change (the
    GUI refreshes its views and autosaves there)."""

    def __init__(self, project: Project, limit: int = 500):
        self.project, self.limit = project, limit
        self.done: list[Command] = []
        self.undone: list[Command] = []
        self.listeners: list[Callable[[Command], None]] = []
        self.clean_index = 0  # len(done) when last saved

    def push(self, cmd: Command) -> None:
        """Apply cmd and record it; clears the redo list."""
        cmd.apply(self.project)
        self.done.append(cmd)
        self.undone.clear()
        if len(self.done) > self.limit:
            self.done.pop(0)
            self.clean_index -= 1
        self._notify(cmd)

    def undo(self) -> Command | None:
        """Revert the last change (None when there is nothing to undo)."""
        if not self.done:
            return None
        cmd = self.done.pop()
        cmd.revert(self.project)
        self.undone.append(cmd)
        self._notify(cmd)
        return cmd

    def redo(self) -> Command | None:
        """Apply again the last undone change (None when there is none)."""
        if not self.undone:
            return None
        cmd = self.undone.pop()
        cmd.apply(self.project)
        self.done.append(cmd)
        self._notify(cmd)
        return cmd

    @property
    def dirty(self) -> bool:
        """Changed since the last mark_clean()."""
        return len(self.done) != self.clean_index

    def mark_clean(self) -> None:
        self.clean_index = len(self.done)

    def _notify(self, cmd: Command) -> None:
        for f in list(self.listeners):
            f(cmd)


# ------------------------------------------------------------------------- helpers
def region_for_site(code: str, side: str = "midline", ear: str = "non_ear") -> dict:
    """The region record of a lesion (the keys RegionIndex.region_at gives) for a site code
    chosen by hand, e.g. region_for_site("upper_extremity/forearm", "left"). Marked manual."""
    s = tx.site(code)
    return {"code": s.code, "name": s.name, "side": side, "ear": ear, "macro": tx.macro(s.index),
            "description": tx.describe(s.index, tx.LATERALITY.index(side)), "distance_mm": 0.0,
            "reliable": True, "manual": True}


def manual_lesion(scan, face: int, bary, lid: int, diameter_mm: float = 3.0, labels=None,
                  measure: bool = True) -> "Lesion":  # noqa: F821
    """A lesion the clinician placed by hand at surface point (face, bary (3,)) of scan (mm),
    confidence 1, source 'manual', region from labels (RegionLabels) when given. measure: the
    lesion under the click is segmented and measured like a detected one (bodymap.manual:
    outline, diameter, area, colour, measures); when nothing stands out there (or measure is
    False) it is a dot of diameter_mm (the clinician's size) with the texture's colour there."""
    from bodymap.colour import srgb_to_lab
    from bodymap.lesions import Lesion

    bary = np.asarray(bary, np.float64)
    bary = np.clip(bary, 0, None) / max(bary.clip(0).sum(), 1e-12)
    if measure:
        from bodymap.manual import measure_at

        m = measure_at(scan, face, bary, diameter_mm)
        if m is not None:
            m.id = int(lid)
            if labels is not None:
                from bodymap.anatomy.labels import RegionIndex

                m.region = RegionIndex(scan.vertices, scan.faces, labels).region_at(np.asarray(m.point_mm))[0]
            return m
    point = scan.points_from_barycentric(np.array([face]), bary[None])[0]
    normal = scan.face_normals[face]
    lab = [0.0, 0.0, 0.0]
    box = None
    if scan.texture is not None and scan.uv is not None:
        from bodymap.scan import uv_to_pixel

        uv = scan.uv_from_barycentric(np.array([face]), bary[None])
        x, y = uv_to_pixel(uv, scan.texture.shape)[0]
        H, W = scan.texture.shape[:2]
        xi, yi = int(np.clip(round(x), 0, W - 1)), int(np.clip(round(y), 0, H - 1))
        lab = [round(float(c), 2) for c in srgb_to_lab(scan.texture[yi:yi + 1, xi:xi + 1]).reshape(3)]
        r = 4
        box = [float(xi - r), float(yi - r), float(xi + r), float(yi + r)]
    region = {}
    if labels is not None:
        from bodymap.anatomy.labels import RegionIndex

        region = RegionIndex(scan.vertices, scan.faces, labels).region_at(point)[0]
    return Lesion(id=int(lid), point_mm=[round(float(x), 3) for x in point], face=int(face),
                  bary=[round(float(x), 6) for x in bary], normal=[round(float(x), 5) for x in normal],
                  diameter_mm=float(diameter_mm), area_mm2=round(float(np.pi * diameter_mm ** 2 / 4), 2),
                  colour_lab=lab, skin_lab=lab, contrast_de=0.0, confidence=1.0, source="manual",
                  detector="clinician", box_px=box, region=region)
