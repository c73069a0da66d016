"""``gradience merge``: merge adapter-only repos into a new PEFT adapter, no base model.

Linear merges stay in factor space: Σ wᵢ·sᵢ·Bᵢ·Aᵢ = [w₁s₁B₁ … wₙsₙBₙ]·[A₁; …; Aₙ], re-factored
by the QR route and truncated to the energy threshold (``energy=1.0`` keeps it exact). TIES
and DARE act entry by entry: each layer's dense update is built once, merged, and re-factored
with a randomized truncated SVD whose residual is reported. One layer at a time, so memory
does not grow with the number of layers.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradience.adapters.config import exact_pattern
from gradience.adapters.layout import LoraLayer
from gradience.adapters.load import CONFIG_NAME, Adapter
from gradience.adapters.write import PeftAdapterWriter, lora_factors, most_common_rank
from gradience.errors import ConfigError, IncompatibleAdaptersError, UnsupportedAdapterError, UsageError
from gradience.merge.pairwise import why_incompatible
from gradience.merge.recommend import PLAN_SCHEMA
from gradience.merge.strategies import BLOCK, get_strategy
from gradience.open import OpenOptions, open_adapter
from gradience.spectral.factored import svd_qr
from gradience.spectral.metrics import energy_rank
from gradience.spectral.randomized import randomized_svd

__all__ = ["LayerMerge", "MergeResult", "merge"]


@dataclass(frozen=True)
class LayerMerge:
    """How one layer was merged: strategy, weights, density, output rank, and the relative
    Frobenius residual of the re-factoring (‖M − M_k‖/‖M‖; 0 up to rounding for exact)."""

    name: str
    strategy: str
    weights: tuple[float, ...]
    density: float
    rank: int
    residual: float


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    layers: tuple[LayerMerge, ...]
    config: dict[str, Any]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gradience.merge/v1",
            "out_dir": str(self.out_dir),
            "r": self.config["r"],
            "rank_pattern": self.config.get("rank_pattern", {}),
            "layers": [{**vars(x), "weights": list(x.weights)} for x in self.layers],
            "warnings": list(self.warnings),
        }


def merge(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    plan: str | Path | dict[str, Any] | None = None,
    strategy: str = "auto",
    weights: Sequence[float] | None = None,
    density: float | None = None,
    energy: float | None = None,
    max_rank: int | None = None,
    seed: int = 0,
    dtype: str = "F32",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    allow_different_base: bool = False,
    options: OpenOptions | None = None,
) -> MergeResult:
    """Merge two or more LoRA adapters into one PEFT adapter without the base model.

    Args:
        plan: a merge plan (path or dict, schema ``gradience.merge_plan/v1``), e.g. from
            ``gradience merge-audit --plan-out``. Overrides ``strategy``.
        strategy: ``auto`` (run the merge audit and follow its plan), ``linear``, ``ties``,
            ``dare_linear`` or ``dare_ties`` for every layer.
        weights: one weight per adapter (default: equal, summing to 1).
        density: for TIES/DARE with a fixed strategy (default 0.5).
        energy: truncate each merged update to the top directions holding this fraction of
            its energy. Default None: no truncation — linear merges are exact, TIES/DARE keep
            every direction up to the rank cap.
        max_rank: cap on any output layer's rank (default: the sum of the input ranks).
        seed: seeds DARE's drop masks and the randomized SVD.
        allow_different_base: merge adapters whose configs name different base models
            (refused by default: such a merge is meaningless).
        options: how to open the adapters (Hub token, revision, caps; see :class:`OpenOptions`).

    Raises:
        UsageError: bad weights, energy, plan, or existing output without ``overwrite``.
        IncompatibleAdaptersError: different base models (without ``allow_different_base``)
            or no layer in common.
        UnsupportedAdapterError: DoRA inputs (their magnitudes cannot be merged here).
        AdapterFormatError: NaN/Inf in a layer, shapes that differ between adapters.
    """
    n = len(sources)
    if n < 2:
        raise UsageError("merge needs at least two adapters")
    if energy is not None and not 0 < energy <= 1:
        raise UsageError(f"energy must be in (0, 1], got {energy}", param="energy")
    if weights is not None and len(weights) != n:
        raise UsageError(f"weights need {n} values (one per adapter), got {len(weights)}", param="weights")
    if max_rank is not None and max_rank < 1:
        raise UsageError("max rank must be at least 1", param="max_rank")
    out = Path(out_dir)
    if (out / CONFIG_NAME).exists() and not overwrite:
        raise UsageError(
            f"{out} already holds an adapter; choose another folder or overwrite it", param="overwrite"
        )
    if plan is None and strategy == "auto":
        from gradience.merge.pairwise import merge_audit

        plan = merge_audit(list(sources), options=options).plan()
    elif plan is None:
        get_strategy(strategy)
        w = list(weights) if weights is not None else [1.0 / n] * n
        plan = {"schema": PLAN_SCHEMA, "default": {"strategy": strategy, "weights": w,
                "density": 0.5 if density is None else density}, "layers": {}}  # fmt: skip
    plan = _load_plan(plan, n)
    if weights is not None:  # explicit weights win over the plan's
        plan["default"]["weights"] = list(weights)
        for spec in plan["layers"].values():
            spec["weights"] = list(weights)
    with ExitStack() as stack:
        adapters = [stack.enter_context(open_adapter(s, options)) for s in sources]
        _check_compatible(adapters, allow_different_base)
        result = _merge(adapters, out, plan, energy, max_rank, seed, dtype, progress)
    stale = _plan_mismatch(plan, adapters)
    return replace(result, warnings=(stale, *result.warnings)) if stale else result


def _plan_mismatch(plan: dict[str, Any], adapters: list[Adapter]) -> str | None:
    """A plan's per-layer weights and densities were sized for the adapters it names; given
    others (or the same in another order) they still apply, so say so rather than refuse."""
    planned = plan.get("adapters")
    if not isinstance(planned, list) or not planned:
        return None
    given = [ad.label for ad in adapters]

    def same(x: str) -> str:
        p = Path(x)
        return str(p.resolve()) if p.exists() else x

    if [same(str(x)) for x in planned] == [same(x) for x in given]:
        return None
    return (
        f"the merge plan was made for {', '.join(map(str, planned))}, not {', '.join(given)}: its "
        "per-layer strategies and weights were chosen for those adapters"
    )


def _check_compatible(adapters: list[Adapter], allow_different_base: bool) -> None:
    """Refuse merges that cannot mean anything, before any byte is written — by the rule that
    gives merge-audit its INCOMPATIBLE verdict, applied to all the adapters at once."""
    shapes = [{x.name: (x.out_features, x.in_features) for x in ad.layers} for ad in adapters]
    # One module name with two shapes means two different models, whatever the configs say
    # (and no override can add a 64×64 update to a 32×32 one).
    mismatch = None
    for name in dict.fromkeys(n for s in shapes for n in s):
        seen = list(dict.fromkeys(s[name] for s in shapes if name in s))
        if len(seen) > 1:
            mismatch = (name, seen)
            break
    n_shared = len(set(shapes[0]).intersection(*shapes[1:]))
    bases = [] if allow_different_base else [ad.config.base_model for ad in adapters]
    found = why_incompatible(bases, mismatch, n_shared)
    if found is not None:
        kind, reason = found
        raise IncompatibleAdaptersError(reason, param="allow_different_base" if kind == "base" else None)


def _load_plan(plan: str | Path | dict[str, Any], n: int) -> dict[str, Any]:
    if not isinstance(plan, dict):
        try:
            plan = json.loads(Path(plan).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise UsageError(f"merge plan not found: {plan}") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"merge plan {plan} is not valid JSON") from e
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA:
        raise ConfigError(f"not a merge plan: expected schema {PLAN_SCHEMA!r}")
    plan = json.loads(json.dumps(plan))  # private copy
    plan.setdefault("default", {"strategy": "linear", "weights": [1.0 / n] * n, "density": 1.0})
    plan.setdefault("layers", {})
    # A plan is a file the user may have edited: every shape is checked here, so a bad one is
    # a one-line ConfigError rather than a crash halfway through writing the merge.
    if not isinstance(plan["layers"], dict):
        raise ConfigError("merge plan: 'layers' must map layer names to settings")
    for where, spec in [("default", plan["default"]), *plan["layers"].items()]:
        if not isinstance(spec, dict):
            raise ConfigError(f"merge plan entry {where!r} must be an object of settings")
        name = spec.get("strategy", "linear")
        if not isinstance(name, str):
            raise ConfigError(f"merge plan entry {where!r}: 'strategy' must be a strategy name")
        get_strategy(name)
        cf = spec.get("compress_first")
        if cf is not None and not (
            isinstance(cf, dict)
            and all(
                k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1) for k in cf.values()
            )
        ):
            raise ConfigError(f"merge plan entry {where!r}: 'compress_first' must map a/b to a rank (≥ 1)")
        w = spec.get("weights", [1.0 / n] * n)
        if not (isinstance(w, list) and len(w) == n and all(isinstance(x, int | float) for x in w)):
            raise ConfigError(f"merge plan entry {where!r}: 'weights' must list {n} numbers")
        d = spec.get("density", 1.0)
        if not (isinstance(d, int | float) and 0 < d <= 1):
            raise ConfigError(f"merge plan entry {where!r}: 'density' must be in (0, 1]")
    return plan


def _truncated(adapter: Adapter, layer: LoraLayer, k: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, scale) of a layer, optionally truncated to rank k first (compress-first)."""
    f = adapter.factors(layer)
    a, b = f.effective_a().astype(np.float64), f.b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        from gradience.errors import AdapterFormatError

        raise AdapterFormatError(
            f"layer {layer.name} has NaN/Inf values; it cannot be merged", path=adapter.path
        )
    if k is not None and k < layer.r:
        svd = svd_qr(a, b, layer.scale)
        return svd.vt[:k], svd.u[:, :k] * svd.s[:k], 1.0
    return a, b, layer.scale


