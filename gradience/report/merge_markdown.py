"""The merge audit as a Markdown report (``merge-audit --markdown``)."""

from __future__ import annotations

from typing import Any

__all__ = ["merge_audit_markdown"]


def _n(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def merge_audit_markdown(d: dict[str, Any]) -> str:
    names = [a["path"] for a in d["adapters"]]
    lines = ["# Merge audit", ""]
    lines += [f"- adapter {chr(65 + i) if i < 26 else i}: `{p}`" for i, p in enumerate(names)]
    lines += [f"- energy threshold {d['energy_threshold']:g}, thresholds `{d['thresholds']['name']}`", ""]
    for pair in d["pairs"]:
        a, b = pair["a"], pair["b"]
        agg = pair["aggregate"]
        lines += [
            f"## {chr(65 + a)} × {chr(65 + b)}: {agg['overall_verdict']} (risk {agg['risk_level']})",
            "",
            f"Compatibility score {_n(agg['compatibility_score'], '.2f')}; mean overlap "
            f"{_n(agg['mean_overlap'])}; mean agreement {_n(agg['mean_agreement'])}; "
            f"{agg['n_safe']} safe, {agg['n_redundant']} redundant, {agg['n_conflicting']} conflicting, "
            f"{agg['n_imbalanced']} imbalanced of {agg['n_layers_compared']} shared layers.",
            "",
            "| Layer | r_a | r_b | Overlap | Agreement | Scale | Mag ratio | Verdict | Strategy |",
            "|---|---:|---:|---:|---:|---|---:|---|---|",
        ]
        recs = {r["layer"]: r for r in pair["recommendations"]}
        for c in pair["per_layer"]:
            scale = f"{c['scale_a']:g} / {c['scale_b']:g}"
            lines.append(
                f"| `{c['layer']}` | {c['r_a']} | {c['r_b']} | {_n(c['overlap'])} | {_n(c['agreement'], '+.3f')} "
                f"| {scale} | {_n(c['sigma_ratio'], '.2f')} | {c['verdict']} | {recs[c['layer']]['strategy']} |"
            )
        lines += [
            "",
            "### Recommendations",
            "",
            "| Layer | Strategy | Coefficients | Trim | Notes |",
            "|---|---|---|---:|---|",
        ]
        for r in pair["recommendations"]:
            coef = " / ".join(f"{w:.2f}" for w in r["coefficients"])
            trim = f"{r['trim']:.2f}" if r["drop_rate"] is None else f"drop {r['drop_rate']:.2f}"
            note = r["notes"] + (f" (ranks {r['compress_first']})" if r["compress_first"] else "")
            lines.append(f"| `{r['layer']}` | {r['strategy']} | {coef} | {trim} | {note} |")
        if pair["warnings"]:
            lines += ["", *[f"> {w}" for w in pair["warnings"]]]
        lines.append("")
    return "\n".join(lines)
