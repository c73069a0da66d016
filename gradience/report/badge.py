"""The model-card badge: a shields.io static badge for an audit, and its Markdown.

Shared by the Space (which shows the snippet and opens the PR) and the bot of a later issue,
so both print exactly the same badge for the same audit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = ["DEFAULT_SPACE_URL", "Badge", "badge_for", "badge_markdown", "space_url"]

LABEL = "LoRA utilisation"
# Where badges link when neither GRADIENCE_SPACE_URL nor a Space's own SPACE_HOST says otherwise.
DEFAULT_SPACE_URL = "https://huggingface.co/spaces/gradience/gradience"


@dataclass(frozen=True)
class Badge:
    """What the badge says: ``message`` in ``color`` next to ``label``."""

    label: str
    message: str
    color: str

    @property
    def image_url(self) -> str:
        """The shields.io static badge URL (``-`` and ``_`` doubled, as shields requires)."""
        return "https://img.shields.io/badge/" + "-".join(
            _shields_escape(part) for part in (self.label, self.message, self.color)
        )


def _shields_escape(text: str) -> str:
    return quote(text.replace("-", "--").replace("_", "__"), safe="")


def _color(utilisation: float) -> str:
    """Bands chosen so a typical public adapter (median utilisation ≈ 0.15) reads orange."""
    if utilisation < 0.10:
        return "red"
    if utilisation < 0.25:
        return "orange"
    if utilisation < 0.50:
        return "yellow"
    return "brightgreen"


def badge_for(report: dict[str, Any]) -> Badge:
    """The badge for an audit report (``AdapterAudit.to_dict()``), e.g. ``17% · r16→4``.

    An adapter whose layers are all untrained (B = 0), or with no valid layer, has no
    utilisation to show and gets a grey ``untrained`` badge.
    """
    util = report.get("utilization_mean")
    n_layers = int(report.get("n_layers") or 0)
    untrained = int(report.get("n_untrained") or 0)
    if util is None or n_layers == 0 or untrained >= n_layers:
        return Badge(LABEL, "untrained", "lightgrey")
    r = (report.get("adapter") or {}).get("r")
    suggested = (report.get("rank_suggestions") or {}).get("default_r")
    message = f"{round(100 * float(util))}%"
    if r is not None and suggested is not None:
        message += f" · r{r}→{suggested}"
    return Badge(LABEL, message, _color(float(util)))


def space_url() -> str:
    """The Space badges link to: ``GRADIENCE_SPACE_URL``, else this Space's own host."""
    explicit = os.environ.get("GRADIENCE_SPACE_URL")
    if explicit:
        return explicit.rstrip("/")
    host = os.environ.get("SPACE_HOST")
    return f"https://{host}" if host else DEFAULT_SPACE_URL


def badge_markdown(repo_id: str, report: dict[str, Any], *, link: str | None = None) -> str:
    """The Markdown image link for a model card: the badge, linking to the Space's audit."""
    badge = badge_for(report)
    target = f"{link or space_url()}?repo={quote(repo_id, safe='/@')}"
    return f"[![{badge.label}: {badge.message}]({badge.image_url})]({target})"
