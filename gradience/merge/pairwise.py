"""``merge_audit``: will these adapters merge cleanly, layer by layer, and what to do if not.

Layers are streamed: for each shared module every adapter's update is decomposed once,
all pairs are compared, and only the small results are kept — memory stays flat however
many layers the adapters have.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience.adapters.load import Adapter
from gradience.errors import UsageError
from gradience.merge.compare import LayerComparison, compare_layers, layer_spectrum
from gradience.merge.recommend import PLAN_SCHEMA, STRATEGY_FOR, LayerRecommendation, recommend
from gradience.merge.verdicts import RISK, VERDICTS, Thresholds, get_thresholds, worst
from gradience.open import OpenOptions, open_adapter

__all__ = [
    "INCOMPATIBLE",
    "SCHEMA",
    "MergeAudit",
    "PairAudit",
    "incompatibility",
    "merge_audit",
    "why_incompatible",
]

SCHEMA = "gradience.merge_audit/v3"


@dataclass(frozen=True)
class PairAudit:
    """The comparison of adapter ``a`` with adapter ``b`` (indices into the audit's adapters)."""

    a: int
    b: int
    compatibility: dict[str, Any]
    layers: tuple[LayerComparison, ...]
    recommendations: tuple[LayerRecommendation, ...]
    warnings: tuple[str, ...] = ()

    def aggregate(self) -> dict[str, Any]:
        """Overall verdict = the verdict carrying the largest share of the two adapters'
        combined update energy; risk level = the worst layer's verdict. One noisy layer
        raises the risk without flipping the verdict."""
        problem = incompatibility(self.compatibility)
        valid = [c for c in self.layers if c.verdict != "INVALID"]
        total = sum(c.energy_a + c.energy_b for c in valid)
        # An update beyond float64's squares (σ₁ above ~1e154) makes the energies Inf: then,
        # and for all-zero updates, every layer weighs the same.
        even = not (0 < total < math.inf)
        share = {v: 0.0 for v in VERDICTS}
        for c in valid:
            share[c.verdict] += 1.0 / len(valid) if even else (c.energy_a + c.energy_b) / total
        overall = max(VERDICTS, key=lambda v: (share[v], -VERDICTS.index(v))) if valid else None
        worst_v = worst([c.verdict for c in valid])
        overlaps = [c.overlap for c in valid if c.overlap is not None]
        agreements = [c.agreement for c in valid if c.agreement is not None]
        if problem is not None:  # the layer verdicts describe arithmetic, not a meaningful merge
            overall, risk = INCOMPATIBLE, "severe"
        else:
            risk = RISK[worst_v] if worst_v else None
        return {
            "overall_verdict": overall,
            "risk_level": risk,
            "incompatible": problem,
            "worst_layer_verdict": worst_v,
            "compatibility_score": share["SAFE"] + share["REDUNDANT"] if valid else None,
            "energy_share": share,
            "mean_overlap": statistics.fmean(overlaps) if overlaps else None,
            "median_overlap": statistics.median(overlaps) if overlaps else None,
            "max_overlap": max(overlaps) if overlaps else None,
            "mean_agreement": statistics.fmean(agreements) if agreements else None,
            "n_layers_compared": len(self.layers),
            "n_safe": sum(c.verdict == "SAFE" for c in self.layers),
            "n_redundant": sum(c.verdict == "REDUNDANT" for c in self.layers),
            "n_conflicting": sum(c.verdict == "CONFLICTING" for c in self.layers),
            "n_imbalanced": sum(c.verdict == "IMBALANCED" for c in self.layers),
            "n_invalid": sum(c.verdict == "INVALID" for c in self.layers),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "compatibility": self.compatibility,
            "aggregate": self.aggregate(),
            "per_layer": [c.to_dict() for c in self.layers],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class MergeAudit:
    """Pairwise merge audits of two or more adapters; ``to_dict()`` is the ``--json`` output."""

    adapters: tuple[dict[str, Any], ...]
    pairs: tuple[PairAudit, ...]
    thresholds: Thresholds
    energy_threshold: float
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "adapters": list(self.adapters),
            "energy_threshold": self.energy_threshold,
            "thresholds": self.thresholds.to_dict(),
            "pairs": [p.to_dict() for p in self.pairs],
            "warnings": list(self.warnings),
        }
        if len(self.pairs) == 1:  # 0.11's top-level layout for the common two-adapter case
            p = d["pairs"][0]
            d.update(aggregate=p["aggregate"], per_layer=p["per_layer"],
                     recommendations=p["recommendations"], compatibility=p["compatibility"])  # fmt: skip
        return d

    def plan(self) -> dict[str, Any]:
        """The merge plan ``gradience merge --plan`` executes (schema gradience.merge_plan/v1).

        Two adapters: each layer's recommendation. More: each layer takes the strategy of its
        worst pairwise verdict, with equal weights.
        """
        n = len(self.adapters)
        layers: dict[str, dict[str, Any]] = {}
        if len(self.pairs) == 1:
            for r in self.pairs[0].recommendations:
                layers[r.layer] = {
                    "verdict": r.verdict,
                    "strategy": r.strategy,
                    "weights": list(r.coefficients),
                    "density": r.density,
                    "compress_first": r.compress_first,
                }
        else:
            by_layer: dict[str, list[LayerRecommendation]] = {}
            for p in self.pairs:
                for r in p.recommendations:
                    by_layer.setdefault(r.layer, []).append(r)
            for name, recs in by_layer.items():
                v = worst([r.verdict for r in recs]) or "SAFE"
                layers[name] = {
                    "verdict": v,
                    "strategy": STRATEGY_FOR.get(v, "linear"),
                    "weights": [1.0 / n] * n,
                    "density": min(r.density for r in recs) if v != "SAFE" else 1.0,
                    "compress_first": None,
                }
        return {
            "schema": PLAN_SCHEMA,
            "adapters": [a["path"] for a in self.adapters],
            "default": {"strategy": "linear", "weights": [1.0 / n] * n, "density": 1.0},
            "layers": layers,
        }


def merge_audit(
    sources: Sequence[str | Path],
    *,
    energy_threshold: float = 0.90,
    thresholds: str | Thresholds = "default",
    progress: Callable[[int, int], None] | None = None,
    options: OpenOptions | None = None,
) -> MergeAudit:
    """Compare two or more adapters layer by layer and recommend how to merge them.

    Args:
        sources: adapter folders (two or more).
        energy_threshold: each update is compared on its top-k directions, k its energy rank.
        thresholds: ``default``, ``conservative``, ``permissive`` or a :class:`Thresholds`.
        options: how to open the adapters (Hub token, revision, caps; see :class:`OpenOptions`).

    Raises:
        UsageError: fewer than two adapters, or an energy threshold outside (0, 1].
        GradienceError: an adapter cannot be read (see :func:`gradience.audit`).
    """
    if len(sources) < 2:
        raise UsageError("merge-audit needs at least two adapters")
    if not 0 < energy_threshold <= 1:
        raise UsageError(
            f"energy threshold must be in (0, 1], got {energy_threshold}", param="energy_threshold"
        )
    t = get_thresholds(thresholds) if isinstance(thresholds, str) else thresholds
    with ExitStack() as stack:
        adapters = [stack.enter_context(open_adapter(s, options)) for s in sources]
        return _audit(adapters, energy_threshold, t, progress)


#: The overall verdict of a pair that must not be merged: different base models, or no
#: layer in common. Layer verdicts are still reported (the arithmetic is well defined).
INCOMPATIBLE = "INCOMPATIBLE"


def incompatibility(compat: dict[str, Any]) -> str | None:
    """Why the two adapters of a pair's ``compatibility`` cannot be merged, or None."""
    mismatch = compat.get("shape_mismatch") or []
    first = (mismatch[0]["layer"], [tuple(mismatch[0]["a"]), tuple(mismatch[0]["b"])]) if mismatch else None
    found = why_incompatible(compat.get("base_models", []), first, int(compat.get("n_shared") or 0))
    return found[1] if found else None


def why_incompatible(
    bases: Sequence[str | None], mismatch: tuple[str, Sequence[tuple[int, ...]]] | None, n_shared: int
) -> tuple[str, str] | None:
    """The one rule for merge-audit's INCOMPATIBLE and merge's refusal: ``(kind, sentence)``
    with kind ``base``, ``shape`` or ``disjoint``, or None when a merge means something.

    ``bases`` are the configs' base models (a config that names none is not a mismatch: many
    omit it); ``mismatch`` a layer whose shapes differ and those shapes; ``n_shared`` the layers
    every adapter has with one shape.
    """
    named = list(dict.fromkeys(b for b in bases if b))
    if len(named) > 1:
        return "base", (
            f"the adapters were trained for different base models ({', '.join(named)}); their "
            "updates live in different weight spaces, so a merge is meaningless"
        )
    if mismatch is not None:
        layer, shapes = mismatch
        return "shape", (
            f"layer {layer} has different shapes ({' vs '.join('×'.join(map(str, s)) for s in shapes)}): "
            "the adapters were trained for different models, so a merge is meaningless"
        )
    if not n_shared:
        return "disjoint", (
            "the adapters have no layer in common (same module name and shape), so there is nothing to merge"
        )
    return None


def _describe(adapter: Adapter) -> dict[str, Any]:
    c = adapter.config
    return {
        "path": adapter.label,
        "peft_type": c.peft_type,
        "base_model": c.base_model,
        "r": c.r,
        "lora_alpha": c.lora_alpha,
        "n_layers": len(adapter.layers),
    }


def _compatibility(a: Adapter, b: Adapter) -> tuple[dict[str, Any], list[str]]:
    la, lb = {x.name: x for x in a.layers}, {x.name: x for x in b.layers}
    shared = [n for n in la if n in lb]
    mismatch = [
        {
            "layer": n,
            "a": [la[n].out_features, la[n].in_features],
            "b": [lb[n].out_features, lb[n].in_features],
        }
        for n in shared
        if (la[n].out_features, la[n].in_features) != (lb[n].out_features, lb[n].in_features)
    ]
    bad = {m["layer"] for m in mismatch}
    warnings = []
    same_base = (
        not (a.config.base_model and b.config.base_model) or a.config.base_model == b.config.base_model
    )
    if not same_base:
        warnings.append(
            f"different base models ({a.config.base_model} vs {b.config.base_model}): a merge only "
            "makes sense for the same base"
        )
    if mismatch:
        warnings.append(f"{len(mismatch)} shared layers have different shapes and are not compared")
    only_a, only_b = [n for n in la if n not in lb], [n for n in lb if n not in la]
    if only_a or only_b:
        warnings.append(
            f"{len(only_a)} layers only in A, {len(only_b)} only in B: they merge as one adapter's update"
        )
    return {
        "same_base_model": same_base,
        "base_models": [a.config.base_model, b.config.base_model],
        "target_modules": [a.config.target_modules, b.config.target_modules],
        "n_shared": len(shared) - len(bad),
        "shared_layers": [n for n in shared if n not in bad],
        "only_in_a": only_a,
        "only_in_b": only_b,
        "shape_mismatch": mismatch,
    }, warnings


def _audit(adapters: list[Adapter], energy: float, t: Thresholds, progress) -> MergeAudit:
    pairs = [(i, j) for i in range(len(adapters)) for j in range(i + 1, len(adapters))]
    compat = {p: _compatibility(adapters[p[0]], adapters[p[1]]) for p in pairs}
    names = list(dict.fromkeys(n for p in pairs for n in compat[p][0]["shared_layers"]))
    index = [{x.name: x for x in ad.layers} for ad in adapters]
    results: dict[tuple[int, int], list[LayerComparison]] = {p: [] for p in pairs}
    for step, name in enumerate(names):
        spectra = {
            i: layer_spectrum(adapters[i], index[i][name], energy)
            for i in range(len(adapters))
            if name in index[i]
        }
        for p in pairs:
            if name in compat[p][0]["shared_layers"]:
                results[p].append(compare_layers(spectra[p[0]], spectra[p[1]], t))
        if progress is not None:
            progress(step + 1, len(names))
    audits = []
    for p in pairs:
        comps = tuple(results[p])
        audits.append(
            PairAudit(
                p[0], p[1], compat[p][0], comps, tuple(recommend(c) for c in comps), tuple(compat[p][1])
            )
        )
    warnings = tuple(w for p in audits for w in p.warnings)
    return MergeAudit(tuple(_describe(a) for a in adapters), tuple(audits), t, energy, warnings)