def _merge(adapters: list[Adapter], out: Path, plan, energy, max_rank, seed, dtype, progress) -> MergeResult:
    for ad in adapters:
        if any(x.magnitude_key for x in ad.layers):
            raise UnsupportedAdapterError(
                f"{ad.label} is a DoRA adapter: its magnitude vectors cannot be merged in factor space"
            )
    warnings: list[str] = []
    bases = {ad.config.base_model for ad in adapters if ad.config.base_model}
    if len(bases) > 1:
        warnings.append(f"merged across different base models (explicitly allowed): {sorted(bases)}")
    index = [{x.name: x for x in ad.layers} for ad in adapters]
    names = list(dict.fromkeys(x.name for ad in adapters for x in ad.layers))
    mask_rng = np.random.default_rng([seed, 0])  # DARE drop masks, layer after layer
    svd_rng = np.random.default_rng([seed, 1])  # randomized SVD sketches
    ranks: dict[str, int] = {}
    reports = []
    created = not out.exists()
    try:
        with PeftAdapterWriter(out, dtype) as writer:
            for step, name in enumerate(names):
                layer, k, lm, a_new, b_new = _merge_layer(adapters, index, name, plan, energy, max_rank,
                                                         mask_rng, svd_rng)  # fmt: skip
                ranks[name] = k
                reports.append(lm)
                # Scale-free factors (B·A is the merged update): each layer's alpha is set to
                # its rank below, so PEFT's scale α/r is 1 and the bytes are final right away.
                a_key = f"base_model.model.{name}.lora_{'embedding_' if layer.kind == 'embedding' else ''}A"
                b_key = a_key[:-1] + "B"
                if layer.kind != "embedding":
                    a_key, b_key = a_key + ".weight", b_key + ".weight"
                writer.add(a_key, a_new.reshape((k, *layer.a_shape[1:])))
                writer.add(b_key, b_new.reshape((layer.b_shape[0], k, *layer.b_shape[2:])))
                del a_new, b_new
                if progress is not None:
                    progress(step + 1, len(names))
            config = _output_config(adapters, names, ranks, warnings)
            writer.finish(config)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if the failed merge left it empty
        raise
    return MergeResult(out, tuple(reports), config, tuple(warnings))


