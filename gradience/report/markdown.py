"""Audit, merge-audit and diff reports as GitHub/Hub-flavoured Markdown.

One rendering for every surface that posts Markdown — the Space, the Hub bot's discussion
comments, the GitHub Action's PR comment and job summary, the crawler's dataset card — so
they say the same thing in the same words. Each function is a pure function of a result's
JSON dict (``audit.to_dict(layers=True)``, ``merge_audit(...).to_dict()``,
``diff.to_dict()``): deterministic (same dict, same bytes), no I/O, and safe to post
anywhere, because adapter files are untrusted input: every name that came from a file or a
repo is escaped so it can neither break a table nor inject HTML or links.

Long per-layer tables sit in a collapsed ``<details>`` block so a comment stays short.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gradience.open import source_label

__all__ = [
    "audit_markdown",
    "diff_markdown",
    "escape",
    "interpretation",
    "merge_audit_markdown",
    "name",
]

#: Names made only of these characters are shown as code spans; anything else is escaped text.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-/:@+=,~ ]{1,300}$")
_PUNCT = re.compile(r"[\\`*_{}\[\]#!|~$]")


def escape(text: object) -> str:
    """Text made inert in Markdown and HTML: ``<``, ``>`` and ``&`` become entities (no
    tag, no autolink), the marks that start emphasis, code, links, images, math, tables or
    headings are backslash-escaped, line breaks become spaces (a table row is one line)."""
    s = " ".join(str(text).split())
    out = []
    for ch in s:
        if ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "&":
            out.append("&amp;")
        elif _PUNCT.fullmatch(ch):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def name(text: object) -> str:
    """A module, file or repo name: a code span when its characters are plain, escaped text
    otherwise (a code span cannot escape a backtick or a table's ``|``)."""
    s = str(text)
    if _SAFE_NAME.fullmatch(s) and not s.startswith(" ") and not s.endswith(" "):
        return f"`{s}`"
    return escape(s)


def _n(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def _signed(x: float | None, fmt: str, scale: float = 0.0) -> str:
    """A signed delta; one below 1e-6 of ``scale`` (the larger side) is storage noise: 0."""
    if x is None:
        return "—"
    if x == 0 or abs(x) <= 1e-6 * scale:
        return "0"
    return format(x, "+" + fmt)


def _table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """GFM table lines; ``align`` holds one of l/r/c per column."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _details(summary: str, body: list[str]) -> list[str]:
    # The blank lines matter: without them GitHub renders the table inside as plain text.
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


# --------------------------------------------------------------------------------- audit


def interpretation(d: Mapping[str, Any]) -> str:
    """One sentence on what an audit means, for a reader who knows LoRA but not spectra.

    Plain text (no Markdown, nothing from the adapter's files), so HTML surfaces can use it
    as it is after their own escaping."""
    rec = d.get("recommendation") or {}
    flags = d.get("flags") or []
    r = rec.get("nominal_r") or d["adapter"].get("r")
    if rec.get("status") == "invalid":
        return "No layer could be read (NaN or Inf in every layer's factors): the file is damaged."
    if "untrained" in flags or rec.get("status") == "untrained":
        return "No layer carries an update (every scaled ΔW is zero): this adapter has not been trained yet."
    util, k = d.get("utilization_mean"), rec.get("rank")
    broken = " Some layers hold NaN or Inf and were left out." if "invalid" in flags else ""
    sized = _rank_clause(k, rec.get("policy") or d.get("policy") or "energy@0.9")
    if "over_provisioned" in flags:
        return (
            f"Over-provisioned: most layers put 90% of their update in a quarter of their r={r} "
            f"directions or fewer; {sized}.{broken}"
        )
    if k is not None and r and k >= r:
        return f"The rank is fully used ({sized}, the whole r={r}); a larger r may help.{broken}"
    return f"Mean utilisation {_n(util, '.2f')} of r={r}; {sized}.{broken}"


def _rank_clause(k: int | None, policy: str) -> str:
    """What the recommended rank ``k`` achieves, in the policy's own terms."""
    m = re.fullmatch(r"energy@([0-9.]+)", policy)
    if m:
        return f"r={k} keeps {float(m.group(1)):.0%} of the energy in 90% of the layers"
    return f"r={k} is enough for 90% of the layers under the {policy} policy"


def audit_markdown(d: Mapping[str, Any], *, title: str | None = None, heading: int = 2) -> str:
    """An audit (``AdapterAudit.to_dict(layers=True)``) as a Markdown summary.

    Headline numbers, the recommended rank from ``recommendation``, flags, one sentence of
    interpretation, and (when the dict has layer rows) a collapsed per-layer table.
    ``title`` replaces the default heading (the source's name); ``heading`` is its level.
    """
    a, rec = d["adapter"], d.get("recommendation") or {}
    label = escape(title) if title is not None else f"Gradience audit: {name(source_label(d['source']))}"
    lines = [f"{'#' * heading} {label}", ""]
    flags = d.get("flags") or []
    if rec.get("status") == "ok":
        ratio = rec.get("ratio")
        recommended = f"**r={rec['rank']}** of r={rec['nominal_r']}" + (
            f" ({ratio:.0%})" if ratio is not None else ""
        )
    else:
        recommended = f"none ({escape(rec.get('status', 'unknown'))})"
    dora = " + DoRA" if a.get("dora") else ""
    rows = [
        (
            "Adapter",
            f"{escape(a.get('peft_type') or '?')}{dora}, r={a.get('r')}, α={_n(a.get('lora_alpha'), 'g')}",
        ),
        ("Base model", name(a["base_model"]) if a.get("base_model") else "—"),
        ("LoRA layers", f"{d['n_layers']} ({d['total_lora_params']:,} parameters)"),
        (
            "Utilisation (mean / median)",
            f"{_n(d.get('utilization_mean'))} / {_n(d.get('utilization_median'))}",
        ),
        (
            "Stable rank (mean / median)",
            f"{_n(d.get('stable_rank_mean'), '.2f')} / {_n(d.get('stable_rank_median'), '.2f')}",
        ),
        (
            "Energy rank @90% (p50 / p90)",
            f"{_n(d.get('energy_rank_90_p50'), '.1f')} / {_n(d.get('energy_rank_90_p90'), '.1f')}",
        ),
        (f"Recommended rank ({escape(rec.get('policy', d.get('policy', '')))})", recommended),
        ("Flags", ", ".join(name(f) for f in flags) if flags else "none"),
    ]
    lines += _table(["", ""], "ll", [(f"**{k}**", v) for k, v in rows])
    lines += ["", interpretation(d)]
    layer_rows = (d.get("layer_data") or {}).get("layer_rows")
    if layer_rows:
        per_layer = rec.get("per_layer") or {}
        body = _table(
            [
                "Layer",
                "r",
                "Utilisation",
                "Stable rank",
                "Energy rank 90/95/99",
                "σ₁ (scaled)",
                "Recommended",
                "Flags",
            ],
            "lrrrrrrl",
            (
                [
                    name(x["name"]),
                    str(x["r"]),
                    _n(x["utilization"]),
                    _n(x["stable_rank"], ".2f"),
                    "/".join(_n(x[f"energy_rank_{t}"], "d") for t in (90, 95, 99)),
                    _n(x["sigma_max_scaled"], ".4g"),
                    str(per_layer[x["name"]]) if x["name"] in per_layer else "—",
                    ", ".join(name(f) for f in x["flags"]),
                ]
                for x in layer_rows
            ),
        )
        lines += ["", *_details(f"Per-layer metrics ({len(layer_rows)} layers)", body)]
    if d.get("warnings"):
        lines += ["", *[f"> {escape(w)}" for w in d["warnings"]]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- merge audit


def merge_audit_markdown(d: Mapping[str, Any], *, heading: int = 1) -> str:
    """A merge audit (``merge_audit(...).to_dict()``): per pair, the verdict, a summary
    sentence, and the per-layer comparison and recommendations collapsed."""
    h = "#" * heading
    names = [a["path"] for a in d["adapters"]]
    lines = [f"{h} Merge audit", ""]
    lines += [f"- adapter {_letter(i)}: {name(p)}" for i, p in enumerate(names)]
    lines += [f"- energy threshold {d['energy_threshold']:g}, thresholds {name(d['thresholds']['name'])}", ""]
    for pair in d["pairs"]:
        a, b = pair["a"], pair["b"]
        agg = pair["aggregate"]
        lines += [
            f"{h}# {_letter(a)} × {_letter(b)}: {agg['overall_verdict']} (risk {agg['risk_level']})",
            "",
            f"Compatibility score {_n(agg['compatibility_score'], '.2f')}; mean overlap "
            f"{_n(agg['mean_overlap'])}; mean agreement {_n(agg['mean_agreement'])}; "
            f"{agg['n_safe']} safe, {agg['n_redundant']} redundant, {agg['n_conflicting']} conflicting, "
            f"{agg['n_imbalanced']} imbalanced of {agg.get('n_layers_compared', len(pair['per_layer']))} "
            "shared layers.",
            "",
        ]
        recs = {r["layer"]: r for r in pair["recommendations"]}
        layers = _table(
            ["Layer", "r_a", "r_b", "Overlap", "Agreement", "Scale", "Mag ratio", "Verdict", "Strategy"],
            "lrrrrlrll",
            (
                [
                    name(c["layer"]),
                    str(c["r_a"]),
                    str(c["r_b"]),
                    _n(c["overlap"]),
                    _n(c["agreement"], "+.3f"),
                    f"{c['scale_a']:g} / {c['scale_b']:g}" if "scale_a" in c else "—",
                    _n(c["sigma_ratio"], ".2f"),
                    str(c["verdict"]),
                    escape(recs[c["layer"]]["strategy"]) if c["layer"] in recs else "—",
                ]
                for c in pair["per_layer"]
            ),
        )
        rec_rows = []
        for r in pair["recommendations"]:
            coef = " / ".join(f"{w:.2f}" for w in r["coefficients"])
            trim = f"{r['trim']:.2f}" if r.get("drop_rate") is None else f"drop {r['drop_rate']:.2f}"
            note = r.get("notes") or ""
            if r.get("compress_first"):
                note += f" (ranks {r['compress_first']})"
            rec_rows.append([name(r["layer"]), escape(r["strategy"]), coef, trim, escape(note)])
        recommendations = _table(["Layer", "Strategy", "Coefficients", "Trim", "Notes"], "lllrl", rec_rows)
        lines += _details(f"Per-layer comparison ({len(pair['per_layer'])} layers)", layers)
        lines += ["", *_details("Recommendations", recommendations)]
        if pair.get("warnings"):
            lines += ["", *[f"> {escape(w)}" for w in pair["warnings"]]]
        lines.append("")
    return "\n".join(lines)


def _letter(i: int) -> str:
    return chr(65 + i) if i < 26 else str(i)


# ---------------------------------------------------------------------------------- diff


_DIFF_ROWS = (
    ("Utilisation (mean)", "utilization_mean", ".3f"),
    ("Stable rank (mean)", "stable_rank_mean", ".2f"),
    ("Energy rank @90% (p50)", "energy_rank_90_p50", ".1f"),
    ("σ₁ scaled (mean)", "delta_sigma_max_scaled_mean", ".4g"),
    ("LoRA layers", "n_layers", "d"),
    ("LoRA parameters", "total_lora_params", ",d"),
)

_STATUS_WORDS = {
    "added": "new adapter",
    "removed": "adapter removed",
    "changed": "changed",
    "unchanged": "unchanged",
}


def diff_markdown(d: Mapping[str, Any], *, title: str | None = None, heading: int = 2) -> str:
    """An audit diff (``AuditDiff.to_dict()``): headline, a compact base/head/Δ table, flag,
    configuration, target and rank changes, the rule check, and the per-layer changes
    collapsed (layers that did not change are counted, not listed)."""
    from gradience.auditor import Recommendation  # numpy: only when a diff is rendered

    b, h = d["base"], d["head"]
    bl = name(b["label"]) if b else "—"
    hl = name(h["label"]) if h else "—"
    head_line = escape(title) if title is not None else f"Gradience diff: {bl} → {hl}"
    lines = [f"{'#' * heading} {head_line}", ""]
    verdict = ""
    if d.get("rules") is not None:
        verdict = " · rules **pass** ✅" if d["passed"] else " · rules **fail** ❌"
    lines += [f"**{_STATUS_WORDS.get(d['status'], escape(d['status']))}**{verdict}", ""]
    rows = []
    for label, key, fmt in _DIFF_ROWS:
        m = d["metrics"][key]
        scale = max(abs(m["base"] or 0), abs(m["head"] or 0))
        rows.append([label, _n(m["base"], fmt), _n(m["head"], fmt), _signed(m["delta"], fmt, scale)])
    rb, rh = d["recommendation"]["base"], d["recommendation"]["head"]
    rows.append(
        [
            f"Recommended rank ({escape(d['policy'])})",
            escape(Recommendation.describe(rb)),
            escape(Recommendation.describe(rh)),
            "changed" if d["recommendation"]["changed"] else "",
        ]
    )
    f = d["flags"]
    rows.append(
        ["Flags", _flag_list(f["base"]), _flag_list(f["head"]), _flag_delta(f["added"], f["cleared"])]
    )
    lines += _table(["", "Base", "Head", "Δ"], "lrrr", rows)
    notes = []
    for key, c in d["config"].items():
        notes.append(f"- config {name(key)}: {_value(c['base'])} → {_value(c['head'])}")
    t = d["targets"]
    if t["added"]:
        notes.append("- targets added: " + ", ".join(name(x) for x in t["added"]))
    if t["removed"]:
        notes.append("- targets removed: " + ", ".join(name(x) for x in t["removed"]))
    n = d["layer_counts"]
    notes.append(
        f"- layers: {n['changed']} changed, {n['added']} added, {n['removed']} removed, {n['unchanged']} unchanged"
    )
    lines += ["", *notes]
    if d.get("rules") is not None:
        lines += ["", *_rules_section(d)]
    changed = [x for x in d["layers"] if x["status"] != "unchanged"]
    if changed:
        body = _table(
            ["Layer", "Status", "r", "Utilisation", "Stable rank", "Energy rank 90", "σ₁ (scaled)", "Flags"],
            "llrrrrrl",
            (
                [
                    name(x["name"]),
                    x["status"],
                    _pair(x["r"], "d"),
                    _pair(x["metrics"]["utilization"], ".3f"),
                    _pair(x["metrics"]["stable_rank"], ".2f"),
                    _pair(x["metrics"]["energy_rank_90"], "d"),
                    _pair(x["metrics"]["sigma_max_scaled"], ".4g"),
                    _flag_delta(x["flags"]["added"], x["flags"]["cleared"]),
                ]
                for x in changed
            ),
        )
        lines += ["", *_details(f"Per-layer changes ({len(changed)} of {len(d['layers'])} layers)", body)]
    return "\n".join(lines) + "\n"


def _rules_section(d: Mapping[str, Any]) -> list[str]:
    r = d["rules"]
    parts = []
    if r.get("min_utilization") is not None:
        parts.append(f"utilisation ≥ {r['min_utilization']:g}")
    if r.get("max_rank_ratio") is not None:
        parts.append(f"recommended/nominal rank ≤ {r['max_rank_ratio']:g}")
    if r.get("forbid_flags"):
        parts.append("no " + ", ".join(name(x) for x in r["forbid_flags"]))
    lines = [f"**Rules on the head**: {'; '.join(parts) or 'none'}", ""]
    errors = [v for v in d["violations"] if v["severity"] == "error"]
    warnings = [v for v in d["violations"] if v["severity"] == "warning"]
    if not errors:
        lines.append("✅ The head passes." if d.get("head") is not None else "No head to check.")
    for v in errors:
        lines.append(f"- ❌ {name(v['rule'])}: {escape(v['message'])}")
    if warnings:
        body = _table(
            ["Layer", "Rule", "Message"],
            "lll",
            ([name(v["layer"] or ""), name(v["rule"]), escape(v["message"])] for v in warnings),
        )
        lines += ["", *_details(f"{len(warnings)} layer warning{'s' if len(warnings) != 1 else ''}", body)]
    return lines


def _flag_list(flags: Sequence[str]) -> str:
    return ", ".join(name(x) for x in flags) or "—"


def _flag_delta(added: Sequence[str], cleared: Sequence[str]) -> str:
    return " ".join([*(f"+{name(x)}" for x in added), *(f"−{name(x)}" for x in cleared)])


def _pair(c: Mapping[str, Any], fmt: str) -> str:
    base, head = c["base"], c["head"]
    if base is None and head is None:
        return "—"
    b, h = _n(base, fmt), _n(head, fmt)
    if base is None or head is None or b == h:
        return h if head is not None else b
    return f"{b} → {h}"


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]" if v else "[]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{escape(k)}: {_value(x)}" for k, x in v.items()) + "}" if v else "{}"
    if isinstance(v, str):
        return name(v)
    return escape(v)
