"""The bench report for people: a terminal table and a metric-versus-parameters plot.

Both render the ``gradience.bench/v1`` dict that ``--json`` prints, so what a person reads
and what a script parses never disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["plot_report", "render_report"]


def _mode_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "—"
    colour = "green" if m["verdict"] == "pass" else "red"
    return f"{m['mean']:.1f} / [{colour}]{m['worst_delta']:+.1f}[/{colour}]"


def render_report(d: dict[str, Any], file: Any = None) -> None:
    """Print the candidates table, the verdicts and the smallest passing LoraConfig."""
    from rich.console import Console
    from rich.table import Table

    con = Console(
        file=file or sys.stdout, highlight=False, width=None if (file or sys.stdout).isatty() else 120
    )
    task, probe = d["task"], d["probe"]
    where = f" · on {task['device']} ({task['precision']})" if task.get("device") else ""
    con.print(f"[bold]bench[/bold] {task['name']}: {task['description']}{where}")
    seeds = len(probe["per_seed"])
    con.print(
        f"metric {task['metric']} (points; chance {task['chance']:.1f}) · {seeds} seed{'s' if seeds != 1 else ''}"
        f" · tolerance {d['tolerance']:+.1f} on the worst seed · probe r={probe['r']}: "
        f"{probe['mean']:.1f} mean, {probe['worst']:.1f} worst, {probe['lora_params']:,} LoRA parameters"
    )
    t = Table(title=None, show_lines=False)
    t.add_column("candidate")
    t.add_column("ranks", justify="right")
    t.add_column("params", justify="right")
    t.add_column("vs probe", justify="right")
    t.add_column("truncated mean / worst Δ", justify="right")
    t.add_column("retrained mean / worst Δ", justify="right")
    t.add_column("verdict")
    for c in d["candidates"]:
        values = sorted(set(c["ranks"].values()))
        ranks = f"r={values[0]}" if len(values) == 1 else f"{values[0]}–{values[-1]} (r={c['r']})"
        verdict = "[green]PASS[/green]" if c["verdict"] == "pass" else "[red]FAIL[/red]"
        t.add_row(
            c["name"],
            ranks,
            f"{c['lora_params']:,}",
            f"{c['param_ratio']:.0%}",
            _mode_cell(c["modes"].get("truncated")),
            _mode_cell(c["modes"].get("retrained")),
            verdict,
        )
    con.print(t)
    best = d["best"]
    if best is None:
        con.print(
            "[bold red]no smaller configuration passed[/bold red]: keep the probe's rank, or raise the tolerance"
        )
        return
    con.print(
        f"smallest passing: [bold]{best['candidate']}[/bold] — {best['lora_params']:,} LoRA parameters "
        f"({best['param_reduction']:.0%} fewer than the probe)"
    )
    con.print(best["lora_config"], markup=False, end="")


def plot_report(d: dict[str, Any], path: str | Path) -> Path:
    """A PNG: the metric against LoRA parameters, one point per seed and mode, per candidate.

    Raises:
        UsageError: matplotlib is not installed (``pip install 'gradience[plots]'``).
    """
    from gradience.report.figures import pyplot

    plt = pyplot()

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    try:
        probe = d["probe"]
        xs = [probe["lora_params"]] * len(probe["per_seed"])
        ax.scatter(
            xs,
            [r["metric"] for r in probe["per_seed"]],
            marker="s",
            color="black",
            label=f"probe r={probe['r']}",
        )
        ax.axhline(
            probe["mean"] + d["tolerance"],
            color="grey",
            ls="--",
            lw=0.8,
            label="probe mean + tolerance (a guide)",
        )
        ax.axhline(d["task"]["chance"], color="grey", ls=":", lw=0.8, label="chance")
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        markers = {"retrained": "o", "truncated": "x"}
        for i, c in enumerate(d["candidates"]):
            colour = colours[i % len(colours)]
            for mode, m in c["modes"].items():
                ys = [r["metric"] for r in m["per_seed"]]
                ax.scatter([c["lora_params"]] * len(ys), ys, marker=markers[mode], color=colour,
                           label=f"{c['name']} ({mode})", alpha=0.85)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("LoRA parameters")
        ax.set_ylabel(f"{d['task']['metric']} (points)")
        ax.set_title(f"gradience bench · {d['task']['name']} · {len(probe['per_seed'])} seeds")
        ax.legend(fontsize=7, loc="lower right", ncol=2)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
