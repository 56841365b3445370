"""Tracking benchmark: lesions matched across visits on data not used while developing.

    python benchmarks/tracking.py [--faces 300000] [--texture 4096] [--lesions 100 300 500] [--no-e2e] [--no-faust]

Synthetic: one new patient per lesion count (seeds 9201, 9202, ... by default; development used 201-206),
two visits with a pose change (a-pose -> random), a weight change, remeshed topology, 300k
faces; lesions appear, are excised and grow between the visits.
  * true lesion lists in: bodymap.track.track registers both scans itself (timed: that is
    the "tracking with registration" figure) and matches; scored by bodymap.trackeval;
  * end to end: lesions detected on both scans (classical detector), located, tracked
    (bodymap.pipeline.track_visits) without and with the second look (bodymap.secondlook); a
    persistent true lesion >= 2 mm counts when its two detections were paired; new / missing
    precision and recall over detections linked to true lesions (bodymap.trackeval.score_end_to_end).
FAUST (../shared/external/faust_fundcg, real registrations of one person in four poses): each
pair of poses is shuffled (vertex and face order) so that nothing but the geometry links them,
150 lesions placed at chosen vertices per pair (>= 30 mm apart; 10 % excised, 10 % new, 12 %
grown; --faust-lesions, --faust-seed). --faust-cache FILE keeps the shuffled poses and their
registrations between runs (development: two versions of the matching on the same input).
"""
import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bodymap.geodesic import SurfaceGeodesics  # noqa: E402
from bodymap.io import load_scan  # noqa: E402
from bodymap.pipeline import track_visits  # noqa: E402
from bodymap.track import Visit, track  # noqa: E402
from bodymap.trackeval import (CLINIC_POSE_PAIRS, placed_lesions, score_end_to_end, score_tracking, shuffled,  # noqa: E402
                               truth_lesion_set)

FAUST = ROOT.parent / "shared" / "external" / "faust_fundcg"


def _fmt(s: dict) -> str:
    return (f"matched right {s['correct']}/{s['persistent']} ({s['match_accuracy']:.3f}); new P/R "
            f"{s['new_precision']:.2f}/{s['new_recall']:.2f} ({s['new_true']}); missing P/R "
            f"{s['missing_precision']:.2f}/{s['missing_recall']:.2f} ({s['missing_true']}); localisation median "
            f"{s['localisation_median_mm']:.2f} mm, within 10 mm {s['localisation_within_10mm']:.3f}")


def _pool(rows: list[dict]) -> dict:
    """Pooled figures over runs (counts summed; precision/recall from summed counts)."""
    pers = sum(r["persistent"] for r in rows)
    corr = sum(r["correct"] for r in rows)
    errs = np.concatenate([r["errors_mm"] for r in rows])

    def pr(kind):
        true = sum(r[f"{kind}_true"] for r in rows)
        found = sum(r[f"{kind}_found"] for r in rows)
        tp = sum(round(r[f"{kind}_recall"] * r[f"{kind}_true"]) for r in rows)
        return tp / max(found, 1), tp / max(true, 1)

    (np_, nr), (mp, mr) = pr("new"), pr("missing")
    return {"persistent": pers, "match_accuracy": corr / max(pers, 1), "new_precision": np_, "new_recall": nr,
            "missing_precision": mp, "missing_recall": mr, "localisation_median_mm": float(np.median(errs)),
            "localisation_within_10mm": float(np.mean(errs <= 10))}


def _print_pool(name: str, p: dict) -> None:
    print(f"{name}: persistent matched right {p['match_accuracy']:.3f} of {p['persistent']} (target >= 0.97); "
          f"new P/R {p['new_precision']:.3f}/{p['new_recall']:.3f}, missing P/R {p['missing_precision']:.3f}/"
          f"{p['missing_recall']:.3f} (>= 0.95 each); localisation median {p['localisation_median_mm']:.2f} mm "
          f"(< 5), within 10 mm {p['localisation_within_10mm']:.3f} (>= 0.98)", flush=True)


