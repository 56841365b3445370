"""Batch benchmark (issue 20): an archive of synthetic patients analysed, tracked and indexed
by `bodymap batch`, with 1 and 2 local workers; a run killed halfway and resumed; queries of
the index against the generator's truth; a query over 100,000 lesions.

    python benchmarks/batch.py --work DIR [--patients 24] [--photos 200] [--resume-patients 8]
        [--texture 1024] [--faces 20000] [--lesions 40] [--seed 7100] [--skip w1 w2 resume queries scale]
    python benchmarks/batch.py --work DIR --fake      # the same steps with the fast fake items (a check)

The archive (made once under DIR/archive, seeds 7100... never used in development): each
patient two visits (a-pose -> random pose, remeshed), lesions grown, new and excised between
them; photos are PAD-UFES-20 clinical photos referenced by path from ../shared/external
(CC BY 4.0, never copied) with their region as the site, or crops of the patients' textures
when that folder is absent. Every item runs single-threaded (--threads 1), so "2 cores' worth
of work" is two items at once on the two cores.

Figures: wall time of each run, throughput per worker (scans and items per hour), speed-up of
2 workers over 1, peak resident memory per worker process; the resumed run: items that were
finished before the kill and were not run again, and whether its index equals the
uninterrupted run's (bodymap.index.snapshot: every table, run-time columns aside); queries by
site, size, status and patient: precision and recall of the lesions each returns against the
truth lesions they were detected from (one-to-one match within max(3 mm, radius)); query time
over 100,000 lesion rows (the archive's rows repeated under new patient ids), median of 5.
"""
import argparse
import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bodymap.batch import read_records, run_batch  # noqa: E402
from bodymap.index import SHOWN, query, snapshot, write_tables  # noqa: E402

PAD = ROOT.parent / "shared" / "external" / "pad_ufes20"
PART_TO_MACRO = {"trunk": "trunk", "head": "head", "neck": "head", "arm": "arm", "hand": "hand", "leg": "leg",
                 "foot": "foot"}


