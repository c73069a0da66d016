"""Merge strategies: a registry of small, named rules with declared parameters.

``linear`` is exact in factor space (no dense update is formed). The others act entry by
entry, so they take the dense task vectors of one layer — the same definitions as
``peft.utils.merge_utils`` (TIES: Yadav et al. 2023; DARE: Yu et al. 2023), which the tests
check against with the same DARE masks injected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gradience.errors import UsageError

__all__ = [
    "MergeStrategy",
    "available_strategies",
    "dare_linear",
    "dare_ties",
    "get_strategy",
    "magnitude_prune",
    "random_prune",
    "ties",
]


def magnitude_prune(x: np.ndarray, density: float) -> np.ndarray:
    """Keep the ``int(density·n)`` largest-magnitude entries, zero the rest."""
    if density >= 1:
        return x
    k = int(density * x.size)
    flat = x.reshape(-1)
    out = np.zeros_like(flat)
    if k > 0:
        keep = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]
        out[keep] = flat[keep]
    return out.reshape(x.shape)


def random_prune(
    x: np.ndarray, density: float, mask: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """DARE: keep each entry with probability ``density`` and rescale survivors by 1/density."""
    if density >= 1:
        return x
    keep = mask if mask is not None else rng.random(x.shape) < density
    return x * keep / density


def _elect_and_merge(tasks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sign election on the (pruned, unweighted) sum, then the mean of the weighted entries
    that agree with it — the disjoint merge of TIES."""
    signs = np.sign(tasks)
    majority = np.where(tasks.sum(axis=0) >= 0, 1.0, -1.0)
    agree = signs == majority
    weighted = tasks * weights.reshape((-1,) + (1,) * (tasks.ndim - 1))
    count = np.maximum(agree.sum(axis=0), 1)
    return (weighted * agree).sum(axis=0) / count


def ties(tasks: Sequence[np.ndarray], weights: Sequence[float], density: float) -> np.ndarray:
    pruned = np.stack([magnitude_prune(t, density) for t in tasks])
    return _elect_and_merge(pruned, np.asarray(weights, dtype=pruned.dtype))


def _dare_pruned(
    tasks: Sequence[np.ndarray],
    density: float,
    masks: Sequence[np.ndarray] | None,
    rng: np.random.Generator | None,
) -> np.ndarray:
    rng = rng or np.random.default_rng(0)
    return np.stack([random_prune(t, density, masks[i] if masks else None, rng) for i, t in enumerate(tasks)])


def dare_linear(
    tasks: Sequence[np.ndarray],
    weights: Sequence[float],
    density: float,
    *,
    masks: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    pruned = _dare_pruned(tasks, density, masks, rng)
    return np.tensordot(np.asarray(weights, dtype=pruned.dtype), pruned, axes=1)


def dare_ties(
    tasks: Sequence[np.ndarray],
    weights: Sequence[float],
    density: float,
    *,
    masks: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    pruned = _dare_pruned(tasks, density, masks, rng)
    return _elect_and_merge(pruned, np.asarray(weights, dtype=pruned.dtype))


@dataclass(frozen=True)
class MergeStrategy:
    """A named merge rule.

    Attributes:
        dense: whether it needs each layer's dense task vectors (entry-wise rules); the
            result is then re-factored with a randomized truncated SVD.
        uses_density: whether ``density`` (1 − trim, or 1 − drop rate) applies.
        rule: for dense strategies, ``rule(tasks, weights, density, rng) -> merged``.
    """

    name: str
    summary: str
    reference: str
    dense: bool
    uses_density: bool
    rule: Callable[[Sequence[np.ndarray], Sequence[float], float, np.random.Generator], np.ndarray] | None


_REGISTRY: dict[str, MergeStrategy] = {}


def _register(s: MergeStrategy) -> None:
    if s.name in _REGISTRY:
        raise ValueError(f"a merge strategy named {s.name!r} is already registered")
    _REGISTRY[s.name] = s


def available_strategies() -> list[str]:
    return list(_REGISTRY)


def get_strategy(name: str) -> MergeStrategy:
    if name not in _REGISTRY:
        raise UsageError(f"unknown merge strategy {name!r}; choose from: auto, {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


_register(MergeStrategy("linear", "Σ wᵢ·ΔWᵢ, exact in factor space", "task arithmetic", False, False, None))
_register(MergeStrategy(
    "ties", "trim to the top-density magnitudes, elect signs, average agreeing entries",
    "Yadav et al. 2023, TIES-Merging", True, True,
    lambda tasks, w, d, rng: ties(tasks, w, d),
))  # fmt: skip
_register(MergeStrategy(
    "dare_linear", "drop entries with probability 1 − density, rescale, weighted sum",
    "Yu et al. 2023, DARE", True, True,
    lambda tasks, w, d, rng: dare_linear(tasks, w, d, rng=rng),
))  # fmt: skip
_register(MergeStrategy(
    "dare_ties", "DARE drop and rescale, then TIES sign election",
    "Yu et al. 2023, DARE + TIES", True, True,
    lambda tasks, w, d, rng: dare_ties(tasks, w, d, rng=rng),
))  # fmt: skip
