"""The clinician's follow-up (issue 18): a patient with dated visits in a project (older files open
unchanged), persistent ids from the stored links, lesion statuses and attachments, a lesion's
history (close-ups at one scale and the body's orientation, rates per year) and its report page."""
from __future__ import annotations

import copy
import re
import json
from pathlib import Path

import numpy as np
import pytest

from bodymap.lesions import Lesion, LesionSet
from bodymap.session import (FORMAT_VERSION, Attach, History, Patient, Project, ProjectError, Review, SetPatient,
                             SetStatus, VisitState, patient_project)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
V1 = DATA / "gui" / "SYN00101_visit1"


def _lesion(i: int, d: float = 3.0) -> Lesion:
    return Lesion(id=i, point_mm=[float(i), 0.0, 1000.0], face=i, bary=[1 / 3] * 3, normal=[0, -1, 0],
                  diameter_mm=d, area_mm2=3.0, colour_lab=[50, 10, 20], skin_lab=[60, 10, 15],
                  contrast_de=12.0, confidence=0.9)


def _visit(tmp_path, name: str, date: str, ids=(1, 2, 3)) -> VisitState:
    scan = tmp_path / f"{name}.obj"
    scan.write_text("# placeholder\n")
    return VisitState(str(scan), LesionSet([_lesion(i) for i in ids], scan=str(scan)), title=name, date=date)


def _tracking(pairs, new=(), missing=()) -> dict:
    return {"pairs": [{"id1": a, "id2": b, "flags": list(f)} for a, b, f in pairs],
            "new": [{"id2": i, "flags": ["new"]} for i in new], "missing": [{"id1": i} for i in missing]}


def test_format_1_project_opens_unchanged(tmp_path):
    """A project saved by the previous BodyMap (format 1, tests/data/project_v1.bodymap) opens
    with its visits, edits, diagnoses, reviews, tracking and notes; saved again it is format 2
    and reads back the same."""
    p = Project.load(DATA / "project_v1.bodymap")
    assert json.loads((DATA / "project_v1.bodymap").read_text())["version"] == 1
    assert [v.title for v in p.visits] == ["visit 1", "visit 2"] and p.patient is None
    assert all(Path(v.scan_path).is_file() for v in p.visits)
    assert p.visits[0].lesion(1).note == "check again" and p.visits[0].diagnoses[2]["label"] == "nevus"
    assert p.reviews.confirmed == {1: 1} and p.reviews.rejected == {(2, 3)} and p.notes == "project notes"
    assert p.visits[0].date == "" and p.visits[0].status == {} and p.links == {}
    s = p.series()  # persistent ids from the stored tracking
    assert s.ids == [{1: 1, 2: 2, 3: 3}, {1: 1, 2: 2, 4: 4}] and s.status[1] == {1: "stable", 2: "grown", 4: "new"}
    q = Project.load(p.save(tmp_path / "again.bodymap"))
    assert json.loads((tmp_path / "again.bodymap").read_text())["version"] == FORMAT_VERSION == 2
    assert q.visits[1].lesion(4).diameter_mm == p.visits[1].lesion(4).diameter_mm
    assert q.reviews.to_dict() == p.reviews.to_dict() and q.tracking == p.tracking and q.series().ids == s.ids


