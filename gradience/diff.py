"""Audit diffs: what changed between two versions of an adapter, and whether the new one
passes a team's rules.

A pull request that retrains an adapter, a new Hub revision, a compressed copy: each is a
pair (base, head). Reviewers need the change in the numbers they already read in an audit
— utilisation, stable rank, energy ranks, σ₁, flags, the recommended rank — per adapter and
per layer, plus a pass/fail a CI job can act on. Both sides are audited the normal way (or
passed in already audited), so a diff never disagrees with the two audits it compares::

    import gradience
    d = gradience.diff("user/adapter@v1", "user/adapter@v2",
                       rules=gradience.Rules(min_utilization=0.1))
    d.status          # "changed"
    d.violations      # typed rule failures on the head
    d.to_dict()       # JSON, schema ``gradience.diff/v1``

The JSON follows ``gradience/schemas/diff.schema.json``; the Markdown rendering is
:func:`gradience.report.markdown.diff_markdown`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradience.errors import UsageError
from gradience.open import source_label

if TYPE_CHECKING:
    from gradience.adapters.load import Adapter
    from gradience.auditor import AdapterAudit
    from gradience.open import OpenOptions

__all__ = [
    "ADAPTER_METRICS",
    "FLAGS",
    "LAYER_METRICS",
    "SCHEMA",
    "AuditDiff",
    "LayerChange",
    "MetricChange",
    "Rules",
    "Violation",
    "diff",
]

SCHEMA = "gradience.diff/v1"
AUDIT_SCHEMA = "gradience.audit/v1"

#: Flags an audit can raise (adapter- and layer-level); ``Rules.forbid_flags`` draws from these.
FLAGS = ("untrained", "invalid", "over_provisioned")

#: Per-layer numbers compared (audit layer-row fields, plus the layer's recommended rank).
LAYER_METRICS = (
    "utilization",
    "stable_rank",
    "energy_rank_90",
    "energy_rank_95",
    "energy_rank_99",
    "sigma_max_scaled",
    "frob_norm_scaled",
    "recommended_rank",
)

#: Adapter-level numbers compared (audit summary fields).
ADAPTER_METRICS = (
    "utilization_mean",
    "utilization_median",
    "stable_rank_mean",
    "stable_rank_median",
    "energy_rank_90_p50",
    "energy_rank_90_p90",
    "delta_sigma_max_scaled_mean",
    "delta_frob_norm_scaled_mean",
    "n_layers",
    "total_lora_params",
)

#: Adapter configuration fields whose change is reported.
CONFIG_FIELDS = (
    "peft_type",
    "dora",
    "r",
    "lora_alpha",
    "use_rslora",
    "target_modules",
    "rank_pattern",
    "alpha_pattern",
    "base_model",
    "task_type",
    "format",
    "dtypes",
)

#: Two numbers closer than this (relative) are the same: audits of identical weights are
#: bit-identical, so this only absorbs JSON round trips, never a real retraining.
RTOL = 1e-9

#: The recommendation fields whose change counts as a changed recommendation.
_REC_KEYS = ("status", "rank", "nominal_r", "rank_pattern")


@dataclass(frozen=True)
class MetricChange:
    """One number on both sides; ``None`` where a side lacks it (absent, invalid, untrained)."""

    base: float | int | None
    head: float | int | None

    @property
    def delta(self) -> float | int | None:
        """head − base, or None when either side is missing."""
        if self.base is None or self.head is None:
            return None
        return self.head - self.base

    @property
    def changed(self) -> bool:
        return not _same(self.base, self.head)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "head": self.head, "delta": self.delta}


@dataclass(frozen=True)
class LayerChange:
    """How one LoRA layer changed.

    Attributes:
        name: PEFT module name.
        status: ``added``, ``removed``, ``changed`` or ``unchanged``.
        r: the layer's rank on each side.
        metrics: :data:`LAYER_METRICS` name → :class:`MetricChange`.
        flags_added / flags_cleared: layer flags that appeared on / left the head.
    """

    name: str
    status: str
    r: MetricChange
    metrics: dict[str, MetricChange]
    flags_base: tuple[str, ...] = ()
    flags_head: tuple[str, ...] = ()

    @property
    def flags_added(self) -> list[str]:
        return [f for f in self.flags_head if f not in self.flags_base]

    @property
    def flags_cleared(self) -> list[str]:
        return [f for f in self.flags_base if f not in self.flags_head]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "r": self.r.to_dict(),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "flags": {
                "base": list(self.flags_base),
                "head": list(self.flags_head),
                "added": self.flags_added,
                "cleared": self.flags_cleared,
            },
        }


@dataclass(frozen=True)
class Violation:
    """A rule the head breaks.

    Attributes:
        rule: ``min_utilization``, ``max_rank_ratio`` or ``forbid_flags``.
        scope: ``adapter`` or ``layer``.
        layer: the layer's name when ``scope == "layer"``.
        severity: ``error`` for the adapter as a whole (fails the check), ``warning`` for a
            single layer (reported, does not fail).
        value / limit: the measured value and the rule's bound (a flag name for flags).
    """

    rule: str
    scope: str
    message: str
    severity: str
    layer: str | None = None
    value: float | str | None = None
    limit: float | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scope": self.scope,
            "layer": self.layer,
            "severity": self.severity,
            "message": self.message,
            "value": self.value,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class Rules:
    """Thresholds an adapter must meet, evaluated on the head of a diff (or on one audit).

    A rule on the adapter as a whole is an ``error`` (the check fails; the CLI exits 3); the
    same rule broken by single layers is a ``warning`` per layer (shown, never failing), so
    one odd layer does not block a change but is still visible.

    Attributes:
        min_utilization: the mean utilisation (stable rank / r) must be at least this.
        max_rank_ratio: recommended rank / nominal r must be at most this. An adapter that
            needs nearly all of its rank is sized tight; one far below is over-provisioned
            (use ``forbid_flags=("over_provisioned",)`` for that side). Not evaluated when
            there is no recommendation (untrained or invalid: forbid those flags instead).
        forbid_flags: audit flags the adapter must not carry (see :data:`FLAGS`).
    """

    min_utilization: float | None = None
    max_rank_ratio: float | None = None
    forbid_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        flags = self.forbid_flags
        if isinstance(flags, str):
            flags = tuple(x.strip() for x in flags.split(",") if x.strip())
        object.__setattr__(self, "forbid_flags", tuple(flags))
        for f in self.forbid_flags:
            if f not in FLAGS:
                raise UsageError(f"unknown flag {f!r} to forbid; choose from {', '.join(FLAGS)}",
                                 param="forbid_flags")  # fmt: skip
        for name in ("min_utilization", "max_rank_ratio"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int | float) or not math.isfinite(v) or v < 0):
                raise UsageError(f"{name.replace('_', ' ')} must be a non-negative number, got {v!r}",
                                 param=name)  # fmt: skip

    @property
    def empty(self) -> bool:
        return self.min_utilization is None and self.max_rank_ratio is None and not self.forbid_flags

    @classmethod
    def parse(cls, text: str) -> Rules:
        """Rules from one string, as a CI input would carry them.

        ``"min-utilization=0.1 max-rank-ratio=0.5 forbid-flags=untrained,invalid"``;
        entries are separated by spaces or semicolons, names take ``-`` or ``_``.
        """
        values: dict[str, Any] = {}
        for item in re.split(r"[\s;]+", text.strip()):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lstrip("-").replace("-", "_")
            if not sep or key not in ("min_utilization", "max_rank_ratio", "forbid_flags"):
                raise UsageError(
                    f"cannot read rule {item!r}; write min-utilization=X, max-rank-ratio=X "
                    "or forbid-flags=a,b", param="fail_on",
                )  # fmt: skip
            if key == "forbid_flags":
                values[key] = value
                continue
            try:
                values[key] = float(value)
            except ValueError:
                raise UsageError(f"rule {key.replace('_', '-')} needs a number, got {value!r}",
                                 param="fail_on") from None  # fmt: skip
        return cls(**values)

    def evaluate(self, audit: AdapterAudit | Mapping[str, Any]) -> list[Violation]:
        """Every violation of these rules by one audit (an AdapterAudit or its
        ``to_dict(layers=True)``)."""
        d = _as_audit_dict(audit)
        out: list[Violation] = []
        rows = _rows(d)
        if self.min_utilization is not None:
            lim = self.min_utilization
            u = d.get("utilization_mean")
            if u is not None and u < lim:
                out.append(Violation("min_utilization", "adapter",
                                     f"mean utilisation {u:.3f} is below the minimum {lim:g}", "error",
                                     value=u, limit=lim))  # fmt: skip
            for name, row in rows.items():
                v = row.get("utilization")
                if v is not None and v < lim:
                    out.append(Violation("min_utilization", "layer",
                                         f"utilisation {v:.3f} is below the minimum {lim:g}", "warning",
                                         layer=name, value=v, limit=lim))  # fmt: skip
        if self.max_rank_ratio is not None:
            lim = self.max_rank_ratio
            rec = d.get("recommendation") or {}
            ratio = rec.get("ratio")
            if rec.get("status") == "ok" and ratio is not None and ratio > lim:
                out.append(Violation("max_rank_ratio", "adapter",
                                     f"recommended rank {rec['rank']} is {ratio:.2f} of the nominal "
                                     f"r={rec['nominal_r']}, above the maximum {lim:g}", "error",
                                     value=ratio, limit=lim))  # fmt: skip
            for name, k in (rec.get("per_layer") or {}).items():
                r = (rows.get(name) or {}).get("r")
                if r and k / r > lim:
                    out.append(Violation("max_rank_ratio", "layer",
                                         f"recommended rank {k} is {k / r:.2f} of r={r}, above the "
                                         f"maximum {lim:g}", "warning",
                                         layer=name, value=k / r, limit=lim))  # fmt: skip
        if self.forbid_flags:
            adapter_flags = list(d.get("flags") or [])
            for f in self.forbid_flags:
                if f in adapter_flags:
                    out.append(Violation("forbid_flags", "adapter", f"the adapter is flagged {f}", "error",
                                         value=f, limit=f))  # fmt: skip
            for name, row in rows.items():
                for f in row.get("flags") or []:
                    if f in self.forbid_flags and f not in adapter_flags:
                        out.append(Violation("forbid_flags", "layer", f"the layer is flagged {f}", "warning",
                                             layer=name, value=f, limit=f))  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_utilization": self.min_utilization,
            "max_rank_ratio": self.max_rank_ratio,
            "forbid_flags": list(self.forbid_flags),
        }


@dataclass(frozen=True)
class AuditDiff:
    """The difference between two audits, and the head's rule check.

    Attributes:
        status: ``added`` (no base), ``removed`` (no head), ``changed`` or ``unchanged``
            (same layers, ranks, flags, configuration and numbers to :data:`RTOL`).
        base / head: the two audits as ``to_dict(layers=True)`` dicts, None when absent.
        metrics: :data:`ADAPTER_METRICS` name → :class:`MetricChange`.
        config: configuration fields that differ → :class:`MetricChange`-like pairs.
        layers: one :class:`LayerChange` per layer on either side (base order, then new).
        rules: the rules checked on the head, or None.
        violations: what the head breaks (empty without rules or without a head).
    """

    status: str
    policy: str
    base: dict[str, Any] | None
    head: dict[str, Any] | None
    metrics: dict[str, MetricChange]
    config: dict[str, dict[str, Any]]
    layers: tuple[LayerChange, ...]
    rules: Rules | None = None
    violations: tuple[Violation, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """No error-level violation (warnings do not fail a check)."""
        return not any(v.severity == "error" for v in self.violations)

    @property
    def flags_added(self) -> list[str]:
        b, h = _flags(self.base), _flags(self.head)
        return [f for f in h if f not in b]

    @property
    def flags_cleared(self) -> list[str]:
        b, h = _flags(self.base), _flags(self.head)
        return [f for f in b if f not in h]

    @property
    def targets_added(self) -> list[str]:
        b, h = _targets(self.base), _targets(self.head)
        return [t for t in h if t not in b]

    @property
    def targets_removed(self) -> list[str]:
        b, h = _targets(self.base), _targets(self.head)
        return [t for t in b if t not in h]

    @property
    def recommendation_changed(self) -> bool:
        b, h = _rec(self.base) or {}, _rec(self.head) or {}
        return any(b.get(k) != h.get(k) for k in _REC_KEYS)

    def layer_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("added", "removed", "changed", "unchanged"), 0)
        for x in self.layers:
            counts[x.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict following ``gradience/schemas/diff.schema.json``."""
        from gradience import __version__

        return {
            "schema": SCHEMA,
            "gradience_version": __version__,
            "status": self.status,
            "policy": self.policy,
            "base": _side(self.base),
            "head": _side(self.head),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "flags": {
                "base": _flags(self.base),
                "head": _flags(self.head),
                "added": self.flags_added,
                "cleared": self.flags_cleared,
            },
            "config": {k: dict(v) for k, v in self.config.items()},
            "targets": {"added": self.targets_added, "removed": self.targets_removed},
            "recommendation": {
                "base": _rec_summary(self.base),
                "head": _rec_summary(self.head),
                "changed": self.recommendation_changed,
            },
            "layer_counts": self.layer_counts(),
            "layers": [x.to_dict() for x in self.layers],
            "rules": self.rules.to_dict() if self.rules else None,
            "violations": [v.to_dict() for v in self.violations],
            "passed": self.passed,
        }


