"""Threshold presets and the layer verdict tree (0.11's, so verdicts stay comparable)."""

from __future__ import annotations

from dataclasses import dataclass

from gradience.errors import UsageError

__all__ = ["PRESETS", "RISK", "VERDICTS", "Thresholds", "classify", "get_thresholds"]

VERDICTS = ("SAFE", "REDUNDANT", "IMBALANCED", "CONFLICTING")
#: Worst layer verdict → risk level of the whole merge.
RISK = {"SAFE": "low", "REDUNDANT": "moderate", "IMBALANCED": "high", "CONFLICTING": "severe"}
_SEVERITY = {v: i for i, v in enumerate(VERDICTS)}


@dataclass(frozen=True)
class Thresholds:
    """Verdict thresholds. Overlap is the raw mean principal-angle cosine of the left
    (output-side) subspaces; agreement is in [−1, 1]; ``imbalanced`` is a σ₁ ratio."""

    name: str
    low_overlap: float
    high_overlap: float
    aligned: float
    conflicting: float
    imbalanced: float

    def to_dict(self) -> dict[str, float | str]:
        return dict(vars(self))


PRESETS = {
    "default": Thresholds("default", 0.2, 0.5, 0.5, -0.3, 5.0),
    "conservative": Thresholds("conservative", 0.15, 0.35, 0.6, -0.2, 3.0),
    "permissive": Thresholds("permissive", 0.3, 0.7, 0.4, -0.5, 10.0),
}


def get_thresholds(name: str) -> Thresholds:
    if name not in PRESETS:
        raise UsageError(
            f"unknown thresholds preset {name!r}; choose from {', '.join(PRESETS)}", param="thresholds"
        )
    return PRESETS[name]


def classify(overlap: float, agreement: float, sigma_ratio: float, t: Thresholds) -> str:
    """0.11's tree: low overlap is SAFE whatever the magnitudes (disjoint subspaces do not
    interfere); shared subspaces are REDUNDANT when aligned, CONFLICTING when opposed;
    otherwise a large σ₁ ratio makes the layer IMBALANCED."""
    if overlap < t.low_overlap:
        return "SAFE"
    if overlap > t.high_overlap and agreement > t.aligned:
        return "REDUNDANT"
    if overlap > t.high_overlap and agreement < t.conflicting:
        return "CONFLICTING"
    if sigma_ratio > t.imbalanced:
        return "IMBALANCED"
    return "SAFE"


def worst(verdicts: list[str]) -> str | None:
    known = [v for v in verdicts if v in _SEVERITY]
    return max(known, key=_SEVERITY.__getitem__) if known else None
