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