def synthetic(a, tmp: Path) -> tuple[list, list, list]:
    from bodymap.anatomy.labels import transfer_labels
    from bodymap.anatomy.template import load_template
    from bodymap.pipeline import detect_lesions, locate_lesions
    from bodymap.synth.patient import SynthOptions, synthesize_patient

    rows, e2e, times = [], [], []
    for k, n in enumerate(a.lesions):
        seed = a.seed + k
        poses = CLINIC_POSE_PAIRS[k % len(CLINIC_POSE_PAIRS)] if a.clinic_poses else ("a-pose", "random")
        opts = SynthOptions(n_lesions=n, texture_size=a.texture, target_faces=a.faces, visits=2, poses=poses)
        v1, v2 = synthesize_patient(seed, opts, tmp / f"p{seed}")
        s1, s2 = load_scan(v1 / "scan.obj"), load_scan(v2 / "scan.obj")
        L1, L2 = truth_lesion_set(v1), truth_lesion_set(v2)
        V1, V2 = Visit(s1, L1), Visit(s2, L2)
        t0 = time.perf_counter()
        result = track(V1, V2)
        wall = time.perf_counter() - t0
        times.append({"seed": seed, "lesions": [len(L1), len(L2)], "wall_s": wall, **result.info["timings"]})
        s = score_tracking(result, L1, L2, SurfaceGeodesics(s1.vertices, s1.faces))
        s.update(seed=seed, lesions=n, wall_s=wall)
        rows.append(s)
        print(f"synthetic seed {seed}, {n} lesions, poses {poses[0]} -> {poses[1]}, {s1.n_faces}/{s2.n_faces} faces: {_fmt(s)}; "
              f"{wall:.1f} s with registration ({result.info['timings']['registration_s']:.1f} s)", flush=True)
        if a.no_e2e:
            continue
        dets = []
        for s_, V in ((s1, V1), (s2, V2)):
            d = detect_lesions(s_)
            locate_lesions(d, s_, V.correspondence, transfer_labels(V.correspondence, load_template()))
            dets.append(d)
        for look in (False, True):
            import copy

            d1, d2 = copy.deepcopy(dets[0]), copy.deepcopy(dets[1])
            t0 = time.perf_counter()
            r2 = track_visits(Visit(s1, d1, V1.correspondence), Visit(s2, d2, V2.correspondence), second_look=look)
            wall2 = time.perf_counter() - t0
            e = score_end_to_end(r2, d1, d2, truth_lesion_set(v1), truth_lesion_set(v2))
            sl = r2.info.get("second_look", {})
            e.update(seed=seed, second_look=look, detections=[len(d1), len(d2)], wall_s=wall2,
                     second_look_added=[len(sl.get("visit1", [])), len(sl.get("visit2", []))])
            e2e.append(e)
            print(f"  end to end{' with second look' if look else ''}: {e['correct']}/{e['persistent_big']} persistent "
                  f"lesions >= 2 mm paired right ({e['accuracy']:.3f}; detected on both visits {e['detected_both']}, "
                  f"of those paired right {e['accuracy_given_detected']:.3f}); new P/R {e['new_precision']:.3f}/"
                  f"{e['new_recall']:.3f} ({e['new_tp']} of {e['new_linked']} called new are new, "
                  f"{e['new_detected_true']} detected new), missing P/R {e['missing_precision']:.3f}/"
                  f"{e['missing_recall']:.3f} ({e['missing_tp']} of {e['missing_linked']}, "
                  f"{e['missing_detected_true']} detected gone); calls on no true lesion {e['new_called'] - e['new_linked']}"
                  f"/{e['missing_called'] - e['missing_linked']}; detections {len(d1)}/{len(d2)}"
                  + (f", second look added {e['second_look_added'][0]}/{e['second_look_added'][1]} "
                     f"({sl.get('seconds', 0):.1f} s)" if look else "") + f"; {wall2:.1f} s", flush=True)
    return rows, e2e, times


def faust(a) -> list:
    """All ordered pairs of FAUST's four poses of one person: each pose is shuffled and
    registered once; per pair 150 lesions >= 30 mm apart (10 % new, 10 % missing, 12 % grown,
    visit-2 ids relabelled), placements from seed a.faust_seed + pair index."""
    from bodymap.anatomy.register import register

    poses = sorted({x for pair in a.faust_pairs for x in pair})
    cache = Path(a.faust_cache) if a.faust_cache else None
    if cache is not None and cache.exists():
        # development: the same shuffled poses and registrations for every run, so that two
        # versions of the matching are compared on identical input (a file this script wrote)
        scans, perms, corrs = pickle.loads(cache.read_bytes())
        if not set(poses) <= set(scans):
            raise SystemExit(f"{cache}: holds poses {sorted(scans)}, not all of {poses}")
        print(f"FAUST: shuffled poses and registrations read from {cache} (registration not re-run)", flush=True)
    else:
        rng = np.random.default_rng(77)
        scans, perms, corrs = {}, {}, {}
        for x in poses:
            scans[x], perms[x] = shuffled(load_scan(FAUST / f"tr_reg_{x:03d}.off"), rng)
            t0 = time.perf_counter()
            corrs[x] = register(scans[x])
            q = corrs[x].info["quality"]
            print(f"FAUST tr_reg_{x:03d}: registered in {time.perf_counter() - t0:.1f} s, fit {q['verdict']} "
                  f"(model within 10 mm {q['model_within_10mm']:.3f})",
                  flush=True)
        if cache is not None:
            cache.write_bytes(pickle.dumps((scans, perms, corrs)))
    rows = []
    for k, (x, y) in enumerate(a.faust_pairs):
        rng = np.random.default_rng(a.faust_seed + k)
        L1, L2, truth = placed_lesions(scans[x], scans[y], perms[x], perms[y], a.faust_lesions, rng)
        t0 = time.perf_counter()
        result = track(Visit(scans[x], L1, corrs[x]), Visit(scans[y], L2, corrs[y]))
        s = score_tracking(result, L1, L2, SurfaceGeodesics(scans[x].vertices, scans[x].faces), truth)
        s.update(pair=[x, y], wall_s=time.perf_counter() - t0)
        rows.append(s)
        print(f"FAUST tr_reg_{x:03d} -> tr_reg_{y:03d}: {_fmt(s)}", flush=True)
    return rows


