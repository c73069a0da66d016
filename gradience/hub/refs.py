"""What users type to name an adapter on the Hub, normalised once.

Accepted: ``user/repo``, ``user/repo@revision``, ``[datasets/|spaces/]user/repo``,
``hf://[datasets/|spaces/]user/repo[@rev][/path]``, and web URLs
``https://<hub>/[datasets/|spaces/]user/repo[/tree|blob|resolve/<rev>[/<path>]]`` (``hf.co/...``
and ``huggingface.co/...`` without a scheme too).

A revision is decoded once (``refs%2Fpr%2F3`` is ``refs/pr/3``) and Hub refs with slashes
(``refs/pr/N``, ``refs/convert/X``, ``refs/heads/X``, ``refs/tags/X``) are kept whole. A URL
naming another host than the Hub this process talks to is refused: silently auditing a repo of
the same name on a different Hub would be a wrong answer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from gradience.errors import UsageError

__all__ = ["HubRef", "looks_like_hub_ref", "parse_hub_ref"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_PLAIN = re.compile(
    rf"^(?:(?P<type>datasets|models|spaces)/)?(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[^/]+(?:/[^/]+)*?))?$"
)
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_PREFIXES = {"dataset": "datasets/", "space": "spaces/", "model": ""}
REPO_TYPES = ("model", "dataset", "space")
#: Hosts that mean "the Hub" whatever endpoint is configured (a mirror serves the same repos).
PUBLIC_HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
_SCHEMELESS = ("hf.co/", "huggingface.co/", "www.huggingface.co/")
# Revisions that hold slashes on the Hub: the kind and one name.
_SLASHED_REFS = ("pr", "convert", "heads", "tags")


@dataclass(frozen=True)
class HubRef:
    """A repo on the Hub, optionally pinned to a revision and a subfolder."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None
    subfolder: str | None = None

    def __str__(self) -> str:
        rev = f"@{quote(self.revision, safe='/')}" if self.revision else ""  # parsing decodes it once
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"hf://{_PREFIXES.get(self.repo_type, '')}{self.repo_id}{rev}{sub}"


def looks_like_hub_ref(text: str) -> bool:
    """True for strings that can only mean a Hub repo (the caller checks local paths first)."""
    return text.startswith(("hf://", "http://", "https://", *_SCHEMELESS)) or bool(_PLAIN.match(text))


def _split_revision(first: str, rest: list[str]) -> tuple[str, list[str]]:
    """The revision starting at ``first`` (``refs/pr/3`` spans three segments) and what follows."""
    if first == "refs" and len(rest) >= 2 and rest[0] in _SLASHED_REFS:
        return f"refs/{rest[0]}/{rest[1]}", rest[2:]
    return first, rest


def _origin(url: str) -> tuple[str, str, int | None]:
    split = urlsplit(url)
    default = {"http": 80, "https": 443}.get(split.scheme)
    return split.scheme, (split.hostname or "").lower(), split.port or default


def _check_host(text: str, endpoint: str | None) -> None:
    host = (urlsplit(text).hostname or "").lower()
    if host in PUBLIC_HUB_HOSTS:
        return
    configured = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if _origin(text)[1:] == _origin(configured.rstrip("/"))[1:]:
        return
    raise UsageError(
        f"{text!r} names the host {host or '?'}, but the Hub endpoint in use is {configured}; "
        "point the Hub endpoint at that host to read from it",
        param="endpoint",
    )


def parse_hub_ref(
    text: str,
    *,
    repo_type: str | None = None,
    revision: str | None = None,
    subfolder: str | None = None,
    endpoint: str | None = None,
) -> HubRef:
    """Parse a Hub reference; explicit ``repo_type`` / ``revision`` / ``subfolder`` win.

    ``endpoint`` is the Hub in use (default: ``HF_ENDPOINT`` or huggingface.co); a URL must
    name it or the public Hub.

    Raises:
        UsageError: the text names no repo, a repo type other than model, dataset or space, or
            a URL names another host than the Hub in use.
    """
    kind, rev, sub = "model", None, None
    if text.startswith(_SCHEMELESS):
        text = "https://" + text
    if text.startswith(("http://", "https://")):
        _check_host(text, endpoint)
        parts = [unquote(p) for p in urlsplit(text).path.strip("/").split("/") if p]
        if parts and parts[0] in _TYPES:
            kind = _TYPES[parts.pop(0)]
        if len(parts) < 2:
            raise UsageError(f"{text!r} does not name a repo (expected https://<hub>/user/repo/...)")
        repo = "/".join(parts[:2])
        rest = parts[2:]
        if rest[:1] in (["tree"], ["blob"], ["resolve"]) and len(rest) >= 2:
            rev, after = _split_revision(rest[1], rest[2:])
            sub = "/".join(after) or None
            if rest[0] != "tree" and sub:  # a file URL: its folder is the adapter
                sub = sub.rsplit("/", 1)[0] if "/" in sub else None
    elif text.startswith("hf://"):
        body = text[len("hf://") :]
        first = body.split("/", 1)[0]
        if first in _TYPES:
            kind = _TYPES[first]
            body = body.split("/", 1)[1] if "/" in body else ""
        bits = body.split("/")
        if len(bits) < 2 or not bits[1]:
            raise UsageError(f"{text!r} does not name a repo (expected hf://user/repo[@rev][/path])")
        repo = "/".join(bits[:2])
        rest = bits[2:]
        if "@" in bits[1]:
            name, first_rev = bits[1].split("@", 1)
            repo = f"{bits[0]}/{name}"
            rev, rest = _split_revision(first_rev, rest)
            rev = unquote(rev)
        sub = unquote("/".join(rest)) or None
    else:
        m = _PLAIN.match(text)
        if not m:
            raise UsageError(f"{text!r} is neither a local folder nor a Hub repo id (user/repo[@revision])")
        repo, rev = m["repo"], unquote(m["rev"]) if m["rev"] else None
        kind = _TYPES.get(m["type"] or "models", "model")
    if repo_type is not None:
        if repo_type not in REPO_TYPES:
            raise UsageError(
                f"repo type must be model, dataset or space, got {repo_type!r}", param="repo_type"
            )
        kind = repo_type
    if not _REPO_ID.match(repo):
        raise UsageError(f"{repo!r} is not a valid repo id (user/repo)")
    return HubRef(repo, kind, revision or rev, (subfolder or sub or "").strip("/") or None)
