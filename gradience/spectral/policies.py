"""Rank policies: rules that pick how many singular directions of a layer to keep.

A policy is a small registered object with a name, a reference, one optional parameter
(``name@value`` on the command line, ``policy="name@value"`` in Python) and one function of
the scaled spectrum. The CLI, the API and later surfaces all resolve names through
:func:`get_policy`, so a policy added here is usable everywhere at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradience.errors import UsageError
from gradience.spectral.metrics import effective_rank, energy, energy_rank

__all__ = ["RankPolicy", "available_policies", "get_policy", "policy_specs", "register", "suggest_rank"]


@dataclass(frozen=True)
class RankPolicy:
    """A named rule ``spectrum → k``.

    Attributes:
        name: registry name, e.g. ``energy``.
        summary: one line for ``--help`` and docs.
        reference: where the rule comes from.
        param: name of the single parameter (``t``) or None.
        default / bounds: the parameter's default and inclusive bounds.
        rule: ``rule(s, t, shape) -> k``; ``s`` is non-empty, descending and not all zero.
    """

    name: str
    summary: str
    reference: str
    rule: Callable[[np.ndarray, float | None, tuple[int, int] | None], int]
    param: str | None = None
    default: float | None = None
    bounds: tuple[float, float] | None = None

    def __call__(self, s: np.ndarray, t: float | None = None, *, shape: tuple[int, int] | None = None) -> int:
        """Suggested rank in [1, r] for a non-zero spectrum; 0 for an all-zero one."""
        s = np.asarray(s, dtype=np.float64)
        if s.size == 0 or not np.any(s > 0):
            return 0
        s = s / s.max()  # every rule is scale-free; this keeps σ² of tiny updates from underflowing
        t = self.default if t is None else t
        return int(min(max(self.rule(s, t, shape), 1), s.size))

    def spec(self, t: float | None = None) -> str:
        value = self.default if t is None else t
        return self.name if self.param is None else f"{self.name}@{value:g}"


_REGISTRY: dict[str, RankPolicy] = {}


def register(policy: RankPolicy) -> RankPolicy:
    """Add a policy; names are unique."""
    if policy.name in _REGISTRY:
        raise ValueError(f"a rank policy named {policy.name!r} is already registered")
    _REGISTRY[policy.name] = policy
    return policy


def available_policies() -> list[str]:
    return list(_REGISTRY)


def policy_specs() -> list[str]:
    """Each registered policy at its default parameter, e.g. ``energy@0.9`` (for choices)."""
    return [p.spec() for p in _REGISTRY.values()]


def get_policy(spec: str) -> tuple[RankPolicy, float | None]:
    """Resolve ``name`` or ``name@value`` to a policy and its parameter.

    Raises:
        UsageError: unknown name (the valid ones are listed), a parameter given to a
            policy that takes none, or a value that is not a number within bounds.
    """
    name, _, raw = spec.strip().partition("@")
    name = {"energy_rank": "energy", "oht_rank": "oht"}.get(name, name)
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown rank policy {spec!r}; choose from: " + ", ".join(p.spec() for p in _REGISTRY.values())
        )
    policy = _REGISTRY[name]
    if not raw:
        return policy, policy.default
    if policy.param is None:
        raise UsageError(f"rank policy {name!r} takes no parameter (got {spec!r})")
    try:
        t = float(raw)
    except ValueError as e:
        raise UsageError(f"rank policy parameter in {spec!r} is not a number") from e
    lo, hi = policy.bounds or (-math.inf, math.inf)
    if not (lo <= t <= hi) or not math.isfinite(t):
        raise UsageError(f"rank policy {name!r} needs {policy.param} in [{lo:g}, {hi:g}], got {t:g}")
    return policy, t


def suggest_rank(s: np.ndarray, spec: str = "energy@0.9", *, shape: tuple[int, int] | None = None) -> int:
    """Suggested rank for one spectrum under the policy ``spec``."""
    policy, t = get_policy(spec)
    return policy(s, t, shape=shape)


def _oht(s: np.ndarray, _t: float | None, shape: tuple[int, int] | None) -> int:
    beta = min(shape) / max(shape) if shape else 1.0
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return int(np.count_nonzero(s > omega * float(np.median(s))))


def _knee(s: np.ndarray, _t: float | None, _shape: tuple[int, int] | None) -> int:
    cum = np.cumsum(s**2) / energy(s)
    if s.size < 3 or cum[0] >= 1.0:
        return 1
    x = np.arange(s.size) / (s.size - 1)
    y = (cum - cum[0]) / (1.0 - cum[0])
    return int(np.argmax(y - x)) + 1


def _sv_cumulative(s: np.ndarray, t: float | None, _shape) -> int:
    cum = np.cumsum(s)
    return int(np.searchsorted(cum, t * cum[-1] * (1 - 1e-12), side="left")) + 1


register(RankPolicy(
    "energy", "smallest k keeping a fraction t of the update's energy Σσ²",
    "energy rank (Gradience 0.11)", lambda s, t, _: energy_rank(s, t), "t", 0.90, (1e-9, 1.0),
))  # fmt: skip
register(RankPolicy(
    "erank", "ceil of the effective rank exp(H(σ/Σσ))", "Roy & Vetterli 2007",
    lambda s, _t, _: math.ceil(effective_rank(s) - 1e-9),
))  # fmt: skip
register(RankPolicy(
    "oht", "σ above ω(β)·median(σ); weak when only r values are known",
    "Gavish & Donoho 2014, optimal hard threshold", _oht,
))  # fmt: skip
register(RankPolicy(
    "knee", "knee of the cumulative-energy curve", "Satopää et al. 2011, Kneedle", _knee,
))  # fmt: skip
register(RankPolicy(
    "sv_ratio", "keep σᵢ > σ₁ / t", "kohya-ss resize_lora dynamic method sv_ratio",
    lambda s, t, _: int(np.count_nonzero(s > s[0] / t)), "t", 10.0, (1.0, 1e12),
))  # fmt: skip
register(RankPolicy(
    "sv_cumulative", "smallest k with Σ_{i≤k} σᵢ ≥ t·Σσ",
    "kohya-ss resize_lora dynamic method sv_cumulative", _sv_cumulative, "t", 0.90, (1e-9, 1.0),
))  # fmt: skip
register(RankPolicy(
    "sv_fro", "smallest k whose Frobenius norm reaches t·‖ΔW‖_F (Σσ² ≥ t²·E)",
    "kohya-ss resize_lora dynamic method sv_fro", lambda s, t, _: energy_rank(s, t * t),
    "t", 0.90, (1e-9, 1.0),
))  # fmt: skip
