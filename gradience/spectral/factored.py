"""Singular values (and vectors) of ΔW = s·B·A from the factors, never forming ΔW.

Two routes, both O((out+in)·r²):

* **Gram route** (audits): G_A = A·Aᵀ and G_B = Bᵀ·B are formed in float64 while the
  tensors stream past, and σ come from the r×r core W_B·W_Aᵀ, where W is a Cholesky root of
  the Gram after equilibration (unit diagonal; an all-zero row of A or column of B is an
  exactly dead rank component and is deflated). σ² from the eigenvalues of the core's Gram
  are correct to ~1e-16·σ₁², which is all stable and energy ranks need. A layer whose
  spectrum reaches below :data:`TAIL_RATIO` takes the SVD of the core instead: when both
  equilibrated Grams are well conditioned their roots are accurate *relative to each σ*
  (column scaling, zero-padding, pruned components and steep spectra are exact), so the
  tail costs one r×r SVD; only a factor that is itself numerically rank-deficient after
  equilibration (r above its width, exactly dependent rows or columns) is re-read for a QR
  root. Tensors whose entries are so small or large that their Gram would underflow or
  overflow are rescaled by a power of two first (exact), and σ scaled back.
* **QR route** (compression, merging, ``precise=True``): B = Q_B R_B, Aᵀ = Q_A R_A, and
  the SVD of the r×r core s·R_B·R_Aᵀ gives σ to ~1e-15·σ₁ and the singular vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_EQUILIBRATED_EIG",
    "TAIL_RATIO",
    "FactoredSVD",
    "Gram",
    "GramRoots",
    "core_singular_values",
    "core_singular_values_fast",
    "gram_pair",
    "gram_roots",
    "gram_stored",
    "qr_root",
    "singular_values_from_grams",
    "singular_values_qr",
    "svd_qr",
]

#: σ²/σ₁² below which eigenvalues of the core's Gram no longer give σ to 1e-6 relative
#: accuracy in tail-sensitive metrics (σ-convention effective rank); such layers take the
#: SVD of the core, with roots that are accurate relative to each σ.
TAIL_RATIO = 1e-10

#: Smallest eigenvalue of an equilibrated Gram (unit diagonal) whose Cholesky root is
#: trusted in the tail: rounding in the Gram (~n·1e-16 relative to the diagonal) moves the
#: root by a factor (I + F) with ‖F‖ ≲ n·1e-16 / λ_min, i.e. every σ by under ~1e-7
#: relative. Below it the factor's root comes from a QR of its data.
MIN_EQUILIBRATED_EIG = 1e-5

#: Gram diagonals outside [2^-800, 2^800] mean the tensor's entries are near 1e-120 or
#: 1e+120: products of entries then underflow (a real update reads as zero) or overflow,
#: so the Gram is formed again from the tensor scaled by a power of two.
_SAFE_LOW, _SAFE_HIGH = 2.0**-800, 2.0**800

#: Gram diagonals inside [2^-200, 2^200] are left as they are: the core and its Gram stay
#: within 2^±400, far from underflow and overflow.
_NORMAL_LOW, _NORMAL_HIGH = 2.0**-200, 2.0**200

#: A rank component whose Gram diagonal is below 2^-900 of the largest is dead: its share
#: of any σ is under 2^-450, and equilibrating it would only amplify rounding.
_DEAD = 2.0**-900


@dataclass(frozen=True, slots=True)
class Gram:
    """Float64 Gram of the tensor 2^-exp·X (X·Xᵀ for A [r, n], Xᵀ·X for B [n, r]).

    ``exp`` brings the Gram's diagonal near 1; ``n`` is the length summed over (A's input
    width, B's output width), which bounds the factor's rank.
    """

    g: np.ndarray
    exp: int = 0
    n: int = 0


def _pow2_exponent(x: np.ndarray) -> int:
    """e with max|x| in [2^(e-1), 2^e): dividing by 2^e is exact and brings x to ~1."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return int(np.frexp(top)[1]) if np.isfinite(top) and top > 0 else 0


def _needs_rescale(g: np.ndarray) -> bool:
    top = float(np.max(np.diagonal(g))) if g.size else 0.0
    return not (_SAFE_LOW < top < _SAFE_HIGH)  # also true for 0, inf and NaN


def gram_pair(a: np.ndarray, b: np.ndarray) -> tuple[Gram, Gram]:
    """G_A = A·Aᵀ and G_B = Bᵀ·B in float64 (numpy dispatches these to SYRK)."""
    return _gram_dense(a, rows=True), _gram_dense(b, rows=False)


def _gram_dense(x: np.ndarray, *, rows: bool) -> Gram:
    x64 = x.astype(np.float64, copy=False)
    n = x64.shape[1] if rows else x64.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):  # detected and redone below
        g = x64 @ x64.T if rows else x64.T @ x64
    if _needs_rescale(g) and (e := _pow2_exponent(x64)):
        x64 = np.ldexp(x64, -e)
        return _normalised(x64 @ x64.T if rows else x64.T @ x64, e, n)
    return _normalised(g, 0, n)


