"""From evidence to action: per-layer merge parameters, and the plan ``gradience merge`` runs.

Formulas (docs/merge.md): TIES trim from overlap, DARE drop rate from conflict dimensions,
bounded rebalancing for IMBALANCED layers (the weaker adapter gets the larger weight), and a
compress-first step for redundant, over-provisioned layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradience.merge.compare import LayerComparison

__all__ = ["PLAN_SCHEMA", "LayerRecommendation", "recommend"]

PLAN_SCHEMA = "gradience.merge_plan/v1"
STRATEGY_FOR = {"SAFE": "linear", "REDUNDANT": "ties", "CONFLICTING": "dare_ties", "IMBALANCED": "linear"}
WEIGHT_BOUNDS = (0.1, 0.9)


@dataclass(frozen=True)
class LayerRecommendation:
    """What to do with one layer when merging A and B.

    Attributes:
        coefficients: merge weights ``[w_a, w_b]``.
        trim: fraction of entries TIES removes (PEFT/mergekit ``density`` = 1 − trim).
        drop_rate: DARE's drop probability p (survivors scaled by 1/(1 − p)); None if unused.
        compress_first: ``{"a": k, "b": k}`` ranks to truncate to before merging, or None.
    """

    layer: str
    verdict: str
    strategy: str
    coefficients: tuple[float, float]
    trim: float
    drop_rate: float | None
    compress_first: dict[str, int] | None
    notes: str

    @property
    def density(self) -> float:
        return 1.0 - (self.drop_rate if self.drop_rate is not None else self.trim)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["coefficients"] = list(self.coefficients)
        d["density"] = self.density
        return d


def _rebalance(c: LayerComparison) -> tuple[float, float]:
    r = c.sigma_ratio or 1.0
    strong, weak = 1.0 / (1.0 + r), r / (1.0 + r)
    lo, hi = WEIGHT_BOUNDS
    strong, weak = min(max(strong, lo), hi), min(max(weak, lo), hi)
    total = strong + weak
    strong, weak = strong / total, weak / total
    return (strong, weak) if c.stronger == "a" else (weak, strong)


def recommend(c: LayerComparison) -> LayerRecommendation:
    """The merge parameters the evidence for one layer calls for."""
    if c.verdict == "INVALID":
        return LayerRecommendation(c.layer_name, c.verdict, "linear", (0.5, 0.5), 0.0, None, None,
                                   "NaN/Inf in this layer: fix or drop the adapter before merging")  # fmt: skip
    if "a_zero" in c.flags or "b_zero" in c.flags:
        w = (0.5, 0.5) if len(c.flags) == 2 else ((0.0, 1.0) if "a_zero" in c.flags else (1.0, 0.0))
        return LayerRecommendation(c.layer_name, c.verdict, "linear", w, 0.0, None, None,
                                   "one side is untrained here: keep the trained update at full weight")  # fmt: skip
    strategy = STRATEGY_FOR[c.verdict]
    overlap = c.overlap or 0.0
    trim = 0.0 if overlap <= 0.5 else 0.1 + 0.4 * (overlap - 0.5) / 0.5
    drop = None
    weights = (0.5, 0.5)
    notes = {
        "SAFE": "little shared structure: a plain weighted sum keeps both effects",
        "REDUNDANT": "both adapters learned the same directions: trim duplicates with TIES",
        "CONFLICTING": "shared directions pushed opposite ways: DARE-TIES drops and sign-elects",
        "IMBALANCED": "one update dominates: the weaker adapter gets the larger weight",
    }[c.verdict]
    if c.verdict == "CONFLICTING":
        drop = 0.15 + 0.35 * min(c.n_conflict / c.n_principal, 1.0) if c.n_principal else 0.15
    if c.verdict == "IMBALANCED":
        weights = _rebalance(c)
    compress = None
    if overlap > 0.5 and c.verdict == "REDUNDANT":
        ratio_a, ratio_b = c.k_a / c.r_a, c.k_b / c.r_b
        if min(ratio_a, ratio_b) < 0.4:
            compress = {
                "a": min(c.r_a, max(math.ceil(1.1 * c.k_a), 4)),
                "b": min(c.r_b, max(math.ceil(1.1 * c.k_b), 4)),
            }
            notes += f"; over-provisioned (energy rank / r = {min(ratio_a, ratio_b):.2f}): compress first"
    return LayerRecommendation(c.layer_name, c.verdict, strategy, weights, trim, drop, compress, notes)
