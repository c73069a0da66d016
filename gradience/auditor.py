"""Spectral audit of an adapter: per-layer metrics, 0.11-compatible summary, suggestions.

Every number here is a function of the singular values of each scaled update
ΔW = s·B·A (see ``docs/metrics.md`` for conventions). Results are frozen dataclasses whose
``to_dict()`` matches ``gradience/schemas/audit.schema.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gradience.adapters.config import exact_pattern
from gradience.adapters.layout import LoraLayer
from gradience.adapters.load import Adapter
from gradience.open import OpenOptions, open_adapter, resolve_options
from gradience.spectral import metrics as M
from gradience.spectral.compute import layer_spectra
from gradience.spectral.policies import get_policy

__all__ = ["ROW_VERSION", "SCHEMA", "AdapterAudit", "LayerAudit", "Recommendation", "audit"]

SCHEMA = "gradience.audit/v1"
#: Version of the flat rows of :meth:`AdapterAudit.to_row` / :meth:`AdapterAudit.layer_rows`;
#: bumped when a column changes meaning or type (new columns do not bump it).
ROW_VERSION = 1
DEFAULT_POLICY = "energy@0.9"
ENERGY_LEVELS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class LayerAudit:
    """Metrics of one LoRA layer. σ-derived values refer to the *scaled* update unless the
    name says otherwise (``sigma_max`` and ``frob_sq`` keep 0.11's unscaled meaning).

    Attributes:
        name: PEFT module name.
        singular_values: σ of the scaled ΔW, descending, length min(r, out, in) — a rank above
            the layer's width adds no direction (empty when invalid).
        flags: subset of ``untrained``, ``invalid``, ``over_provisioned``.
        suggested_ranks: policy spec → suggested rank (0 when untrained).
        dora_magnitude: min / max / mean / norm of the DoRA magnitude vector, or None.
    """

    layer: LoraLayer
    singular_values: np.ndarray
    flags: tuple[str, ...]
    suggested_ranks: dict[str, int] = field(default_factory=dict)
    dora_magnitude: dict[str, float] | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def valid(self) -> bool:
        return "invalid" not in self.flags

    @property
    def trained(self) -> bool:
        return self.valid and "untrained" not in self.flags

    @property
    def stable_rank(self) -> float | None:
        return M.stable_rank(self.singular_values) if self.valid else None

    @property
    def utilization(self) -> float | None:
        return None if not self.valid else M.stable_rank(self.singular_values) / self.layer.r

    def energy_rank(self, t: float) -> int | None:
        return M.energy_rank(self.singular_values, t) if self.valid else None

    def to_dict(self, *, top_k: int | None = None) -> dict[str, Any]:
        ly, s, ok = self.layer, self.singular_values, self.valid
        scale = abs(ly.scale)
        sig1 = float(s[0]) if ok else None
        e = M.energy(s) if ok else None
        row: dict[str, Any] = {
            "name": ly.name,
            "module_type": ly.module_type,
            "kind": ly.kind,
            "r": ly.r,
            "alpha": ly.alpha,
            "scale": ly.scale,
            "a_key": ly.a_key,
            "b_key": ly.b_key,
            "a_shape": list(ly.a_shape),
            "b_shape": list(ly.b_shape),
            "dtype": ly.dtype,
            "params": ly.params,
            "stable_rank": self.stable_rank,
            "effective_rank": M.effective_rank(s) if ok else None,
            "effective_rank_energy": M.effective_rank_energy(s) if ok else None,
            "utilization": self.utilization,
            "sigma_max": sig1 / scale if ok and scale else sig1,
            "frob_sq": e / scale**2 if ok and scale else e,
            "sigma_max_scaled": sig1,
            "frob_norm_scaled": math.sqrt(e) if ok else None,
            "energy_rank_90": self.energy_rank(0.90),
            "energy_rank_95": self.energy_rank(0.95),
            "energy_rank_99": self.energy_rank(0.99),
            "singular_values": [float(x) for x in s] if ok else None,
            "top_singular_values": [float(x) for x in s[:top_k]] if ok and top_k else None,
            "suggested_ranks": dict(self.suggested_ranks),
            "flags": list(self.flags),
            "dora_magnitude": self.dora_magnitude,
        }
        if not top_k:
            row.pop("top_singular_values")
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> LayerAudit:
        """Rebuild a layer from its ``to_dict()`` row (needs ``singular_values``)."""
        s = row.get("singular_values")
        layer = LoraLayer(
            name=row["name"],
            kind=row["kind"],
            a_key=row["a_key"],
            b_key=row["b_key"],
            e_key=None,
            magnitude_key=None,
            a_shape=tuple(row["a_shape"]),
            b_shape=tuple(row["b_shape"]),
            r=row["r"],
            alpha=row["alpha"],
            scale=row["scale"],
            config_r=row["r"],
            module_type=row["module_type"],
            dtype=row["dtype"],
        )
        return cls(
            layer,
            np.asarray(s if s is not None else [], dtype=np.float64),
            tuple(row["flags"]),
            dict(row.get("suggested_ranks") or {}),
            row.get("dora_magnitude"),
        )


@dataclass(frozen=True)
class Recommendation:
    """The one rank recommendation every surface shows (terminal, JSON, Space, badge, PR
    comments) and ``compress`` applies by default.

    The uniform ``rank`` is the 90th percentile of the per-layer policy ranks over trained
    layers, rounded up and never above the adapter's own r: 90% of the layers keep their
    policy's energy at that rank. ``per_layer`` holds each trained layer's own policy rank
    (capped at its r and its attainable rank); ``rank_pattern`` lists the layers whose rank
    differs from ``rank``, keyed so that ``LoraConfig(r=rank, rank_pattern=rank_pattern)``
    reproduces ``per_layer`` exactly. An untrained adapter gets no rank (``status`` says
    why), never ``r=None``.

    Attributes:
        status: ``ok``, ``untrained`` (no layer carries an update) or ``invalid`` (no
            valid layer).
        policy: the rank policy spec behind the numbers, e.g. ``energy@0.9``.
        rank: the uniform recommended rank, or None unless ``status == "ok"``.
        nominal_r: the adapter's configured r (most common layer rank).
        per_layer: layer name → recommended rank (trained layers only).
        rank_pattern: ``LoraConfig.rank_pattern`` for ``per_layer`` given ``r=rank``.
        reason: one sentence on where the numbers come from.
    """

    status: str
    policy: str
    rank: int | None
    nominal_r: int | None
    per_layer: dict[str, int]
    rank_pattern: dict[str, int]
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @staticmethod
    def describe(rec: Mapping[str, Any] | None) -> str:
        """A recommendation (as ``to_dict`` gives it) in a table cell: ``r=4 of 16``, ``none
        (untrained)``, or ``—`` for none at all — the same words in the terminal and Markdown."""
        if rec is None:
            return "—"
        if rec["status"] != "ok":
            return f"none ({rec['status']})"
        return f"r={rec['rank']} of {rec['nominal_r']}"

    @property
    def ratio(self) -> float | None:
        """Recommended / nominal rank (what a compression to ``rank`` keeps)."""
        return self.rank / self.nominal_r if self.rank is not None and self.nominal_r else None

    def lora_config(self) -> str | None:
        """A ``peft.LoraConfig(...)`` snippet, or None when there is nothing to recommend."""
        if not self.ok:
            return None
        lines = ["from peft import LoraConfig", "", "config = LoraConfig(", f"    r={self.rank},"]
        if self.rank_pattern:
            lines.append("    rank_pattern={")
            lines += [f"        {k!r}: {v}," for k, v in self.rank_pattern.items()]
            lines.append("    },")
        lines += ["    # ... your other settings (lora_alpha, target_modules, ...)", ")"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "policy": self.policy,
            "rank": self.rank,
            "nominal_r": self.nominal_r,
            "ratio": self.ratio,
            "per_layer": dict(self.per_layer),
            "rank_pattern": dict(self.rank_pattern),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recommendation:
        return cls(
            status=d["status"],
            policy=d["policy"],
            rank=d.get("rank"),
            nominal_r=d.get("nominal_r"),
            per_layer=dict(d.get("per_layer") or {}),
            rank_pattern=dict(d.get("rank_pattern") or {}),
            reason=d.get("reason", ""),
        )


@dataclass(frozen=True)
class AdapterAudit:
    """The audit of one adapter. ``to_dict()`` is the ``--json`` output.

    Attributes:
        source: where the adapter came from (``{"path": ...}`` for a folder).
        adapter: type, rank, α, base model, weights file and format.
        layers: one :class:`LayerAudit` per LoRA layer, in module order.
        policy: the policy spec used for ``rank_suggestions``.
        policies: every policy spec evaluated per layer.
        ignored_tensors: non-LoRA tensors in the file (name, shape, dtype).
        warnings: things worth knowing that did not stop the audit.
    """

    source: dict[str, Any]
    adapter: dict[str, Any]
    layers: tuple[LayerAudit, ...]
    policy: str
    policies: tuple[str, ...]
    ignored_tensors: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def flags(self) -> list[str]:
        """Adapter-level flags: ``untrained`` when no valid layer carries any update,
        ``invalid`` when some layer is invalid, ``over_provisioned`` when the median layer
        needs ≤ r/4 directions for 90% of its energy."""
        valid = [x for x in self.layers if x.valid]
        flags = []
        if valid and not any(x.trained for x in valid):
            flags.append("untrained")
        if len(valid) < len(self.layers):
            flags.append("invalid")
        trained = [x for x in valid if x.trained]
        if trained:
            er = float(np.median([x.energy_rank(0.9) for x in trained]))
            r = float(np.median([x.layer.r for x in trained]))
            if er <= r / 4:
                flags.append("over_provisioned")
        return flags

    def summary(self) -> dict[str, Any]:
        """The 0.11 summary fields (same names and meanings) plus Gradience's additions.

        Aggregates run over valid layers; untrained layers count with zero metrics, as in
        0.11. Rank suggestions use trained layers only — an untrained adapter gets none.
        """
        valid = [x for x in self.layers if x.valid]
        sr = [x.stable_rank for x in valid]
        params = [x.layer.params for x in valid]
        er90 = [x.energy_rank(0.9) for x in valid]
        rows = {x.name: x.to_dict() for x in valid}
        by_type: dict[str, dict[str, Any]] = {}
        for t in ("attn", "mlp", "other"):
            group = [x for x in valid if x.layer.module_type == t]
            if group:
                g_er = [x.energy_rank(0.9) for x in group]
                by_type[t] = {
                    "n_layers": len(group),
                    "params": sum(x.layer.params for x in group),
                    "stable_rank_mean": _mean([x.stable_rank for x in group]),
                    "utilization_mean": _mean([x.utilization for x in group]),
                    "energy_rank_90_p50": _pct(g_er, 50),
                    "energy_rank_90_p90": _pct(g_er, 90),
                }
        trained = [x for x in valid if x.trained]
        t_er = [x.suggested_ranks[self.policy] for x in trained]
        return {
            "total_lora_params": sum(x.layer.params for x in self.layers),
            "n_layers": len(self.layers),
            "stable_rank_mean": _mean(sr),
            "stable_rank_median": float(np.median(sr)) if sr else None,
            "stable_rank_weighted_mean": (
                float(np.average(sr, weights=params)) if sr and sum(params) else None
            ),
            "effective_rank_mean": _mean([rows[x.name]["effective_rank"] for x in valid]),
            "effective_rank_energy_mean": _mean([rows[x.name]["effective_rank_energy"] for x in valid]),
            "utilization_mean": _mean([x.utilization for x in valid]),
            "utilization_median": float(np.median([x.utilization for x in valid])) if valid else None,
            "energy_rank_90_p50": _pct(er90, 50),
            "energy_rank_90_p90": _pct(er90, 90),
            "suggested_r_global_median": _pow2(_pct(t_er, 50)),
            "suggested_r_global_90": _pow2(_pct(t_er, 90)),
            "by_type": by_type,
            "n_valid": len(valid),
            "n_invalid": len(self.layers) - len(valid),
            "n_untrained": len(valid) - len(trained),
            "n_over_provisioned": sum("over_provisioned" in x.flags for x in self.layers),
            "delta_sigma_max_scaled_mean": _mean([rows[x.name]["sigma_max_scaled"] for x in valid]),
            "delta_frob_norm_scaled_mean": _mean([rows[x.name]["frob_norm_scaled"] for x in valid]),
            "flags": self.flags,
        }

    def rank_suggestions(self, spec: str | None = None) -> dict[str, Any]:
        """Global and per-layer suggestions under one policy (default: ``self.policy``).

        ``rank_pattern`` is keyed by PEFT module names and lists only layers whose
        suggestion differs from ``default_r``, so it drops into
        ``LoraConfig(r=default_r, rank_pattern=...)``. Untrained layers get no suggestion.
        """
        spec = spec or self.policy
        trained = [x for x in self.layers if x.trained]
        ks = {x.name: x.suggested_ranks[spec] for x in trained}
        if not ks:
            return {
                "policy": spec, "global_p50": None, "global_p90": None,
                "suggested_r_global_median": None, "suggested_r_global_90": None,
                "default_r": None, "rank_pattern": {}, "by_module_type_p90": {},
                "untrained_layers": [x.name for x in self.layers if x.valid],
            }  # fmt: skip
        counts = Counter(ks.values())
        default_r = max(counts, key=lambda k: (counts[k], k))
        pattern = {name: k for name, k in ks.items() if k != default_r}
        by_type: dict[str, int] = {}
        for t in ("attn", "mlp", "other"):
            vals = [ks[x.name] for x in trained if x.layer.module_type == t]
            if vals:
                by_type[t] = math.ceil(_pct(vals, 90))
        p50, p90 = _pct(list(ks.values()), 50), _pct(list(ks.values()), 90)
        return {
            "policy": spec,
            "global_p50": p50,
            "global_p90": p90,
            "suggested_r_global_median": _pow2(p50),
            "suggested_r_global_90": _pow2(p90),
            "default_r": default_r,
            "rank_pattern": exact_pattern(pattern, [x.name for x in self.layers]),
            "by_module_type_p90": by_type,
            "untrained_layers": [x.name for x in self.layers if x.valid and not x.trained],
        }

    @cached_property
    def recommendation(self) -> Recommendation:
        """The single recommendation (see :class:`Recommendation`) under ``self.policy``;
        computed once (the audit is immutable, and every surface asks for it)."""
        valid = [x for x in self.layers if x.valid]
        ranks = Counter(x.layer.r for x in self.layers)
        nominal = max(ranks, key=lambda k: (ranks[k], k)) if ranks else None
        trained = [x for x in valid if x.trained]
        if not trained:
            status = "untrained" if valid else "invalid"
            why = (
                "no layer carries an update (every scaled ΔW is zero: B = 0, or α = 0): there is nothing to size; train the adapter first"
                if valid
                else "no layer could be read (NaN or Inf in every layer)"
            )
            return Recommendation(status, self.policy, None, nominal, {}, {}, why)
        per_layer = {
            x.name: max(1, min(x.suggested_ranks[self.policy], x.layer.attainable_rank)) for x in trained
        }
        uniform = max(1, min(math.ceil(_pct(list(per_layer.values()), 90) - 1e-9), nominal or 1))
        pattern = {k: v for k, v in per_layer.items() if v != uniform}
        # Only an energy policy has an energy to keep; the others size each layer by
        # their own rule, which the uniform rank covers for 90% of the layers.
        covers = (
            "keep that energy" if self.policy.startswith("energy@") else f"need no more under {self.policy}"
        )
        reason = (
            f"{self.policy} per layer; r={uniform} is the 90th percentile over {len(trained)} trained "
            f"layer{'s' if len(trained) != 1 else ''}, so 90% of them {covers}"
        )
        return Recommendation(
            "ok",
            self.policy,
            uniform,
            nominal,
            per_layer,
            exact_pattern(pattern, [x.name for x in self.layers]),
            reason,
        )

    def policy_global_suggestions(self) -> dict[str, dict[str, Any]]:
        out = {}
        for spec in self.policies:
            ks = [x.suggested_ranks[spec] for x in self.layers if x.trained]
            out[spec] = {
                "uniform_median": _pct(ks, 50),
                "uniform_p90": _pct(ks, 90),
                "uniform_max": float(max(ks)) if ks else None,
                "n_layers": len(ks),
            }
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterAudit:
        """Rebuild an audit from ``to_dict(layers=True)`` (a saved ``--json`` report).

        Long-running surfaces store reports, not adapters; this turns one back into the
        object every rendering and :func:`gradience.diff` take. Raises ``UsageError`` for a
        report without per-layer rows or of another schema.
        """
        from gradience.errors import UsageError

        if d.get("schema") != SCHEMA:
            raise UsageError(f"not a {SCHEMA} report (schema {d.get('schema')!r})", param="report")
        rows = (d.get("layer_data") or {}).get("layer_rows")
        if rows is None:
            raise UsageError("the report has no per-layer rows; save it with layers included", param="report")
        policies = tuple(d.get("policy_global_suggestions") or {}) or (d["policy"],)
        return cls(
            source=dict(d["source"]),
            adapter=dict(d["adapter"]),
            layers=tuple(LayerAudit.from_dict(r) for r in rows),
            policy=d["policy"],
            policies=policies,
            ignored_tensors=tuple(d.get("ignored_tensors") or ()),
            warnings=tuple(d.get("warnings") or ()),
        )

    def to_row(self) -> dict[str, Any]:
        """One flat row for datasets (version :data:`ROW_VERSION`): scalars and lists only.

        Columns that describe where the adapter was found (family, task, downloads, the
        discovery pass) belong to the caller; everything measured is here.
        """
        from gradience import __version__

        s = self.summary()
        rec = self.recommendation
        a = self.adapter
        return {
            "row_version": ROW_VERSION,
            "repo_id": self.source.get("repo"),
            "subfolder": self.source.get("subfolder"),
            "commit": self.source.get("commit"),
            "path": self.source.get("path"),
            "base_model": a.get("base_model"),
            "peft_type": a.get("peft_type"),
            "task_type": a.get("task_type"),
            "r": a.get("r"),
            "lora_alpha": a.get("lora_alpha"),
            "use_rslora": bool(a.get("use_rslora")),
            "dora": bool(a.get("dora")),
            "target_modules": _as_list(a.get("target_modules")),
            "dtype": ",".join(a.get("dtypes") or []),
            "format": a.get("format"),
            "n_layers": s["n_layers"],
            "n_valid": s["n_valid"],
            "n_untrained": s["n_untrained"],
            "lora_params": s["total_lora_params"],
            "utilization_mean": s["utilization_mean"],
            "utilization_median": s["utilization_median"],
            "stable_rank_mean": s["stable_rank_mean"],
            "stable_rank_median": s["stable_rank_median"],
            "effective_rank_mean": s["effective_rank_mean"],
            "energy_rank_90_p50": s["energy_rank_90_p50"],
            "energy_rank_90_p90": s["energy_rank_90_p90"],
            "recommendation_status": rec.status,
            "recommended_r": rec.rank,
            "recommended_ratio": rec.ratio,
            "policy": rec.policy,
            "flags": list(s["flags"]),
            "gradience_version": __version__,
        }

    def layer_rows(self, *, top_k: int = 8) -> list[dict[str, Any]]:
        """One flat row per layer (version :data:`ROW_VERSION`), for a dataset's layer table."""
        rows = []
        for x in self.layers:
            d = x.to_dict(top_k=top_k)
            rows.append(
                {
                    "row_version": ROW_VERSION,
                    "repo_id": self.source.get("repo"),
                    "subfolder": self.source.get("subfolder"),
                    "commit": self.source.get("commit"),
                    "module": x.name,
                    "module_type": x.layer.module_type,
                    "kind": x.layer.kind,
                    "r": x.layer.r,
                    "out_features": x.layer.out_features,
                    "in_features": x.layer.in_features,
                    "stable_rank": d["stable_rank"],
                    "utilization": d["utilization"],
                    "energy_rank_90": d["energy_rank_90"],
                    "energy_rank_95": d["energy_rank_95"],
                    "energy_rank_99": d["energy_rank_99"],
                    "effective_rank": d["effective_rank"],
                    "sigma_max_scaled": d["sigma_max_scaled"],
                    "frob_scaled": d["frob_norm_scaled"],
                    "top_singular_values": d.get("top_singular_values") or [],
                    "flags": list(x.flags),
                }
            )
        return rows

    def to_dict(self, *, layers: bool = False, top_k: int | None = None) -> dict[str, Any]:
        """JSON-ready dict (no NaN/Infinity) following the ``gradience.audit/v1`` schema."""
        from gradience import __version__

        d: dict[str, Any] = {"schema": SCHEMA, "gradience_version": __version__}
        d["source"] = self.source
        d["adapter"] = self.adapter
        d.update(self.summary())
        d["policy"] = self.policy
        d["rank_suggestions"] = self.rank_suggestions()
        d["recommendation"] = self.recommendation.to_dict()
        d["policy_global_suggestions"] = self.policy_global_suggestions()
        d["ignored_tensors"] = list(self.ignored_tensors)
        d["warnings"] = list(self.warnings)
        if layers:
            d["layer_data"] = {"layer_rows": [x.to_dict(top_k=top_k) for x in self.layers]}
        return d


def audit(
    source: str | Path | Adapter,
    *,
    policy: str = DEFAULT_POLICY,
    policies: Sequence[str] = (),
    precise: bool = False,
    progress: Callable[[int, int], None] | None = None,
    options: OpenOptions | None = None,
    **open_options: Any,
) -> AdapterAudit:
    """Audit the spectrum of every LoRA layer of an adapter.

    Args:
        source: an adapter folder (or an opened :class:`~gradience.adapters.Adapter`).
        policy: rank policy for ``rank_suggestions``, e.g. ``"energy@0.9"``, ``"knee"``.
        policies: further policies to evaluate per layer (``policy_global_suggestions``).
        precise: QR route for every layer (σ to ~1e-15·σ₁) instead of float64 Grams.
        progress: ``progress(done, total)`` callback, called per layer.
        options: how to open ``source`` (token, revision, caps, timeouts; see
            :class:`~gradience.open.OpenOptions`); ``open_options`` keywords override single
            fields (a download progress callback is named ``download_progress`` here).

    Returns:
        An :class:`AdapterAudit`; ``.to_dict(layers=True)`` is the JSON report.

    Raises:
        AdapterNotFoundError, AdapterFormatError, ConfigError, UnsupportedAdapterError:
            the input cannot be read (one-line messages that say how to fix it).
        UsageError: an unknown or malformed policy name.

    Example:
        >>> import gradience
        >>> result = gradience.audit("examples/healthy-r8")  # doctest: +SKIP
        >>> result.summary()["utilization_mean"]  # doctest: +SKIP
        0.31
    """
    specs = _policy_specs(policy, policies)
    if isinstance(source, Adapter):
        return _audit_adapter(source, specs, precise, progress)
    opts = resolve_options(options, **open_options)
    with open_adapter(source, opts) as adapter:
        return _audit_adapter(adapter, specs, precise, progress)


def _policy_specs(policy: str, policies: Sequence[str]) -> list[str]:
    specs: list[str] = []
    for raw in [policy, *policies]:
        p, t = get_policy(raw)
        if p.spec(t) not in specs:
            specs.append(p.spec(t))
    return specs


def _audit_adapter(adapter: Adapter, specs: list[str], precise: bool, progress) -> AdapterAudit:
    spectra = layer_spectra(adapter, precise=precise, progress=progress)
    resolved = [(spec, *get_policy(spec)) for spec in specs]
    layers = []
    warnings = list(adapter.warnings)
    for layer in adapter.layers:
        raw = spectra[layer.name]
        if raw is None:
            layers.append(LayerAudit(layer, np.zeros(0), ("invalid",)))
            warnings.append(f"{layer.name}: NaN or Inf in the LoRA factors; left out of aggregates")
            continue
        s = raw * abs(layer.scale)
        flags: list[str] = []
        if not np.any(s > 0):
            flags.append("untrained")
        elif M.energy_rank(s, 0.9) <= layer.r / 4:
            flags.append("over_provisioned")
        shape = (layer.out_features, layer.in_features)
        ks = {spec: p(s, t, shape=shape) for spec, p, t in resolved}
        dora = _magnitude_stats(adapter.magnitude(layer)) if layer.magnitude_key else None
        layers.append(LayerAudit(layer, s, tuple(flags), ks, dora))
    cfg = adapter.config
    info = {
        "peft_type": cfg.peft_type,
        "dora": any(x.magnitude_key for x in adapter.layers),
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "use_rslora": cfg.use_rslora,
        "rank_pattern": cfg.rank_pattern,
        "alpha_pattern": cfg.alpha_pattern,
        "target_modules": cfg.target_modules,
        "base_model": cfg.base_model,
        "task_type": cfg.task_type,
        "weights_file": adapter.weights_path.name,
        "format": adapter.format,
        # every LoRA factor's stored dtype (A and B may differ: a file half cast to bf16)
        "dtypes": sorted({adapter.tensor_dtype(k) for x in adapter.layers for k in (x.a_key, x.b_key)}),
    }
    ignored = tuple(
        {
            "name": n,
            "shape": list(adapter.tensor_shape(n)),
            "dtype": adapter.tensor_dtype(n),
        }
        for n in adapter.ignored
    )
    return AdapterAudit(
        source=dict(adapter.source),
        adapter=info,
        layers=tuple(layers),
        policy=specs[0],
        policies=tuple(specs),
        ignored_tensors=ignored,
        warnings=tuple(warnings),
    )


def _magnitude_stats(m: np.ndarray) -> dict[str, float | None]:
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        return {"min": None, "max": None, "mean": None, "norm": None}
    return {
        "min": float(m.min()),
        "max": float(m.max()),
        "mean": float(m.mean()),
        "norm": float(np.linalg.norm(m)),
    }


def _as_list(x: Any) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else sorted(str(v) for v in x)


def _mean(xs: Sequence[float | None]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _pct(xs: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default, the same as 0.11)."""
    return float(np.percentile(xs, q)) if len(xs) else None


def _pow2(x: float | None) -> int | None:
    """Round a suggestion up to a power of two; no cap (0.11 capped at 32)."""
    if x is None or x <= 0:
        return None
    return 1 << max(0, math.ceil(math.log2(x) - 1e-12))