def diff(
    base: str | Path | Adapter | AdapterAudit | Mapping[str, Any] | None,
    head: str | Path | Adapter | AdapterAudit | Mapping[str, Any] | None,
    *,
    options: OpenOptions | None = None,
    policy: str = "energy@0.9",
    rules: Rules | None = None,
) -> AuditDiff:
    """Compare two versions of an adapter and check the head against ``rules``.

    Args:
        base, head: each an adapter reference (folder, ``user/repo@revision``, ``hf://``
            path, Hub URL), an opened adapter, an :class:`~gradience.auditor.AdapterAudit`,
            an audit dict (``to_dict(layers=True)``, or the path of such a JSON file), or
            None for an absent side (an adapter added or removed).
        options: how to open references (token, caps, timeouts; see
            :class:`~gradience.open.OpenOptions`). Revisions belong in each reference
            (``user/repo@v1``), since the two sides usually differ in revision.
        policy: rank policy behind the recommended ranks; audits passed in must use it.
        rules: thresholds checked on the head (see :class:`Rules`).

    Raises:
        UsageError: both sides absent, an audit made under another policy, bad rules.
        The errors of :func:`gradience.audit` for references that cannot be opened.
    """
    if base is None and head is None:
        raise UsageError("nothing to compare: both sides of the diff are absent")
    from gradience.spectral.policies import get_policy

    p, t = get_policy(policy)
    spec = p.spec(t)
    b = _audit_side(base, spec, options, "base")
    h = _audit_side(head, spec, options, "head")
    b_rows, h_rows = _rows(b), _rows(h)
    b_rec, h_rec = _rec(b) or {}, _rec(h) or {}
    layers = []
    for name in [*b_rows, *(n for n in h_rows if n not in b_rows)]:
        br, hr = b_rows.get(name), h_rows.get(name)
        metrics = {
            m: MetricChange(_layer_value(br, b_rec, m), _layer_value(hr, h_rec, m)) for m in LAYER_METRICS
        }
        r = MetricChange(br and br["r"], hr and hr["r"])
        fb = tuple(br["flags"]) if br else ()
        fh = tuple(hr["flags"]) if hr else ()
        if br is None or hr is None:
            status = "added" if br is None else "removed"
        elif r.changed or fb != fh or any(c.changed for c in metrics.values()):
            status = "changed"
        else:
            status = "unchanged"
        layers.append(LayerChange(name, status, r, metrics, fb, fh))
    metrics = {m: MetricChange(b and b.get(m), h and h.get(m)) for m in ADAPTER_METRICS}
    config: dict[str, dict[str, Any]] = {}
    if b is not None and h is not None:
        for k in CONFIG_FIELDS:
            bv, hv = b["adapter"].get(k), h["adapter"].get(k)
            if _norm(bv) != _norm(hv):
                config[k] = {"base": bv, "head": hv}
    violations = tuple(rules.evaluate(h)) if rules is not None and h is not None else ()
    if b is None or h is None:
        status = "added" if b is None else "removed"
    elif (
        config
        or any(x.status != "unchanged" for x in layers)
        or _flags(b) != _flags(h)
        or any((b_rec or {}).get(k) != (h_rec or {}).get(k) for k in _REC_KEYS)
        or any(c.changed for c in metrics.values())
    ):
        status = "changed"
    else:
        status = "unchanged"
    return AuditDiff(status, spec, b, h, metrics, config, tuple(layers), rules, violations)