def test_patient_with_four_dated_visits(tmp_path):
    """Visits go in date order whatever order they are added; each link keeps its own tracking
    and reviews; statuses and attachments are undoable and saved; a visit added between two
    tracked ones keeps their reviews aside; persistent ids chain over all four visits."""
    p = Project()
    h = History(p)
    h.push(SetPatient(Patient("P-17", "pseudonym Ada", "female", 1961, "family history")))
    for name, date in (("v3", "2026-02-01"), ("v1", "2025-01-10"), ("v4", "2026-09-30")):
        p.add_visit(_visit(tmp_path, name, date))
    assert [v.title for v in p.visits] == ["v1", "v3", "v4"]
    p.set_link(1, _tracking([(1, 1, []), (2, 2, [])], missing=[3]))
    h.push(Review("confirm", 2, 2, link=1))
    assert p.add_visit(_visit(tmp_path, "v2", "2025-07-01")) == 1  # splits link v1 -> v3
    assert [v.title for v in p.visits] == ["v1", "v2", "v3", "v4"]
    assert p.tracking is None and p.detached_reviews and p.detached_reviews[0]["reviews"]["confirmed"]
    p.set_link(1, _tracking([(1, 1, []), (2, 2, [])], new=[3]))
    p.set_link(2, _tracking([(1, 1, []), (2, 2, ["grown"]), (3, 3, [])]))
    p.set_link(3, _tracking([(1, 2, []), (2, 3, [])], new=[3], missing=[1]))  # renumbered at v4
    h.push(Review("reject", 3, 1, link=3))
    h.push(SetStatus(3, 1, "biopsied", "2026-10-02", "sent to pathology"))
    photo = tmp_path / "dermoscopy.jpg"
    photo.write_bytes(b"\xff\xd8")
    h.push(Attach(3, 1, photo, "dermoscopy", "2026-09-30"))
    with pytest.raises(ValueError, match="one of"):
        SetStatus(3, 1, "worried")
    with pytest.raises(KeyError):
        h.push(SetStatus(3, 99, "monitor"))
    s = p.series()
    assert s.ids[3] == {1: 5, 2: 1, 3: 2}  # renumbered at v4: its lesion 2 is the first visit's lesion 1
    assert [k for k, _ in s.history(2)] == [0, 1, 2, 3] and s.status[2][2] == "grown"
    q = Project.load(p.save(tmp_path / "sub" / "p.bodymap"))
    assert q.patient == p.patient and [v.date for v in q.visits] == [v.date for v in p.visits]
    assert q.visits[3].status[1]["status"] == "biopsied" and Path(q.visits[3].attachments[1][0]["path"]) == photo
    assert q.link_reviews(3).rejected == {(3, 1)} and q.link_tracking(2) == p.link_tracking(2)
    assert q.series().ids == s.ids and q.detached_reviews == p.detached_reviews
    h.undo()
    h.undo()
    assert p.visits[3].status == {} and p.visits[3].attachments == {}
    bad = json.loads((tmp_path / "sub" / "p.bodymap").read_text())
    bad["patient"]["birth_year"] = "sixty"
    (tmp_path / "bad.bodymap").write_text(json.dumps(bad))
    with pytest.raises(ProjectError, match="birth year"):
        Project.load(tmp_path / "bad.bodymap")


def test_track_links_respects_each_links_reviews(tmp_path, monkeypatch):
    """Untracked links are tracked with their own reviews; tracked ones are left alone."""
    import bodymap.pipeline as pl

    p = Project()
    for k in range(4):
        p.add_visit(_visit(tmp_path, f"v{k + 1}", f"202{k}-05-01"))
    p.set_link(1, _tracking([(1, 1, []), (2, 2, []), (3, 3, [])]))
    History(p).push(Review("reject", 2, 2, link=3))
    seen = []

    class T:
        def __init__(self, rv):
            self.rv = rv

        def to_dict(self):
            return _tracking([(i, i, []) for i in (1, 2, 3) if (i, i) not in self.rv.rejected],
                             new=[i for i in (1, 2, 3) if (i, i) in self.rv.rejected])

    def fake(v1, v2, reviews=None, progress=None):
        seen.append((v1, v2, reviews))
        return T(reviews)

    monkeypatch.setattr(pl, "track_visits", fake)
    assert p.track_links(["a", "b", "c", "d"]) == [2, 3]
    assert [s[:2] for s in seen] == [("b", "c"), ("c", "d")] and seen[1][2].rejected == {(2, 2)}
    s = p.series()
    assert s.ids[3] == {1: 1, 2: 4, 3: 3} and s.status[3][2] == "new"


def test_a_synthetic_patient_folder_opens_as_one_patient(tmp_path):
    """`bodymap synth --visits 4` writes PATIENT/patient.json and visit1..4: one project, the
    patient's record, the visits in date order with their dates."""
    pdir = tmp_path / "SYN1"
    dates = ["2025-02-01", "2025-09-03", "2026-04-20", "2027-01-05"]
    for k, d in enumerate(dates, 1):
        (pdir / f"visit{k}").mkdir(parents=True)
        (pdir / f"visit{k}" / "scan.obj").write_text("# placeholder\n")
        (pdir / f"visit{k}" / "truth.json").write_text(json.dumps({"visit_date": d}))
    (pdir / "patient.json").write_text(json.dumps({"patient_id": "SYN1", "body": {"sex": "male", "age_years": 50.0},
                                                   "visits": [f"visit{k}" for k in range(1, 5)]}))
    p = patient_project(pdir)
    assert p.patient == Patient("SYN1", "", "male", 1975, "")
    assert [v.date for v in p.visits] == dates and [v.title for v in p.visits] == ["visit1", "visit2", "visit3", "visit4"]
    assert p.series().ids == [{}, {}, {}, {}]


