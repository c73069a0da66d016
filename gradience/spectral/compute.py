"""Spectra of every layer of an adapter: streamed reads, batched r×r work, flat memory.

Layers are read one at a time (resident memory follows the largest tensor, not the
file); their float64 Gram pairs are queued per rank and solved in stacked batches capped
at :data:`BATCH_BYTES`, which removes the Python overhead of hundreds of tiny
eigendecompositions. Layers whose spectrum reaches below the Gram route's noise floor get
one more r×r SVD; a factor is read a second time only when it is numerically
rank-deficient itself (see :mod:`gradience.spectral.factored`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gradience.spectral.factored import (
    TAIL_RATIO,
    Gram,
    core_singular_values,
    core_singular_values_fast,
    gram_pair,
    gram_roots,
    gram_stored,
    qr_root,
    singular_values_qr,
)

if TYPE_CHECKING:
    from gradience.adapters.layout import LoraLayer
    from gradience.adapters.load import Adapter

__all__ = ["BATCH_BYTES", "layer_spectra"]

#: Cap on the stacked Gram matrices solved in one batch.
BATCH_BYTES = 8 * 1024 * 1024


def layer_spectra(
    adapter: Adapter,
    *,
    precise: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray | None]:
    """Unscaled singular values of B·A (B·diag(E)·A for AdaLoRA) per layer name, descending,
    p = min(r, out, in) of them (a rank above a layer's width adds no directions).

    A layer with NaN or Inf anywhere in its factors maps to ``None`` (invalid).

    Args:
        precise: use the QR route for every layer (σ to ~1e-15·σ₁, slower).
        progress: called as ``progress(done, total)`` after each layer is read.
    """
    out: dict[str, np.ndarray | None] = {}
    pending: dict[int, list[tuple[LoraLayer, Gram, Gram]]] = {}
    total = len(adapter.layers)

    def flush(r: int) -> None:
        queue = pending.pop(r, [])
        if not queue:
            return
        roots_a = gram_roots(np.stack([q[1].g for q in queue]), np.array([q[1].n for q in queue]))
        roots_b = gram_roots(np.stack([q[2].g for q in queue]), np.array([q[2].n for q in queue]))
        fast = core_singular_values_fast(roots_b.w, roots_a.w)
        tail = [i for i, s in enumerate(fast) if not (roots_a.ok[i] and roots_b.ok[i]) or _reaches_tail(s)]
        exact_a, exact_b = roots_a.accurate(tail), roots_b.accurate(tail)
        for i, good_a, good_b in zip(tail, exact_a, exact_b, strict=True):
            layer, ga, gb = queue[i]
            wa = roots_a.w[i] if good_a else qr_root(_factor(adapter, layer, "a"), rows=True, exp=ga.exp)
            wb = roots_b.w[i] if good_b else qr_root(_factor(adapter, layer, "b"), rows=False, exp=gb.exp)
            fast[i] = core_singular_values(wb, wa, layer.r)  # exact in the tail
        for (layer, ga, gb), s in zip(queue, fast, strict=True):
            out[layer.name] = np.ldexp(s[: min(layer.r, ga.n, gb.n)], ga.exp + gb.exp)

    for i, layer in enumerate(adapter.layers):
        if precise:
            f = adapter.factors(layer)
            a = f.effective_a()
            ok = _finite(a) and _finite(f.b)
            out[layer.name] = singular_values_qr(a, f.b) if ok else None
        else:
            ga, gb = _grams(adapter, layer)
            if not (np.isfinite(ga.g).all() and np.isfinite(gb.g).all()):
                out[layer.name] = None  # any NaN/Inf in A or B reaches a Gram diagonal
            else:
                queue = pending.setdefault(layer.r, [])
                queue.append((layer, ga, gb))
                if len(queue) * 2 * ga.g.nbytes >= BATCH_BYTES:
                    flush(layer.r)
        if progress is not None:
            progress(i + 1, total)
    for r in list(pending):
        flush(r)
    return {layer.name: out[layer.name] for layer in adapter.layers}


def _reaches_tail(s: np.ndarray) -> bool:
    """Whether σ² from the core's Gram are too coarse for tail-sensitive metrics."""
    return bool(s[0] > 0 and s[-1] ** 2 < TAIL_RATIO * s[0] ** 2)


def _grams(adapter: Adapter, layer: LoraLayer) -> tuple[Gram, Gram]:
    if layer.e_key is not None:  # AdaLoRA: fold diag(E) into A first
        f = adapter.factors(layer)
        return gram_pair(f.effective_a(), f.b)
    a, a_dtype = adapter.read_stored(layer.a_key)
    b, b_dtype = adapter.read_stored(layer.b_key)
    return (
        gram_stored(a.reshape(a.shape[0], -1), a_dtype, rows=True),
        gram_stored(b.reshape(b.shape[0], -1), b_dtype, rows=False),
    )


def _factor(adapter: Adapter, layer: LoraLayer, which: str) -> np.ndarray:
    """A (with AdaLoRA's E folded in) or B as a decoded 2-D array."""
    if which == "a":
        if layer.e_key is not None:
            return adapter.factors(layer).effective_a()
        x = adapter.read(layer.a_key)
    else:
        x = adapter.read(layer.b_key)
    return x.reshape(x.shape[0], -1)


def _finite(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all())
