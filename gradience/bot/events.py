"""Webhook payloads (version 3) → the one job each asks for, or a reason to ignore it.

Only the raw JSON is read: ``repo.headSha`` is not in huggingface_hub's payload model, and
``updatedRefs`` says which branch or pull request moved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Classified", "classify", "delivery_key"]

_PR_REF = re.compile(r"^refs/pr/(\d+)$")


@dataclass(frozen=True)
class Classified:
    """What a delivery asks for: ``kind`` is ``card``, ``pr``, ``mention`` or ``pr_status``;
    ``None`` with ``reason`` when there is nothing to do."""

    kind: str | None
    repo: str
    work_key: str | None = None
    data: dict[str, Any] | None = None
    reason: str = ""


def delivery_key(body: bytes, headers: dict[str, str]) -> str:
    """A delivery's identity: the sender's id when it gives one, else its bytes (a replayed
    or duplicated delivery is byte-identical)."""
    for h in ("x-webhook-id", "x-delivery-id", "x-request-id"):
        if headers.get(h):
            return f"id:{headers[h]}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _obj(x: Any) -> dict[str, Any]:
    """A payload field that should be an object; anything else reads as empty. A signed
    delivery can still carry a shape this code has never seen (the Hub adds and changes
    fields): it must be ignored with a reason, never crash the receiver."""
    return x if isinstance(x, dict) else {}


def _str(x: Any) -> str:
    return x if isinstance(x, str) else ""


def classify(payload: dict[str, Any], *, handle: str | None, default_branch: str = "main") -> Classified:
    event = _obj(payload.get("event"))
    scope, action = _str(event.get("scope")), _str(event.get("action"))
    repo = _obj(payload.get("repo"))
    repo_id = _str(repo.get("name"))
    if not repo_id or not scope:
        return Classified(None, repo_id, reason="not a Hub webhook payload (no repo or event)")
    if repo.get("type", "model") != "model":
        return Classified(None, repo_id, reason=f"{repo.get('type')} repos are not audited")
    disc = _obj(payload.get("discussion"))
    if scope == "repo.content":
        refs = payload.get("updatedRefs")
        refs = [_obj(r) for r in refs] if isinstance(refs, list) else []
        for ref in refs:
            name, new = _str(ref.get("ref")), _str(ref.get("newSha"))
            if not new:
                continue
            if name == f"refs/heads/{default_branch}":
                return Classified("card", repo_id, f"card:{repo_id}:{new}", {"sha": new})
            m = _PR_REF.match(name)
            if m:
                return Classified(
                    "pr", repo_id, f"pr:{repo_id}:{m.group(1)}:{new}", {"num": int(m.group(1)), "sha": new}
                )
        head = _str(repo.get("headSha"))
        if head and not refs:
            return Classified("card", repo_id, f"card:{repo_id}:{head}", {"sha": head})
        return Classified(None, repo_id, reason="no branch or pull request of interest moved")
    if scope == "discussion" and disc.get("isPullRequest"):
        num = disc.get("num")
        if not isinstance(num, int) or isinstance(num, bool):
            return Classified(None, repo_id, reason="a pull request event without its number")
        if action == "create":
            return Classified("pr", repo_id, None, {"num": num})
        if action == "update":
            return Classified("pr_status", repo_id, None, {"num": num, "status": disc.get("status")})
    if scope == "discussion.comment" and action == "create" and handle:
        comment = _obj(payload.get("comment"))
        text = _str(comment.get("content"))
        if re.search(rf"@{re.escape(handle)}\b", text) and re.search(r"\baudit\b", text, re.I):
            cid = comment.get("id") or hashlib.sha256(text.encode()).hexdigest()[:16]
            return Classified(
                "mention",
                repo_id,
                f"mention:{repo_id}:{disc.get('num')}:{cid}",
                {"num": disc.get("num"), "is_pr": bool(disc.get("isPullRequest"))},
            )
    return Classified(None, repo_id, reason=f"{scope}/{action} needs no action")
