"""Spectra of every layer of an adapter: streamed reads, batched r×r work, flat memory.

Layers are read one at a time (resident memory follows the largest tensor, not the
file); their float64 Gram pairs are queued per rank and solved in stacked batches capped
at :data:`BATCH_BYTES`, which removes the Python overhead of hundreds of tiny
eigendecompositions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gradience.spectral.factored import (
    TAIL_RATIO,
    gram_pair,
    gram_stored,
    singular_values_from_grams,
    singular_values_qr,
)

if TYPE_CHECKING:
    from gradience.adapters.layout import LoraLayer
    from gradience.adapters.load import Adapter

__all__ = ["BATCH_BYTES", "layer_spectra"]

#: Cap on the stacked Gram matrices solved in one batch.
BATCH_BYTES = 32 * 1024 * 1024


def layer_spectra(
    adapter: Adapter,
    *,
    precise: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray | None]:
    """Unscaled singular values of B·A (B·diag(E)·A for AdaLoRA) per layer name.

    A layer with NaN or Inf anywhere in its factors maps to ``None`` (invalid).

    Args:
        precise: use the QR route for every layer (σ to ~1e-15·σ₁, slower).
        progress: called as ``progress(done, total)`` after each layer is read.
    """
    out: dict[str, np.ndarray | None] = {}
    pending: dict[int, list[tuple[LoraLayer, np.ndarray, np.ndarray]]] = {}
    total = len(adapter.layers)

    def flush(r: int) -> None:
        queue = pending.pop(r, [])
        if not queue:
            return
        sig = singular_values_from_grams(np.stack([g[1] for g in queue]), np.stack([g[2] for g in queue]))
        for (layer, *_), s in zip(queue, sig, strict=True):
            if s[0] > 0 and s[-1] ** 2 < TAIL_RATIO * s[0] ** 2:
                s = _qr_spectrum(adapter, layer)  # the tail matters: redo it exactly
            out[layer.name] = s

    for i, layer in enumerate(adapter.layers):
        if precise:
            f = adapter.factors(layer)
            a = f.effective_a()
            out[layer.name] = singular_values_qr(a, f.b) if _finite(a) and _finite(f.b) else None
        else:
            ga, gb = _grams(adapter, layer)
            if not (np.isfinite(ga).all() and np.isfinite(gb).all()):
                out[layer.name] = None  # any NaN/Inf in A or B reaches a Gram diagonal
            else:
                queue = pending.setdefault(layer.r, [])
                queue.append((layer, ga, gb))
                if len(queue) * 2 * ga.nbytes >= BATCH_BYTES:
                    flush(layer.r)
        if progress is not None:
            progress(i + 1, total)
    for r in list(pending):
        flush(r)
    return {layer.name: out[layer.name] for layer in adapter.layers}


def _grams(adapter: Adapter, layer: LoraLayer) -> tuple[np.ndarray, np.ndarray]:
    if layer.e_key is not None:  # AdaLoRA: fold diag(E) into A first
        f = adapter.factors(layer)
        return gram_pair(f.effective_a(), f.b)
    a, a_dtype = adapter.read_stored(layer.a_key)
    b, b_dtype = adapter.read_stored(layer.b_key)
    return (
        gram_stored(a.reshape(a.shape[0], -1), a_dtype, rows=True),
        gram_stored(b.reshape(b.shape[0], -1), b_dtype, rows=False),
    )


def _finite(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all())


def _qr_spectrum(adapter: Adapter, layer: LoraLayer) -> np.ndarray:
    f = adapter.factors(layer)
    return singular_values_qr(f.effective_a(), f.b)
