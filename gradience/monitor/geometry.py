"""Numbers the training instruments compute from spectra (numpy only, no torch).

Spectral complexity is the normalised spectral entropy ``H(p) / log(n)`` with ``p = σ²/Σσ²``
over the n singular values of one matrix, averaged over matrices: 0 when one direction holds
all the energy, 1 when all n share it equally. It is the ``spectral_complexity`` of the
``geometry`` telemetry record and a regime-study feature. The live LoRA audit summary reuses
the audit's own metric functions (``gradience.spectral.metrics``), so a live audit and
``gradience audit`` on the saved adapter agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gradience.spectral import metrics as M

__all__ = ["lora_audit_summary", "normalised_spectral_entropy", "spectral_complexity"]


def normalised_spectral_entropy(s: np.ndarray) -> float | None:
    """``H(σ²/Σσ²) / log(n)`` in [0, 1]; None for an all-zero or non-finite spectrum, 0 for n = 1."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or not np.isfinite(s).all():
        return None
    erank = M.effective_rank_energy(s)  # exp(H) with p = σ²/Σσ²
    if erank == 0:
        return None
    if s.size == 1:
        return 0.0
    return float(min(1.0, max(0.0, math.log(erank) / math.log(s.size))))


def spectral_complexity(spectra: Iterable[np.ndarray]) -> float | None:
    """The mean normalised spectral entropy over matrices (all-zero ones are left out)."""
    values = [v for v in (normalised_spectral_entropy(s) for s in spectra) if v is not None]
    return float(np.mean(values)) if values else None


def lora_audit_summary(layers: Mapping[str, tuple[np.ndarray, int]]) -> dict[str, Any]:
    """Summary of live LoRA spectra: ``{name: (σ of the scaled ΔW, r)}`` → a ``lora_audit`` record.

    Utilisation is stable rank / r, as in ``gradience audit``. Untrained layers (ΔW = 0, as
    every LoRA layer is at initialisation because B starts at zero) are counted in
    ``n_untrained`` but left out of the means: an adapter that has not moved yet is not
    "under-utilised", and counting it would make UTILIZATION_LOW fire at step 0.
    """
    trained = {n: (s, r) for n, (s, r) in layers.items() if np.isfinite(s).all() and np.any(s > 0)}
    util = [M.stable_rank(s) / r for s, r in trained.values()]
    sr = [M.stable_rank(s) for s, _ in trained.values()]
    er90 = [M.energy_rank(s, 0.9) for s, _ in trained.values()]
    return {
        "n_layers": len(layers),
        "n_untrained": len(layers) - len(trained),
        "utilization_mean": _mean(util),
        "utilization_median": float(np.median(util)) if util else None,
        "stable_rank_mean": _mean(sr),
        "effective_rank_mean": _mean([M.effective_rank(s) for s, _ in trained.values()]),
        "energy_rank_90_p50": float(np.percentile(er90, 50)) if er90 else None,
        "energy_rank_90_p90": float(np.percentile(er90, 90)) if er90 else None,
        "spectral_complexity": spectral_complexity(s for s, _ in trained.values()),
    }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None
