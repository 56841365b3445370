"""What the standard exports (SLICE-3D table, DICOM, FHIR) need about a visit, gathered once.

    visit = load_export_visit(ANALYSIS_DIR, patient=None, previous=None, tracking=None)

gives the scan, its lesions (measured: lists written before the measures existed are measured
now), the registration, the patient record, the visit's id and date, and for each lesion its
tracking key (the lesion it continues at the earlier visit) and its change since then.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from pathlib import Path

from bodymap.records import Status, change_word


@dataclasses.dataclass
class Patient:
    """The patient record. id; name (or pseudonym); sex 'F', 'M', 'O' or '' (unknown);
    birth_year (or None); age_years at the visit (or None); notes."""

    id: str
    name: str = ""
    sex: str = ""
    birth_year: int | None = None
    age_years: float | None = None
    notes: str = ""

    @classmethod
    def from_json(cls, path: str | Path) -> "Patient":
        """Read a patient record: BodyMap's patient.json (a project's record: id, name, sex,
        birth_year, notes) or a synthetic patient's (patient_id, body.sex, body.age_years).
        ValueError naming the file when it is neither."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable patient record ({e})") from None
        if not isinstance(d, dict) or not (d.get("id") or d.get("patient_id")):
            raise ValueError(f"{path}: not a patient record (no id or patient_id)")
        body = d.get("body") or {}
        sex = str(d.get("sex") or body.get("sex") or "").lower()
        age = d.get("age_years", body.get("age_years"))
        return cls(id=str(d.get("id") or d.get("patient_id")), name=str(d.get("name") or d.get("pseudonym") or ""),
                   sex={"female": "F", "f": "F", "male": "M", "m": "M", "other": "O", "o": "O"}.get(sex, ""),
                   birth_year=int(d["birth_year"]) if d.get("birth_year") else None,
                   age_years=float(age) if age is not None else None, notes=str(d.get("notes") or ""))

    def age_at(self, date: str) -> float | None:
        """Age in years at an ISO date (from the birth year, else the recorded age)."""
        if self.birth_year and date:
            return float(int(date[:4]) - self.birth_year)
        return self.age_years


@dataclasses.dataclass
class ExportVisit:
    """One analysed visit, ready for export.

    folder: the analysis folder; scan (bodymap.scan.Scan, mm); lesions: LesionSet (every lesion
    measured); correspondence: the registration (or None); labels: RegionLabels (or None);
    patient: Patient; visit_id: a stable name of the visit (its scan's folder, e.g. 'visit2');
    visit_date: ISO date or ''; previous_id / previous_date: the earlier visit tracked against
    (or None / ''); change: {lesion id: dict} since the earlier visit: status ('matched' or
    'new'), id1, diameter_change_mm, area_change_mm2, colour_delta_e, growth_mm_per_year (None
    without both dates), flags."""

    folder: Path
    scan: object
    lesions: object
    correspondence: object
    labels: object
    patient: Patient
    visit_id: str
    visit_date: str = ""
    previous_id: str | None = None
    previous_date: str = ""
    change: dict = dataclasses.field(default_factory=dict)

    def tracking_key(self, lesion_id: int) -> tuple[str, int]:
        """(visit id, lesion id) of the lesion's first sighting known here: the earlier visit's
        lesion it continues, else itself. Its tracking UID is derived from this, so an export of
        the earlier visit and one of this visit give a lesion the same tracking UID."""
        c = self.change.get(lesion_id)
        if c and c.get("status") == Status.MATCHED and self.previous_id:
            return self.previous_id, int(c["id1"])
        return self.visit_id, int(lesion_id)

    def tracking_label(self, lesion_id: int) -> str:
        """Human-readable tracking identifier, e.g. 'visit1 lesion 12'."""
        v, i = self.tracking_key(lesion_id)
        return f"{v} lesion {i}"


