"""Reports turned into what the page shows: a headline that reads like an answer, tables that
fit a phone, merge verdicts with what to do next. Only presentation: every number comes from
the report dicts the API returns, and the rank shown is always the audit's single
``recommendation``. Text from visitors (repo ids, file names) is escaped before it reaches HTML.
"""

from __future__ import annotations

import html
from typing import Any

import plots

from gradience.report.badge import badge_for
from gradience.report.markdown import audit_markdown, interpretation, merge_audit_markdown

_TONE = {"red": "bad", "orange": "warn", "yellow": "meh", "brightgreen": "good"}

MERGE_LEGEND = """\
**How to read this.** *Overlap* (0–1): how much the two updates share the same directions in
weight space — near 0 they touch different things and add up cleanly; near 1 they act on the
same directions. *Agreement* (−1…+1): on the shared directions, whether they push the same way
(+) or opposite ways (−). *Density*: the share of each update TIES/DARE keeps when resolving
conflicts (1 = everything).
Verdicts: **SAFE** (different directions: a plain linear merge works), **REDUNDANT** (same
directions, same way: keep one, or average), **IMBALANCED** (one update dominates: weight it
down or the other disappears), **CONFLICTING** (same directions, opposite ways: TIES/DARE at
best, or do not merge).
"""

_NEXT = {
    "SAFE": "The adapters touch different directions: a linear merge keeps both (the plan below).",
    "REDUNDANT": "The adapters learned nearly the same thing: keep the better one, or average them.",
    "IMBALANCED": "One adapter dominates most layers: merge with the plan's weights, or the weaker one is lost.",
    "CONFLICTING": "The adapters push shared directions opposite ways: a merge will lose some of "
    "what each learned. If you merge, use the plan (TIES/DARE on the conflicting layers) and test "
    "the result.",
    "INCOMPATIBLE": "Do not merge these adapters.",
}


def _fmt(v: Any, pattern: str = "{:.3f}") -> str:
    return "–" if v is None else pattern.format(v)


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (
        f'<div class="g-card {tone}"><div class="g-label">{label}</div>'
        f'<div class="g-value">{value}</div><div class="g-note">{note}</div></div>'
    )


def headline(report: dict[str, Any]) -> str:
    """The answer first: what was audited, one sentence on what it means, four numbers."""
    a = report.get("adapter") or {}
    rec = report.get("recommendation") or {}
    b = badge_for(report)
    tone = _TONE.get(b.color, "")
    flags = report.get("flags") or []
    if rec.get("status") == "ok":
        rank_value = f"r{rec.get('nominal_r')} → {rec.get('rank')}"
        rank_note = f"{len(rec.get('rank_pattern') or {})} layers differ · policy {html.escape(str(rec.get('policy')))}"
    else:
        rank_value, rank_note = "none", html.escape(str(rec.get("status") or "no trained layer"))
    cards = [
        _card(
            "utilisation (mean)",
            _fmt(report.get("utilization_mean"), "{:.0%}"),
            f"median {_fmt(report.get('utilization_median'), '{:.0%}')} of each layer's rank",
            tone,
        ),
        _card("recommended rank", rank_value, rank_note),
        _card(
            "layers",
            str(report.get("n_layers", 0)),
            f"{report.get('n_over_provisioned', 0)} over-provisioned · {report.get('n_untrained', 0)} untrained"
            f" · {report.get('n_invalid', 0)} invalid",
        ),
        _card("flags", html.escape(", ".join(f.replace("_", " ") for f in flags)) or "none", b.message, tone),
    ]
    eco = report.get("ecosystem") or {}
    same_r = (eco.get("among") or {}).get("same_r") or {}
    if same_r.get("n"):
        everyone = (eco.get("among") or {}).get("all") or {}
        cards.append(
            _card(
                "among public adapters",
                f"{same_r['percentile']:.0f}%",
                f"higher utilisation than {same_r['percentile']:.0f}% of {same_r['n']} public r={eco.get('r')} "
                f"adapters ({everyone.get('percentile') or 0:.0f}% of all {everyone.get('n', 0)})",
            )
        )
    name = html.escape(str((report.get("source") or {}).get("name") or ""))
    base = html.escape(str(a.get("base_model") or "unknown"))
    head = (
        f'<div class="g-head">Audited <b id="audited-source">{name}</b> · {html.escape(str(a.get("peft_type", "")))}'
        f" · r={a.get('r')} · α={a.get('lora_alpha')} · base {base}</div>"
    )
    sentence = f'<p class="g-answer">{html.escape(interpretation(report))}</p>'
    return head + sentence + '<div class="g-cards">' + "".join(cards) + "</div>"


def markdown_report(report: dict[str, Any]) -> str:
    """The core's Markdown rendering of the audit (the API view names its source ``name``)."""
    src = dict(report.get("source") or {})
    src.setdefault("path", src.get("name"))
    return audit_markdown({**report, "source": src})


def layer_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((report or {}).get("layer_data") or {}).get("layer_rows", []))


def layer_table(report: dict[str, Any]) -> Any:
    """Short layer names and a module column, so the table is usable at 390 px."""
    import pandas as pd

    per_layer = (report.get("recommendation") or {}).get("per_layer") or {}
    rows = []
    for r in layer_rows(report):
        layer, module = plots.split_name(r["name"])
        rows.append({
            "layer": layer,
            "module": module,
            "util.": None if r.get("utilization") is None else round(r["utilization"], 3),
            "rec. r": per_layer.get(r["name"]),
            "r": r.get("r"),
            "type": r.get("module_type"),
            "stable rank": None if r.get("stable_rank") is None else round(r["stable_rank"], 2),
            "flags": ", ".join(r.get("flags") or []),
        })  # fmt: skip
    return pd.DataFrame(rows)


