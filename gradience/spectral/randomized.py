"""Randomized truncated SVD (Halko, Martinsson & Tropp 2011) for dense merged updates.

TIES and DARE results are generally full rank; a full dense SVD of a 4096×11008 layer costs
minutes, while a rank-k sketch with oversampling and a couple of power iterations costs a
few matrix products and captures the top of the spectrum to high accuracy.
"""

from __future__ import annotations

import numpy as np

from gradience.spectral.factored import FactoredSVD

__all__ = ["randomized_svd"]


def randomized_svd(
    m: np.ndarray,
    rank: int,
    *,
    oversample: int = 10,
    power_iterations: int = 2,
    rng: np.random.Generator | None = None,
) -> FactoredSVD:
    """Approximate top-``rank`` SVD of a dense matrix ``m`` [out, in].

    The products with ``m`` run in its own dtype (float32 halves the time and memory of
    float64; the sketch is drawn in float64, so a seed gives the same directions either way);
    the small ``[k, in]`` projection is decomposed in float64 and U, s, Vt come back float64.
    """
    rng = rng or np.random.default_rng(0)
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    out, inp = m.shape
    k = min(rank + oversample, out, inp)
    y = m @ rng.standard_normal((inp, k)).astype(m.dtype)
    q, _ = np.linalg.qr(y)
    for _ in range(power_iterations):
        z, _ = np.linalg.qr(m.T @ q)
        q, _ = np.linalg.qr(m @ z)
    small = q.T @ m  # [k, in]
    u_small, s, vt = np.linalg.svd(small.astype(np.float64), full_matrices=False)
    u = q.astype(np.float64) @ u_small
    r = min(rank, s.size)
    return FactoredSVD(u[:, :r], s[:r], vt[:r])
