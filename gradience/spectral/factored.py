"""Singular values (and vectors) of ΔW = s·B·A from the factors, never forming ΔW.

Two routes, both O((out+in)·r²):

* **Gram route** (audits): σ² are the eigenvalues of G_A^{1/2} G_B G_A^{1/2} with
  G_A = A·Aᵀ and G_B = Bᵀ·B formed in float64. It cannot resolve σ below ~1e-8·σ₁ (the
  Gram squares the condition number), which costs under 1e-16 of the energy — so stable and
  energy ranks are unaffected. Layers whose spectrum reaches below :data:`TAIL_RATIO` are
  recomputed by the QR route, so tail-sensitive metrics (σ-convention effective rank) stay
  accurate on rank-deficient updates too.
* **QR route** (compression, merging, ``precise=True``): B = Q_B R_B, Aᵀ = Q_A R_A, and
  the SVD of the r×r core s·R_B·R_Aᵀ gives σ to ~1e-15·σ₁ and the singular vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TAIL_RATIO",
    "FactoredSVD",
    "gram_pair",
    "singular_values_from_grams",
    "singular_values_qr",
    "svd_qr",
]

#: σ²/σ₁² below which the Gram route's σ is no longer trusted to 1e-6 relative accuracy
#: in tail-sensitive metrics; such layers are redone with the QR route.
TAIL_RATIO = 1e-10


def gram_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G_A = A·Aᵀ and G_B = Bᵀ·B in float64 (numpy dispatches these to SYRK)."""
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    return a64 @ a64.T, b64.T @ b64


def singular_values_from_grams(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Singular values of B·A, descending, for a stack of Gram pairs ``[n, r, r]``.

    Works on one pair (``[r, r]``) too. Unscaled: multiply by |s| for ΔW.
    """
    w, v = np.linalg.eigh(ga)
    root = (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)
    m = root @ gb @ root
    m = 0.5 * (m + np.swapaxes(m, -1, -2))
    s2 = np.linalg.eigvalsh(m)[..., ::-1]
    return np.sqrt(np.clip(s2, 0.0, None))


def singular_values_qr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Singular values of B·A by the QR route (float64), descending. Unscaled."""
    rb = np.linalg.qr(b.astype(np.float64), mode="r")
    ra = np.linalg.qr(a.T.astype(np.float64), mode="r")
    return np.linalg.svd(rb @ ra.T, compute_uv=False)


@dataclass(frozen=True, slots=True)
class FactoredSVD:
    """ΔW = U·diag(σ)·Vᵀ with U [out, r], σ [r] descending, Vt [r, in] (σ scaled)."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray


def svd_qr(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> FactoredSVD:
    """Thin SVD of ``scale·B·A`` by the QR route, in float64."""
    qb, rb = np.linalg.qr(b.astype(np.float64))
    qa, ra = np.linalg.qr(a.T.astype(np.float64))
    uc, s, vct = np.linalg.svd(scale * (rb @ ra.T))
    return FactoredSVD(qb @ uc, s, vct @ qa.T)