def _normalised(g: np.ndarray, exp: int, n: int) -> Gram:
    """The Gram scaled by a power of four to a diagonal near 1 (exact), so that the r×r
    work after it (a core product and its Gram, which square the scale again) cannot
    underflow or overflow either."""
    top = float(np.max(np.diagonal(g))) if g.size else 0.0
    if not (top > 0 and np.isfinite(top)) or _NORMAL_LOW < top < _NORMAL_HIGH:
        return Gram(g, exp, n)
    k = int(np.frexp(np.sqrt(top))[1])
    return Gram(np.ldexp(g, -2 * k), exp + k, n)


#: Elements per piece when decoding and accumulating a Gram: small enough that the decoded
#: float64 piece stays in cache, large enough that each BLAS call is efficient.
PIECE_ELEMENTS = 32 * 1024


def _as_float64(piece: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        piece = (piece.astype(np.uint32) << 16).view(np.float32)
    return piece.astype(np.float64)


def gram_stored(x: np.ndarray, dtype: str, *, rows: bool) -> Gram:
    """Float64 Gram of a stored 2-D tensor, decoded piece by piece.

    ``rows=True`` gives X·Xᵀ for A [r, in] (pieces are column blocks); ``rows=False`` gives
    Xᵀ·X for B [out, r] (pieces are row blocks). Decoding a whole tensor to float64 first
    costs two extra passes over memory; doing it in cache-sized pieces makes the audit as
    fast as reading the file allows. A tensor whose Gram would underflow or overflow is
    summed a second time, scaled by a power of two (normal tensors never are).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # detected and redone below
        g = _gram_pieces(x, dtype, rows, 0)
    n = x.shape[1] if rows else x.shape[0]
    if _needs_rescale(g) and (e := _pow2_exponent(_as_float64(x, dtype))):
        return _normalised(_gram_pieces(x, dtype, rows, e), e, n)
    return _normalised(g, 0, n)


def _gram_pieces(x: np.ndarray, dtype: str, rows: bool, exp: int) -> np.ndarray:
    r = x.shape[0] if rows else x.shape[1]
    n = x.shape[1] if rows else x.shape[0]
    step = max(1, PIECE_ELEMENTS // max(r, 1))

    def decode(p: np.ndarray) -> np.ndarray:
        p64 = _as_float64(p, dtype)
        return np.ldexp(p64, -exp) if exp else p64

    if n <= step:
        x64 = decode(x)
        return x64 @ x64.T if rows else x64.T @ x64
    g = np.zeros((r, r))
    for i in range(0, n, step):
        if rows:
            p = decode(x[:, i : i + step])
            g += p @ p.T
        else:
            p = decode(x[i : i + step])
            g += p.T @ p
    return g


@dataclass(frozen=True, slots=True)
class GramRoots:
    """Roots W (Wᵀ·W = G) of a stack of Grams ``[n, r, r]``, from equilibrated Cholesky.

    Attributes:
        w: the roots; W = Lᵀ·D with G = D·L·Lᵀ·D, D the square roots of G's diagonal (0 for
            a dead component, whose row and column of W are then zero).
        chol: L, the Cholesky factor of the equilibrated Gram.
        ok: False where the Cholesky failed (the factor is numerically rank-deficient) or
            the factor is narrower than r: W is then a placeholder and the root must come
            from the data (:func:`qr_root`).
    """

    w: np.ndarray
    chol: np.ndarray
    ok: np.ndarray

    def accurate(self, idx: np.ndarray) -> np.ndarray:
        """Whether roots ``idx`` are accurate relative to each σ (see
        :data:`MIN_EQUILIBRATED_EIG`), as a boolean array.

        ‖L⁻¹‖²_F bounds 1/λ_min of the equilibrated Gram from above, so this never accepts an
        ill-conditioned root.
        """
        idx = np.asarray(idx, dtype=int)
        good = self.ok[idx].copy()
        if good.any():
            inv = np.linalg.inv(self.chol[idx[good]])
            good[good] = np.einsum("nij,nij->n", inv, inv) * MIN_EQUILIBRATED_EIG <= 1.0
        return good


def gram_roots(grams: np.ndarray, widths: np.ndarray | None = None) -> GramRoots:
    """Equilibrated Cholesky roots of a stack of Grams ``[n, r, r]`` (one ``[r, r]`` is a
    stack of one).

    Equilibrating first makes the root exact under column scaling (steep spectra that come
    from scaled columns, as in B = U·diag(√σ)), and deflating dead components keeps zero-padded
    or pruned ranks from making the Gram singular. ``widths`` (the factors' other dimension)
    marks a factor narrower than r as needing a QR root: its Gram is singular.
    """
    g = np.asarray(grams, dtype=np.float64)
    if g.ndim == 2:
        g = g[None]
    r = g.shape[-1]
    diag = np.diagonal(g, axis1=-2, axis2=-1)
    top = diag.max(axis=-1, keepdims=True) if r else np.zeros((g.shape[0], 1))
    live = diag > top * _DEAD
    d = np.where(live, np.sqrt(np.where(live, diag, 1.0)), 0.0)
    inv_d = np.where(live, 1.0 / np.where(live, d, 1.0), 0.0)
    h = g * inv_d[:, :, None] * inv_d[:, None, :]
    both = live[:, :, None] & live[:, None, :]
    eye = np.eye(r)
    h = np.where(both, h, eye)
    ok = np.ones(g.shape[0], dtype=bool)
    try:
        chol = np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        chol = np.empty_like(h)
        for i in range(h.shape[0]):
            try:
                chol[i] = np.linalg.cholesky(h[i])
            except np.linalg.LinAlgError:
                chol[i] = eye
                ok[i] = False
    if widths is not None:
        ok &= np.asarray(widths).reshape(-1) >= r
    return GramRoots(np.swapaxes(chol, -1, -2) * d[:, None, :], chol, ok)


def qr_root(x: np.ndarray, *, rows: bool, exp: int = 0) -> np.ndarray:
    """Root R of a factor from its data (Householder QR, float64): Rᵀ·R = X·Xᵀ for A
    (``rows=True``) or Xᵀ·X for B, of 2^-exp·X; ``[min(n, r), r]``."""
    x64 = x.astype(np.float64)
    if exp:
        x64 = np.ldexp(x64, -exp)
    return np.linalg.qr(x64.T if rows else x64, mode="r")


def core_singular_values(wb: np.ndarray, wa: np.ndarray, r: int) -> np.ndarray:
    """σ of B·A from roots of its factors (σ of W_B·W_Aᵀ, by SVD), padded with zeros to r.

    Rows of a root that are exactly zero (deflated components) are left out of the SVD:
    they change no σ, and a zero-padded r=64 adapter of rank 16 then costs a 16×16 SVD.
    """
    wb, wa = wb[np.any(wb, axis=1)], wa[np.any(wa, axis=1)]
    s = np.linalg.svd(wb @ wa.T, compute_uv=False) if wb.size and wa.size else np.zeros(0)
    return np.pad(s, (0, r - s.size)) if s.size < r else s[:r]


def singular_values_from_grams(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Singular values of B·A, descending, from a stack of Gram pairs ``[n, r, r]``.

    The fast part of the Gram route only: σ² are the eigenvalues of the core's Gram
    (W_B·W_Aᵀ)ᵀ·(W_B·W_Aᵀ). Where a Gram is singular after deflation its symmetric square
    root stands in for W. Works on one pair (``[r, r]``) too. Unscaled: multiply by |s|.
    """
    single = np.ndim(ga) == 2
    ga, gb = np.asarray(ga).reshape(-1, *np.shape(ga)[-2:]), np.asarray(gb).reshape(-1, *np.shape(gb)[-2:])
    s = core_singular_values_fast(_with_fallback(gb, gram_roots(gb)), _with_fallback(ga, gram_roots(ga)))
    return s[0] if single else s


def core_singular_values_fast(wb: np.ndarray, wa: np.ndarray) -> np.ndarray:
    """σ of a stack of cores W_B·W_Aᵀ ``[n, r, r]`` from the eigenvalues of their Grams,
    descending: about as fast as one r×r eigendecomposition, exact to ~1e-16·σ₁² in σ²."""
    core = wb @ np.swapaxes(wa, -1, -2)
    m = np.swapaxes(core, -1, -2) @ core
    m = 0.5 * (m + np.swapaxes(m, -1, -2))
    s2 = np.linalg.eigvalsh(m)[..., ::-1]
    return np.sqrt(np.clip(s2, 0.0, None))


def _with_fallback(g: np.ndarray, roots: GramRoots) -> np.ndarray:
    """The Cholesky roots, with a symmetric square root where the Cholesky failed."""
    if roots.ok.all():
        return roots.w
    w = np.array(roots.w, copy=True)
    for i in np.flatnonzero(~roots.ok):
        lam, v = np.linalg.eigh(g[i])
        w[i] = (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T
    return w


def singular_values_qr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Singular values of B·A by the QR route (float64), descending. Unscaled.

    The factors are first scaled by powers of two to a maximum near 1 (exact), so entries
    near 1e-170 or 1e+150 neither underflow nor overflow in the r×r core.
    """
    ea, eb = _pow2_exponent(a), _pow2_exponent(b)
    rb = qr_root(b, rows=False, exp=eb)
    ra = qr_root(a, rows=True, exp=ea)
    return np.ldexp(np.linalg.svd(rb @ ra.T, compute_uv=False), ea + eb)


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