# ---------------------------------------------------------------------------------------------


def _audit_side(x: Any, spec: str, options: OpenOptions | None, which: str) -> dict[str, Any] | None:
    if x is None:
        return None
    from gradience.adapters.load import Adapter
    from gradience.auditor import AdapterAudit, audit

    if isinstance(x, AdapterAudit):
        d = x.to_dict(layers=True)
    elif isinstance(x, Mapping):
        d = _as_audit_dict(x)
    elif isinstance(x, Adapter):
        d = audit(x, policy=spec).to_dict(layers=True)
    elif isinstance(x, str | Path):
        loaded = _audit_json(x)
        d = loaded if loaded is not None else audit(x, policy=spec, options=options).to_dict(layers=True)
    else:
        raise UsageError(f"cannot compare a {type(x).__name__} as the {which}; give an adapter reference "
                         "or an audit", param=which)  # fmt: skip
    if d.get("policy") != spec:
        raise UsageError(
            f"the {which} audit used policy {d.get('policy')!r}, the diff {spec!r}; audit both under one policy",
            param="policy",
        )
    return d


def _audit_json(x: str | Path) -> dict[str, Any] | None:
    """An audit saved as JSON (``gradience audit --json --layers``), or None if ``x`` is not one."""
    path = Path(x)
    if path.suffix != ".json" or not path.is_file() or path.stat().st_size > 256 * 1024**2:
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _as_audit_dict(d) if isinstance(d, dict) and d.get("schema") == AUDIT_SCHEMA else None


