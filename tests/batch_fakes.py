"""Fast stand-ins for the batch's per-item steps, for tests about orchestration (resume,
failure isolation, executors, the index): a fake "scan" is a small JSON file with a .obj name
listing its lesions (key, diameter, site), so the truth of every query is known.

Imported by the workers as ``tests.batch_fakes`` (the repository root on their path)."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

STEPS = {"scan": "tests.batch_fakes:fake_scan_step", "photo": "tests.batch_fakes:fake_photo_step",
         "track": "tests.batch_fakes:fake_track_step"}
SITES = [("head_neck/head/ear", "left"), ("head_neck/head/face", "midline"), ("trunk/posterior", "midline"),
         ("upper_extremity/forearm", "right"), ("lower_extremity/thigh", "left")]


def make_archive(root: Path, patients: int = 3, visits: int = 2, photos: int = 1, seed: int = 0) -> dict:
    """Fake patients under root/PATIENT/DATE/ (scan.obj, photo_K.png) and the truth:
    {patient: [(date, {key: (diameter, site code, side)})]}; lesions grow, appear and go."""
    from PIL import Image

    rng = random.Random(seed)
    truth = {}
    for p in range(patients):
        pid = f"P{p + 1:02d}"
        lesions = {f"{pid}-{k}": (round(rng.uniform(1.5, 7.0), 2), *rng.choice(SITES)) for k in range(6)}
        series = []
        for v in range(visits):
            date = f"202{v + 1}-0{p % 9 + 1}-1{v}"
            if v:
                nxt = {}
                for key, (d, site, side) in lesions.items():
                    if rng.random() < 0.15:
                        continue  # excised
                    nxt[key] = (round(d + (1.5 if rng.random() < 0.4 else 0.1), 2), site, side)
                nxt[f"{pid}-n{v}"] = (round(rng.uniform(2, 6), 2), *rng.choice(SITES))
                lesions = nxt
            vdir = root / pid / date
            vdir.mkdir(parents=True, exist_ok=True)
            keys = sorted(lesions, key=lambda k: rng.random())  # lesion ids differ between visits
            (vdir / "scan.obj").write_text(json.dumps({"fake": True, "lesions": [
                {"key": k, "d": lesions[k][0], "site": lesions[k][1], "side": lesions[k][2]} for k in keys]}))
            for j in range(photos):
                img = np.full((80, 80, 3), 120 + 20 * j, np.uint8)
                img[30:50, 30:50] = 40
                Image.fromarray(img).save(vdir / f"photo_{j}.png")
            series.append((date, dict(lesions)))
        truth[pid] = series
    return truth


def fake_scan_step(task: dict, work: Path) -> dict:
    """Reads a fake scan (JSON); writes lesions.json, closeups/, diagnoses.json like scan_step."""
    from PIL import Image

    from bodymap import taxonomy as tx
    from bodymap.jsonfile import write_json
    from bodymap.lesions import Lesion, LesionSet
    from bodymap.scan import ScanError

    try:
        d = json.loads(Path(task["path"]).read_text())
        assert d.get("fake")
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise ScanError(task["path"], "cannot read the file, truncated or corrupt? (fake)") from None
    lesions = []
    for i, x in enumerate(d["lesions"], 1):
        dia = x["d"]
        site = tx.SITES[tx.SITE_INDEX[x["site"]]]
        region = {"code": site.code, "name": site.name, "side": x["side"], "ear": "helix" if "ear" in site.code
                  else "non_ear", "macro": tx.macro(site.index), "description": f"{x['side']} {site.name}"}
        lesions.append(Lesion(i, [float(i), 0.0, 1000.0], 0, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], dia,
                              round(math.pi * dia * dia / 4, 3), [50.0, 10.0, 20.0], [70.0, 8.0, 15.0], 20.0, 0.9,
                              region=region, note=x["key"],
                              measures={"perimeter_mm": round(math.pi * dia, 3), "eccentricity": 0.2,
                                        "area_mm2": round(math.pi * dia * dia / 4, 3)}))
    LesionSet(lesions, scan=task["path"], detector="fake").save_json(work / "lesions.json")
    (work / "closeups").mkdir()
    for les in lesions:
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(work / "closeups" / f"lesion_{les.id}.jpg")
    write_json(work / "diagnoses.json", {"schema": "bodymap.batch-diagnoses/1", "model": "fake", "lesions": {
        str(les.id): {"label": "melanoma" if les.diameter_mm > 6 else "nevus",
                      "probs": {"melanoma": 0.7, "nevus": 0.3} if les.diameter_mm > 6 else {"melanoma": 0.2, "nevus": 0.8},
                      "site": les.region["code"]} for les in lesions}})
    return {"lesions": len(lesions)}


def fake_track_step(task: dict, work: Path) -> dict:
    """Pairs the lesions of two fake visits by their key (the truth), flags growth like
    bodymap.track; writes tracking.json and tracking.csv."""
    from bodymap.lesions import LesionSet
    from bodymap.track import GROWN_MM, Tracking

    out = Path(task["out"])
    a, b = (LesionSet.load_json(out / d / "lesions.json") for d in task["inputs"])
    by_key = {l.note: l for l in a.lesions}
    pairs, new = [], []
    for l in b.lesions:
        m = by_key.pop(l.note, None)
        if m is None:
            new.append({"id2": l.id, "diameter_mm": l.diameter_mm, "flags": ["new >= 3 mm"] if l.diameter_mm >= 3 else []})
            continue
        dd = round(l.diameter_mm - m.diameter_mm, 2)
        pairs.append({"id1": m.id, "id2": l.id, "confidence": 0.9, "distance_mm": 1.0, "reviewed": False,
                      "diameter1_mm": m.diameter_mm, "diameter2_mm": l.diameter_mm, "diameter_change_mm": dd,
                      "area1_mm2": m.area_mm2, "area2_mm2": l.area_mm2, "colour_delta_e": 0.0,
                      "flags": ["grown"] if dd >= GROWN_MM else []})
    missing = [{"id1": m.id, "diameter_mm": m.diameter_mm, "flags": []} for m in by_key.values()]
    k = len(b.lesions)
    tr = Tracking(pairs, new, missing, np.zeros((k, 3)), np.zeros(k, np.int64), np.zeros((k, 3)),
                  {"ids2": [l.id for l in b.lesions]})
    tr.save_json(work / "tracking.json")
    tr.save_csv(work / "tracking.csv")
    return {"matched": len(pairs)}


def fake_photo_step(task: dict, work: Path) -> dict:
    """A photo record like photo_step's, without models."""
    from bodymap.jsonfile import write_json
    from bodymap.models.quality import check_photo, load_photo

    img = load_photo(task["path"])
    q = check_photo(img, task["path"])
    write_json(work / "photo.json", {"schema": "bodymap.batch-photo/2", "path": task["path"], "site": task.get("site"),
                                     "quality": q.to_dict(), "macro": {"label": "arm", "probs": {"arm": 0.6}},
                                     "ear": None, "ear_share": 0.0, "region": "arm",
                                     "diagnosis": {"label": "nevus", "probs": {"nevus": 0.9}, "site": "unknown"}})
    return {"region": "arm"}


def expected_status(truth: dict) -> dict:
    """{(patient, date, key): status} from the truth: 'untracked' at the first visit, then
    'new', 'grown' (>= 1 mm) or 'stable'."""
    out = {}
    for pid, series in truth.items():
        for k, (date, les) in enumerate(series):
            for key, (d, _, _) in les.items():
                if k == 0:
                    out[pid, date, key] = "untracked"
                else:
                    prev = series[k - 1][1].get(key)
                    out[pid, date, key] = "new" if prev is None else "grown" if d - prev[0] >= 1.0 else "stable"
    return out


def index_rows(path: Path) -> dict:
    """Every table of an index as sorted rows, without the columns that differ run to run."""
    from bodymap.index import snapshot

    return snapshot(path)


def crashing_scan_step(task: dict, work: Path) -> dict:
    """fake_scan_step, except that a scan file reading 'crash' kills its worker process (as the
    kernel's out-of-memory killer would)."""
    import os

    if Path(task["path"]).read_text() == "crash":
        os._exit(9)
    return fake_scan_step(task, work)
