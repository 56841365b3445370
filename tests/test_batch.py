"""Batch analysis of archives (bodymap.batch), persistent ids (bodymap.followup), the lesion
index (bodymap.index). Orchestration tests use the fast fake steps of tests/batch_fakes.py;
test_batch_real_scan_end_to_end runs the real analysis on one small scan."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bodymap.batch import read_manifest, read_records, run_batch
from bodymap.followup import chain_ids
from bodymap.index import QueryError, query
from tests.batch_fakes import STEPS, expected_status, index_rows, make_archive

ROOT = Path(__file__).resolve().parents[1]


class _Tr:
    """The public face of bodymap.track.Tracking that chain_ids uses."""

    def __init__(self, pairs, new=(), missing=()):
        from bodymap.records import MissingLesion, NewLesion, TrackedPair

        self.pairs = [TrackedPair(a, b, flags=list(f)) for a, b, *f in pairs]
        self.new, self.missing = [NewLesion(j) for j in new], [MissingLesion(i) for i in missing]

    def partner(self):
        return {p.id2: p.id1 for p in self.pairs}


def test_chain_ids_keeps_a_lesion_its_id_across_visits():
    # visit 1: lesions 1, 2, 3; visit 2: 5 = 1 (grown), 6 = 3, 7 new, 2 gone;
    # visit 3: 1 = 5, 2 = 7 (colour), 3 new; visit 4 not tracked
    s = chain_ids([[1, 2, 3], [5, 6, 7], [1, 2, 3], [1]],
                  [_Tr([(1, 5, "grown"), (3, 6)], new=[7], missing=[2]), _Tr([(5, 1), (7, 2, "colour change")], new=[3]),
                   None])
    assert s.ids[0] == {1: 1, 2: 2, 3: 3}
    assert s.ids[1] == {5: 1, 6: 3, 7: 4}
    assert s.ids[2] == {1: 1, 2: 4, 3: 5}
    assert s.ids[3] == {1: 6}
    assert s.status[1] == {5: "grown", 6: "stable", 7: "new"}
    assert s.status[2] == {1: "stable", 2: "changed", 3: "new"}
    assert s.status[0] == {1: "untracked", 2: "untracked", 3: "untracked"} and s.status[3] == {1: "untracked"}
    assert s.previous[2] == {1: 5, 2: 7}
    assert s.history(1) == [(0, 1), (1, 5), (2, 1)] and s.n_persistent == 6
    with pytest.raises(ValueError, match="3 visits need 2"):
        chain_ids([[1], [1], [1]], [None])


def test_manifest_csv_and_folder(tmp_path):
    arch = tmp_path / "arch"
    make_archive(arch, patients=1, visits=2, photos=1)
    (arch / "P01" / "2021-01-10" / "scan.png").write_bytes(b"x")  # a texture is not a photo...
    (arch / "P01" / "2021-01-10" / "scan.mtl").write_text("newmtl m\nmap_Kd scan.png\n")
    obj = arch / "P01" / "2021-01-10" / "scan.obj"
    obj.write_text("mtllib scan.mtl\n" + obj.read_text())
    got = [(e.patient, e.visit, e.date, Path(e.path).name, e.kind) for e in read_manifest(arch)]
    assert got == [("P01", "2021-01-10", "2021-01-10", "scan.obj", "scan"),
                   ("P01", "2021-01-10", "2021-01-10", "photo_0.png", "photo"),
                   ("P01", "2022-01-11", "2022-01-11", "scan.obj", "scan"),
                   ("P01", "2022-01-11", "2022-01-11", "photo_0.png", "photo")]
    from bodymap.batch import scan_files

    assert [f.name for f in scan_files(obj)] == ["scan.obj", "scan.mtl", "scan.png"]
    m = tmp_path / "m.csv"
    m.write_text("Patient_ID,visit_date,path,site\nA,2024-05-01,arch/P01/2021-01-10/scan.obj,\n"
                 "A,20240601,arch/P01/2021-01-10/photo_0.png,upper_extremity/forearm\n,2024-05-01,x.obj,\n"
                 "B,May 1st,y.ply,\nB,2024-05-01,notes.txt,\n")
    es = read_manifest(m)
    assert [(e.patient, e.visit, e.kind, e.site) for e in es[:2]] == [
        ("A", "2024-05-01", "scan", None), ("A", "2024-06-01", "photo", "upper_extremity/forearm")]
    assert Path(es[0].path) == obj.resolve() and not es[0].problem and not es[1].problem
    assert "no patient_id" in es[2].problem and "not a date" in es[3].problem and "not a scan" in es[4].problem
    bad = tmp_path / "bad.csv"
    bad.write_text("who,when\nA,B\n")
    with pytest.raises(ValueError, match="bad.csv: a manifest needs the columns patient_id"):
        read_manifest(bad)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A fake archive of 4 patients x 3 visits (+ a photo each) with one corrupt scan, run once
    in this process."""
    root = tmp_path_factory.mktemp("batch_fake")
    truth = make_archive(root / "arch", patients=4, visits=3, photos=1)
    corrupt = root / "arch" / "P04" / "2022-04-11" / "scan.obj"
    corrupt.write_bytes(b"\x00\x01 not a mesh")
    s = run_batch(root / "arch", root / "out", workers=0, steps=STEPS, progress=False)
    return root, truth, s


