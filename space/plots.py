"""Figures for the Space, drawn from report dicts (no audit logic here, only drawing).

Figures are inline SVG rather than images: every text and axis line is drawn in a sentinel
colour that becomes ``currentColor``, so the plots follow the page's light or dark theme, scale
to any width (390 px phones included) and carry their titles inside the figure, where no
component label can cover them. ``matplotlib.figure.Figure`` (not pyplot) keeps concurrent
requests from sharing pyplot's global state.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

_INK = "#010203"  # replaced by currentColor in the SVG text
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|block)\.(\d+)\.")
_SIZE = re.compile(r'(<svg[^>]*?)\s(?:width|height)="[^"]*"')


def split_name(name: str) -> tuple[str, str]:
    """(layer label, module) from a module path, e.g. ``model.layers.3.self_attn.q_proj`` → (3, q_proj)."""
    m = _LAYER_INDEX.search(name)
    module = name.rsplit(".", 1)[-1]
    return (m.group(1) if m else name.rsplit(".", 1)[0]), module


def _figure(width: float, height: float) -> Any:
    """A figure sized so its text stays legible when the page shrinks it to a phone's width."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _ink(ax: Any) -> None:
    ax.tick_params(which="both", colors=_INK, labelcolor=_INK)
    for spine in ax.spines.values():
        spine.set_color(_INK)
        spine.set_alpha(0.5)
    ax.xaxis.label.set_color(_INK)
    ax.yaxis.label.set_color(_INK)
    ax.title.set_color(_INK)


def _svg(fig: Any, label: str) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gradience"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", transparent=True)
    text = buf.getvalue()
    text = text[text.index("<svg") :].replace(_INK, "currentColor")
    while _SIZE.search(text):
        text = _SIZE.sub(r"\1", text, count=1)
    text = text.replace("<svg", f'<svg role="img" aria-label="{label}" width="100%"', 1)
    return f'<figure class="g-plot">{text}</figure>'


def spectrum(row: dict[str, Any] | None) -> str:
    """Singular values of one layer (log scale) with its energy ranks marked, as inline SVG.

    Directions that carry nothing (σ below 1e-12·σ₁, e.g. an untrained layer or the padded tail
    of a compressed one) are not drawn: a log axis would otherwise show them at an invented floor.
    """
    s = [float(v) for v in (row or {}).get("singular_values") or []]
    top = max(s, default=0.0)
    kept = [v for v in s if top > 0 and v > top * 1e-12]
    if not row or not kept:
        why = "this layer carries no update (B = 0)" if row else "no layer selected"
        return f'<p class="g-empty">No spectrum to draw: {why}.</p>'
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    ax.bar(range(1, len(kept) + 1), kept, color="#7c6cf0", width=0.8)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for key, color in (("energy_rank_90", "#f59e0b"), ("energy_rank_99", "#ef4444")):
        k = row.get(key)
        if k:
            ax.axvline(k + 0.5, color=color, ls="--", lw=1.4, label=f"{key[-2:]}% of energy in {k}")
    ax.set_xlabel("direction (rank index)")
    ax.set_ylabel("σ (scaled)")
    util = row.get("utilization")
    util_s = f"{util:.0%}" if isinstance(util, float) and math.isfinite(util) else "n/a"
    layer, module = split_name(row["name"])
    ax.set_title(f"layer {layer} · {module}   r={row.get('r')}, utilisation {util_s}", fontsize=12)
    _ink(ax)
    if ax.get_legend_handles_labels()[0]:
        legend = ax.legend(fontsize=10, loc="upper right", frameon=False)
        for t in legend.get_texts():
            t.set_color(_INK)
    return _svg(fig, f"singular values of {row['name']}")


def heatmap(values: dict[str, float | None], title: str, *, label: str, fmt: str = "{:.2f}") -> str:
    """Layers × modules heatmap of one number per LoRA module, values written in the cells.

    The colour scale runs from 0 to the largest value shown, so small utilisations are not all
    one colour; missing cells stay empty.
    """
    cells: dict[tuple[str, str], float] = {}
    for name, v in values.items():
        if v is not None and math.isfinite(v):
            cells[split_name(name)] = float(v)
    if not cells:
        return f'<p class="g-empty">Nothing to show for {label}.</p>'
    layers = sorted({k[0] for k in cells}, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
    modules = sorted({k[1] for k in cells})
    grid = [[cells.get((lay, mod), math.nan) for mod in modules] for lay in layers]
    vmax = max(cells.values())
    vmin = min(0.0, min(cells.values()))
    fig = _figure(6, max(2.6, min(12.0, 0.4 * len(layers) + 1.6)))
    ax = fig.add_subplot()
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
    if len(layers) * len(modules) <= 400:
        cmap, norm = im.get_cmap(), im.norm
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if math.isfinite(v):
                    r, g, b, _ = cmap(norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.55
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=9,
                            color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(modules)), modules, rotation=30, ha="right", fontsize=10)
    ax.set_yticks(range(len(layers)), layers, fontsize=10 if len(layers) <= 40 else 6)
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=12)
    _ink(ax)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(label, color=_INK)
    bar.ax.tick_params(colors=_INK, labelcolor=_INK)
    bar.outline.set_edgecolor(_INK)
    return _svg(fig, title)
