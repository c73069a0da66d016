"""Pure functions of a spectrum. σ is always the singular values of the scaled ΔW,
descending, length r. Conventions are stated because they change the numbers a lot.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ENERGY_TOLERANCE",
    "effective_rank",
    "effective_rank_energy",
    "energy",
    "energy_rank",
    "stable_rank",
]

#: Cumulative energy is compared with t·E·(1 − ENERGY_TOLERANCE), so a rank whose
#: energy equals the threshold up to rounding counts as reaching it.
ENERGY_TOLERANCE = 1e-12


def energy(s: np.ndarray) -> float:
    """Frobenius energy E = Σσᵢ² (= ‖ΔW‖²_F).

    Summed as σ₁²·Σ(σᵢ/σ₁)², so an update with σ near 1e+150 or 1e-170 gets its energy
    (or ±inf / 0 when E itself is beyond a double) without overflow in the sum.
    """
    top = float(np.max(s)) if s.size else 0.0
    if top == 0 or not math.isfinite(top):
        return float(np.dot(s, s))
    u = s.astype(np.float64) / top
    with np.errstate(over="ignore", under="ignore"):
        return float(top * top * np.dot(u, u))


def stable_rank(s: np.ndarray) -> float:
    """E / σ₁², in [1, r]; 0 for an all-zero update (no absolute floor, so tiny updates
    keep their true stable rank)."""
    u = _unit(s)
    return float(np.dot(u, u))


def _unit(s: np.ndarray) -> np.ndarray:
    """σ/σ₁: ratios are what the rank metrics depend on, and σ² of a tiny but real update
    (σ ~ 1e-170) would otherwise underflow to an "untrained" zero."""
    top = float(np.max(s)) if s.size else 0.0
    return s.astype(np.float64) / top if top > 0 else np.zeros_like(s, dtype=np.float64)


def energy_rank(s: np.ndarray, t: float) -> int:
    """Smallest k with Σ_{i≤k} σᵢ² ≥ t·E; 0 for an all-zero update."""
    e = np.cumsum(_unit(s) ** 2)
    if e.size == 0 or e[-1] == 0:
        return 0
    return int(np.searchsorted(e, t * e[-1] * (1 - ENERGY_TOLERANCE), side="left")) + 1


def _entropy_exp(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(math.exp(-np.sum(p * np.log(p))))


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli effective rank with p = σ/Σσ (the σ convention 0.11 uses)."""
    total = float(np.sum(s))
    return 0.0 if total == 0 else _entropy_exp(s / total)


def effective_rank_energy(s: np.ndarray) -> float:
    """Effective rank with p = σ²/Σσ² (the energy convention); ≤ the σ convention."""
    u = _unit(s)
    e = energy(u)
    return 0.0 if e == 0 else _entropy_exp(u * u / e)