def test_a_corrupt_scan_is_reported_and_the_rest_finishes(fake_run):
    root, truth, s = fake_run
    assert s.counts["failed"] == 1 and s.failed[0][0] == "scan/P04/2022-04-11"
    assert "scan.obj: cannot read the file" in s.failed[0][1] and "\n" not in s.failed[0][1]
    assert "failed scan/P04/2022-04-11" in s.text()
    # 12 scans (11 done), 12 photos, 7 links (P04 tracks its visit 3 against visit 1)
    assert s.counts["by_kind"] == {"scan": {"done": 11, "skipped": 0, "failed": 1},
                                   "photo": {"done": 12, "skipped": 0, "failed": 0},
                                   "track": {"done": 7, "skipped": 0, "failed": 0}}
    res = query(root / "out", sql="select item_id, status, error from items where status = 'failed'")
    assert res.rows == [("scan/P04/2022-04-11", "failed", s.failed[0][1])]
    v = query(root / "out", sql="select visit_id, visit_index, status from visits where patient_id = 'P04' "
                                "order by visit_id")
    assert v.rows == [("2021-04-10", 0, "done"), ("2022-04-11", None, "failed"), ("2023-04-12", 1, "done")]


def test_queries_return_the_true_lesions(fake_run):
    root, truth, _ = fake_run
    truth["P04"].pop(1)  # the corrupt visit: visit 3 is tracked against visit 1
    status = expected_status(truth)
    res = query(root / "out")  # every lesion
    col = {c: res.column(c) for c in ("patient_id", "visit_date", "note", "status", "persistent_id", "site",
                                      "diameter_mm", "closeup_path")}
    rows = list(zip(*col.values()))
    assert {(p, str(d), k): st for p, d, k, st, *_ in rows} == status
    # one persistent id per true lesion (key), one key per persistent id
    ids = {}
    for p, d, k, st, pid, *_ in rows:
        ids.setdefault((p, pid), set()).add(k)
    assert all(len(v) == 1 for v in ids.values()) and len(ids) == len({(p, k) for p, _, k, *_ in rows})
    assert all(Path(c).is_file() and os.path.isabs(c) for c in col["closeup_path"])

    def truth_rows(pred):
        return sorted((p, d, k) for p, series in truth.items() for d, les in series for k, v in les.items()
                      if pred(p, d, k, v))

    def got(where):
        r = query(root / "out", where)
        return sorted(zip(r.column("patient_id"), map(str, r.column("visit_date")), r.column("note")))

    assert got("site = 'ear' and diameter_mm >= 4 and status = 'grown'") == truth_rows(
        lambda p, d, k, v: v[1].endswith("/ear") and v[0] >= 4 and status[p, d, k] == "grown")
    assert got("site_l1 = 'upper extremity' or site = 'thigh'") == truth_rows(
        lambda p, d, k, v: v[1].startswith("upper_extremity") or v[1].endswith("thigh"))
    assert got("patient_id = 'P02' and diameter_mm < 3") == truth_rows(lambda p, d, k, v: p == "P02" and v[0] < 3)
    assert got("status = 'new'") == truth_rows(lambda p, d, k, v: status[p, d, k] == "new")
    assert got("side = 'left' and diagnosis = 'melanoma'") == truth_rows(lambda p, d, k, v: v[2] == "left" and v[0] > 6)
    # tracks: every excised lesion is missing at the next visit
    n_missing = query(root / "out", sql="select count(*) from tracks where status = 'missing'").rows[0][0]
    assert n_missing == sum(len(set(a[1]) - set(b[1])) for s in truth.values() for a, b in zip(s, s[1:]))
    pts = query(root / "out", sql="select patient_id, visits, photos, lesions from patients order by 1").rows
    assert pts[3][:3] == ("P04", 2, 3)


