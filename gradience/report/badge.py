"""The model-card badge: a shields.io static badge for an audit, and its Markdown.

Shared by the Space (which shows the snippet and opens the PR) and the bot of a later issue,
so both print exactly the same badge for the same audit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = ["BANDS", "DEFAULT_SPACE_URL", "Badge", "badge_for", "badge_markdown", "space_url"]

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


#: Colour bands over mean utilisation (lower bound, colour), highest first. Chosen so a typical
#: public adapter (median utilisation about 0.15) reads orange: room to shrink, nothing broken.
BANDS: tuple[tuple[float, str], ...] = (
    (0.50, "brightgreen"),
    (0.25, "yellow"),
    (0.10, "orange"),
    (0.0, "red"),
)


def _color(utilisation: float) -> str:
    return next((color for low, color in BANDS if utilisation >= low), "red")


def _as_report(report: Any) -> dict[str, Any]:
    """An ``AdapterAudit`` or its ``to_dict()``: the badge reads the JSON form either way."""
    return report.to_dict() if hasattr(report, "to_dict") else dict(report)


def badge_for(report: Any) -> Badge:
    """The badge for an audit (``AdapterAudit`` or its ``to_dict()``), e.g. ``17% · r16→4``.

    The rank is the audit's single ``recommendation`` (the same number the terminal, JSON,
    Space and PR comments show). An adapter whose layers are all untrained (B = 0), or with
    no valid layer, has no utilisation to show and gets a grey ``untrained`` (``invalid``)
    badge, never ``r=None``.
    """
    d = _as_report(report)
    rec = d.get("recommendation") or {}
    util = d.get("utilization_mean")
    n_layers = int(d.get("n_layers") or 0)
    untrained = int(d.get("n_untrained") or 0)
    status = rec.get("status")
    if status in ("untrained", "invalid"):
        return Badge(LABEL, status, "lightgrey")
    if util is None or n_layers == 0 or untrained >= n_layers:
        return Badge(LABEL, "untrained", "lightgrey")
    message = f"{round(100 * float(util))}%"
    if status == "ok" and rec.get("rank") is not None and rec.get("nominal_r") is not None:
        message += f" · r{rec['nominal_r']}→{rec['rank']}"
    return Badge(LABEL, message, _color(float(util)))


def space_url() -> str:
    """The Space badges link to: ``GRADIENCE_SPACE_URL``, else this Space's own host."""
    explicit = os.environ.get("GRADIENCE_SPACE_URL")
    if explicit:
        return explicit.rstrip("/")
    host = os.environ.get("SPACE_HOST")
    return f"https://{host}" if host else DEFAULT_SPACE_URL


def badge_markdown(repo_id: str, report: Any, *, link: str | None = None) -> str:
    """The Markdown image link for a model card: the badge, linking to the Space's audit."""
    badge = badge_for(report)
    target = f"{link or space_url()}?repo={quote(repo_id, safe='/@')}"
    return f"[![{badge.label}: {badge.message}]({badge.image_url})]({target})"