def _as_audit_dict(x: Any) -> dict[str, Any]:
    from gradience.auditor import AdapterAudit

    if isinstance(x, AdapterAudit):
        return x.to_dict(layers=True)
    d = dict(x)
    if d.get("schema") != AUDIT_SCHEMA:
        raise UsageError(f"not an audit: expected schema {AUDIT_SCHEMA!r}, got {d.get('schema')!r}")
    if not isinstance((d.get("layer_data") or {}).get("layer_rows"), list):
        raise UsageError("the audit has no per-layer rows (layer_data); audit with layers included")
    problem = _shape_problem(d)
    if problem:
        raise UsageError(f"not a readable audit: {problem}")
    return d


def _number(x: Any) -> bool:
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool))


def _shape_problem(d: Mapping[str, Any]) -> str | None:
    """What makes a saved audit unusable for a diff, or None. Saved reports are files a person
    or another tool may have edited; the diff reads these fields and no others."""
    for key in ("source", "adapter"):
        if not isinstance(d.get(key), dict):
            return f"{key!r} is not an object"
    if not isinstance(d.get("recommendation"), dict | None):
        return "'recommendation' is not an object"
    rec = d.get("recommendation") or {}
    if not isinstance(rec.get("per_layer") or {}, dict) or not isinstance(
        rec.get("rank_pattern") or {}, dict
    ):
        return "the recommendation's per-layer ranks are not an object"
    for m in ADAPTER_METRICS:
        if not _number(d.get(m)):
            return f"{m!r} is not a number"
    if not isinstance(d.get("flags"), list):
        return "'flags' is not a list"
    for row in d["layer_data"]["layer_rows"]:
        if not (isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("r"), int)):
            return "a layer row lacks its name or r"
        bad = next((m for m in LAYER_METRICS if m != "recommended_rank" and not _number(row.get(m))), None)
        if bad or not isinstance(row.get("flags"), list):
            return f"layer {row['name']}: {bad or 'flags'} is not {'a number' if bad else 'a list'}"
    return None


