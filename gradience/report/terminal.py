"""Human-readable terminal output (rich). Renders the same dicts ``--json`` prints."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gradience.open import source_label

__all__ = ["render_audit", "render_compress"]


def _console() -> Console:
    # Piped output is read by people in logs and editors: do not fold names at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _i(x: int | None) -> str:
    return "—" if x is None else str(x)


def _e(x: Any) -> str:
    """Folder, layer and model names come from untrusted files: shown literally, never as
    rich markup (a ``[/bold]`` in a folder name would otherwise crash the rendering)."""
    return escape(str(x))


def render_audit(d: dict[str, Any], *, per_layer: bool = False, suggest_per_layer: bool = False) -> None:
    con = _console()
    a = d["adapter"]
    dora = " + DoRA" if a["dora"] else ""
    con.print(
        f"[bold]{_e(source_label(d['source'], ''))}[/bold]  {_e(a['peft_type'])}{dora}  r={a['r']}  "
        f"α={a['lora_alpha']:g}{'  rsLoRA' if a['use_rslora'] else ''}  "
        f"base={_e(a['base_model'] or '?')}  {a['format']} {'/'.join(a['dtypes'])}"
    )
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    util = d["utilization_mean"]
    t.add_row("LoRA layers", f"{d['n_layers']}  ({d['total_lora_params']:,} parameters)")
    t.add_row("utilisation (mean / median)", f"{_f(util, 3)} / {_f(d['utilization_median'], 3)}")
    t.add_row(
        "stable rank (mean / median)",
        f"{_f(d['stable_rank_mean'])} / {_f(d['stable_rank_median'])}",
    )
    t.add_row("effective rank (mean, σ / σ²)",
              f"{_f(d['effective_rank_mean'])} / {_f(d['effective_rank_energy_mean'])}")  # fmt: skip
    t.add_row("energy rank @90% (p50 / p90)",
              f"{_f(d['energy_rank_90_p50'], 1)} / {_f(d['energy_rank_90_p90'], 1)}")  # fmt: skip
    rec = d["recommendation"]
    if rec["status"] != "ok":
        t.add_row("recommended rank", f"[red]none: {_e(rec['reason'])}[/red]")
    else:
        per = f"; per layer {min(rec['per_layer'].values())}–{max(rec['per_layer'].values())}"
        t.add_row(
            f"recommended rank ({rec['policy']})",
            f"[bold]r={rec['rank']}[/bold] of {rec['nominal_r']}{per if rec['rank_pattern'] else ''}",
        )
    for name, g in d["by_type"].items():
        t.add_row(
            f"  {_e(name)}",
            f"{g['n_layers']} layers, utilisation {_f(g['utilization_mean'], 3)}, "
            f"energy rank p90 {_f(g['energy_rank_90_p90'], 1)}",
        )
    if d["n_untrained"] or d["n_invalid"] or d["n_over_provisioned"]:
        t.add_row(
            "flags",
            f"{d['n_over_provisioned']} over-provisioned · {d['n_untrained']} untrained · "
            f"{d['n_invalid']} invalid",
        )
    if d["ignored_tensors"]:
        t.add_row("non-LoRA tensors (not audited)", str(len(d["ignored_tensors"])))
    con.print(t)
    for w in d["warnings"][:10]:
        con.print(f"[yellow]warning:[/yellow] {_e(w)}")
    if len(d["warnings"]) > 10:
        con.print(f"[yellow]… and {len(d['warnings']) - 10} more warnings (see --json)[/yellow]")
    pgs = d["policy_global_suggestions"]
    if len(pgs) > 1:
        pt = Table(title="policies", title_justify="left")
        for col in ("policy", "median k", "p90 k", "max k"):
            pt.add_column(col, justify="right" if col != "policy" else "left")
        for spec, g in pgs.items():
            pt.add_row(spec, _f(g["uniform_median"], 1), _f(g["uniform_p90"], 1),
                       _f(g["uniform_max"], 0))  # fmt: skip
        con.print(pt)
    if d.get("top_wasteful"):
        wt = Table(title="most wasteful layers", title_justify="left")
        for col in ("layer", "r", "stable rank", "utilisation", "energy rank 90"):
            wt.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
        for row in d["top_wasteful"]:
            wt.add_row(_e(row["name"]), str(row["r"]), _f(row["stable_rank"]),
                       _f(row["utilization"], 3), str(row["energy_rank_90"]))  # fmt: skip
        con.print(wt)
    if per_layer and "layer_data" in d:
        lt = Table(title="layers", title_justify="left")
        for col in ("layer", "type", "r", "stable", "util", "E90", "E99", "σ₁ (scaled)", "flags"):
            lt.add_column(
                col,
                justify="left" if col in ("layer", "type", "flags") else "right",
                overflow="fold",
            )
        for row in d["layer_data"]["layer_rows"]:
            lt.add_row(
                _e(row["name"]), row["module_type"], str(row["r"]), _f(row["stable_rank"]),
                _f(row["utilization"], 3), _i(row["energy_rank_90"]), _i(row["energy_rank_99"]),
                ("—" if row["sigma_max_scaled"] is None else f"{row['sigma_max_scaled']:.4g}"), ",".join(row["flags"]),
            )  # fmt: skip
        con.print(lt)
    if suggest_per_layer and rec["status"] == "ok":
        from gradience.auditor import Recommendation

        con.print("[bold]recommended LoraConfig[/bold] (each layer its own rank):")
        con.print(Recommendation.from_dict(rec).lora_config(), markup=False, highlight=False)


def render_compress(d: dict[str, Any]) -> None:
    con = _console()
    t = Table(title=f"compressed → {_e(d['out_dir'])}", title_justify="left")
    for col in ("layer", "r → k", "retained energy", "relative error"):
        t.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
    for row in d["layers"]:
        t.add_row(_e(row["name"]), f"{row['r_before']} → {row['r_after']}",
                  f"{row['retained_energy']:.4f}", f"{row['relative_error']:.4f}")  # fmt: skip
    con.print(t)
    ratio = d["params_after"] / d["params_before"] if d["params_before"] else 1.0
    con.print(
        f"LoRA parameters {d['params_before']:,} → {d['params_after']:,} ({ratio:.1%}); "
        f"r={d['r']}, {len(d['rank_pattern'])} layers in rank_pattern"
    )
    for w in d["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {_e(w)}")


def render_merge_audit(d: dict[str, Any], *, verbose: bool = False) -> None:
    con = _console()
    for pair in d["pairs"]:
        a, b = d["adapters"][pair["a"]]["path"], d["adapters"][pair["b"]]["path"]
        agg = pair["aggregate"]
        t = Table(title=f"A = {_e(a)}\nB = {_e(b)}", title_justify="left")
        cols = (
            "layer",
            "r_a",
            "r_b",
            "overlap",
            "agreement",
            "σ₁ ratio",
            "verdict",
            "strategy",
            "coefficients",
        )
        for col in cols:
            t.add_column(
                col, justify="left" if col in ("layer", "verdict", "strategy") else "right", overflow="fold"
            )
        recs = {r["layer"]: r for r in pair["recommendations"]}
        for c in pair["per_layer"]:
            r = recs[c["layer"]]
            coef = " / ".join(f"{w:.2f}" for w in r["coefficients"])
            if r["strategy"] in ("ties", "dare_ties"):
                coef += f"  density {r['density']:.2f}"
            t.add_row(_e(c["layer"]), str(c["r_a"]), str(c["r_b"]), _f(c["overlap"], 3), _f(c["agreement"], 3),
                      _f(c["sigma_ratio"]), c["verdict"], r["strategy"], coef)  # fmt: skip
            if verbose:
                t.add_row("", "", "", "", "", "", "", "", _e("; ".join(c["evidence"])), style="dim")
        con.print(t)
        con.print(
            f"[bold]overall: {agg['overall_verdict']}[/bold]  risk {agg['risk_level']}  "
            f"compatibility {_f(agg['compatibility_score'])}  mean overlap {_f(agg['mean_overlap'], 3)}  "
            f"mean agreement {_f(agg['mean_agreement'], 3)}"
        )
        if agg.get("incompatible"):
            con.print(f"[red]do not merge:[/red] {_e(agg['incompatible'])}")
        for w in pair["warnings"]:
            con.print(f"[yellow]warning:[/yellow] {_e(w)}")


def render_merge(d: dict[str, Any]) -> None:
    con = _console()
    t = Table(title=f"merged → {_e(d['out_dir'])}", title_justify="left")
    for col in ("layer", "strategy", "weights", "density", "rank", "residual"):
        t.add_column(col, justify="left" if col in ("layer", "strategy") else "right", overflow="fold")
    for x in d["layers"]:
        t.add_row(_e(x["name"]), x["strategy"], " / ".join(f"{w:.2f}" for w in x["weights"]), f"{x['density']:.2f}",
                  str(x["rank"]), f"{x['residual']:.2e}")  # fmt: skip
    con.print(t)
    con.print(f"r={d['r']}, {len(d['rank_pattern'])} layers in rank_pattern")
    for w in d["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {_e(w)}")