def _merge_layer(adapters, index, name, plan, energy, max_rank, mask_rng, svd_rng):
    """Merge one layer: (layer, output rank k, report, A [k, in], B [out, k]) with B·A the
    merged update (truncated to rank k)."""
    present = [i for i in range(len(adapters)) if name in index[i]]
    layers = [index[i][name] for i in present]
    shapes = {(x.out_features, x.in_features, x.kind) for x in layers}
    if len(shapes) > 1:
        from gradience.errors import AdapterFormatError

        raise AdapterFormatError(f"layer {name} has different shapes across the adapters; cannot merge")
    spec = plan["layers"].get(name, plan["default"])
    strategy = get_strategy(spec.get("strategy", "linear"))
    w_all = spec.get("weights", plan["default"]["weights"])
    d = float(spec.get("density", 1.0)) if strategy.uses_density else 1.0
    cf = spec.get("compress_first") or {}
    parts = [
        _truncated(adapters[i], index[i][name], cf.get("ab"[i]) if len(adapters) == 2 else None)
        for i in present
    ]
    w = [float(w_all[i]) for i in present]
    cap = max_rank or sum(a.shape[0] for a, _, _ in parts)
    cap = min(cap, layers[0].out_features, layers[0].in_features)
    if not strategy.dense:
        b_cat = np.hstack([wi * s * b for wi, (_, b, s) in zip(w, parts, strict=True)])
        a_cat = np.vstack([a for a, _, _ in parts])
        svd = svd_qr(a_cat, b_cat, 1.0)
        # Energies in units of σ₁², so σ near 1e±160 neither overflow nor underflow when squared.
        unit = float(svd.s[0]) if svd.s.size and svd.s[0] > 0 else 1.0
        shift = 0
        total = float(np.dot(svd.s / unit, svd.s / unit))
        exact = energy is None or energy >= 1
        k = max(1, min(cap, int(np.count_nonzero(svd.s > 0)) if exact else energy_rank(svd.s, energy)))
    else:
        # float32 task vectors and merge (the rules work in blocks); sums of squares in float64.
        # The tasks share one power-of-two scale 2^-shift that puts every entry at or below 1:
        # float32 would otherwise overflow or flush updates near 1e±40 (TIES and DARE are
        # homogeneous, merge(c·τ) = c·merge(τ), so the scale comes back exactly afterwards).
        shift, scaled = _common_scale(parts)
        del parts
        tasks = [b.astype(np.float32) @ a.astype(np.float32) for a, b in scaled]
        del scaled
        merged = strategy.rule(tasks, w, d, mask_rng)
        del tasks
        total = _sum_squares(merged)
        svd = randomized_svd(merged, cap, rng=svd_rng)
        del merged
        unit = 1.0
        tail = math.sqrt(max(0.0, total - float(svd.s @ svd.s)))
        k = cap if energy is None else max(1, min(cap, energy_rank(np.append(svd.s, tail), energy)))
        k = min(k, svd.s.size)
    kept = float(np.dot(svd.s[:k] / unit, svd.s[:k] / unit))
    residual = math.sqrt(max(0.0, total - kept) / total) if total > 0 else 0.0
    s_out = np.ldexp(svd.s[:k], shift)  # back from the tasks' common scale (0 for linear)
    a_new, b_new = lora_factors(svd.u[:, :k], s_out, svd.vt[:k], 1.0)
    return layers[0], k, LayerMerge(name, strategy.name, tuple(w), d, k, residual), a_new, b_new


