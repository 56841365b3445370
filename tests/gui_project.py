"""A synthetic patient over 4 dated visits as a BodyMap project, for the GUI test of the
follow-up (tests/test_gui.py) and the README's screenshots (scripts/gui_screenshots.py).
Imported as ``tests.gui_project`` (the repository root on the path)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "tests" / "data" / "gui" / "SYN00101_visit2"
SAMPLES = ROOT / "sample_meshes"


def four_visit_project(folder: Path) -> tuple[Path, dict]:
    """A synthetic follow-up of 4 dated visits, written as a project file in folder: the scan
    and registration of SYN00101 visit 2 at every visit (a body that kept still), its lesions
    with three that grow 1.2 mm a visit (largest at visit 4), three that appear at visit 3, and
    one whose colour darkens at visit 4; each link tracked by hand as tracking would (pairs by
    id, flags grown / colour change, new >= 3 mm), so opening it costs one scan read and no
    registration. Returns the project path and what it holds."""
    from bodymap.lesions import LesionSet
    from bodymap.records import FLAG_COLOUR, FLAG_GROWN, NewLesion, TrackedPair, flag_new
    from bodymap.session import Patient, Project, VisitState
    from bodymap.track import Tracking

    base = LesionSet.load_json(V2 / "lesions.json")
    by_size = sorted(base.lesions, key=lambda l: -l.diameter_mm)
    grow = [l.id for l in by_size[:3]]
    new = [l.id for l in by_size[3:9] if l.diameter_mm >= 3.0][:3]
    colour = by_size[9].id
    dates = ["2023-01-10", "2024-01-12", "2025-01-15", "2026-01-20"]
    sets = []
    for k in range(4):
        ls = copy.deepcopy(base)
        ls.lesions = [l for l in ls.lesions if k >= 2 or l.id not in new]
        for l in ls.lesions:
            if l.id in grow:
                f = (l.diameter_mm - 1.2 * (3 - k)) / l.diameter_mm
                l.diameter_mm, l.area_mm2 = l.diameter_mm * f, l.area_mm2 * f * f
            if l.id == colour and k == 3:
                l.colour_lab = [l.colour_lab[0] - 15, l.colour_lab[1] + 6, l.colour_lab[2]]
        sets.append(ls)
    p = Project(patient=Patient("SYN00101", "pseudonym A", "female", 1980, "family history of melanoma"))
    for k, ls in enumerate(sets):
        p.add_visit(VisitState(str(SAMPLES / "SYN00101" / "visit2" / "scan.obj"), ls, str(V2), f"visit {k + 1}",
                               date=dates[k]))
    for k in range(1, 4):
        a, b = {l.id: l for l in sets[k - 1].lesions}, {l.id: l for l in sets[k].lesions}
        pairs = [TrackedPair(i, i, 0.97, 0.0, False, a[i].diameter_mm, b[i].diameter_mm,
                             b[i].diameter_mm - a[i].diameter_mm, None, a[i].area_mm2, b[i].area_mm2, None,
                             15.0 if (i == colour and k == 3) else 1.0, b[i].region.get("description", ""),
                             ([FLAG_GROWN] if i in grow else []) + ([FLAG_COLOUR] if i == colour and k == 3 else []))
                 for i in sorted(set(a) & set(b))]
        fresh = [NewLesion(i, b[i].diameter_mm, b[i].region.get("description", ""), False,
                           [flag_new(3.0)] if b[i].diameter_mm >= 3 else []) for i in sorted(set(b) - set(a))]
        p.set_link(k, Tracking(pairs, fresh, [], np.zeros((0, 3)), np.zeros(0, int), np.zeros((0, 3))).to_dict())
    path = p.save(folder / "four_visits.bodymap")
    return path, {"grow": grow, "new": new, "colour": colour, "dates": dates}
