"""Figures for the Space, drawn from report dicts (no audit logic here, only drawing).

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so concurrent requests
never share pyplot's global current-figure state and nothing leaks between them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from matplotlib.figure import Figure

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|block)\.(\d+)\.")


def _split(name: str) -> tuple[str, str]:
    """(layer label, module) from a module path, e.g. ``model.layers.3.self_attn.q_proj``."""
    m = _LAYER_INDEX.search(name)
    module = name.rsplit(".", 1)[-1]
    return (m.group(1) if m else name.rsplit(".", 1)[0]), module


def spectrum(row: dict[str, Any] | None) -> Figure:
    """Singular values of one layer (log scale) with its energy ranks marked."""
    fig = Figure(figsize=(7, 3.4), layout="constrained")
    ax = fig.add_subplot()
    if not row or not row.get("singular_values"):
        ax.text(0.5, 0.5, "no spectrum (untrained or invalid layer)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    s = [max(float(v), 1e-30) for v in row["singular_values"]]
    ax.bar(range(1, len(s) + 1), s, color="#6d5dfc", width=0.8)
    ax.set_yscale("log")
    for key, color in (("energy_rank_90", "#f59e0b"), ("energy_rank_99", "#ef4444")):
        k = row.get(key)
        if k:
            ax.axvline(
                k + 0.5,
                color=color,
                ls="--",
                lw=1.2,
                label=f"{key.replace('energy_rank_', '')}% energy: k={k}",
            )
    ax.set_xlabel("index")
    ax.set_ylabel("σ (scaled)")
    util = row.get("utilization")
    util_s = f"{util:.0%}" if isinstance(util, float) and math.isfinite(util) else "n/a"
    ax.set_title(f"{row['name']}  (r={row.get('r')}, utilisation {util_s})", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def grid_heatmap(
    values: dict[str, float | None], title: str, *, label: str, vmax: float | None = None
) -> Figure:
    """Layers × modules heatmap of one number per LoRA module (missing cells blank)."""
    cells: dict[tuple[str, str], float] = {}
    for name, v in values.items():
        if v is not None and math.isfinite(v):
            cells[_split(name)] = float(v)
    layers = sorted({k[0] for k in cells}, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
    modules = sorted({k[1] for k in cells})
    fig = Figure(figsize=(7, max(2.4, 0.36 * len(layers) + 1.4)), layout="constrained")
    ax = fig.add_subplot()
    if not cells:
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center")
        ax.set_axis_off()
        return fig
    grid = [[cells.get((lay, mod), math.nan) for mod in modules] for lay in layers]
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
    ax.set_xticks(range(len(modules)), modules, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=label)
    return fig