def machine() -> str:
    return (f"{platform.node()}, {os.cpu_count()} cores, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


# ----------------------------------------------------------------------------- the archive
def make_archive(work: Path, a) -> Path:
    """Synthetic patients under work/archive (made once; a patient already there is kept)."""
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    arch = work / "archive"
    opts = SynthOptions(n_lesions=a.lesions, texture_size=a.texture, target_faces=a.faces, visits=2,
                        poses=("a-pose", "random"))
    for i in range(a.patients):
        seed = a.seed + i
        if (arch / f"SYN{seed:05d}" / "visit2" / "truth.json").exists():
            continue
        t0 = time.perf_counter()
        synthesize_patient(seed, opts, arch)
        print(f"  patient {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return arch


def photo_rows(work: Path, patients: list[tuple[str, list[str]]], n: int) -> list[dict]:
    """n photos spread over the patients' visits: PAD-UFES-20 (by path) or texture crops."""
    rows = []
    if (PAD / "metadata.csv").exists():
        with open(PAD / "metadata.csv") as fh:
            meta = list(csv.DictReader(fh))
        found = []
        for m in meta:
            p = PAD / "images" / m["img_id"]
            if p.exists():
                found.append((p, m.get("region", "").lower()))
            if len(found) >= n:
                break
        source = found
    else:
        from PIL import Image

        out = work / "photos"
        out.mkdir(exist_ok=True)
        source = []
        rng = np.random.default_rng(0)
        for k in range(n):
            pid, dates = patients[k % len(patients)]
            tex = np.asarray(Image.open(work / "archive" / pid / "visit1" / "scan.png").convert("RGB"))
            y, x = rng.integers(0, tex.shape[0] - 200), rng.integers(0, tex.shape[1] - 200)
            f = out / f"crop_{k:03d}.png"
            if not f.exists():
                Image.fromarray(tex[y:y + 200, x:x + 200]).save(f)
            source.append((f, ""))
    for k, (p, site) in enumerate(source[:n]):
        pid, dates = patients[k % len(patients)]
        rows.append({"patient_id": pid, "visit_date": dates[k % len(dates)], "path": str(p), "site": site})
    return rows


def write_manifest(path: Path, arch: Path, photos: int, work: Path) -> list:
    """The manifest CSV: every scan of the archive (visit dates from truth.json) and the photos."""
    pts = []
    rows = []
    for pdir in sorted(arch.iterdir()):
        if not (pdir / "patient.json").exists():
            continue
        dates = []
        for vdir in sorted(pdir.glob("visit*")):
            date = json.loads((vdir / "truth.json").read_text())["visit_date"]
            dates.append(date)
            rows.append({"patient_id": pdir.name, "visit_date": date, "path": str(vdir / "scan.obj"), "site": ""})
        pts.append((pdir.name, dates))
    rows += photo_rows(work, pts, photos)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["patient_id", "visit_date", "path", "site"])
        w.writeheader()
        w.writerows(rows)
    return pts


# ----------------------------------------------------------------------------- the runs
def timed_run(manifest: Path, out: Path, workers: int, steps: dict | None) -> dict:
    t0 = time.perf_counter()
    s = run_batch(manifest, out, workers=workers, threads=1, steps=steps, progress=True)
    wall = time.perf_counter() - t0
    recs = [r for r in s.records if not r.get("skipped")]
    by_pid = {}
    for r in recs:
        if r.get("pid"):
            by_pid[r["pid"]] = max(by_pid.get(r["pid"], 0), r.get("peak_rss_mb") or 0)
    n_scans = sum(r["kind"] == "scan" for r in recs)
    print(s.text())
    return {"workers": workers, "wall_s": round(wall, 1), "items": len(recs), "scans": n_scans,
            "failed": s.counts["failed"], "done": s.counts["done"], "skipped": s.counts["skipped"],
            "scans_per_hour_per_worker": round(n_scans / (wall / 3600) / workers, 2),
            "items_per_hour_per_worker": round(len(recs) / (wall / 3600) / workers, 1),
            "mean_item_s": {k: round(statistics.mean([r["seconds"] for r in recs if r["kind"] == k]), 1)
                            for k in ("scan", "track", "photo") if any(r["kind"] == k for r in recs)},
            "peak_rss_mb_per_worker": sorted(by_pid.values()), "machine": machine()}


def resumed_run(manifest: Path, out: Path, steps: dict | None) -> dict:
    """`bodymap batch --workers 2` killed (its whole process group, SIGKILL) once half the scans
    have records (photos, fast, are done by then), then run again to the end."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    with open(manifest) as fh:
        n_scans = sum(Path(r["path"]).suffix.lower() == ".obj" for r in csv.DictReader(fh))
    code = ("import sys, json; from bodymap.batch import run_batch; "
            f"run_batch({str(manifest)!r}, {str(out)!r}, workers=2, threads=1, progress=False, "
            f"steps=json.loads({json.dumps(json.dumps(steps or {}))}))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    while proc.poll() is None and len(list((out / "items").glob("scan~*.json"))) < max(n_scans // 2, 1):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    before = {r["id"]: r for r in read_records(out)}
    done_before = {k: r for k, r in before.items() if r["status"] == "done"}
    s = run_batch(manifest, out, workers=2, threads=1, steps=steps, progress=True)
    after = {r["id"]: r for r in read_records(out)}
    rerun = [k for k, r in done_before.items() if (after[k].get("finished"), after[k].get("pid"))
             != (r.get("finished"), r.get("pid"))]
    return {"records_at_kill": len(before), "done_at_kill": len(done_before), "skipped_on_restart": s.counts["skipped"],
            "finished_items_run_again": rerun, "done_after": s.counts["done"], "failed_after": s.counts["failed"]}


# ----------------------------------------------------------------------------- queries vs truth
def truth_match(out: Path, arch: Path) -> dict:
    """{(patient, visit date, lesion id): truth record} of the index's lesions that lie on a truth
    lesion (one-to-one within max(3 mm, radius) of its point on the scan)."""
    from bodymap.detect.evaluate import match

    res = query(out, sql="select patient_id, visit_date, lesion_id, scan_x_mm, scan_y_mm, scan_z_mm, scan_path "
                         "from lesion_view")
    by_visit = {}
    for p, d, i, x, y, z, scan in res.rows:
        by_visit.setdefault((p, str(d), scan), []).append((i, (x, y, z)))
    found = {}
    for (p, d, scan), les in by_visit.items():
        truth = json.loads((Path(scan).parent / "truth.json").read_text())
        tl = [t for t in truth["lesions"] if t["on_scan"]]
        di, ti = match(np.array([x for _, x in les]), np.array([t["point_mm"] for t in tl]).reshape(-1, 3),
                       np.array([t["diameter_mm"] for t in tl]))
        for a, b in zip(di, ti):
            found[p, d, les[a][0]] = tl[b]
    return found


def query_figures(out: Path, arch: Path) -> dict:
    """Each query's lesions against the truth lesions they lie on: precision = share of returned
    lesions whose truth meets the condition; recall = share of the truth lesions meeting it
    (among those the index holds) that the query returned."""
    found = truth_match(out, arch)
    everything = [(p, str(d), i) for p, d, i in query(out, sql="select patient_id, visit_date, lesion_id "
                                                              "from lesion_view").rows]
    first = {}
    for p, d, _ in everything:
        first[p] = min(first.get(p, d), d)
    pid = sorted(first)[0]
    checks = {
        "site: head and neck": ("site_l1 = 'head and neck'", lambda p, d, t: PART_TO_MACRO[t["part"]] == "head"),
        "site: lower extremity (legs and feet)": ("site_l1 = 'lower extremity'",
                                                 lambda p, d, t: t["part"] in ("leg", "foot")),
        "size: diameter >= 4 mm": ("diameter_mm >= 4", lambda p, d, t: t["diameter_mm"] >= 4),
        "status: grown": ("status = 'grown'", lambda p, d, t: "grown" in t["changes"]),
        "status: new": ("status = 'new'", lambda p, d, t: "new" in t["changes"]),
        f"patient {pid}": (f"patient_id = '{pid}'", lambda p, d, t: p == pid),
        "trunk and >= 4 mm and grown": ("macro = 'trunk' and diameter_mm >= 4 and status = 'grown'",
                                        lambda p, d, t: t["part"] == "trunk" and t["diameter_mm"] >= 4
                                        and "grown" in t["changes"]),
    }
    figs = {}
    for name, (where, pred) in checks.items():
        got = {(p, str(d), i) for p, d, i in zip(*(query(out, where).column(c) for c in
                                                   ("patient_id", "visit_date", "lesion_id")))}
        on_truth = {k for k in got if k in found}
        tp = sum(pred(*k[:2], found[k]) for k in on_truth)
        should = {k for k, t in found.items() if pred(k[0], k[1], t)}
        figs[name] = {"where": where, "returned": len(got), "on_truth": len(on_truth),
                      "precision": round(tp / len(on_truth), 3) if on_truth else None,
                      "recall": round(len(should & got) / len(should), 3) if should else None,
                      "truth_count": len(should)}
    # persistent ids: a truth lesion seen at both visits keeps one id
    pids = dict(zip(((p, str(d), i) for p, d, i in everything),
                    query(out, sql="select persistent_id from lesion_view").column("persistent_id")))
    by_truth = {}
    for k, t in found.items():
        by_truth.setdefault((k[0], t["id"]), []).append(pids[k])
    seen2 = [v for v in by_truth.values() if len(v) == 2]
    figs["persistent ids"] = {"truth lesions found at both visits": len(seen2),
                              "same id at both": sum(v[0] == v[1] for v in seen2),
                              "share": round(sum(v[0] == v[1] for v in seen2) / max(len(seen2), 1), 3)}
    return figs


def scale_figures(out: Path, work: Path, n: int = 100_000) -> dict:
    """A 100,000-lesion index made of the archive's lesion rows repeated under new patient
    ids (diameters jittered); time of each query (connect + run + fetch), median of 5."""
    import duckdb

    con = duckdb.connect(str(out / "index.duckdb"), read_only=True)
    cols = [d[0] for d in con.execute("select * from lesions limit 0").description]
    base = con.execute("select * from lesions").fetchall()
    con.close()
    rng = np.random.default_rng(0)
    rows = []
    k = 0
    while len(rows) < n:
        for r in base:
            d = dict(zip(cols, r))
            d["patient_id"] = f"X{k:05d}-{d['patient_id']}"
            d["diameter_mm"] = round(float(d["diameter_mm"]) * float(rng.uniform(0.8, 1.25)), 3)
            rows.append(d)
            if len(rows) >= n:
                break
        k += 1
    big = work / "scale"
    big.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    write_tables(big / "index.duckdb", {"lesions": rows})
    build = time.perf_counter() - t0
    figs = {"lesions": len(rows), "build_s": round(build, 1)}
    for where in ("site = 'ear' and diameter_mm >= 4 and status = 'grown'", "diameter_mm >= 4",
                  "patient_id = 'X00042-" + base[0][0] + "'", "site_l1 = 'trunk' and status = 'new'"):
        f = {}
        # the columns `bodymap query` prints and the GUI lists; then every column (the CSV)
        for what, cols in (("shown_columns", SHOWN), ("all_columns", None)):
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                res = query(big, where, columns=cols)
                ts.append(time.perf_counter() - t0)
            f[what] = {"median_s": round(statistics.median(ts), 3), "max_s": round(max(ts), 3)}
        figs[where] = {"rows": len(res), **f}
    return figs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="work folder (the archive is made once and reused)")
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--resume-patients", type=int, default=8, help="patients of the killed-and-resumed run")
    ap.add_argument("--seed", type=int, default=7100)
    ap.add_argument("--texture", type=int, default=1024, help="texture side (at 512 most lesions are a texel or two)")
    ap.add_argument("--faces", type=int, default=20_000)
    ap.add_argument("--lesions", type=int, default=40)
    ap.add_argument("--skip", nargs="*", default=[], choices=["w1", "w2", "resume", "queries", "scale"])
    ap.add_argument("--fake", action="store_true", help="fake items (tests/batch_fakes.py): checks the script fast")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    res = {"machine_start": machine(), "args": vars(a)}
    steps = None
    if a.fake:
        from tests.batch_fakes import STEPS, make_archive as fake_archive

        steps = STEPS
        arch = work / "archive"
        if not arch.exists():
            fake_archive(arch, patients=a.patients, visits=2, photos=0)
            for pdir in arch.iterdir():
                (pdir / "patient.json").write_text(json.dumps({"patient_id": pdir.name}))
                for v, vdir in enumerate(sorted(p for p in pdir.iterdir() if p.is_dir()), 1):
                    vdir.rename(pdir / f"visit{v}")
                    (pdir / f"visit{v}" / "truth.json").write_text(json.dumps({"visit_date": vdir.name,
                                                                                "lesions": []}))
    else:
        print("making the archive ...", flush=True)
        arch = make_archive(work, a)
    manifest = work / "manifest.csv"
    pts = write_manifest(manifest, arch, a.photos, work)
    print(f"manifest: {len(pts)} patients, {sum(len(d) for _, d in pts)} scans, photos from "
          f"{'PAD-UFES-20' if (PAD / 'metadata.csv').exists() else 'texture crops'}", flush=True)
    for w in (1, 2):
        if f"w{w}" in a.skip:
            continue
        out = work / f"out_w{w}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        print(f"--workers {w} ...", flush=True)
        res[f"workers_{w}"] = timed_run(manifest, out, w, steps)
        print(json.dumps(res[f"workers_{w}"]), flush=True)
    if "workers_1" in res and "workers_2" in res:
        res["speed_up"] = round(res["workers_1"]["wall_s"] / res["workers_2"]["wall_s"], 2)
    if all((work / f"out_w{w}" / "index.duckdb").exists() for w in (1, 2)):
        s1, s2 = snapshot(work / "out_w1"), snapshot(work / "out_w2")
        res["same_index_1_vs_2"] = s1 == s2
        if s1 != s2:
            res["tables_differing_1_vs_2"] = [t for t in s1 if s1[t] != s2[t]]
    if "resume" not in a.skip:
        only = {p for p, _ in pts[:a.resume_patients]}
        sub = work / "manifest_resume.csv"
        with open(manifest) as fh:  # the full manifest's rows of these patients
            rows = [r for r in csv.DictReader(fh) if r["patient_id"] in only]
        with open(sub, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"killed and resumed run ({len(only)} patients) ...", flush=True)
        r = resumed_run(sub, work / "out_resume", steps)
        ref = work / "out_w2"
        if (ref / "index.duckdb").exists():
            r["same_index_as_uninterrupted"] = snapshot(work / "out_resume", only) == snapshot(ref, only)
        res["resume"] = r
        print(json.dumps(r), flush=True)
    ref = work / ("out_w2" if (work / "out_w2" / "index.duckdb").exists() else "out_w1")
    if "queries" not in a.skip and not a.fake and (ref / "index.duckdb").exists():
        res["queries"] = query_figures(ref, arch)
    if "scale" not in a.skip and (ref / "index.duckdb").exists():
        res["scale"] = scale_figures(ref, work)
    res["machine_end"] = machine()
    (work / "batch_benchmark.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
