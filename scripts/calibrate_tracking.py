"""Fit the tracking confidence model: the probability that a proposed pair is right, from its
features (bodymap.track.FEATURES), by logistic regression on development visit pairs.

    python scripts/calibrate_tracking.py [--seeds 301 302 ...] [--faces 60000] [--faust-seeds 100 200]
        [--cache DIR] [--out bodymap/data/tracking_calibration.json]

Development pairs are synthetic patients (seeds never used for the held-out figures), both
visits in varied clinic poses, with the lesions the classical detector finds on each visit (so
the pairs include the mistakes real detections cause), each pair labelled right or wrong from
the generator's truth. With --faust-seeds, real bodies too: FAUST's four poses of one person
(../shared/external/faust_fundcg), all 12 ordered pairs per placement series, lesions placed as
in benchmarks/tracking.py (pair k from seed S + k); use series the benchmark's figure is not read
on. The file records the seeds, poses, the number of pairs, and the calibration measured on these
pairs (the held-out figure is benchmarks/tracking.py's).
"""
import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def collect(seed: int, poses: tuple, faces: int, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (p, F) and correctness (p,) of the pairs proposed on one synthetic patient, its
    lesions as detected on both visits."""
    from bodymap.anatomy.labels import label_scan
    from bodymap.detect.evaluate import match
    from bodymap.io import load_scan
    from bodymap.pipeline import detect_lesions, locate_lesions
    from bodymap.anatomy.body import BodySpec
    from bodymap.synth.patient import SynthOptions, synthesize_patient
    from bodymap.track import FEATURES, Visit, track
    from bodymap.trackeval import truth_lesion_set

    rng = np.random.default_rng(seed)
    body = BodySpec.random(rng)
    opts = SynthOptions(n_lesions=int(rng.integers(80, 250)), texture_size=2048, target_faces=faces, visits=2,
                        poses=poses, body=body)
    v1, v2 = synthesize_patient(seed, opts, tmp / f"p{seed}")
    visits, links = [], []
    for vdir in (v1, v2):
        scan = load_scan(vdir / "scan.obj")
        corr, labels = label_scan(scan)
        det = detect_lesions(scan)
        locate_lesions(det, scan, corr, labels)
        truth = truth_lesion_set(vdir)
        di, ti = match(det.points, truth.points, truth.diameters)
        links.append({det.lesions[d].id: truth.lesions[t].id for d, t in zip(di, ti)})
        visits.append(Visit(scan, det, corr))
    result = track(*visits)
    X, y = [], []
    for p in result.pairs:
        t1, t2 = links[0].get(p.id1), links[1].get(p.id2)
        X.append(p.features)
        y.append(t1 is not None and t1 == t2)
    print(f"seed {seed} {poses}: {len(y)} pairs, {sum(y)} right", flush=True)
    return np.array(X, float).reshape(-1, len(FEATURES)), np.array(y, bool)


def collect_faust(series: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Features (p, F) and correctness (p,) of the pairs proposed on FAUST's 12 ordered pose
    pairs, for each placement series (pair k placed from seed S + k, as benchmarks/tracking.py)."""
    from bodymap.anatomy.register import register
    from bodymap.io import load_scan
    from bodymap.track import FEATURES, Visit, track
    from bodymap.trackeval import placed_lesions, shuffled

    folder = ROOT.parent / "shared" / "external" / "faust_fundcg"
    rng = np.random.default_rng(77)
    scans, perms, corrs = {}, {}, {}
    for x in range(4):
        scans[x], perms[x] = shuffled(load_scan(folder / f"tr_reg_{x:03d}.off"), rng)
        corrs[x] = register(scans[x])
    pairs = [(x, y) for x in range(4) for y in range(4) if x != y]
    X, y_ = [], []
    for s0 in series:
        for k, (x, y) in enumerate(pairs):
            L1, L2, truth = placed_lesions(scans[x], scans[y], perms[x], perms[y], 150, np.random.default_rng(s0 + k))
            for p in track(Visit(scans[x], L1, corrs[x]), Visit(scans[y], L2, corrs[y])).pairs:
                X.append(p.features)
                y_.append(truth.get(p.id2) == p.id1)
        print(f"FAUST series {s0}: {len(y_)} pairs so far, {sum(y_)} right", flush=True)
    return np.array(X, float).reshape(-1, len(FEATURES)), np.array(y_, bool)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> dict:
    """Standardised logistic regression (L2) by L-BFGS: mean, scale, weights, bias."""
    from scipy.optimize import minimize

    mean, scale = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / scale

    def loss(w):
        z = Z @ w[:-1] + w[-1]
        p = 1 / (1 + np.exp(-z))
        eps = 1e-9
        nll = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
        grad_z = (p - y) / len(y)
        g = np.concatenate([Z.T @ grad_z + 2 * l2 * w[:-1], [grad_z.sum()]])
        return nll + l2 * np.sum(w[:-1] ** 2), g

    w = minimize(loss, np.zeros(Z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return {"mean": mean.tolist(), "scale": scale.tolist(), "weights": w[:-1].tolist(), "bias": float(w[-1])}


def main() -> None:
    from bodymap.jsonfile import write_json
    from bodymap.track import CALIBRATION_FILE, FEATURES
    from bodymap.trackeval import CLINIC_POSE_PAIRS as POSE_PAIRS, calibration

    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[301, 302, 303, 304, 305, 306])
    p.add_argument("--faces", type=int, default=60_000)
    p.add_argument("--faust-seeds", type=int, nargs="*", default=[],
                   help="FAUST placement series (first seed of each; the benchmark reads 300)")
    p.add_argument("--out", default=str(CALIBRATION_FILE))
    p.add_argument("--cache", help="folder: each patient's collected pairs are stored and reused there")
    a = p.parse_args()
    import bodymap.track

    # the features do not depend on the shipped confidence model (the matching decides on its
    # own cost-and-margin confidence); a shipped file made for other features is not read here
    bodymap.track._calibration = lambda: None
    # each patient's pairs are kept in the cache folder as they are collected, so an interrupted
    # run resumes where it stopped and a rerun fits again without collecting
    cache = Path(a.cache) if a.cache else None
    Xs, ys = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed in enumerate(a.seeds):
            f = cache / f"seed{seed}_{a.faces}.npz" if cache else None
            if f is not None and f.exists():
                z = np.load(f)
                x, t = z["X"], z["y"]
            else:
                x, t = collect(seed, POSE_PAIRS[k % len(POSE_PAIRS)], a.faces, Path(tmp))
                if f is not None:
                    cache.mkdir(parents=True, exist_ok=True)
                    np.savez(f, X=x, y=t)
            Xs.append(x)
            ys.append(t)
    n_synth = int(sum(len(t) for t in ys))
    if a.faust_seeds:
        f = cache / f"faust_{'_'.join(map(str, a.faust_seeds))}.npz" if cache else None
        if f is not None and f.exists():
            z = np.load(f)
            x, t = z["X"], z["y"]
        else:
            x, t = collect_faust(a.faust_seeds)
            if f is not None:
                cache.mkdir(parents=True, exist_ok=True)
                np.savez(f, X=x, y=t)
        Xs.append(x)
        ys.append(t)
    X, y = np.concatenate(Xs), np.concatenate(ys)
    model = fit_logistic(X, y)
    z = ((X - np.array(model["mean"])) / np.array(model["scale"])) @ np.array(model["weights"]) + model["bias"]
    cal = calibration(1 / (1 + np.exp(-z)), y)
    record = {"schema": "bodymap.tracking-calibration/1", "features": list(FEATURES), **model,
              "trained_on": {"what": "synthetic development patients (bodymap synth), both visits in clinic poses, "
                                     "and FAUST placements (faust_placement_series) when given; synthetic: "
                                     "lesions detected by the classical detector; pairs labelled from the truth",
                             "seeds": a.seeds, "faces": a.faces,
                             "poses": [list(POSE_PAIRS[k % len(POSE_PAIRS)]) for k in range(len(a.seeds))],
                             "pairs": int(len(y)), "right": int(y.sum()), "synthetic_pairs": n_synth,
                             "faust_placement_series": a.faust_seeds,
                             "faust": "FAUST tr_reg_000-003 (MPI FAUST licence, non-commercial research): 12 ordered "
                                      "pairs per series, 150 placed lesions" if a.faust_seeds else None},
              "development_calibration": cal,
              "command": "python scripts/calibrate_tracking.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat()}
    write_json(a.out, record)
    print(json.dumps({k: record[k] for k in ("weights", "bias", "development_calibration")}, indent=1))


if __name__ == "__main__":
    main()
