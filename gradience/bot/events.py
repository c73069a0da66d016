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


def classify(payload: dict[str, Any], *, handle: str | None, default_branch: str = "main") -> Classified:
    event = payload.get("event") or {}
    scope, action = event.get("scope", ""), event.get("action", "")
    repo = payload.get("repo") or {}
    repo_id = repo.get("name") or ""
    if not repo_id or not scope:
        return Classified(None, repo_id, reason="not a Hub webhook payload (no repo or event)")
    if repo.get("type", "model") != "model":
        return Classified(None, repo_id, reason=f"{repo.get('type')} repos are not audited")
    disc = payload.get("discussion") or {}
    if scope == "repo.content":
        for ref in payload.get("updatedRefs") or []:
            name, new = ref.get("ref", ""), ref.get("newSha")
            if not new:
                continue
            if name == f"refs/heads/{default_branch}":
                return Classified("card", repo_id, f"card:{repo_id}:{new}", {"sha": new})
            m = _PR_REF.match(name)
            if m:
                return Classified(
                    "pr", repo_id, f"pr:{repo_id}:{m.group(1)}:{new}", {"num": int(m.group(1)), "sha": new}
                )
        head = repo.get("headSha")
        if head and not payload.get("updatedRefs"):
            return Classified("card", repo_id, f"card:{repo_id}:{head}", {"sha": head})
        return Classified(None, repo_id, reason="no branch or pull request of interest moved")
    if scope == "discussion" and disc.get("isPullRequest"):
        num = disc.get("num")
        if action == "create":
            return Classified("pr", repo_id, None, {"num": num})
        if action == "update":
            return Classified("pr_status", repo_id, None, {"num": num, "status": disc.get("status")})
    if scope == "discussion.comment" and action == "create" and handle:
        comment = payload.get("comment") or {}
        text = comment.get("content") or ""
        if re.search(rf"@{re.escape(handle)}\b", text) and re.search(r"\baudit\b", text, re.I):
            cid = comment.get("id") or hashlib.sha256(text.encode()).hexdigest()[:16]
            return Classified(
                "mention",
                repo_id,
                f"mention:{repo_id}:{disc.get('num')}:{cid}",
                {"num": disc.get("num"), "is_pr": bool(disc.get("isPullRequest"))},
            )
    return Classified(None, repo_id, reason=f"{scope}/{action} needs no action")