def _print_calibration(name: str, rows: list) -> None:
    from bodymap.trackeval import calibration

    c = calibration(np.concatenate([r["pair_confidence"] for r in rows]),
                    np.concatenate([r["pair_correct"] for r in rows]))
    print(f"{name}: confidence calibration over {c['pairs']} pairs: ECE {c['ece']:.3f} (target < 0.05); "
          f"pairs marked confident (>= 0.9): {c['confident_share']:.3f} of all, {c['confident_accuracy']:.4f} "
          f"correct (target >= 0.99)", flush=True)


def main() -> None:
    from bodymap.memory import reuse_freed_memory

    reuse_freed_memory()  # as the bodymap command does: times are what a user of it gets
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--texture", type=int, default=4096)
    p.add_argument("--lesions", type=int, nargs="+", default=[100, 300, 500])
    p.add_argument("--seed", type=int, default=9201,
                   help="first synthetic patient's seed (one patient per lesion count; development used 201-206; "
                        "9101-9103 were held out before the leftover pass and have been looked at since; the second "
                        "look was developed on 501-502 and 9501; synthetic patients 9701-9752 have been scored "
                        "and looked at, so a new held-out figure starts at 9761)")
    p.add_argument("--no-e2e", action="store_true", help="skip detection (true lesion lists only)")
    p.add_argument("--no-faust", action="store_true")
    p.add_argument("--no-synthetic", action="store_true")
    p.add_argument("--faust-pairs", type=lambda t: tuple(int(x) for x in t.split("-")), nargs="+",
                   default=[(x, y) for x in range(4) for y in range(4) if x != y], help="e.g. 0-1 0-2")
    p.add_argument("--faust-lesions", type=int, default=150)
    p.add_argument("--faust-seed", type=int, default=300,
                   help="first FAUST placement seed (one per pair); the far pass was developed on 100-111 and "
                        "checked on 200-211, the calibration fitted on both; 300-311 gave the figures of 2026-12-02 and "
                        "were looked at since; 600-611 scored the 12 %% far-pass stretch and final placement once, and "
                        "were looked at since (with 100-311, the settling was developed on them); 700-711 scored "
                        "the settling once, 800-811 scored it again (stop 32); 1000-1911 have been scored and looked "
                        "at since (stops 38-47), so a new held-out figure starts at 2000)")
    p.add_argument("--faust-cache",
                   help="development: read the shuffled FAUST poses and their registrations from this file, or "
                        "register once and write it, so that versions of the matching are compared on the same "
                        "registrations (the figures to report re-register: leave it out)")
    p.add_argument("--clinic-poses", action="store_true",
                   help="synthetic visits in clinic pose pairs (trackeval.CLINIC_POSE_PAIRS) instead of a-pose -> random")
    p.add_argument("--json", help="also write all figures to this file")
    a = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}", flush=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not a.no_synthetic:
            rows, e2e, times = synthetic(a, Path(tmp))
            out.update(synthetic=rows, end_to_end=e2e, times=times)
            _print_pool("synthetic, true lesion lists", _pool(rows))
            _print_calibration("synthetic, true lesion lists", rows)
            for look in (False, True):
                rows_ = [e for e in e2e if e["second_look"] == look]
                if not rows_:
                    continue
                ok = sum(e["correct"] for e in rows_)
                n = sum(e["persistent_big"] for e in rows_)

                def pr(kind):
                    tp = sum(e[f"{kind}_tp"] for e in rows_)
                    return (tp / max(sum(e[f"{kind}_linked"] for e in rows_), 1),
                            tp / max(sum(e[f"{kind}_detected_true"] for e in rows_), 1))

                (np_, nr), (mp, mr) = pr("new"), pr("missing")
                print(f"synthetic, end to end{', second look' if look else ', no second look'}: {ok}/{n} persistent "
                      f"lesions >= 2 mm paired right ({ok / max(n, 1):.3f}; target >= 0.97); new P/R {np_:.3f}/{nr:.3f}, "
                      f"missing P/R {mp:.3f}/{mr:.3f} (targets P >= 0.90, R >= 0.95)", flush=True)
            big = max(times, key=lambda t: t["lesions"][0])
            print(f"tracking {big['lesions'][0]} -> {big['lesions'][1]} lesions with registration: {big['wall_s']:.1f} s "
                  f"(registration {big['registration_s']:.1f} s, matching {big['matching_s']:.1f} s; target < 45 s, issue 14)")
    if not a.no_faust and FAUST.exists():
        rows = faust(a)
        out["faust"] = rows
        _print_pool("FAUST, placed lesions", _pool(rows))
        _print_calibration("FAUST", rows)
        worst = min(rows, key=lambda r: r["match_accuracy"])
        print(f"FAUST worst pair {worst['pair']}: matched right {worst['match_accuracy']:.3f} (target >= 0.95 "
              f"on every pair)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