def test_queries_run_read_only(fake_run, capsys):
    root, _, _ = fake_run
    from bodymap.cli import main

    for bad in ("delete from lesions", "select 1; drop table lesions", "copy lesions to 'x.csv'"):
        with pytest.raises(QueryError, match="one SELECT statement"):
            query(root / "out", sql=bad)
    with pytest.raises(QueryError, match="(?i)permission"):  # no other file is reachable
        query(root / "out", sql="select * from read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match="one SELECT"):
        query(root / "out", "1=1); drop table lesions; select (1")
    with pytest.raises(QueryError, match="(?i)no_such_column"):
        query(root / "out", "no_such_column > 3")
    assert main(["query", str(root / "out"), "no_such_column > 3"]) == 2
    assert "query:" in capsys.readouterr().err
    assert main(["query", str(root / "out"), "status = 'grown'", "--csv", str(root / "grown.csv")]) == 0
    with open(root / "grown.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["status"] == "grown" and r["patient_id"] and r["closeup_path"] for r in rows)
    assert "perimeter_mm" in rows[0] and "outline_area_mm2" in rows[0]
    assert main(["query", str(root / "out"), "status = 'grown'"]) == 0
    out = capsys.readouterr().out
    assert f"{len(rows)} rows" in out and "closeup_path" in out


def test_a_rerun_skips_finished_items_and_a_killed_run_resumes(tmp_path, fake_run):
    root, _, first = fake_run
    # the same archive again, killed after 9 items, then run to the end
    import shutil

    arch = root / "arch"
    out = tmp_path / "out"

    class Kill(Exception):
        pass

    seen = []

    def kill(rec):
        seen.append(rec["id"])
        if len(seen) == 9:
            raise Kill

    with pytest.raises(Kill):
        run_batch(arch, out, workers=0, steps=STEPS, progress=False, on_record=kill)
    before = read_records(out)
    assert not (out / "index.duckdb").exists() and 9 <= len(before) < 30
    s = run_batch(arch, out, workers=0, steps=STEPS, progress=False)
    # finished items are skipped; a failed one (the corrupt scan) is retried (and fails again)
    assert s.counts["skipped"] == sum(r["status"] == "done" for r in before)
    assert s.counts["done"] + s.counts["skipped"] == 30 and s.counts["failed"] == 1
    assert index_rows(out / "index.duckdb") == index_rows(root / "out" / "index.duckdb")
    # nothing changed: everything skipped but the failed scan; one scan changed: it and its links
    s = run_batch(arch, out, workers=0, steps=STEPS, progress=False)
    assert s.counts["done"] == 0 and s.counts["skipped"] == 30
    arch, out = shutil.copytree(arch, tmp_path / "arch"), tmp_path / "out2"
    run_batch(arch, out, workers=0, steps=STEPS, progress=False)
    scan = arch / "P01" / "2022-01-11" / "scan.obj"
    d = json.loads(scan.read_text())
    d["lesions"][0]["d"] += 0.5
    scan.write_text(json.dumps(d))
    s = run_batch(arch, out, workers=0, steps=STEPS, progress=False)
    redone = sorted(r["id"] for r in s.records if not r.get("skipped") and r["status"] == "done")
    assert redone == ["scan/P01/2022-01-11", "track/P01/2021-01-10--2022-01-11", "track/P01/2022-01-11--2023-01-12"]


def test_local_worker_processes_give_the_same_index(tmp_path, fake_run):
    root, _, _ = fake_run
    t0 = time.perf_counter()
    s = run_batch(root / "arch", tmp_path / "out", workers=2, threads=1, steps=STEPS, progress=False)
    print(f"2 workers: {time.perf_counter() - t0:.1f} s")
    assert s.counts["done"] == 30 and len({r["pid"] for r in s.records if r.get("pid")}) == 2
    assert index_rows(tmp_path / "out" / "index.duckdb") == index_rows(root / "out" / "index.duckdb")


def test_a_worker_that_dies_costs_its_item_only(tmp_path):
    """A worker process killed while running an item (out of memory): the item is tried once
    more, then recorded as failed; the pool is replaced and the other items finish."""
    make_archive(tmp_path / "arch", patients=2, visits=1, photos=0)
    (tmp_path / "arch" / "P03" / "2021-03-10").mkdir(parents=True)
    (tmp_path / "arch" / "P03" / "2021-03-10" / "scan.obj").write_text("crash")
    steps = {**STEPS, "scan": "tests.batch_fakes:crashing_scan_step"}
    s = run_batch(tmp_path / "arch", tmp_path / "out", workers=1, threads=1, steps=steps, progress=False)
    assert s.counts["done"] == 2 and s.failed == [("scan/P03/2021-03-10", "its worker process died (out of memory?)")]


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_gives_the_same_index(tmp_path, fake_run):
    """The same batch as Ray tasks on a local two-node cluster started here: the same index as
    the local executor's."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    root, _, _ = fake_run
    t0 = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 80 << 20})
    # the second node declares a GPU (Ray's resources are logical): photos go to a model actor there
    cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=80 << 20)
    try:
        s = run_batch(root / "arch", tmp_path / "out", ray=cluster.address, steps=STEPS, progress=False,
                      runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        assert not ray.is_initialized()  # the batch disconnected from the cluster it joined
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"Ray, 2 nodes: {time.perf_counter() - t0:.1f} s with the cluster's start")
    assert s.counts["done"] == 30 and "2 node(s), 3 CPUs, 1 GPU(s)" in s.executor
    pids = {k: {r["pid"] for r in s.records if r["kind"] == k and r.get("pid")} for k in ("scan", "photo")}
    assert len(pids["photo"]) == 1 and not pids["photo"] & pids["scan"]  # one actor held the photo models
    assert index_rows(tmp_path / "out" / "index.duckdb") == index_rows(root / "out" / "index.duckdb")


@pytest.mark.slow
def test_photo_step_runs_photo_mode_with_the_shipped_models(tmp_path, monkeypatch):
    """A batch photo gets photo mode's answer (bodymap.photo: the same rules as `bodymap photo`
    and the GUI), with the shipped region and diagnosis models in this process: a body-region
    photo its region from the region model and no whole-photo diagnosis; a dermoscopy image a
    diagnosis with its melanoma check; an ear (the kind model and the ear locator stood in for:
    the locator boxes pure green pixels) its regions and overlay, the region never set by the
    ear alone. A photo that is not an image, and a corrupt scan, fail alone."""
    from PIL import Image

    from bodymap import batch
    from bodymap.models.earfind import decide
    from bodymap.models.photokind import PhotoKind

    class Kind:  # what each test photo is
        def classify(self, img, name=None):
            label = "dermoscopy" if name == "mole.png" else "body"
            return PhotoKind(label, {k: 0.94 if k == label else 0.02 for k in ("dermoscopy", "clinical", "body", "other")})

    class Locator:
        card = {"name": "stand-in locator", "trained_on": "-", "licence": None, "held_out": ""}

        def find(self, img, name=None):
            ys, xs = np.nonzero((img == (0, 255, 0)).all(axis=2))
            boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(xs) else np.zeros((0, 4)), float)
            return decide(boxes, np.full(len(boxes), 0.9), img.shape[:2], {"conf": 0.5})

    class Ear:
        card = {"name": "stand-in ear regions", "trained_on": "-", "licence": None, "held_out": ""}

        def segment(self, img, name=None):
            return np.where((img == (0, 255, 0)).all(axis=2), 1, 0)  # 1: helix

    for k, m in (("kind", Kind()), ("earfind", Locator()), ("earseg", Ear())):
        monkeypatch.setitem(batch._MODELS, k, m)
    arch = tmp_path / "arch" / "P1" / "2024-01-01"
    arch.mkdir(parents=True)
    rng = np.random.default_rng(0)
    skin = np.clip(rng.normal((200, 150, 130), 12, (240, 320, 3)), 0, 255).astype(np.uint8)
    skin[100:130, 150:180] = (90, 60, 50)
    Image.fromarray(skin).save(arch / "arm.png")
    Image.fromarray(skin[60:170, 110:220]).save(arch / "mole.png")
    ear = skin.copy()
    ear[20:120, 20:90] = (0, 255, 0)
    Image.fromarray(ear).save(arch / "ear.png")
    (arch / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "arch" / "P2" / "2024-02-01").mkdir(parents=True)  # a patient whose only scan is corrupt
    (tmp_path / "arch" / "P2" / "2024-02-01" / "scan.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    s = run_batch(tmp_path / "arch", tmp_path / "out", workers=0, progress=False)
    failed = dict(s.failed)
    assert s.counts["done"] == 3 and sorted(failed) == ["photo/P1/2024-01-01/broken", "scan/P2/2024-02-01"]
    assert "broken.jpg" in failed["photo/P1/2024-01-01/broken"] and "scan.ply" in failed["scan/P2/2024-02-01"]
    ph = query(tmp_path / "out", sql="select name, photo_kind, macro, region, ear_found, ear_regions, diagnosis, "
                                     "diagnosis_prob, overlay_path, melanoma_flag, out_of_distribution "
                                     "from photos order by name").rows
    arm, ear, mole = ph
    assert arm[:2] == ("arm.png", "body") and arm[2] and arm[3] and not arm[4] and arm[6] is None
    from bodymap.taxonomy import EAR_REGIONS

    assert ear[4] and ear[5].startswith(f"{EAR_REGIONS[1]}:") and Path(ear[8]).is_file()
    assert ear[3] == ear_region_expected(ear[2])  # the region model's, never the ear's alone
    assert mole[:2] == ("mole.png", "dermoscopy") and mole[2] is None and mole[6] and 0 < mole[7] <= 1
    # the melanoma check of the photo's record, NULL where the model gave no verdict
    rec = json.loads(next((tmp_path / "out").rglob("mole/photo.json")).read_text())
    d = rec["diagnosis"]
    assert mole[9] == d["melanoma_flag"] and (d["melanoma_flag"] is None) == (d["melanoma_check"] is None)
    assert mole[10] == d["out_of_distribution"] and rec["models"]["diagnosis"]["trained_on"] == "HAM10000"


def ear_region_expected(macro_label):
    """The region photo mode reports for a body-region photo: the region model's site, in words."""
    from bodymap import taxonomy as tx
    from bodymap.photo import MACRO_SITE

    code = MACRO_SITE.get(macro_label)
    return tx.SITES[tx.SITE_INDEX[code]].name if code else None


@pytest.mark.slow
def test_batch_real_scan_end_to_end(small_patient, tmp_path, capsys):
    """`bodymap batch` in a worker process on one real (small) scan, a corrupt scan and a
    photo: analysis, close-ups, diagnoses, the photo models, the index."""
    from PIL import Image

    from bodymap.cli import main

    (tmp_path / "corrupt.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    Image.fromarray(np.asarray(Image.open(small_patient[0] / "scan.png").convert("RGB"))[:256, :256]).save(
        tmp_path / "photo.jpg")
    m = tmp_path / "m.csv"
    m.write_text(f"patient_id,visit_date,scan,photo\nS1,2024-03-01,{small_patient[0] / 'scan.obj'},\n"
                 f"S1,2024-03-01,,photo.jpg\nS2,2024-03-02,corrupt.obj,\n")
    assert main(["batch", str(m), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "2 done" in text and "1 failed" in text and "failed scan/S2/2024-03-02: " in text and "corrupt.obj" in text
    folder = tmp_path / "out" / "patients" / "S1" / "2024-03-01" / "analysis"
    lesions = json.loads((folder / "lesions.json").read_text())["lesions"]
    diag = json.loads((folder / "diagnoses.json").read_text())["lesions"]
    assert lesions and set(diag) == {str(l["id"]) for l in lesions}
    res = query(tmp_path / "out")
    assert len(res.rows) == len(lesions) and set(res.column("status")) == {"untracked"}
    assert all(Path(p).is_file() for p in res.column("closeup_path"))
    assert all(res.column("site")) and all(res.column("diagnosis")) and None not in res.column("perimeter_mm")
    # the dermoscopy-trained model on a scan's texture: its view is kept, marked out of distribution
    assert set(res.column("diagnosis_ood")) == {True} and set(res.column("melanoma_flag")) == {None}
    # the photo got photo mode's answer: what it is, and what follows from that
    (kind, macro, dx), = query(tmp_path / "out", sql="select photo_kind, macro, diagnosis from photos").rows
    assert kind in ("dermoscopy", "clinical", "body", "other")
    assert (macro is not None) == (kind == "body") and (dx is not None) == (kind in ("dermoscopy", "clinical"))


def test_lesions_a_second_look_found_are_indexed_with_their_track(fake_run, tmp_path):
    """A tracking's second look adds lesions the analysis missed (its folder's visit1/2_lesions.json
    hold them, the analysis folder's lesions.json never does): the index lists them and chains
    them to their partner's persistent id instead of failing on an id it has not seen."""
    import dataclasses
    import shutil

    from bodymap.index import build_index
    from bodymap.lesions import LesionSet
    from bodymap.track import Tracking

    root, _, _ = fake_run
    out = shutil.copytree(root / "out", tmp_path / "out")
    link = next(r for r in read_records(out) if r["kind"] == "track" and r["status"] == "done")
    a, b = (LesionSet.load_json(out / d / "lesions.json") for d in link["inputs"])
    tdir = out / link["dest"]
    tr = Tracking.load_json(tdir / "tracking.json")
    gone = a.lesions[0]  # found again at the later visit by the second look, with a new id
    tr.pairs = [p for p in tr.pairs if p.id1 != gone.id]
    tr.missing = [m for m in tr.missing if m.id1 != gone.id]
    tr.new = [n for n in tr.new if n.id2 not in {p.id2 for p in tr.pairs}]
    found = dataclasses.replace(gone, id=max(l.id for l in b.lesions) + 1)
    tr.pairs.append(dataclasses.replace(tr.pairs[0], id1=gone.id, id2=found.id))
    tr.save_json(tdir / "tracking.json")
    a.save_json(tdir / "visit1_lesions.json")
    dataclasses.replace(b, lesions=[*b.lesions, found]).save_json(tdir / "visit2_lesions.json")
    build_index(out)
    pid = link["patient"]
    first, later = Path(link["dest"]).name.split("--")
    rows = query(out, sql=f"select visit_id, lesion_id, persistent_id from lesions where patient_id = '{pid}'").rows
    ids = {(str(v), l): p for v, l, p in rows}
    assert ids[(later, found.id)] == ids[(first, gone.id)]
    assert None not in [r[0] for r in query(out, sql="select persistent_id from tracks where status <> 'missing'").rows]
