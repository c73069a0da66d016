"""Merge strategies: a registry of small, named rules with declared parameters.

``linear`` is exact in factor space (no dense update is formed). The others act entry by
entry, so they take the dense task vectors of one layer — the same definitions as
``peft.utils.merge_utils`` (TIES: Yadav et al. 2023; DARE: Yu et al. 2023), which the tests
check against with the same DARE masks injected.

The entry-wise rules keep the dtype they are given (float64 in the tests, float32 in
``gradience merge``) and work in flat blocks of ``BLOCK`` entries after one whole-tensor
step (TIES' magnitude threshold, one selection per task), so their temporaries are a few
MB whatever the layer's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gradience.errors import UsageError

__all__ = [
    "BLOCK",
    "MergeStrategy",
    "available_strategies",
    "dare_linear",
    "dare_ties",
    "get_strategy",
    "magnitude_prune",
    "magnitude_threshold",
    "random_prune",
    "ties",
]

#: Entries per block of the entry-wise rules (1 MiB of float32).
BLOCK = 1 << 18
_U32 = float(1 << 32)


def magnitude_threshold(x: np.ndarray, density: float) -> float | None:
    """The ``k``-th largest ``|x|``, ``k = int(density·n)`` — the count PEFT's top-k keeps.

    Keeping ``|x| ≥ threshold`` keeps exactly that top-k when no other entry ties with the
    threshold. ``None`` means keep everything (``density ≥ 1``), ``inf`` keep nothing
    (``k = 0``). One selection on a copy of ``|x|``, in ``x``'s dtype.
    """
    n = x.size
    k = int(density * n)
    if density >= 1 or k >= n:
        return None
    if k <= 0:
        return float("inf")
    mags = np.abs(x.reshape(-1))
    mags.partition(n - k)
    return float(mags[n - k])


def magnitude_prune(x: np.ndarray, density: float) -> np.ndarray:
    """Keep the ``int(density·n)`` largest-magnitude entries, zero the rest."""
    t = magnitude_threshold(x, density)
    if t is None:
        return x
    return x * (np.abs(x) >= t)


def _keep_mask(n: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli(density) draws from 32 random bits each (P off by < 2⁻³²)."""
    return rng.integers(0, 1 << 32, n, dtype=np.uint32) < np.uint32(min(round(density * _U32), (1 << 32) - 1))


def random_prune(
    x: np.ndarray, density: float, mask: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """DARE: keep each entry with probability ``density`` and rescale survivors by 1/density."""
    if density >= 1:
        return x
    keep = mask if mask is not None else _keep_mask(x.size, density, rng).reshape(x.shape)
    return x * keep / density


def _blocks(n: int) -> Iterator[slice]:
    for start in range(0, n, BLOCK):
        yield slice(start, min(n, start + BLOCK))


def _flat(tasks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], tuple[int, ...], np.dtype]:
    shapes = {t.shape for t in tasks}
    if len(shapes) != 1:
        raise ValueError(f"task vectors differ in shape: {sorted(shapes)}")
    dtype = np.result_type(*tasks)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    return [np.ascontiguousarray(t, dtype=dtype).reshape(-1) for t in tasks], tasks[0].shape, dtype


def _elect_block(pruned: list[np.ndarray], weights: Sequence[float], out: np.ndarray) -> None:
    """TIES' sign election and disjoint merge on one block, into ``out``: the majority sign
    of the (pruned, unweighted) sum, then the sum of the weighted entries that agree with it
    over their count — ``Σ wᵢ·pᵢ·[sign pᵢ = m] / max(Σ [sign pᵢ = m], 1)``."""
    sgn = pruned[0].copy()
    for p in pruned[1:]:
        sgn += p
    # m = +1 where the sum is ≥ 0, else −1; a sum is −0.0 only when every term is ±0 (nothing to elect)
    np.copysign(1.0, sgn, out=sgn)
    acc = np.zeros_like(sgn)
    cnt = np.zeros_like(sgn)
    q = np.empty_like(sgn)
    for w, p in zip(weights, pruned, strict=True):
        np.multiply(p, sgn, out=q)  # > 0 exactly where sign(p) = m
        cnt += q > 0
        np.maximum(q, 0, out=q)
        q *= w
        acc += q
    np.maximum(cnt, 1, out=cnt)
    acc *= sgn  # back to the majority sign: m·max(p·m, 0) = p where it agrees
    np.divide(acc, cnt, out=out)


def _merge(
    tasks: Sequence[np.ndarray],
    weights: Sequence[float],
    prune: Callable[[int, slice, np.ndarray], np.ndarray],
    elect: bool,
) -> np.ndarray:
    flat, shape, dtype = _flat(tasks)
    w = [float(x) for x in weights]
    out = np.empty(flat[0].size, dtype=dtype)
    for sl in _blocks(out.size):
        pruned = [prune(i, sl, t[sl]) for i, t in enumerate(flat)]
        if elect:
            _elect_block(pruned, w, out[sl])
        else:
            acc = out[sl]
            np.multiply(pruned[0], w[0], out=acc)
            for wi, p in zip(w[1:], pruned[1:], strict=True):
                p *= wi
                acc += p
    return out.reshape(shape)


def ties(tasks: Sequence[np.ndarray], weights: Sequence[float], density: float) -> np.ndarray:
    thresholds = [magnitude_threshold(np.asarray(t), density) for t in tasks]

    def prune(i: int, sl: slice, x: np.ndarray) -> np.ndarray:
        t = thresholds[i]
        return x.copy() if t is None else x * (np.abs(x) >= t)

    return _merge(tasks, weights, prune, elect=True)


def _dare_prune(
    density: float, masks: Sequence[np.ndarray] | None, rng: np.random.Generator | None
) -> Callable[[int, slice, np.ndarray], np.ndarray]:
    """Masks come from ``masks`` (one per task, any shape of the task's size) or are drawn
    from ``rng`` block by block, task after task within a block: reproducible for a seed."""
    rng = rng or np.random.default_rng(0)
    flat_masks = [np.asarray(m).reshape(-1) for m in masks] if masks else None

    def prune(i: int, sl: slice, x: np.ndarray) -> np.ndarray:
        if density >= 1:
            return x.copy()
        keep = flat_masks[i][sl] if flat_masks is not None else _keep_mask(x.size, density, rng)
        out = x * keep
        out /= density
        return out

    return prune


def dare_linear(
    tasks: Sequence[np.ndarray],
    weights: Sequence[float],
    density: float,
    *,
    masks: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    return _merge(tasks, weights, _dare_prune(density, masks, rng), elect=False)


def dare_ties(
    tasks: Sequence[np.ndarray],
    weights: Sequence[float],
    density: float,
    *,
    masks: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    return _merge(tasks, weights, _dare_prune(density, masks, rng), elect=True)


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

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters this strategy reads, so surfaces show only the inputs that matter."""
        return ("weights", "density") if self.uses_density else ("weights",)


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
