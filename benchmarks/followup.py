"""Follow-up benchmark: persistent lesion ids over many visits and growth rates, against truth.

    python benchmarks/followup.py [--visits 4] [--patients 1] [--seed 9301] [--lesions 200]
                                  [--faces 150000] [--texture 4096] [--work DIR] [--json out.json]
    python benchmarks/followup.py --patient-dir PATIENT --analyses A1 A2 ...   (made already)

--work keeps the generated patients and their analysis folders (a rerun reuses them).

Per synthetic patient (`bodymap synth --visits N`: pose change a-pose -> random, weight change,
remeshed topology; lesions appear, are excised, grow and darken between visits; seeds 9301...
were not used while developing): every visit is analysed (registration + classical detection),
then the visits are tracked link by link and numbered by bodymap.followup.chain_ids.

  * true lesion lists (the ids are the truth's): a lesion present at two or more visits keeps
    its id when all its sightings carry one persistent id that no other lesion carries;
  * end to end (detections): detections are linked to truth per visit (3D distance <= max(3 mm,
    radius)); a true lesion >= 2 mm present at two or more visits keeps its id when it was
    detected at each of them and all those detections carry one persistent id (and no other
    true lesion's detection that id);
  * growth rate: for every step between consecutive visits of a true lesion whose detections
    were chained (same persistent id), bodymap.history's rate (change of the detected longest
    diameter / years between the visit dates) against the truth's (change of the painted
    diameter / the same years), mm per year.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bodymap.followup import chain_ids  # noqa: E402
from bodymap.history import HistoryVisit, lesion_history, years_between  # noqa: E402


def kept_ids(series, truth_ids: list[dict]) -> tuple[int, int]:
    """(kept, persistent): truth_ids per visit {true id -> lesion id in the series' lists, or
    None when not found}; a true lesion present at >= 2 visits keeps its id when every
    sighting was found and carries one persistent id no other true lesion's sighting carries."""
    owner: dict[int, set] = {}
    pids: dict[int, list] = {}
    for k, m in enumerate(truth_ids):
        for t, lid in m.items():
            p = series.ids[k].get(lid) if lid is not None else None
            pids.setdefault(t, []).append(p)
            if p is not None:
                owner.setdefault(p, set()).add(t)
    pers = [t for t, ps in pids.items() if len(ps) >= 2]
    ok = sum(1 for t in pers if None not in pids[t] and len(set(pids[t])) == 1 and owner[pids[t][0]] == {t})
    return ok, len(pers)


def make_patient(seed: int, a, work: Path) -> tuple[list[Path], list[Path]]:
    """Generate patient seed under work (unless there already) and analyse each visit into
    work/p<seed>-analysis/visitN (unless done). Returns (visit folders, analysis folders)."""
    from bodymap.io import load_scan
    from bodymap.pipeline import analyze, write_result
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    t0 = time.perf_counter()
    pdir = work / f"p{seed}"
    if not (pdir / "complete").exists():
        opts = SynthOptions(n_lesions=a.lesions, texture_size=a.texture, target_faces=a.faces, visits=a.visits)
        synthesize_patient(seed, opts, pdir)
        (pdir / "complete").touch()
        print(f"seed {seed}: {a.visits} visits generated in {time.perf_counter() - t0:.0f} s", flush=True)
    vdirs = sorted(next(p for p in pdir.iterdir() if p.is_dir()).glob("visit*"))
    adirs = []
    for k, vd in enumerate(vdirs):
        ad = work / f"p{seed}-analysis" / vd.name
        if not (ad / "complete").exists():
            t1 = time.perf_counter()
            r = analyze(load_scan(vd / "scan.obj"))
            write_result(r, ad)
            (ad / "complete").touch()
            print(f"  visit {k + 1}: {len(r.lesions)} detected; analysed in {time.perf_counter() - t1:.0f} s", flush=True)
        adirs.append(ad)
    return vdirs, adirs


