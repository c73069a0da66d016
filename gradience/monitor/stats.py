"""Small statistics for the regime study, in numpy (no scipy or scikit-learn dependency).

Why hand-written: each is a few lines with a textbook definition, and the core must not pull
in scipy/scikit-learn for one report. Definitions are stated in each docstring and in
``docs/monitor.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "anova_f",
    "binomial_tail",
    "dfa_exponent",
    "discretise",
    "entropy_bits",
    "loo_ridge_predictions",
    "mcnemar_exact",
    "mutual_information_bits",
    "permutation_p",
]


def loo_ridge_predictions(x: np.ndarray, labels: Sequence[str], *, alpha: float = 1.0) -> list[str]:
    """Leave-one-out predictions of a ridge classifier (one-vs-rest least squares on one-hot
    targets, the predicted class is the largest score).

    Each held-out row is predicted by a model fitted on the other rows only, features
    standardised with the training rows' mean and standard deviation (a constant feature is
    left centred, not scaled). The intercept is not penalised.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    out: list[str] = []
    for i in range(len(y)):
        train = np.arange(len(y)) != i
        xt, yt = x[train], y[train]
        mu, sd = xt.mean(axis=0), xt.std(axis=0)
        sd[sd == 0] = 1.0
        z = (xt - mu) / sd
        onehot = (yt[:, None] == classes[None, :]).astype(np.float64)
        ym = onehot.mean(axis=0)
        w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (onehot - ym))
        score = ((x[i] - mu) / sd) @ w + ym
        out.append(str(classes[int(np.argmax(score))]))
    return out


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    return float(min(1.0, math.fsum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))))


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float | int]:
    """McNemar's test on paired classifications.

    ``b`` = runs A got right and B wrong, ``c`` = the reverse. The exact two-sided p-value is
    ``min(1, 2·P(X ≤ min(b, c)))`` for X ~ Binomial(b + c, ½) (1 when b + c = 0); the χ²
    statistic with continuity correction, ``(|b − c| − 1)² / (b + c)``, is reported beside it.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "chi2": 0.0, "p_value": 1.0}
    tail = math.fsum(math.comb(n, j) for j in range(min(b, c) + 1)) / 2**n
    return {"b": b, "c": c, "chi2": (abs(b - c) - 1) ** 2 / n, "p_value": float(min(1.0, 2 * tail))}


def entropy_bits(labels: Sequence[object]) -> float:
    """Shannon entropy (bits) of the empirical distribution of ``labels``."""
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def discretise(x: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bin index (0..bins−1) of each value; ties share a bin."""
    x = np.asarray(x, dtype=np.float64)
    edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, x, side="right")


def mutual_information_bits(a: Sequence[object], b: Sequence[object]) -> float:
    """Plug-in mutual information (bits) between two discrete sequences: H(a) + H(b) − H(a, b)."""
    a_s = [str(v) for v in a]
    b_s = [str(v) for v in b]
    joint = [f"{u}\x00{v}" for u, v in zip(a_s, b_s, strict=True)]
    return max(0.0, entropy_bits(a_s) + entropy_bits(b_s) - entropy_bits(joint))


def dfa_exponent(series: Sequence[float], *, min_scale: int = 4, n_scales: int = 8) -> float | None:
    """Detrended fluctuation analysis exponent α of a series (DFA-1).

    The profile y = cumsum(x − mean x) is cut into non-overlapping windows of s values for
    log-spaced s from ``min_scale`` to N/4; in each window the least-squares line is removed and
    F(s) is the RMS of what remains; α is the slope of log F(s) against log s. α ≈ 0.5 for
    white noise, ≈ 1 for 1/f noise, ≈ 1.5 for a random walk. None when the series has fewer than
    16 finite values, fewer than 3 distinct scales fit, or it is constant.
    """
    x = np.asarray([v for v in series if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 4 * min_scale:
        return None
    y = np.cumsum(x - x.mean())
    scales = np.unique(np.floor(np.logspace(math.log10(min_scale), math.log10(n // 4), n_scales)).astype(int))
    if len(scales) < 3:
        return None
    fluct = []
    for s in scales:
        m = n // s
        seg = y[: m * s].reshape(m, s).T  # s × m
        t = np.vstack([np.arange(s, dtype=np.float64), np.ones(s)]).T
        coef, *_ = np.linalg.lstsq(t, seg, rcond=None)
        fluct.append(math.sqrt(float(np.mean((seg - t @ coef) ** 2))))
    f = np.asarray(fluct)
    if not np.all(f > 0):
        return None
    return float(np.polyfit(np.log(scales), np.log(f), 1)[0])


def anova_f(groups: Sequence[Sequence[float]]) -> float | None:
    """One-way ANOVA F statistic (between-group over within-group mean square)."""
    gs = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    k, n = len(gs), sum(len(g) for g in gs)
    if k < 2 or n <= k:
        return None
    grand = np.concatenate(gs).mean()
    between = sum(len(g) * (g.mean() - grand) ** 2 for g in gs) / (k - 1)
    within = sum(float(np.sum((g - g.mean()) ** 2)) for g in gs) / (n - k)
    if within == 0:
        return math.inf if between > 0 else None
    return float(between / within)


def permutation_p(groups: Sequence[Sequence[float]], *, n_perm: int = 2000, seed: int = 0) -> float | None:
    """Permutation p-value of the ANOVA F: the share of label shuffles (fixed seed, so the
    report is reproducible) whose F is at least the observed one, with the +1 correction."""
    observed = anova_f(groups)
    if observed is None:
        return None
    values = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups if len(g)])
    sizes = np.cumsum([len(g) for g in groups if len(g)])[:-1]
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        f = anova_f(np.split(rng.permutation(values), sizes))
        hits += f is not None and f >= observed
    return (hits + 1) / (n_perm + 1)
