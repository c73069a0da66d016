"""Measurements of a live torch model: weight and gradient norms, spectra, a LoRA audit.

For the Trainer callback and for plain PyTorch loops (``geometry(model)`` after
``loss.backward()``). torch is never imported here at module level: the functions only call
tensor methods, so importing this module costs nothing.

Why the LoRA weights are read in place: a deep copy of a model to audit it would double its
memory. Each factor is viewed as a numpy array through ``.detach().cpu()`` (no copy for a CPU
float32 tensor; a GPU or bf16 factor is copied, but that is r × d values, not the model), and
the singular values of s·B·A come from the same factored routes ``gradience audit`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from gradience.monitor.geometry import lora_audit_summary, spectral_complexity
from gradience.spectral.factored import singular_values_qr

__all__ = [
    "geometry",
    "grad_norm",
    "lora_audit_metrics",
    "lora_factors",
    "lora_spectra",
    "model_spectral_complexity",
    "weight_norm",
]

#: Matrices with more elements are left out of a full-model spectral complexity: an SVD of a
#: large embedding at every logging step would cost more than the training step.
MAX_SVD_ELEMENTS = 4_000_000
_PREFIX = "base_model.model."


def _numpy(t: Any) -> np.ndarray:
    """A numpy view of a tensor's data (a copy only when it is not on the CPU or is bf16)."""
    t = t.detach()
    if getattr(t, "device", None) is not None and t.device.type != "cpu":
        t = t.cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    return t.numpy()


def lora_factors(model: Any) -> Iterator[tuple[str, np.ndarray, np.ndarray, float, int]]:
    """``(name, A [r, in], B [out, r], scale, r)`` for every LoRA layer of a PEFT model.

    Reads PEFT's ``lora_A`` / ``lora_B`` module dicts (linear and conv layers) and
    ``lora_embedding_A`` / ``lora_embedding_B`` (embeddings); other adapter types are skipped.
    With several adapters loaded, the adapter name is appended to the module name.
    """
    for name, module in model.named_modules():
        pairs = []
        la, lb = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if hasattr(la, "keys") and hasattr(lb, "keys"):
            pairs += [(k, la[k].weight, lb[k].weight) for k in la if k in lb]
        ea, eb = getattr(module, "lora_embedding_A", None), getattr(module, "lora_embedding_B", None)
        if hasattr(ea, "keys") and hasattr(eb, "keys"):
            pairs += [(k, ea[k], eb[k]) for k in ea if k in eb]
        if not pairs:
            continue
        scaling = getattr(module, "scaling", {}) or {}
        short = name[len(_PREFIX) :] if name.startswith(_PREFIX) else name
        for adapter, a, b in pairs:
            a2 = _numpy(a).reshape(a.shape[0], -1)
            b2 = _numpy(b).reshape(b.shape[0], -1)
            r = a2.shape[0]
            if r == 0:
                continue
            scale = float(scaling.get(adapter, 1.0)) if hasattr(scaling, "get") else 1.0
            label = short if len(pairs) == 1 else f"{short}.{adapter}"
            yield label, a2, b2, scale, r


def lora_spectra(model: Any) -> dict[str, tuple[np.ndarray, int]]:
    """``{layer: (σ of the scaled update s·B·A, r)}`` from the live weights (QR route, float64)."""
    out = {}
    for name, a, b, scale, r in lora_factors(model):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            out[name] = (np.full(min(r, a.shape[1], b.shape[0]), np.nan), r)
            continue
        out[name] = (singular_values_qr(a, b) * abs(scale), r)
    return out


def lora_audit_metrics(model: Any) -> dict[str, Any]:
    """A spectral audit of the live LoRA weights, summarised as a ``lora_audit`` metrics record
    (``utilization_mean``, ``stable_rank_mean``, ``energy_rank_90_p50``, ...)."""
    return lora_audit_summary(lora_spectra(model))


def _trainable(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def weight_norm(model: Any) -> float:
    """Global L2 norm of the trainable weights."""
    return math.sqrt(math.fsum(float(p.detach().float().pow(2).sum()) for p in _trainable(model)))


def grad_norm(model: Any) -> float | None:
    """Global L2 norm of the trainable weights' gradients (None when no gradient exists yet)."""
    grads = [p.grad for p in _trainable(model) if p.grad is not None]
    if not grads:
        return None
    return math.sqrt(math.fsum(float(g.detach().float().pow(2).sum()) for g in grads))


def model_spectral_complexity(model: Any) -> float | None:
    """Mean normalised spectral entropy over the LoRA layers, or — for a model without LoRA —
    over its trainable weight matrices (2-D and up, at most :data:`MAX_SVD_ELEMENTS` each)."""
    spectra = [s for s, _ in lora_spectra(model).values()]
    if not spectra:
        for p in _trainable(model):
            if p.dim() >= 2 and p.numel() <= MAX_SVD_ELEMENTS:
                w = _numpy(p).reshape(p.shape[0], -1).astype(np.float64)
                if np.isfinite(w).all():
                    spectra.append(np.linalg.svd(w, compute_uv=False))
    return spectral_complexity(spectra)


def geometry(model: Any, *, grad_norm_value: float | None = None) -> dict[str, float | None]:
    """The ``geometry`` metrics record: ``weight_norm``, ``grad_norm``, ``spectral_complexity``.

    Call it after ``loss.backward()`` (before ``zero_grad``) to include the gradient norm, or
    pass the norm you already have (e.g. the one ``clip_grad_norm_`` returned).
    """
    g = grad_norm_value if grad_norm_value is not None else grad_norm(model)
    return {
        "weight_norm": weight_norm(model),
        "grad_norm": g,
        "spectral_complexity": model_spectral_complexity(model),
    }
