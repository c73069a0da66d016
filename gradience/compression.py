"""Compression: replace each LoRA update by its best rank-k approximation, as a new
PEFT adapter on disk.

From the QR-route SVD ΔW = U·diag(σ)·Vᵀ, keep k components and write
B' = U_k·diag(√(σ_k/s')), A' = diag(√(σ_k/s'))·V_kᵀ, where s' is the scale the new config
implies for rank k (α/k, or α/√k with rsLoRA). Then s'·B'·A' is the optimal rank-k
approximation of ΔW (Eckart–Young); per-layer ranks go into ``rank_pattern`` so the
result loads with ``peft.PeftModel.from_pretrained``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradience.adapters.config import exact_pattern
from gradience.adapters.load import CONFIG_NAME, Adapter
from gradience.adapters.write import OUT_DTYPES, encode, lora_factors, most_common_rank, write_peft_adapter
from gradience.auditor import audit
from gradience.errors import AdapterFormatError, UnsupportedAdapterError, UntrainedAdapterError, UsageError
from gradience.open import OpenOptions, open_adapter
from gradience.spectral.factored import svd_qr

__all__ = ["CompressResult", "LayerCompression", "compress"]


@dataclass(frozen=True)
class LayerCompression:
    """What truncation kept of one layer.

    Attributes:
        retained_energy: Σ_{i≤k}σᵢ² / Σσᵢ² (1.0 for an all-zero update).
        relative_error: ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = √(1 − retained_energy).
    """

    name: str
    r_before: int
    r_after: int
    retained_energy: float
    relative_error: float


@dataclass(frozen=True)
class CompressResult:
    """A compressed adapter written to ``out_dir``."""

    out_dir: Path
    layers: tuple[LayerCompression, ...]
    config: dict[str, Any]
    params_before: int
    params_after: int
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gradience.compress/v1",
            "out_dir": str(self.out_dir),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "r": self.config["r"],
            "rank_pattern": self.config.get("rank_pattern", {}),
            "layers": [vars(x) for x in self.layers],
            "warnings": list(self.warnings),
        }


def compress(
    source: str | Path,
    out_dir: str | Path,
    *,
    rank: int | None = None,
    policy: str | None = None,
    per_layer: bool = False,
    ranks: Mapping[str, int] | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    options: OpenOptions | None = None,
) -> CompressResult:
    """Write the optimal rank-k truncation of every layer as a new PEFT adapter.

    At most one way of choosing ranks: ``rank=K`` (every layer min(K, r, out, in), capped
    layers named in the warnings); ``per_layer=True`` (each layer its recommended rank,
    written as ``rank_pattern``); ``ranks={layer: k}`` (exactly these, capped like ``rank``;
    layers not named keep their r); otherwise the audit's uniform recommended rank
    (:attr:`AdapterAudit.recommendation`) under ``policy`` (default ``energy@0.9``).

    Args:
        source: adapter folder.
        out_dir: where to write ``adapter_config.json`` and ``adapter_model.safetensors``.
        dtype: ``F32``, ``F16``, ``BF16`` or ``F64``; default: the input's dtype.
        overwrite: replace an existing adapter in ``out_dir``.
        options: how to open ``source`` (Hub token, revision, caps; see :class:`OpenOptions`).

    Raises:
        UsageError: several rank choices, rank < 1, unknown dtype, existing output.
        UntrainedAdapterError: no layer carries an update, so there is no rank to choose.
        UnsupportedAdapterError: AdaLoRA input (its rank masks do not survive truncation).
        AdapterFormatError: a layer with NaN/Inf cannot be truncated.

    Example:
        >>> gradience.compress("examples/overprovisioned-r64", "r8/", rank=8)  # doctest: +SKIP
    """
    if sum([rank is not None, ranks is not None, per_layer or policy is not None]) > 1:
        raise UsageError("choose exactly one of a rank, a policy or per-layer ranks", param="rank")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise UsageError(f"rank must be a positive integer, got {rank!r}", param="rank")
    if dtype is not None and dtype.upper() not in OUT_DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(OUT_DTYPES)}", param="dtype")
    out = Path(out_dir)
    if (out / CONFIG_NAME).exists() and not overwrite:
        raise UsageError(
            f"{out} already holds an adapter; choose another folder or overwrite it", param="overwrite"
        )
    with open_adapter(source, options) as adapter:
        if Path(adapter.path).resolve() == out.resolve():
            raise UsageError("the output folder must differ from the input folder", param="out")
        if adapter.config.peft_type != "LORA":
            raise UnsupportedAdapterError(
                f"compress writes LoRA adapters; {adapter.config.peft_type} input is not supported"
            )
        if ranks is not None:
            chosen, warnings = _explicit_ranks(adapter, ranks)
        else:
            chosen, warnings = _target_ranks(adapter, rank, policy, per_layer)
        return _write(adapter, out, chosen, dtype, progress, warnings)


def _explicit_ranks(adapter: Adapter, ranks: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """Caller-chosen ranks per layer (a bench's candidate), each capped at what the layer holds."""
    names = {x.name for x in adapter.layers}
    unknown = sorted(set(ranks) - names)
    if unknown:
        raise UsageError(f"no LoRA layer named {unknown[0]!r} in this adapter", param="ranks")
    bad = [k for k in ranks.values() if not isinstance(k, int) or k < 1]
    if bad:
        raise UsageError(f"ranks must be positive integers, got {bad[0]!r}", param="ranks")
    out = {x.name: min(ranks.get(x.name, x.r), x.attainable_rank) for x in adapter.layers}
    capped = [x.name for x in adapter.layers if ranks.get(x.name, x.r) > x.attainable_rank]
    warnings = (
        [f"{len(capped)} layer(s) capped at what they can hold: {', '.join(capped[:5])}"] if capped else []
    )
    return out, warnings


def _target_ranks(adapter: Adapter, rank, policy, per_layer) -> tuple[dict[str, int], list[str]]:
    """Each layer's output rank, and warnings about ranks that had to be capped.

    Without an explicit rank the ranks come from the audit's :class:`Recommendation`
    (uniform, or per layer), so what ``compress`` writes is what every surface recommends.
    """
    warnings: list[str] = []
    if rank is not None:
        ranks = {x.name: min(rank, x.attainable_rank) for x in adapter.layers}
        by_r = [x for x in adapter.layers if rank > x.r and x.attainable_rank == x.r]
        by_width = [x for x in adapter.layers if rank > x.attainable_rank and x.attainable_rank < x.r]
        if by_r:
            warnings.append(f"rank {rank} is above r in {len(by_r)} layer(s): they keep their r")
        for x in by_width:
            warnings.append(
                f"{x.name}: rank capped to {x.attainable_rank}, the most a {x.out_features}×{x.in_features} "
                "layer can hold"
            )
        return ranks, warnings
    result = audit(adapter, policy=policy or "energy@0.9")
    bad = [x.name for x in result.layers if not x.valid]
    if bad:
        raise AdapterFormatError(f"layer {bad[0]} has NaN/Inf values; it cannot be compressed")
    rec = result.recommendation
    if not rec.ok:
        raise UntrainedAdapterError(f"nothing to compress: {rec.reason}", path=adapter.path)
    if per_layer:
        # untrained layers (B = 0) keep rank 1: any rank stores the same zero update
        return {x.name: rec.per_layer.get(x.name, 1) for x in result.layers}, warnings
    return {x.name: min(rec.rank, x.layer.attainable_rank) for x in result.layers}, warnings


def _write(adapter: Adapter, out: Path, ranks: dict[str, int], dtype, progress, warnings) -> CompressResult:
    cfg = adapter.config
    tensors: dict[str, Any] = {}
    reports: list[LayerCompression] = []
    n = len(adapter.layers)
    for i, layer in enumerate(adapter.layers):
        f = adapter.factors(layer)
        if not (np.isfinite(f.a).all() and np.isfinite(f.b).all()):
            raise AdapterFormatError(
                f"layer {layer.name} has NaN/Inf values; it cannot be compressed", path=adapter.path
            )
        k = ranks[layer.name]
        svd = svd_qr(f.a, f.b, layer.scale)
        s = svd.s[:k]
        a_new, b_new = lora_factors(svd.u[:, :k], s, svd.vt[:k], cfg.scale(layer.alpha, k))
        total = float(np.dot(svd.s, svd.s))
        kept = float(np.dot(s, s)) / total if total > 0 else 1.0
        kept = min(kept, 1.0)
        reports.append(LayerCompression(layer.name, layer.r, k, kept, math.sqrt(max(0.0, 1.0 - kept))))
        out_dtype = (dtype or layer.dtype).upper()
        if out_dtype not in OUT_DTYPES:
            out_dtype = "F32"
        a_shape = (k, *layer.a_shape[1:])
        b_shape = (layer.b_shape[0], k, *layer.b_shape[2:])
        tensors[layer.a_key] = encode(a_new.reshape(a_shape), out_dtype)
        tensors[layer.b_key] = encode(b_new.reshape(b_shape), out_dtype)
        if layer.magnitude_key:
            tensors[layer.magnitude_key] = adapter.passthrough(layer.magnitude_key)
        if progress is not None:
            progress(i + 1, n)
    if any(x.magnitude_key for x in adapter.layers):
        warnings.append(
            "DoRA magnitude vectors were copied unchanged; DoRA renormalises W + ΔW, so the "
            "compressed adapter's effect is close to, not exactly, the truncated update"
        )
    for name in adapter.ignored:
        tensors[name] = adapter.passthrough(name)
    config = _new_config(adapter, ranks)
    write_peft_adapter(out, tensors, config)
    before = sum(x.params for x in adapter.layers)
    after = sum(ranks[x.name] * (x.in_features + x.out_features) for x in adapter.layers)
    return CompressResult(out, tuple(reports), config, before, after, tuple(warnings))


def _new_config(adapter: Adapter, ranks: dict[str, int]) -> dict[str, Any]:
    cfg = adapter.config
    default_r = most_common_rank(ranks)
    names = [x.name for x in adapter.layers]
    rank_pattern = {x.name: ranks[x.name] for x in adapter.layers if ranks[x.name] != default_r}
    alpha_pattern = {x.name: x.alpha for x in adapter.layers if x.alpha != cfg.lora_alpha}
    config = dict(cfg.raw)
    config["r"] = default_r
    config["rank_pattern"] = exact_pattern(rank_pattern, names)
    config["alpha_pattern"] = exact_pattern(alpha_pattern, names)
    return config
