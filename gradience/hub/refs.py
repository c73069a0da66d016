"""What users type to name an adapter on the Hub, normalised once.

Accepted: ``user/repo``, ``user/repo@revision``, ``hf://[datasets/]user/repo[@rev][/path]``,
and web URLs ``https://<hub>/[datasets/]user/repo[/tree|blob/<rev>[/<path>]]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from gradience.errors import UsageError

__all__ = ["HubRef", "looks_like_hub_ref", "parse_hub_ref"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_PLAIN = re.compile(
    rf"^(?:(?P<type>datasets|models)/)?(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[^/]+(?:/[^/]+)*?))?$"
)


@dataclass(frozen=True)
class HubRef:
    """A repo on the Hub, optionally pinned to a revision and a subfolder."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None
    subfolder: str | None = None

    def __str__(self) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        rev = f"@{self.revision}" if self.revision else ""
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"hf://{prefix}{self.repo_id}{rev}{sub}"


def looks_like_hub_ref(text: str) -> bool:
    """True for strings that can only mean a Hub repo (the caller checks local paths first)."""
    return text.startswith(("hf://", "http://", "https://")) or bool(_PLAIN.match(text))


def parse_hub_ref(
    text: str, *, repo_type: str | None = None, revision: str | None = None, subfolder: str | None = None
) -> HubRef:
    """Parse a Hub reference; explicit ``repo_type`` / ``revision`` / ``subfolder`` win.

    Raises:
        UsageError: the text names no repo, or the repo type is not model or dataset.
    """
    kind, rev, sub = "model", None, None
    if text.startswith(("http://", "https://")):
        parts = [unquote(p) for p in urlparse(text).path.strip("/").split("/") if p]
        if parts and parts[0] in ("datasets", "models"):
            kind = "dataset" if parts.pop(0) == "datasets" else "model"
        if len(parts) < 2:
            raise UsageError(f"{text!r} does not name a repo (expected https://<hub>/user/repo/...)")
        repo = "/".join(parts[:2])
        rest = parts[2:]
        if rest[:1] in (["tree"], ["blob"], ["resolve"]) and len(rest) >= 2:
            rev, sub = rest[1], "/".join(rest[2:]) or None
            if rest[0] != "tree" and sub:  # a file URL: its folder is the adapter
                sub = sub.rsplit("/", 1)[0] if "/" in sub else None
    elif text.startswith("hf://"):
        body = text[len("hf://") :]
        if body.startswith(("datasets/", "models/")):
            kind = "dataset" if body.startswith("datasets/") else "model"
            body = body.split("/", 1)[1]
        bits = body.split("/")
        if len(bits) < 2:
            raise UsageError(f"{text!r} does not name a repo (expected hf://user/repo[@rev][/path])")
        repo = "/".join(bits[:2])
        if "@" in bits[1]:
            name, rev = bits[1].split("@", 1)
            repo = f"{bits[0]}/{name}"
        sub = "/".join(bits[2:]) or None
    else:
        m = _PLAIN.match(text)
        if not m:
            raise UsageError(f"{text!r} is neither a local folder nor a Hub repo id (user/repo[@revision])")
        repo, rev = m["repo"], m["rev"]
        kind = "dataset" if m["type"] == "datasets" else "model"
    if repo_type is not None:
        if repo_type not in ("model", "dataset"):
            raise UsageError(f"repo type must be model or dataset, got {repo_type!r}", param="repo_type")
        kind = repo_type
    if not _REPO_ID.match(repo):
        raise UsageError(f"{repo!r} is not a valid repo id (user/repo)")
    return HubRef(repo, kind, revision or rev, (subfolder or sub or "").strip("/") or None)