def _rows(d: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if d is None:
        return {}
    return {r["name"]: r for r in d["layer_data"]["layer_rows"]}


def _rec(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else d.get("recommendation")


def _rec_summary(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The recommendation without its per-layer maps (those are in each layer's change)."""
    rec = _rec(d)
    if rec is None:
        return None
    return {k: rec.get(k) for k in ("status", "policy", "rank", "nominal_r", "ratio", "reason")}


def _flags(d: Mapping[str, Any] | None) -> list[str]:
    return [] if d is None else list(d.get("flags") or [])


def _targets(d: Mapping[str, Any] | None) -> list[str]:
    """Target module names as the layers show them (a config may say ``all-linear``)."""
    seen: dict[str, None] = {}
    for name in _rows(d):
        seen.setdefault(name.rsplit(".", 1)[-1], None)
    return sorted(seen)


def _layer_value(row: Mapping[str, Any] | None, rec: Mapping[str, Any], m: str) -> Any:
    if row is None:
        return None
    if m == "recommended_rank":
        return (rec.get("per_layer") or {}).get(row["name"])
    return row.get(m)


def _side(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What identifies one side in the diff's JSON (the full audits stay in Python)."""
    if d is None:
        return None
    a = d["adapter"]
    return {
        "source": d["source"],
        "label": source_label(d["source"]),
        "peft_type": a.get("peft_type"),
        "r": a.get("r"),
        "lora_alpha": a.get("lora_alpha"),
        "base_model": a.get("base_model"),
        "n_layers": d.get("n_layers"),
        "gradience_version": d.get("gradience_version"),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)
    return a == b


def _norm(v: Any) -> Any:
    """Configuration values compared as sets where order means nothing."""
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return sorted(v)
    return v