def layer_choices(report: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """(label, module name) pairs for the spectrum picker, and the layer with the largest σ₁."""
    rows = layer_rows(report)
    choices = [(" · ".join(plots.split_name(r["name"])), r["name"]) for r in rows]
    trained = [r for r in rows if r.get("sigma_max_scaled")]
    most = (
        max(trained, key=lambda r: r["sigma_max_scaled"])["name"]
        if trained
        else (rows[0]["name"] if rows else None)
    )
    return choices, most


def row(report: dict[str, Any] | None, layer: str | None) -> dict[str, Any] | None:
    return next((r for r in layer_rows(report or {}) if r["name"] == layer), None)


def utilisation_heatmap(report: dict[str, Any]) -> str:
    util = {r["name"]: r.get("utilization") for r in layer_rows(report)}
    return plots.heatmap(util, "utilisation (stable rank / r) per layer and module", label="utilisation")


def rank_snippet(report: dict[str, Any]) -> str:
    """The recommendation as a ``LoraConfig`` — or why there is none (never ``r=None``)."""
    rec = report.get("recommendation") or {}
    if rec.get("status") == "ok":
        from gradience.auditor import Recommendation

        snippet = Recommendation.from_dict(rec).lora_config()
        if snippet:
            return snippet
    return f"# No rank to recommend: {rec.get('reason') or 'the adapter has no trained layer'}\n"


# -- merge audits --------------------------------------------------------------------------------------


def _short(name: str) -> str:
    return name.removeprefix("hf://").removeprefix("upload: ")


def merge_summary(report: dict[str, Any]) -> str:
    """Per pair: the verdict as a titled answer, what to do next, and the headline numbers."""
    names = [_short(a.get("name") or "?") for a in report.get("adapters", [])]
    out = []
    for pair in report.get("pairs", []):
        g = pair.get("aggregate", {})
        verdict = g.get("overall_verdict") or "INVALID"
        label = f"{names[pair['a']]} × {names[pair['b']]}"
        if g.get("incompatible"):
            out.append(f"### ⛔ {label}: cannot be merged\n\n{str(g['incompatible'])[:1].upper()}"
                       f"{str(g['incompatible'])[1:]}. {_NEXT['INCOMPATIBLE']}")  # fmt: skip
            continue
        icon = {"SAFE": "✅", "REDUNDANT": "♻️", "IMBALANCED": "⚖️", "CONFLICTING": "⚠️"}.get(verdict, "❔")
        out.append(
            f"### {icon} {label}: {verdict} (risk {g.get('risk_level')})\n\n{_NEXT.get(verdict, '')}\n\n"
            f"Compatibility {_fmt(g.get('compatibility_score'), '{:.0%}')} of the update energy · "
            f"mean overlap {_fmt(g.get('mean_overlap'), '{:.2f}')} · mean agreement "
            f"{_fmt(g.get('mean_agreement'), '{:+.2f}')} · {g.get('n_safe', 0)} safe, "
            f"{g.get('n_redundant', 0)} redundant, {g.get('n_imbalanced', 0)} imbalanced, "
            f"{g.get('n_conflicting', 0)} conflicting of {g.get('n_layers_compared', 0)} shared layers."
        )
    return "\n\n".join(out).replace("<", "&lt;")


def merge_table(report: dict[str, Any]) -> Any:
    import pandas as pd

    names = [_short(a.get("name") or "?") for a in report.get("adapters", [])]
    recs = []
    for pair in report.get("pairs", []):
        label = f"{names[pair['a']]} × {names[pair['b']]}"
        by_layer = {c["layer"]: c for c in pair.get("per_layer", [])}
        for r in pair.get("recommendations", []):
            c = by_layer.get(r["layer"], {})
            layer, module = plots.split_name(r["layer"])
            recs.append({
                **({"pair": label} if len(report.get("pairs", [])) > 1 else {}),
                "layer": layer, "module": module, "verdict": r["verdict"], "strategy": r["strategy"],
                "weights": " / ".join(f"{w:.2f}" for w in r.get("coefficients", [])),
                "density": None if r.get("density") is None else round(r["density"], 2),
                "overlap": None if c.get("overlap") is None else round(c["overlap"], 2),
                "agreement": None if c.get("agreement") is None else round(c["agreement"], 2),
            })  # fmt: skip
    return pd.DataFrame(recs)


def overlap_heatmap(report: dict[str, Any]) -> str:
    overlaps: dict[str, list[float]] = {}
    for pair in report.get("pairs", []):
        if (pair.get("aggregate") or {}).get("incompatible"):
            continue
        for c in pair.get("per_layer", []):
            if c.get("overlap") is not None:
                overlaps.setdefault(c["layer"], []).append(c["overlap"])
    mean = {k: sum(v) / len(v) for k, v in overlaps.items()}
    if not mean:
        return ""
    return plots.heatmap(
        mean, "subspace overlap per layer and module (0 = disjoint, 1 = same)", label="overlap"
    )


def merge_markdown_report(report: dict[str, Any]) -> str:
    """The core's Markdown rendering of a merge audit (adapters named as the visitor named them)."""
    adapters = [{**a, "path": a.get("path", a.get("name"))} for a in report.get("adapters", [])]
    return merge_audit_markdown({**report, "adapters": adapters})


def is_severe(report: dict[str, Any] | None) -> bool:
    """Whether any pair is severe risk (merging then asks for a confirmation)."""
    return any(
        (p.get("aggregate") or {}).get("risk_level") == "severe" for p in (report or {}).get("pairs", [])
    )
