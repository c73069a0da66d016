"""Singular values (and vectors) of ΔW = s·B·A from the factors, never forming ΔW.

Two routes, both O((out+in)·r²):

* **Gram route** (audits): σ² are the eigenvalues of Lᵀ G_B L (G_A = L·Lᵀ) with
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
    "gram_stored",
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


#: Elements per piece when decoding and accumulating a Gram: small enough that the decoded
#: float64 piece stays in cache, large enough that each BLAS call is efficient.
PIECE_ELEMENTS = 32 * 1024


def _as_float64(piece: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        piece = (piece.astype(np.uint32) << 16).view(np.float32)
    return piece.astype(np.float64)


def gram_stored(x: np.ndarray, dtype: str, *, rows: bool) -> np.ndarray:
    """Float64 Gram of a stored 2-D tensor, decoded piece by piece.

    ``rows=True`` gives X·Xᵀ for A [r, in] (pieces are column blocks); ``rows=False`` gives
    Xᵀ·X for B [out, r] (pieces are row blocks). Decoding a whole tensor to float64 first
    costs two extra passes over memory; doing it in cache-sized pieces makes the audit as
    fast as reading the file allows.
    """
    r = x.shape[0] if rows else x.shape[1]
    n = x.shape[1] if rows else x.shape[0]
    step = max(1, PIECE_ELEMENTS // max(r, 1))
    if n <= step:
        x64 = _as_float64(x, dtype)
        return x64 @ x64.T if rows else x64.T @ x64
    g = np.zeros((r, r))
    for i in range(0, n, step):
        if rows:
            p = _as_float64(x[:, i : i + step], dtype)
            g += p @ p.T
        else:
            p = _as_float64(x[i : i + step], dtype)
            g += p.T @ p
    return g


def singular_values_from_grams(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Singular values of B·A, descending, for a stack of Gram pairs ``[n, r, r]``.

    σ² are the eigenvalues of Lᵀ·G_B·L with G_A = L·Lᵀ (Cholesky); when some G_A in the
    stack is singular, the symmetric square root G_A^{1/2} takes L's place. Works on one
    pair (``[r, r]``) too. Unscaled: multiply by |s| for ΔW.
    """
    try:
        root = np.linalg.cholesky(ga)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(ga)
        root = (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)
    m = np.swapaxes(root, -1, -2) @ gb @ root
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
    """Thin SVD of ``scale·B·A`` by the QR route, in float64.

    The result has p = min(out, in, r) components: a rank above a layer's width (r=64 on
    a 64-wide layer, a classifier head under ``all-linear``) cannot add directions, and
    the reduced QRs and SVD here never assume r ≤ out, in.
    """
    qb, rb = np.linalg.qr(b.astype(np.float64))  # [out, min(out, r)], [min(out, r), r]
    qa, ra = np.linalg.qr(a.T.astype(np.float64))  # [in, min(in, r)], [min(in, r), r]
    uc, s, vct = np.linalg.svd(scale * (rb @ ra.T), full_matrices=False)
    return FactoredSVD(qb @ uc, s, vct @ qa.T)