def stable_uid(*parts) -> str:
    """A DICOM UID (2.25.<integer>) derived from parts: the same parts give the same UID, so a
    re-export gives every study, series, instance and tracking id the same UID."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def visit_id_of(scan_path: str | Path) -> str:
    """A visit's stable name: the folder its scan lies in (a visit per folder, as `bodymap synth`
    and clinics file them), else the scan's file name without its suffix."""
    p = Path(scan_path)
    return p.parent.name or p.stem


def visit_date_of(scan) -> str:
    """A scan's visit date (ISO): its metadata, else the synthetic truth.json beside it, else ''."""
    if scan.meta.visit_date:
        return scan.meta.visit_date
    return _truth_date(Path(scan.meta.source).parent) if scan.meta.source else ""


def find_patient(scan_path: str | Path, folder: str | Path) -> Path | None:
    """The patient.json that belongs to a visit: in the analysis folder, beside the scan, or
    one or two folders up (sample_meshes/PATIENT/visitN/scan.obj)."""
    scan_dir = Path(scan_path).parent
    for d in (Path(folder), scan_dir, scan_dir.parent, scan_dir.parent.parent):
        if (d / "patient.json").exists():
            return d / "patient.json"
    return None


def load_export_visit(analysis: str | Path, patient: str | Path | None = None, previous: str | Path | None = None,
                      tracking: str | Path | None = None, units: str | None = None, progress=None) -> ExportVisit:
    """Gather an analysis folder for export (see ExportVisit and export_visit).

    patient: a patient.json (default: the one found beside the scan, see find_patient);
    previous: an earlier visit's analysis folder (tracked now, respecting every review of the two
    visits: bodymap.reviewfiles.gather) or tracking: a folder with tracking.json (from `bodymap track` or
    `analyze --previous`) for the change since the earlier visit."""
    from bodymap.anatomy.labels import RegionLabels
    from bodymap.pipeline import load_visit, track_visits
    from bodymap.track import Tracking

    folder = Path(analysis)
    say = progress or (lambda s, f: None)
    # the user's files first: a wrong path is said at once, not after minutes of work
    if patient is not None and not Path(patient).is_file():
        raise FileNotFoundError(f"{patient}: no such patient record")
    if tracking is not None and not (Path(tracking) / "tracking.json").is_file() and not Path(tracking).is_file():
        raise FileNotFoundError(f"{tracking}: no tracking.json (run `bodymap track` or `analyze --previous`)")
    if previous is not None and not (Path(previous) / "lesions.json").is_file():
        raise FileNotFoundError(f"{previous}: not an analysis folder (no lesions.json)")
    say("reading the visit", 0.0)
    v = load_visit(folder, units=units)
    labels = RegionLabels.load(folder / "labels.npz") if (folder / "labels.npz").exists() else None
    tr, prev_source, prev_date = None, None, ""
    if tracking:
        f = Path(tracking)
        tr = Tracking.load_json(f / "tracking.json" if f.is_dir() else f)
        prev_source = tr.info.get("scan1") or "previous/scan"
    elif previous:
        say("tracking", 0.1)
        before = load_visit(previous, units=units)
        from bodymap.reviewfiles import gather

        # every review of the two visits (the store too), gathered again after the second look
        tr = track_visits(before, v, reviews=lambda a, b: gather(a, b, [folder, Path(previous)])[0])
        prev_source, prev_date = before.scan.meta.source, visit_date_of(before.scan)
    return export_visit(v.scan, v.lesions, folder, labels, v.correspondence, patient, tr, prev_source, prev_date,
                        progress=lambda stage, f: say(stage, 0.3 + 0.7 * f))


