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
    """One adapter's layer, decomposed: σ scaled, k its energy rank (0 if untrained)."""

    layer: LoraLayer
    svd: FactoredSVD | None  # None when the factors hold NaN/Inf
    k: int

    @property
    def valid(self) -> bool:
        return self.svd is not None

    @property
    def sigma_max(self) -> float:
        return float(self.svd.s[0]) if self.svd is not None and self.svd.s.size else 0.0

    @property
    def energy(self) -> float:
        return float(np.dot(self.svd.s, self.svd.s)) if self.svd is not None else 0.0


def layer_spectrum(adapter: Adapter, layer: LoraLayer, energy: float) -> LayerSpectrum:
    f = adapter.factors(layer)
    a, b = f.effective_a(), f.b
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return LayerSpectrum(layer, None, 0)
    svd = svd_qr(a, b, layer.scale)
    return LayerSpectrum(layer, svd, energy_rank(svd.s, energy))


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
    c = np.linalg.svd(x.T @ y, compute_uv=False)
    return float(np.mean(np.clip(c[: min(x.shape[1], y.shape[1])], 0.0, 1.0)))


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
    ua, ub = a.svd.u[:, : a.k], b.svd.u[:, : b.k]
    va, vb = a.svd.vt[: a.k].T, b.svd.vt[: b.k].T
    overlap = _mean_cosine(ua, ub)
    overlap_right = _mean_cosine(va, vb)
    kmax = max(a.k, b.k)
    # d_i = u_iᵀ ΔW_b v_i for A's top directions, from B's full thin SVD
    left = ua.T @ b.svd.u  # [k_a, r_b]
    right = b.svd.vt @ va  # [r_b, k_a]
    d = np.einsum("ij,j,ji->i", left, b.svd.s, right)
    s_top = a.svd.s[: a.k]
    nd = float(np.linalg.norm(d))
    # B's projection onto A's directions below float32 round-off of B's own scale is zero,
    # not a direction: its cosine would be noise of either sign.
    negligible = nd <= NEGLIGIBLE * sb * math.sqrt(a.k)
    agreement = 0.0 if negligible else float(np.dot(d, s_top) / (nd * float(np.linalg.norm(s_top))))
    n_conflict = int(np.count_nonzero(d < -0.5 * np.minimum(s_top, sb)))
    sigma_ratio = max(sa, sb) / min(sa, sb)
    frob_ratio = math.sqrt(max(ea, eb) / min(ea, eb))
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
