"""A clinician's working session, with no Qt in it: the project file and undoable edits.

    Project: the scans of one or two visits, their lesion lists (with every edit), the tracking
             result and the clinician's reviews; saved as one JSON file (atomically)
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
FORMAT_VERSION = 1
SUFFIX = ".bodymap"


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
                "title": self.title,
                "lesions": None if ls is None else ls.to_dict(),
                "diagnoses": {str(k): v for k, v in self.diagnoses.items()}}

    @classmethod
    def from_dict(cls, d: dict, base: Path | None, source="project") -> "VisitState":
        from bodymap.lesions import LesionSet

        ls = d.get("lesions")
        if ls is not None and not (isinstance(ls, dict) and isinstance(ls.get("lesions"), list)):
            raise ValueError("a visit's 'lesions' is not a lesion list")
        if not isinstance(d.get("scan"), str) or not isinstance(d.get("diagnoses", {}), dict):
            raise ValueError("a visit has no scan path, or malformed diagnoses")
        lesions = None if ls is None else LesionSet.from_dict(ls, source)
        return cls(_resolve(d["scan"], d.get("scan_abs"), base), lesions,
                   _resolve(d["analysis_dir"], d.get("analysis_dir_abs"), base) if d.get("analysis_dir") else None,
                   d.get("title", ""), {int(k): v for k, v in d.get("diagnoses", {}).items()})


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
    """Everything a clinician made in a session. visits: one (review) or two (comparison:
    visits[0] earlier); reviews: bodymap.track.Reviews of visit 2 against visit 1; tracking:
    the last Tracking as a dict (Tracking.to_dict) or None; path: the file it was saved to."""

    visits: list[VisitState] = dataclasses.field(default_factory=list)
    reviews: object = None
    tracking: dict | None = None
    notes: str = ""
    path: Path | None = None

    def ensure_reviews(self):
        """The Reviews, made on first use (bodymap.track is imported then, not at start-up)."""
        if self.reviews is None:
            from bodymap.track import Reviews

            self.reviews = Reviews()
        return self.reviews

    def to_dict(self, base: Path | None = None) -> dict:
        """JSON-ready; paths relative to base (the project file's folder) where possible."""
        return {"schema": SCHEMA, "version": FORMAT_VERSION, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "visits": [v.to_dict(base) for v in self.visits],
                "reviews": self.reviews.to_dict() if self.reviews is not None else None,
                "tracking": self.tracking, "notes": self.notes}

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
            if len(visits) > 2:
                raise ValueError(f"{len(visits)} visits; a project holds one or two")
            visits = [VisitState.from_dict(x, path.parent, path) for x in visits]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            msg = str(e).replace(f"{path}: ", "")
            if isinstance(e, KeyError):
                msg = f"missing {e}"
            raise ProjectError(f"{path}: the project file is corrupt ({msg})") from None
        return cls(visits, reviews, d.get("tracking"), d.get("notes", ""), path)


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
    reassign: confirm another id1), "reject", or "new" (id1 ignored)."""

    def __init__(self, action: str, id2: int, id1: int | None = None):
        if action not in ("confirm", "reject", "new"):
            raise ValueError(f"unknown review action {action!r}")
        self.action, self.id2, self.id1 = action, int(id2), None if id1 is None else int(id1)
        self.text = {"confirm": f"confirm {id2} = {id1}", "reject": f"reject {id2} = {id1}",
                     "new": f"mark {id2} new"}[action]
        self._old = None

    def apply(self, p):
        self._old = copy.deepcopy(p.ensure_reviews())
        if self.action == "confirm":
            p.reviews.confirm(self.id2, self.id1)
        elif self.action == "reject":
            p.reviews.reject(self.id2, self.id1)
        else:
            p.reviews.mark_new(self.id2)

    def revert(self, p):
        p.reviews = self._old


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


def manual_lesion(scan, face: int, bary, lid: int, diameter_mm: float = 3.0, labels=None) -> "Lesion":  # noqa: F821
    """A lesion the clinician placed by hand at surface point (face, bary (3,)) of scan (mm):
    colour sampled from the texture there, region from labels (RegionLabels) when given,
    confidence 1, source 'manual'. diameter_mm: the size to record (default 3 mm)."""
    from bodymap.colour import srgb_to_lab
    from bodymap.lesions import Lesion

    bary = np.asarray(bary, np.float64)
    bary = np.clip(bary, 0, None) / max(bary.clip(0).sum(), 1e-12)
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
