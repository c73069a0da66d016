"""A PNG of a replayed run: loss and eval loss, gradient norm, and where each alert fired.

matplotlib (the ``plots`` extra) is imported only here, with the Agg backend, so plotting works
on a headless machine and nothing else in Gradience pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradience.monitor.replay import ReplayResult

__all__ = ["plot_replay"]

#: One colour per rule: warnings in warm colours, info in cool ones.
_COLOURS = {
    "GRAD_SPIKE": "tab:red", "EVAL_PLATEAU": "tab:orange", "CONSIDER_STOPPING": "black",
    "LOSS_PLATEAU": "tab:blue", "GRAD_PLATEAU": "tab:cyan", "UTILIZATION_LOW": "tab:purple",
}  # fmt: skip


def plot_replay(result: ReplayResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write a two-panel PNG: loss (and eval loss) above, gradient norm (log scale) below, with
    a vertical marker and label at each alert.

    Raises:
        UsageError: matplotlib is not installed (``pip install 'gradience[plots]'``).
    """
    from gradience.report.figures import pyplot

    plt = pyplot()

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    s = result.series
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    try:
        if s.loss:
            ax1.plot(*zip(*s.loss, strict=True), lw=0.9, color="tab:blue", label="training loss")
        if s.eval:
            ax1.plot(*zip(*s.eval, strict=True), "o-", ms=2.5, lw=0.9, color="tab:orange", label="eval loss")
        values = [v for _, v in (*s.loss, *s.eval)]
        if values and min(values) > 0 and max(values) / min(values) > 100:
            ax1.set_yscale("log")  # a memorising run: training loss near 0, eval loss far above
        ax1.set_ylabel("loss")
        if s.grad_norm:
            ax2.plot(*zip(*s.grad_norm, strict=True), lw=0.8, color="tab:green", label="gradient norm")
            if min(v for _, v in s.grad_norm) > 0:
                ax2.set_yscale("log")
        ax2.set_ylabel("gradient norm")
        ax2.set_xlabel("step")
        by_rule: dict[str, list[int]] = {}
        for alert in result.alerts:
            if alert.step is not None:
                by_rule.setdefault(alert.rule, []).append(alert.step)
        for rule, steps in by_rule.items():
            colour = _COLOURS.get(rule, "tab:gray")
            style = {
                "color": colour,
                "lw": 0.8,
                "alpha": 0.75,
                "ls": "-" if rule == "CONSIDER_STOPPING" else "--",
            }
            for ax in (ax1, ax2):
                for i, step in enumerate(steps):
                    ax.axvline(step, label=f"{rule} ×{len(steps)}" if ax is ax2 and i == 0 else None, **style)
        ax1.legend(loc="upper right", fontsize=8)
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(loc="upper right", fontsize=7)
        stop = f" — would stop at step {result.stop_step}" if result.would_stop else ""
        fig.suptitle(title or f"{Path(result.source).name if result.source else 'replay'}{stop}", fontsize=10)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