def _sum_squares(x: np.ndarray) -> float:
    """‖x‖²_F accumulated in float64, a block at a time."""
    flat = x.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, BLOCK):
        c = flat[start : start + BLOCK].astype(np.float64)
        total += float(c @ c)
    return total


def _common_scale(
    parts: list[tuple[np.ndarray, np.ndarray, float]],
) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """(shift, [(A', B')]) with B'·A' = 2^-shift·sᵢ·Bᵢ·Aᵢ for every task, every entry of
    B'·A' at most 1 in magnitude, and A', B' themselves within float32's range."""
    exps = []
    for a, b, s in parts:
        ma, mb = float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(s * b), initial=0.0))
        exps.append(None if ma == 0 or mb == 0 else (math.frexp(ma)[1], math.frexp(mb)[1]))
    r = max(a.shape[0] for a, _, _ in parts)
    live = [ea + eb for e in exps if e is not None for ea, eb in [e]]
    shift = (max(live) + math.ceil(math.log2(max(r, 1)))) if live else 0
    scaled = []
    for (a, b, s), e in zip(parts, exps, strict=True):
        if e is None:
            scaled.append((np.zeros_like(a), np.zeros_like(b)))
            continue
        ea, _ = e
        scaled.append((np.ldexp(a, -ea), np.ldexp(s * b, ea - shift)))
    return shift, scaled


def _output_config(adapters, names, ranks, warnings) -> dict[str, Any]:
    """PEFT config: ``r`` the most common rank, others in ``rank_pattern``; every layer's
    alpha equals its rank (``lora_alpha = r``, ``alpha_pattern`` = ``rank_pattern``), so
    each scale α/r is 1 and the stored factors are the merged update as they are."""
    default_r = most_common_rank(ranks)
    others = {n: k for n, k in ranks.items() if k != default_r}
    config = dict(adapters[0].config.raw)
    if any(ad.config.modules_to_save for ad in adapters):
        warnings.append(
            "modules_to_save tensors are not merged; the merged adapter leaves those modules as in the base"
        )
    if any(key.endswith((".lora_B.bias", ".lora_A.bias")) for ad in adapters for key in ad.ignored):
        warnings.append(
            "LoRA bias terms (lora_bias) are not merged; the merged adapter has none (lora_bias off)"
        )
    if config.get("lora_bias"):
        config["lora_bias"] = False  # no bias tensors are written
    config.update(
        peft_type="LORA", r=default_r, lora_alpha=float(default_r), use_rslora=False, use_dora=False,
        rank_pattern=exact_pattern(others, names),
        alpha_pattern=exact_pattern({n: float(k) for n, k in others.items()}, names), modules_to_save=None,
        target_modules=sorted({n.rsplit(".", 1)[-1] for n in names}),
    )  # fmt: skip
    for key in (
        "init_r",
        "target_r",
        "tinit",
        "tfinal",
        "deltaT",
        "beta1",
        "beta2",
        "orth_reg_weight",
        "total_step",
    ):
        config.pop(key, None)
    return config