def export_visit(scan, lesions, folder: str | Path, labels=None, correspondence=None, patient: str | Path | None = None,
                 tracking=None, previous_source: str | None = None, previous_date: str = "",
                 progress=None) -> ExportVisit:
    """An ExportVisit of a visit held in memory (the GUI's, with the clinician's edits): scan,
    lesions (LesionSet: measured now where a lesion has no measures, given a body-frame position
    through correspondence where it has none), folder (its analysis folder, or where the scan
    is), labels (RegionLabels or None), patient (a patient.json, default: found beside the
    scan), tracking (bodymap.track.Tracking against the earlier visit whose scan file is
    previous_source, dated previous_date (default: its truth.json's, when synthetic))."""
    from bodymap.lesions import LesionMeasurer, TextureImage
    from bodymap.measures import body_positions
    from bodymap.project import texel_atlas

    say = progress or (lambda s, f: None)
    folder = Path(folder)
    todo = [l for l in lesions.lesions if not l.measures]
    if todo and scan.texture is not None:
        say("measuring lesions", 0.1)
        LesionMeasurer(scan).add_measures(TextureImage(scan, texel_atlas(scan)), todo)
    unplaced = [l for l in lesions.lesions if "x_mm" not in (l.measures or {})]
    if correspondence is None and unplaced and (folder / "labels.npz").exists():
        from bodymap.anatomy.labels import load_correspondence

        correspondence = load_correspondence(folder / "labels.npz", scan.n_vertices)
    if correspondence is not None and unplaced:
        say("body positions", 0.5)
        body_positions(unplaced, scan, correspondence)
    pfile = Path(patient) if patient else find_patient(scan.meta.source, folder)
    rec = Patient.from_json(pfile) if pfile else Patient(id=scan.meta.patient_id or "anonymous")
    out = ExportVisit(folder, scan, lesions, correspondence, labels, rec, visit_id_of(scan.meta.source),
                      visit_date_of(scan))
    if tracking is not None:
        out.previous_id = visit_id_of(previous_source) if previous_source else "previous"
        out.previous_date = previous_date or (_truth_date(Path(previous_source).parent) if previous_source else "")
        add_change(out, tracking)
    say("done", 1.0)
    return out


def _truth_date(folder: Path) -> str:
    """The visit date in a synthetic visit's truth.json, '' when there is none."""
    f = folder / "truth.json"
    try:
        return str(json.loads(f.read_text()).get("visit_date") or "") if f.exists() else ""
    except (OSError, ValueError):
        return ""


def add_change(out: ExportVisit, tr) -> None:
    """Fill out.change (see ExportVisit) from a bodymap.track.Tracking whose visit 1 is the earlier
    visit (out.previous_id, dated out.previous_date) and visit 2 is out."""
    years = None
    if out.previous_date and out.visit_date:
        days = (datetime.date.fromisoformat(out.visit_date) - datetime.date.fromisoformat(out.previous_date)).days
        years = days / 365.25 if days > 0 else None
    for p in tr.pairs:
        dd = p.diameter_change_mm
        a1, a2 = p.area1_mm2, p.area2_mm2
        out.change[p.id2] = {
            "status": Status.MATCHED.value, "id1": p.id1, "diameter_change_mm": dd,
            "area_change_mm2": round(a2 - a1, 3) if a1 is not None and a2 is not None else None,
            "colour_delta_e": p.colour_delta_e,
            "growth_mm_per_year": round(dd / years, 3) if dd is not None and years else None,
            "flags": list(p.flags)}
    for p in tr.new:
        out.change[p.id2] = {"status": Status.NEW.value, "id1": None, "diameter_change_mm": None, "area_change_mm2": None,
                             "colour_delta_e": None, "growth_mm_per_year": None, "flags": list(p.flags)}


def lesion_status(change: dict | None) -> str:
    """One word for a lesion's change since the earlier visit: 'new', 'grown', 'changed' (colour
    or shape flagged), 'stable', or 'untracked' (no earlier visit given)."""
    if not change:
        return "untracked"
    if change["status"] == Status.NEW:
        return Status.NEW.value
    return change_word(change.get("flags", []))


def lesion_region(l) -> tuple[str, str, str]:
    """(site code, laterality, ear region) of a lesion from its region record ('unknown',
    'midline', 'non_ear' where it has none)."""
    r = l.region or {}
    return r.get("code") or "unknown", r.get("side") or "midline", r.get("ear") or "non_ear"