def run_patient(name: str, vdirs: list[Path], adirs: list[Path]) -> dict:
    from bodymap.detect.evaluate import match
    from bodymap.pipeline import load_visit, track_visits
    from bodymap.synth.truth import read_visit_truth
    from bodymap.track import Visit
    from bodymap.trackeval import truth_lesion_set

    t0 = time.perf_counter()
    scans, results, truths, dates = [], [], [], []
    for k, (vd, ad) in enumerate(zip(vdirs, adirs)):
        r = load_visit(ad)
        scans.append(r.scan)
        results.append(r)
        truths.append(truth_lesion_set(vd))
        dates.append(read_visit_truth(vd)[0]["visit_date"])
        print(f"  visit {k + 1} ({dates[-1]}): {len(truths[-1])} true lesions, {len(r.lesions)} detected", flush=True)
    assert all(years_between(x, y) > 0 for x, y in zip(dates, dates[1:])), f"visit dates not increasing: {dates}"

    # true lesion lists
    t1 = time.perf_counter()
    tv = [Visit(s, L, r.correspondence) for s, L, r in zip(scans, truths, results)]
    tr_truth = [track_visits(tv[k - 1], tv[k]) for k in range(1, len(tv))]
    ser_t = chain_ids([[l.id for l in L.lesions] for L in truths], tr_truth)
    ok_t, n_t = kept_ids(ser_t, [{l.id: l.id for l in L.lesions} for L in truths])
    print(f"  true lesion lists: {ok_t}/{n_t} persistent lesions kept one id over {len(vdirs)} visits "
          f"({ok_t / max(n_t, 1):.3f}); tracking {time.perf_counter() - t1:.0f} s", flush=True)

    # end to end
    dv = [Visit(s, r.lesions, r.correspondence) for s, r in zip(scans, results)]
    tr_det = [track_visits(dv[k - 1], dv[k]) for k in range(1, len(dv))]
    ser_d = chain_ids([[l.id for l in r.lesions.lesions] for r in results], tr_det)
    links = []
    for r, L in zip(results, truths):
        di, ti = match(r.lesions.points, L.points, L.diameters)
        m = {L.lesions[t].id: r.lesions.lesions[d].id for d, t in zip(di, ti)}
        links.append({l.id: m.get(l.id) for l in L.lesions if l.diameter_mm >= 2.0})
    ok_d, n_d = kept_ids(ser_d, links)
    found = [t for t in set().union(*links) if sum(t in m for m in links) >= 2
             and all(m.get(t, 0) is not None for m in links)]
    ok_f, n_f = kept_ids(ser_d, [{t: m[t] for t in found if t in m} for m in links])
    print(f"  end to end: {ok_d}/{n_d} persistent lesions >= 2 mm kept one id ({ok_d / max(n_d, 1):.3f}); "
          f"of those detected at every visit {ok_f}/{n_f} ({ok_f / max(n_f, 1):.3f})", flush=True)

    # growth rates of chained detections against truth
    hv = [HistoryVisit(s, r.lesions, d, r.correspondence) for s, r, d in zip(scans, results, dates)]
    true_d = [{l.id: l.diameter_mm for l in L.lesions} for L in truths]
    errs, grown_errs, whole, grown_pairs = [], [], [], []
    for t in found:
        ks = [k for k, m in enumerate(links) if t in m]
        pid = ser_d.ids[ks[0]][links[ks[0]][t]]
        if any(ser_d.ids[k][links[k][t]] != pid for k in ks):
            continue
        h = lesion_history(hv, ser_d, pid, closeups=False)
        for st in h.steps:
            if st.diameter_rate_mm_per_year is None or st.visit1 not in ks or st.visit2 not in ks:
                continue
            truth_rate = (true_d[st.visit2][t] - true_d[st.visit1][t]) / st.years
            e = abs(st.diameter_rate_mm_per_year - truth_rate)
            errs.append(e)
            if truth_rate > 0:
                grown_errs.append(e)
                grown_pairs.append((truth_rate, st.diameter_rate_mm_per_year))
        a_, b_ = h.sightings[0], h.sightings[-1]
        if len(h.sightings) >= 2 and a_.visit in ks and b_.visit in ks and h.diameter_rate_mm_per_year is not None:
            yrs = years_between(a_.date, b_.date)
            whole.append(abs(h.diameter_rate_mm_per_year - (true_d[b_.visit][t] - true_d[a_.visit][t]) / yrs))
    errs, grown_errs, whole = np.array(errs), np.array(grown_errs), np.array(whole)
    print(f"  growth rate error (mm/year) between consecutive visits: median {np.median(errs):.3f}, 90th percentile "
          f"{np.percentile(errs, 90):.3f} over {len(errs)} steps; steps where the lesion grew: median "
          f"{np.median(grown_errs) if len(grown_errs) else float('nan'):.3f} over {len(grown_errs)}; "
          f"first to last visit: median {np.median(whole):.3f} over {len(whole)} lesions", flush=True)
    print("  grown steps (true rate -> measured, mm/year): "
          + ", ".join(f"{x:.2f}->{y:.2f}" for x, y in sorted(grown_pairs)), flush=True)

    # manual lesions: a click on each true lesion the detector missed
    from bodymap.session import manual_lesion

    clicks = []
    for s, r, L in zip(scans, results, truths):
        di, ti = match(r.lesions.points, L.points, L.diameters)
        for i in sorted(set(range(len(L))) - set(ti.tolist())):
            t_ = L.lesions[i]
            m_ = manual_lesion(s, t_.face, t_.bary, 10 ** 6, 3.0)
            clicks.append((t_.diameter_mm, m_.diameter_mm if m_.measures else None))
    meas = [(x, y) for x, y in clicks if y is not None]
    merr = np.array([abs(y - x) for x, y in meas])
    print(f"  manual clicks on true lesions the detector missed: {len(meas)}/{len(clicks)} segmented and measured; "
          f"diameter error median {np.median(merr) if len(merr) else float('nan'):.2f} mm "
          f"(true diameters median {np.median([x for x, _ in clicks]) if clicks else float('nan'):.2f} mm)", flush=True)
    return {"patient": name, "dates": dates, "kept_truth": [ok_t, n_t], "kept_e2e": [ok_d, n_d],
            "kept_e2e_detected": [ok_f, n_f], "rate_errors": errs.tolist(), "grown_rate_errors": grown_errs.tolist(),
            "whole_rate_errors": whole.tolist(), "grown_steps": grown_pairs, "manual_clicks": clicks,
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--visits", type=int, default=4)
    p.add_argument("--patients", type=int, default=1)
    p.add_argument("--seed", type=int, default=9301)
    p.add_argument("--lesions", type=int, default=200)
    p.add_argument("--faces", type=int, default=150_000)
    p.add_argument("--texture", type=int, default=4096)
    p.add_argument("--work", help="folder keeping the patients and analyses (default: a temporary one)")
    p.add_argument("--patient-dir", help="score one patient made already (its visitN folders) ...")
    p.add_argument("--analyses", nargs="+", help="... with these analysis folders (one per visit)")
    p.add_argument("--json", help="also write all figures to this file")
    a = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}", flush=True)
    rows = []
    if a.patient_dir:
        vdirs = sorted(Path(a.patient_dir).glob("visit*"))
        rows.append(run_patient(Path(a.patient_dir).name, vdirs, [Path(x) for x in a.analyses]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(a.work or tmp)
            for k in range(a.patients):
                vdirs, adirs = make_patient(a.seed + k, a, work)
                rows.append(run_patient(f"seed {a.seed + k}", vdirs, adirs))

    def pool(key):
        ok, n = sum(r[key][0] for r in rows), sum(r[key][1] for r in rows)
        return ok, n, ok / max(n, 1)

    errs = np.concatenate([r["rate_errors"] for r in rows])
    grown = np.concatenate([r["grown_rate_errors"] for r in rows])
    whole = np.concatenate([r["whole_rate_errors"] for r in rows])
    print(f"pooled over {len(rows)} patient(s), {len(rows[0]['dates'])} visits each:")
    print("  true lesion lists: %d/%d kept one id (%.3f; target >= 0.97)" % pool("kept_truth"))
    print("  end to end: %d/%d persistent lesions >= 2 mm kept one id (%.3f)" % pool("kept_e2e"))
    print("  end to end, detected at every visit: %d/%d (%.3f)" % pool("kept_e2e_detected"))
    print(f"  growth rate error: median {np.median(errs):.3f} mm/year (target <= 0.5) over {len(errs)} steps; "
          f"steps where the lesion grew: median {np.median(grown) if len(grown) else float('nan'):.3f} over "
          f"{len(grown)}; first to last visit median {np.median(whole):.3f} over {len(whole)} lesions")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
