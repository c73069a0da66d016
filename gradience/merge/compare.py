"""Pairwise spectral comparison of two adapters, layer by layer, in factor space.

Each layer's update is decomposed once by the QR route (ΔW = U·diag(σ)·Vᵀ, thin, rank r)
and truncated to its energy rank k. Everything below is computed from those factors with
O((out + in)·r²) work — ΔW is never formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradience.adapters.layout import LoraLayer
from gradience.adapters.load import Adapter
from gradience.merge.verdicts import Thresholds, classify
from gradience.spectral.factored import FactoredSVD, svd_qr
from gradience.spectral.metrics import energy_rank

__all__ = ["LayerComparison", "LayerSpectrum", "compare_layers", "layer_spectrum"]

#: Relative size (to σ₁ of B) below which B's push along A's directions counts as zero.
NEGLIGIBLE = 1e-6


@dataclass(frozen=True)
class LayerSpectrum:
    """One adapter's layer, decomposed: σ scaled, k its energy rank (0 if untrained).

    Two representations of the singular vectors. The fast one (CholeskyQR) keeps the
    factors and r×r maps with U = B·p_left and V = Aᵀ·p_right, so subspace comparisons need
    only r×r cross-Grams between the adapters; the QR route (``svd`` with explicit U and Vᵀ)
    is used when a factor is too ill-conditioned for Cholesky (or is zero).
    """

    layer: LoraLayer
    svd: FactoredSVD | None  # None when the factors hold NaN/Inf; u/vt None on the fast route
    k: int
    a: np.ndarray | None = None  # float64 [r, in], fast route only
    b: np.ndarray | None = None  # float64 [out, r]
    p_left: np.ndarray | None = None  # [r, r]
    p_right: np.ndarray | None = None

    @property
    def valid(self) -> bool:
        return self.svd is not None

    @property
    def fast(self) -> bool:
        return self.p_left is not None

    @property
    def sigma_max(self) -> float:
        return float(self.svd.s[0]) if self.svd is not None and self.svd.s.size else 0.0

    @property
    def energy(self) -> float:
        """‖ΔW‖²_F, summed in units of σ₁² (Inf only when the result itself exceeds float64)."""
        if self.svd is None or not self.svd.s.size or self.svd.s[0] == 0:
            return 0.0
        s0 = float(self.svd.s[0])
        with np.errstate(over="ignore"):
            return float(s0 * s0 * _unit_energy(self))

    def explicit(self) -> FactoredSVD:
        """U, σ, Vᵀ with explicit singular vectors (formed on demand for the fast route)."""
        if not self.fast:
            return self.svd
        return FactoredSVD(self.b @ self.p_left, self.svd.s, (self.a.T @ self.p_right).T)


def _unit_energy(x: LayerSpectrum) -> float:
    """Σ (σᵢ/σ₁)²: the energy in units of σ₁², never over- or underflowing."""
    s = x.svd.s / x.svd.s[0]
    return float(np.dot(s, s))


#: (max/min Cholesky diagonal)² above which CholeskyQR's cond² error is not trusted.
MAX_GRAM_CONDITION = 1e8


def layer_spectrum(adapter: Adapter, layer: LoraLayer, energy: float) -> LayerSpectrum:
    f = adapter.factors(layer)
    a, b = f.effective_a(), f.b
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return LayerSpectrum(layer, None, 0)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    fast = _cholesky_svd(a64, b64, layer.scale)
    if fast is not None:
        sv, p_left, p_right = fast
        return LayerSpectrum(layer, sv, energy_rank(sv.s, energy), a64, b64, p_left, p_right)
    svd = svd_qr(a, b, layer.scale)
    return LayerSpectrum(layer, svd, energy_rank(svd.s, energy))


def _cholesky_svd(a: np.ndarray, b: np.ndarray, scale: float):
    """SVD of scale·B·A through Cholesky factors of the Grams: B = Q_B·R_B with
    R_B = chol(BᵀB)ᵀ, and likewise Aᵀ = Q_A·R_A. Returns σ and the r×r maps that turn B and
    Aᵀ into U and V, or None when a Gram is singular or too ill-conditioned."""
    try:
        lb = np.linalg.cholesky(b.T @ b)
        la = np.linalg.cholesky(a @ a.T)
    except np.linalg.LinAlgError:
        return None
    for low in (lb, la):
        d = np.abs(np.diag(low))
        if d.min() <= 0 or (d.max() / d.min()) ** 2 > MAX_GRAM_CONDITION:
            return None
    rb, ra = lb.T, la.T  # upper: BᵀB = RbᵀRb
    uc, s, vct = np.linalg.svd(scale * (rb @ ra.T))
    p_left = np.linalg.solve(rb, uc)  # U = Q_B·Uc = B·Rb⁻¹·Uc
    p_right = np.linalg.solve(ra, vct.T)  # V = Q_A·Vc = Aᵀ·Ra⁻¹·Vc
    return FactoredSVD(None, s, None), p_left, p_right


@dataclass(frozen=True)
class LayerComparison:
    """Evidence and verdict for one shared layer.

    Attributes:
        overlap: raw mean cosine of the principal angles between the top-k left singular
            subspaces (0.11's "overlap"; the verdicts use it).
        overlap_corrected / overlap_right(_corrected): chance-corrected, and the input side.
        agreement: cosine between σ_a and diag(U_aᵀ·ΔW_b·V_a) over A's top k directions.
        sigma_ratio / frob_ratio: larger / smaller; None when a side is zero.
        stronger: ``"a"`` or ``"b"`` (larger σ₁), None when equal or a side is zero.
        n_conflict / n_principal: A's top directions along which B pushes the opposite way.
        flags: ``a_zero``, ``b_zero``, ``a_invalid``, ``b_invalid``.
    """

    name: str
    r_a: int
    r_b: int
    k_a: int
    k_b: int
    scale_a: float
    scale_b: float
    energy_a: float
    energy_b: float
    sigma_a: float
    sigma_b: float
    overlap: float | None
    overlap_corrected: float | None
    overlap_right: float | None
    overlap_right_corrected: float | None
    agreement: float | None
    sigma_ratio: float | None
    frob_ratio: float | None
    stronger: str | None
    n_conflict: int
    n_principal: int
    verdict: str
    flags: tuple[str, ...] = ()
    evidence: list[str] = field(default_factory=list)

    @property
    def layer_name(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["flags"] = list(self.flags)
        d["layer"] = d.pop("name")
        return d


def _mean_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Mean cosine of the principal angles between span(x) and span(y) (orthonormal columns)."""
    return _mean_cos_of(x.T @ y, x.shape[1], y.shape[1])


def _mean_cos_of(cross: np.ndarray, ka: int, kb: int) -> float:
    """The same, from the k_a×k_b matrix of inner products of the two orthonormal bases."""
    c = np.linalg.svd(cross, compute_uv=False)
    return float(np.mean(np.clip(c[: min(ka, kb)], 0.0, 1.0)))


def _corrected(raw: float, k: int, n: int) -> float:
    c = math.sqrt(min(1.0, k / n)) if n else 1.0
    return 0.0 if c >= 1.0 else max(0.0, (raw - c) / (1.0 - c))


def compare_layers(a: LayerSpectrum, b: LayerSpectrum, t: Thresholds) -> LayerComparison:
    """Compare one layer of adapter A with the same layer of adapter B."""
    base = dict(
        name=a.layer.name, r_a=a.layer.r, r_b=b.layer.r, k_a=a.k, k_b=b.k,
        scale_a=a.layer.scale, scale_b=b.layer.scale,
    )  # fmt: skip
    if not (a.valid and b.valid):
        flags = tuple(f"{s}_invalid" for s, x in (("a", a), ("b", b)) if not x.valid)
        return LayerComparison(
            **base, energy_a=a.energy, energy_b=b.energy, sigma_a=a.sigma_max, sigma_b=b.sigma_max,
            overlap=None, overlap_corrected=None, overlap_right=None, overlap_right_corrected=None,
            agreement=None, sigma_ratio=None, frob_ratio=None, stronger=None, n_conflict=0,
            n_principal=a.k, verdict="INVALID", flags=flags,
            evidence=["NaN or Inf in the factors: this layer cannot be compared or merged safely"],
        )  # fmt: skip
    sa, sb = a.sigma_max, b.sigma_max
    ea, eb = a.energy, b.energy
    if sa == 0 or sb == 0:
        flags = tuple(f"{s}_zero" for s, x in (("a", sa), ("b", sb)) if x == 0)
        side = "both adapters carry" if len(flags) == 2 else f"adapter {flags[0][0].upper()} carries"
        return LayerComparison(
            **base, energy_a=ea, energy_b=eb, sigma_a=sa, sigma_b=sb,
            overlap=None, overlap_corrected=None, overlap_right=None, overlap_right_corrected=None,
            agreement=None, sigma_ratio=None, frob_ratio=None, stronger=None, n_conflict=0,
            n_principal=a.k, verdict="SAFE", flags=flags,
            evidence=[f"{side} no update in this layer (untrained): nothing to interfere with, "
                      "but a weighted merge scales the other side's update down"],
        )  # fmt: skip
    kmax = max(a.k, b.k)
    if a.fast and b.fast:
        # everything from r×r cross-Grams: U_aᵀU_b = P_aᵀ(B_aᵀB_b)P_b, V_aᵀV_b = P'_aᵀ(A_aA_bᵀ)P'_b
        xb, xa = a.b.T @ b.b, a.a @ b.a.T
        pa, pb = a.p_left[:, : a.k], b.p_left[:, : b.k]
        qa, qb = a.p_right[:, : a.k], b.p_right[:, : b.k]
        overlap = _mean_cos_of(pa.T @ xb @ pb, a.k, b.k)
        overlap_right = _mean_cos_of(qa.T @ xa @ qb, a.k, b.k)
        # d_i = u_iᵀ ΔW_b v_i = s_b · (P_aᵀ B_aᵀ B_b)(A_b A_aᵀ P'_a), diagonal
        d = b.layer.scale * np.einsum("ij,ji->i", pa.T @ xb, xa.T @ qa)
    else:
        ea_, eb_ = a.explicit(), b.explicit()
        ua, ub = ea_.u[:, : a.k], eb_.u[:, : b.k]
        va, vb = ea_.vt[: a.k].T, eb_.vt[: b.k].T
        overlap = _mean_cosine(ua, ub)
        overlap_right = _mean_cosine(va, vb)
        left = ua.T @ eb_.u  # [k_a, r_b]
        right = eb_.vt @ va  # [r_b, k_a]
        d = np.einsum("ij,j,ji->i", left, eb_.s, right)
    s_top = a.svd.s[: a.k]
    # Norms, cosines and ratios in units of each side's σ₁: updates near 1e±160 square to
    # Inf or 0 in float64, while every quantity here is a ratio that stays representable.
    d_unit = d / sb
    nd = float(np.linalg.norm(d_unit))
    # B's projection onto A's directions below float32 round-off of B's own scale is zero,
    # not a direction: its cosine would be noise of either sign.
    negligible = nd <= NEGLIGIBLE * math.sqrt(a.k)
    s_unit = s_top / sa
    agreement = 0.0 if negligible else float(np.dot(d_unit, s_unit) / (nd * float(np.linalg.norm(s_unit))))
    n_conflict = int(np.count_nonzero(d < -0.5 * np.minimum(s_top, sb)))
    sigma_ratio = max(sa, sb) / min(sa, sb)
    fa, fb = math.sqrt(_unit_energy(a)), math.sqrt(_unit_energy(b))  # ‖ΔW‖_F / σ₁
    q = (sa / sb) * (fa / fb)  # ‖ΔW_a‖_F / ‖ΔW_b‖_F
    frob_ratio = q if q >= 1 else 1 / q
    stronger = None if sa == sb else ("a" if sa > sb else "b")
    verdict = classify(overlap, agreement, sigma_ratio, t)
    evidence = [
        f"overlap {overlap:.3f} (chance-corrected {_corrected(overlap, kmax, a.layer.out_features):.3f})",
        f"agreement {agreement:+.3f}",
        f"σ₁ ratio {sigma_ratio:.2f} ({stronger or 'equal'} stronger)",
    ]
    if n_conflict:
        evidence.append(f"{n_conflict} of {a.k} principal directions pushed the opposite way")
    return LayerComparison(
        **base, energy_a=ea, energy_b=eb, sigma_a=sa, sigma_b=sb,
        overlap=overlap, overlap_corrected=_corrected(overlap, kmax, a.layer.out_features),
        overlap_right=overlap_right,
        overlap_right_corrected=_corrected(overlap_right, kmax, a.layer.in_features),
        agreement=agreement, sigma_ratio=sigma_ratio, frob_ratio=frob_ratio, stronger=stronger,
        n_conflict=n_conflict, n_principal=a.k, verdict=verdict, evidence=evidence,
    )  # fmt: skip