# ----------------------------------------------------------------------------- history
@pytest.fixture(scope="module")
def sample_visit():
    from bodymap.pipeline import load_visit

    return load_visit(V1)


def test_body_up_follows_the_body_not_the_scan_axes(sample_visit):
    """On the trunk of an upright body, the body's up is the scan's +z; the same scan turned
    on its side (x up) gives the same up turned with it."""
    from bodymap.anatomy.template import load_template
    from bodymap.history import body_up
    from bodymap.measures import tangent_frame

    scan, corr = sample_visit.scan, sample_visit.correspondence
    t = load_template()
    tp = corr.template_points(t.vertices, t.faces)
    trunk = [l for l in sample_visit.lesions.lesions if (l.region or {}).get("code", "").startswith(
        "trunk")][:5]
    assert trunk
    R = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], float)  # z -> x
    for l in trunk:
        up = body_up(scan.vertices, tp, l.point_mm, l.normal)
        assert up @ tangent_frame(l.normal)[0] > 0.9 and abs(up @ l.normal) < 1e-6  # the scan's z on the plane
        up_r = body_up(scan.vertices @ R.T, tp, R @ l.point_mm, R @ l.normal)
        assert up_r @ (R @ up) > 0.99


def test_lesion_history_over_four_visits(sample_visit, tmp_path):
    """Four visits a year apart in which one lesion grows 1 mm a year: close-ups of one size and
    scale, rates of +1 mm/year, a plot and a strip; the PDF report gets a page per history."""
    from PIL import Image
    import io

    from bodymap.followup import chain_ids
    from bodymap.history import HistoryVisit, flagged, lesion_history

    scan, corr = sample_visit.scan, sample_visit.correspondence
    base = sample_visit.lesions
    visits = []
    for k in range(4):
        ls = copy.deepcopy(base)
        ls.lesions[0].diameter_mm += k  # grows 1 mm per visit
        visits.append(HistoryVisit(scan, ls, f"{2022 + k}-03-01", corr, f"visit {k + 1}"))
    ids = [[l.id for l in v.lesions.lesions] for v in visits]
    from bodymap.records import TrackedPair

    same = type("T", (), {"pairs": [TrackedPair(i, i, flags=["grown"] if i == ids[0][0] else []) for i in ids[0]],
                          "partner": lambda self: {i: i for i in ids[0]}})()
    series = chain_ids(ids, [same] * 3)
    pid = series.ids[0][ids[0][0]]
    assert flagged(series) == [pid]
    h = lesion_history(visits, series, pid, size_px=96)
    assert len(h.sightings) == 4 and len({s.mm_per_px for s in h.sightings}) == 1 and h.body_up
    assert all(s.closeup.shape == (96, 96, 3) for s in h.sightings)
    assert h.field_mm == pytest.approx(max(10.0, 2.5 * (base.lesions[0].diameter_mm + 3)))
    rates = [st.diameter_rate_mm_per_year for st in h.steps]
    assert rates == pytest.approx([1.0 * 365.25 / 365] * 3, rel=0.01) and h.diameter_rate_mm_per_year > 0.99
    # the lesion (darker than the skin) is at the centre of every close-up
    c = h.sightings[0].closeup.astype(float).mean(2)
    assert c[44:52, 44:52].mean() < np.median(c) - 5
    assert Image.open(io.BytesIO(h.plot_png())).size == (600, 450)
    assert h.strip().size[0] > 4 * 96
    cols, rows = h.rows()
    assert len(rows) == 4 and rows[1][cols.index("mm/year")].startswith("+1.0")
    # the report's page of a history (write_report adds one per history after the lesion table)
    from matplotlib.backends.backend_pdf import PdfPages

    from bodymap.export.report import _history_page

    with PdfPages(tmp_path / "r.pdf") as pdf:
        _history_page(pdf, h)
    assert re.search(rb"/Type /Pages /Kids \[[^]]*\]\s*/Count 1", (tmp_path / "r.pdf").read_bytes())
