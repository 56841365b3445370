"""Scores with uncertainty: bootstrap intervals, per-class precision/sensitivity, McNemar.

All functions take plain arrays (numpy or lists) and return JSON-ready floats, ints and lists.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def bootstrap_ci(stat: Callable[..., float], *arrays, n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(*arrays)``: the arrays (same length m, paired)
    are resampled together with replacement ``n`` times. Returns (low, high) at level 1-alpha;
    (nan, nan) for empty arrays. Resamples where stat is nan (e.g. no positives) are skipped."""
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("bootstrap_ci needs at least one array")
    m = len(arrs[0])
    if any(len(a) != m for a in arrs):
        raise ValueError(f"bootstrap_ci: arrays of different lengths {[len(a) for a in arrs]}")
    if m == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, m, m)
        v = stat(*[a[idx] for a in arrs])
        if v is not None and np.isfinite(v):
            vals.append(float(v))
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def per_class_scores(y_true, y_pred, classes: Sequence[str], n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Per-class precision and sensitivity (recall) with 95% bootstrap intervals (cases resampled
    n_boot times; for pixel tasks pass per-pixel arrays or, cheaper, subsample them first).

    y_true, y_pred: (m,) class indices into ``classes`` (or class names). Returns
    {"classes": {name: {"precision", "precision_ci": [lo, hi], "sensitivity", "sensitivity_ci",
    "support"}}, "mean_precision", "mean_sensitivity" (macro, over classes with support, each with
    "_ci"), "accuracy", "accuracy_ci", "n", "confusion": (k, k) list rows=true, cols=predicted}."""
    classes = list(classes)
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}

    def as_idx(y):
        y = list(y)
        if y and isinstance(y[0], str):
            return np.array([index[v] for v in y], dtype=int)
        return np.asarray(y, dtype=int).reshape(-1)

    t, p = as_idx(y_true), as_idx(y_pred)
    if len(t) != len(p):
        raise ValueError(f"per_class_scores: {len(t)} true labels but {len(p)} predictions")
    if len(t) and (t.min() < 0 or t.max() >= k or p.min() < 0 or p.max() >= k):
        raise ValueError(f"per_class_scores: labels outside 0..{k - 1}")
    conf = _confusion(t, p, k)
    # one confusion matrix per bootstrap resample: every interval comes from the same resamples
    rng = np.random.default_rng(seed)
    m = len(t)
    boots = np.stack([_confusion(t[idx], p[idx], k) for idx in (rng.integers(0, m, m) for _ in range(n_boot))]) \
        if m else np.zeros((0, k, k), int)
    present = conf.sum(1) > 0

    def scores(c):  # (..., k, k) -> precision (..., k), sensitivity (..., k), accuracy (...)
        tp = np.diagonal(c, axis1=-2, axis2=-1).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = tp / c.sum(-2)
            sens = tp / c.sum(-1)
            acc = tp.sum(-1) / c.sum((-2, -1))
        return prec, sens, acc

    def ci(v):
        v = v[np.isfinite(v)]
        if not len(v):
            return [float("nan"), float("nan")]
        return [float(x) for x in np.quantile(v, [alpha / 2, 1 - alpha / 2])]

    prec, sens, acc = scores(conf)
    bprec, bsens, bacc = scores(boots)
    out: dict = {"classes": {}, "n": int(m)}
    for i, c in enumerate(classes):
        out["classes"][c] = {"precision": float(prec[i]), "precision_ci": ci(bprec[:, i]),
                             "sensitivity": float(sens[i]), "sensitivity_ci": ci(bsens[:, i]),
                             "support": int(conf[i, :].sum())}
    # macro means over the classes present in y_true; an unpredicted class counts precision 0
    for kind, v, bv in (("precision", prec, bprec), ("sensitivity", sens, bsens)):
        out[f"mean_{kind}"] = float(np.nan_to_num(v[present]).mean()) if present.any() else float("nan")
        out[f"mean_{kind}_ci"] = ci(np.nan_to_num(bv[:, present]).mean(1)) if present.any() else [float("nan")] * 2
    out["accuracy"] = float(acc)
    out["accuracy_ci"] = ci(bacc)
    out["confusion"] = conf.tolist()
    out["class_names"] = classes
    return out


def _confusion(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int counts, rows = true class, columns = predicted class."""
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar test of two classifiers on the same cases. correct_a, correct_b: (m,) bool, whether
    each model got case i right. b = A right & B wrong, c = A wrong & B right. Exact two-sided
    binomial p when b + c < 25, else chi-square with continuity correction (1 d.o.f.).
    Returns {"b", "c", "statistic", "p", "method"}."""
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    bb = np.asarray(correct_b, dtype=bool).reshape(-1)
    if len(a) != len(bb):
        raise ValueError(f"mcnemar: {len(a)} cases for A but {len(bb)} for B")
    b = int((a & ~bb).sum())
    c = int((~a & bb).sum())
    nd = b + c
    if nd == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p": 1.0, "method": "exact"}
    if nd < 25:
        k = min(b, c)
        tail = sum(math.comb(nd, i) for i in range(k + 1)) / 2.0 ** nd
        return {"b": b, "c": c, "statistic": float(k), "p": float(min(1.0, 2 * tail)), "method": "exact"}
    stat = (abs(b - c) - 1) ** 2 / nd
    p = math.erfc(math.sqrt(stat / 2))  # chi-square(1) survival = erfc(sqrt(x/2))
    return {"b": b, "c": c, "statistic": float(stat), "p": float(p), "method": "chi-square (continuity)"}


def roc_auc(y, score) -> float:
    """Area under the ROC curve of ``score`` (m,) for binary truth ``y`` (m,) bool: the chance
    that a random positive scores above a random negative (ties count half). nan without both
    classes."""
    y = np.asarray(y, bool).reshape(-1)
    s = np.asarray(score, np.float64).reshape(-1)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = _average_ranks(s)  # ties count half
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of s (m,), tied values sharing their average rank (scipy's rankdata, without
    importing scipy.stats)."""
    order = np.argsort(s, kind="mergesort")
    sv = s[order]
    first = np.r_[True, sv[1:] != sv[:-1]]
    idx = np.cumsum(first) - 1  # tie-group of each sorted value
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    r = np.empty(len(s))
    r[order] = avg[idx]
    return r


def sensitivity_at_specificity(y, score, specificity: float = 0.8) -> tuple[float, float]:
    """Read off the ROC curve: the highest sensitivity among thresholds whose specificity is at
    least ``specificity``. y (m,) bool, score (m,). Returns (sensitivity, threshold): a case is
    positive when score >= threshold. (nan, nan) without both classes."""
    y = np.asarray(y, bool).reshape(-1)
    s = np.asarray(score, np.float64).reshape(-1)
    if y.all() or not y.any():
        return float("nan"), float("nan")
    neg = np.sort(s[~y])
    # the lowest threshold (among the scores) that keeps at least `specificity` of the negatives
    # below it: lower thresholds only add sensitivity
    cands = np.unique(np.concatenate([s, [np.inf]]))
    spec = np.searchsorted(neg, cands, side="left") / len(neg)
    t = float(cands[spec >= specificity - 1e-12].min())
    return float((s[y] >= t).mean()), t


def binary_scores(y, score, threshold: float | None = None, specificity: float = 0.8, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """One class against the rest: ROC AUC and the sensitivity at ``specificity`` read off the
    ROC curve, each with a 95% bootstrap interval (cases resampled); with ``threshold`` (chosen
    beforehand, e.g. on development data) also the sensitivity and specificity at it, with
    intervals. y (m,) bool, score (m,) float."""
    y = np.asarray(y, bool).reshape(-1)
    s = np.asarray(score, np.float64).reshape(-1)
    out = {"n": int(len(y)), "positives": int(y.sum()), "auc": roc_auc(y, s),
           "auc_ci": list(bootstrap_ci(roc_auc, y, s, n=n_boot, seed=seed))}
    sens, t = sensitivity_at_specificity(y, s, specificity)
    out.update({"at_specificity": specificity, "sensitivity_at_specificity": sens, "roc_threshold": t,
                "sensitivity_at_specificity_ci": list(bootstrap_ci(
                    lambda a, b: sensitivity_at_specificity(a, b, specificity)[0], y, s, n=n_boot, seed=seed))})
    if threshold is not None:
        def sens_at(a, b):
            return float((b[a] >= threshold).mean()) if a.any() else float("nan")

        def spec_at(a, b):
            return float((b[~a] < threshold).mean()) if (~a).any() else float("nan")

        out["threshold"] = float(threshold)
        out["sensitivity"] = sens_at(y, s)
        out["sensitivity_ci"] = list(bootstrap_ci(sens_at, y, s, n=n_boot, seed=seed))
        out["specificity"] = spec_at(y, s)
        out["specificity_ci"] = list(bootstrap_ci(spec_at, y, s, n=n_boot, seed=seed))
    return out
