"""Discussions and pull requests: list, create, details, comment, edit, hide, status, title, merge.

A pull request is a discussion plus a ``refs/pr/N`` ref. ``create_commit(create_pr=True)`` opens
one (status ``open``); ``create_pull_request`` opens an empty draft whose ref starts at the base
branch's head. Events keep the Hub's wire shape; the comment ids are 24-hex like the Hub's, and
lower-case because the client lower-cases them before editing.
"""

from __future__ import annotations

import difflib
import html
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .accounts import require_scope
from .api_read import REPO
from .storage import Change, Commit, Discussion, HubEvent, Repo, hub_date, utc_now
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp


# -- events ---------------------------------------------------------------------------------------


def _event(kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:24],
        "type": kind,
        "createdAt": hub_date(utc_now()),
        "author": author,
        "data": data,
    }


def comment_event(author: str, text: str) -> dict[str, Any]:
    now = hub_date(utc_now())
    return _event(
        "comment",
        author,
        {
            "edited": False,
            "hidden": False,
            "latest": {"raw": text, "html": _html(text), "updatedAt": now, "author": author},
            "numEdits": 0,
            "editors": [author],
            "reactions": [],
            "isReport": False,
        },
    )


def commit_event(author: str, commit: Commit) -> dict[str, Any]:
    return _event("commit", author, {"subject": commit.title, "oid": commit.oid})


def status_event(author: str, status: str) -> dict[str, Any]:
    return _event("status-change", author, {"status": status})


def _html(text: str) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p) or "<p></p>"


def _author(app: HubApp, repo: Repo, name: str, base_url: str) -> dict[str, Any]:
    account = app.accounts.accounts.get(name)
    if account is None:
        return {"name": name, "type": "user"}
    return {
        "_id": account.id,
        "name": account.name,
        "fullname": account.fullname,
        "avatarUrl": account.avatar_url(base_url),
        "type": "user",
        "isPro": False,
        "isHf": False,
        "isMod": False,
        "isOwner": name == repo.namespace,
        "isOrgMember": app.accounts.owns_namespace(name, repo.namespace) and name != repo.namespace,
    }


def _render_event(app: HubApp, repo: Repo, req: Request, event: dict[str, Any]) -> dict[str, Any]:
    out = dict(event)
    out["author"] = _author(app, repo, event["author"], req.base_url)
    if event["type"] == "comment":
        data = dict(event["data"])
        latest = dict(data["latest"])
        latest["author"] = _author(app, repo, latest["author"], req.base_url)
        data["latest"] = latest
        out["data"] = data
    return out


# -- rendering ------------------------------------------------------------------------------------


def _summary(app: HubApp, req: Request, repo: Repo, d: Discussion) -> dict[str, Any]:
    return {
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "isPullRequest": d.is_pr,
        "createdAt": hub_date(d.created_at),
        "author": _author(app, repo, d.author, req.base_url),
        "repo": {"name": repo.id, "type": repo.type},
        "numComments": sum(1 for e in d.events if e["type"] == "comment"),
        "pinned": False,
        "topReactions": [],
    }


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def _diff_text(app: HubApp, base: Commit, head: Commit) -> str:
    """A git-style diff of the PR: unified text for small text files, a marker for binaries."""
    out: list[str] = []
    for path in sorted(_changed(base.files, head.files)):
        out.append(f"diff --git a/{path} b/{path}\n")
        old, new = base.files.get(path), head.files.get(path)
        texts = []
        for entry in (old, new):
            if entry is None:
                texts.append([])
                continue
            raw = (
                app.store.blobs.path(entry.blob).read_bytes()
                if app.store.blobs.meta(entry.blob).size < 65536
                else None
            )
            try:
                texts.append(raw.decode("utf-8").splitlines(keepends=True) if raw is not None else None)
            except UnicodeDecodeError:
                texts.append(None)
        if texts[0] is None or texts[1] is None:
            out.append("Binary files differ\n")
        else:
            out.extend(difflib.unified_diff(texts[0], texts[1], f"a/{path}", f"b/{path}"))
    return "".join(out)


def _conflicts(repo: Repo, d: Discussion) -> list[str]:
    if not d.is_pr or d.base_commit is None or d.status not in ("open", "draft"):
        return []
    base = repo.commits[d.base_commit]
    head = repo.commits[repo.prs[str(d.num)]]
    target = repo.commits[
        repo.branches.get((d.base_ref or "refs/heads/main").removeprefix("refs/heads/"), d.base_commit)
    ]
    ours, theirs = _changed(base.files, head.files), _changed(base.files, target.files)
    return sorted(p for p in ours & theirs if head.files.get(p) != target.files.get(p))


def _details(app: HubApp, req: Request, repo: Repo, d: Discussion) -> dict[str, Any]:
    out = _summary(app, req, repo, d)
    out["events"] = [_render_event(app, repo, req, e) for e in d.events]
    out["isReport"] = False
    out["locked"] = False
    if d.is_pr:
        changes: dict[str, Any] = {"base": d.base_ref}
        if d.merge_commit:
            changes["mergeCommitId"] = d.merge_commit
        out["changes"] = changes
        out["filesWithConflicts"] = _conflicts(repo, d)
        if req.flag("diff") and d.base_commit:
            out["diff"] = _diff_text(app, repo.commits[d.base_commit], repo.commits[repo.prs[str(d.num)]])
    return out


# -- routes ---------------------------------------------------------------------------------------


def _discussion(app: HubApp, req: Request, plural: str, repo: str, num: str) -> tuple[Repo, Discussion]:
    r = app.visible_repo(req, app.repo_type(plural), unquote(repo))
    d = r.discussion(int(num))
    if d is None:
        raise HubError(404, f"Discussion #{num} not found")
    return r, d


def list_discussions(app: HubApp, req: Request, plural: str, repo: str) -> Response:
    kind = req.arg("type") or "all"
    status = req.arg("status") or "all"
    author = req.arg("author")
    page_arg = req.arg("p") or "0"
    if kind not in ("all", "discussion", "pull_request") or status not in ("all", "open", "closed"):
        raise HubError(400, "type must be all|discussion|pull_request and status all|open|closed")
    if not page_arg.isdigit():
        raise HubError(400, f"Invalid page {page_arg!r}")
    size = app.config.discussions_page_size
    with app.store.lock:
        r = app.visible_repo(req, app.repo_type(plural), unquote(repo))
        chosen = [
            d
            for d in sorted(r.discussions, key=lambda d: d.num, reverse=True)
            if (kind == "all" or d.is_pr == (kind == "pull_request"))
            and (status == "all" or (d.status in ("open", "draft")) == (status == "open"))
            and (author is None or d.author == author)
        ]
        start = int(page_arg) * size
        page = [_summary(app, req, r, d) for d in chosen[start : start + size]]
        n_open = sum(1 for d in r.discussions if d.status in ("open", "draft"))
    return json_response(
        {
            "discussions": page,
            "count": len(chosen),
            "start": start,
            "numClosedDiscussions": len(r.discussions) - n_open,
            "numOpenDiscussions": n_open,
        }
    )


def create_discussion(app: HubApp, req: Request, plural: str, repo: str) -> Response:
    token = app.require_user(req)
    data = req.json()
    title = str(data.get("title") or "").strip()
    if len(title) < 3:
        raise HubError(400, "A discussion title needs at least 3 characters")
    is_pr = bool(data.get("pullRequest"))
    with app.store.lock:
        r = app.visible_repo(req, app.repo_type(plural), unquote(repo))
        require_scope(token, "write-discussions", r)
        num = r.next_discussion_num()
        d = Discussion(
            num=num,
            title=title,
            author=token.user,
            is_pr=is_pr,
            status="draft" if is_pr else "open",
            created_at=utc_now(),
        )
        d.events.append(comment_event(token.user, str(data.get("description") or "")))
        if is_pr:
            d.base_ref, d.base_commit = "refs/heads/main", r.branches["main"]
            r.prs[str(num)] = d.base_commit
        r.discussions.append(d)
        app.store.save()
        if is_pr:
            refs = [(f"refs/pr/{num}", None, d.base_commit)]
            app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
        app.store.emit(HubEvent("discussion", "create", r, req.base_url, d, d.events[0]))
        url = f"{req.base_url}/{r.url_path}/discussions/{num}"
    return json_response({"num": num, "url": url, "pullRequest": is_pr})


def discussion_details(app: HubApp, req: Request, plural: str, repo: str, num: str) -> Response:
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        return json_response(_details(app, req, r, d))


def comment(app: HubApp, req: Request, plural: str, repo: str, num: str) -> Response:
    token = app.require_user(req)
    text = str(req.json().get("comment") or "")
    if not text.strip():
        raise HubError(400, "A comment cannot be empty")
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        require_scope(token, "write-discussions", r)
        event = comment_event(token.user, text)
        d.events.append(event)
        app.store.save()
        app.store.emit(HubEvent("discussion.comment", "create", r, req.base_url, d, event))
        return json_response({"newMessage": _render_event(app, r, req, event)})


def _comment(d: Discussion, cid: str) -> dict[str, Any]:
    event = next((e for e in d.events if e["id"] == cid.lower() and e["type"] == "comment"), None)
    if event is None:
        raise HubError(404, f"Comment {cid} not found")
    return event


def edit_comment(app: HubApp, req: Request, plural: str, repo: str, num: str, cid: str) -> Response:
    token = app.require_user(req)
    content = str(req.json().get("content") or "")
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        event = _comment(d, cid)
        if event["author"] != token.user:
            raise HubError(403, "Only the author of a comment can edit it")
        if event["data"]["hidden"]:
            raise HubError(403, "A hidden comment cannot be edited")
        data = event["data"]
        data["edited"] = True
        data["numEdits"] += 1
        data["latest"] = {
            "raw": content,
            "html": _html(content),
            "updatedAt": hub_date(utc_now()),
            "author": token.user,
        }
        app.store.save()
        app.store.emit(HubEvent("discussion.comment", "update", r, req.base_url, d, event))
        return json_response({"updatedComment": _render_event(app, r, req, event)})


def hide_comment(app: HubApp, req: Request, plural: str, repo: str, num: str, cid: str) -> Response:
    token = app.require_user(req)
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        event = _comment(d, cid)
        if event["author"] != token.user and not app.accounts.can_write(r, token):
            raise HubError(403, "Only the comment's author or the repo owners can hide it")
        event["data"]["hidden"] = True
        event["data"]["latest"] = {**event["data"]["latest"], "raw": "", "html": ""}
        app.store.save()
        app.store.emit(HubEvent("discussion.comment", "update", r, req.base_url, d, event))
        return json_response({"updatedComment": _render_event(app, r, req, event)})


def _may_moderate(app: HubApp, req: Request, r: Repo, d: Discussion) -> None:
    token = app.require_user(req)
    if token.user != d.author and not app.accounts.can_write(r, token):
        raise HubError(403, "Only the discussion's author or the repo owners can do this")


def change_status(app: HubApp, req: Request, plural: str, repo: str, num: str) -> Response:
    data = req.json()
    status = data.get("status")
    if status not in ("open", "closed"):
        raise HubError(400, "status must be 'open' or 'closed'")
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        _may_moderate(app, req, r, d)
        if d.status == "merged":
            raise HubError(400, "A merged pull request cannot change status")
        d.status = status
        event = status_event(app.require_user(req).user, status)
        d.events.append(event)
        if str(data.get("comment") or "").strip():
            d.events.append(comment_event(app.require_user(req).user, str(data["comment"])))
        app.store.save()
        app.store.emit(HubEvent("discussion", "update", r, req.base_url, d))
        return json_response({"newStatus": _render_event(app, r, req, event)})


def rename(app: HubApp, req: Request, plural: str, repo: str, num: str) -> Response:
    title = str(req.json().get("title") or "").strip()
    if len(title) < 3:
        raise HubError(400, "A discussion title needs at least 3 characters")
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        _may_moderate(app, req, r, d)
        event = _event("title-change", app.require_user(req).user, {"from": d.title, "to": title})
        d.title = title
        d.events.append(event)
        app.store.save()
        app.store.emit(HubEvent("discussion", "update", r, req.base_url, d))
        return json_response({"newTitle": _render_event(app, r, req, event)})


def merge(app: HubApp, req: Request, plural: str, repo: str, num: str) -> Response:
    """Apply the PR's changes (its base → head) on top of the target branch, as one commit."""
    token = app.require_user(req)
    data = req.json()
    with app.store.lock:
        r, d = _discussion(app, req, plural, repo, num)
        if not app.accounts.can_write(r, token):
            raise HubError(403, f"You don't have write access to {r.type} {r.id}")
        if not d.is_pr or d.status not in ("open", "draft") or d.base_commit is None:
            raise HubError(400, f"#{d.num} is not an open pull request")
        branch = (d.base_ref or "refs/heads/main").removeprefix("refs/heads/")
        base, head = r.commits[d.base_commit], r.commits[r.prs[str(d.num)]]
        target = r.commits[r.branches[branch]]
        changes = []
        for path in sorted(_changed(base.files, head.files)):
            if path in head.files:
                changes.append(Change("add", path, head.files[path]))
            elif path in target.files:
                changes.append(Change("delete", path))
        new = app.store.commit(r, target.oid, changes, title=f"{d.title} (#{d.num})", author=token.user)
        r.branches[branch] = new.oid
        d.status, d.merge_commit = "merged", new.oid
        d.events.append(status_event(token.user, "merged"))
        if str(data.get("comment") or "").strip():
            d.events.append(comment_event(token.user, str(data["comment"])))
        app.store.save()
        refs = [(f"refs/heads/{branch}", target.oid, new.oid)]
        app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
        app.store.emit(HubEvent("discussion", "update", r, req.base_url, d))
    return json_response({})


D = REPO + r"/discussions/(?P<num>\d+)"
ROUTES = [
    Route(("GET",), REPO + r"/discussions", list_discussions, "discussions"),
    Route(("POST",), REPO + r"/discussions", create_discussion, "discussions"),
    Route(("GET",), D, discussion_details, "discussions"),
    Route(("POST",), D + r"/comment", comment, "discussions"),
    Route(("POST",), D + r"/comment/(?P<cid>[0-9a-fA-F]+)/edit", edit_comment, "discussions"),
    Route(("POST",), D + r"/comment/(?P<cid>[0-9a-fA-F]+)/hide", hide_comment, "discussions"),
    Route(("POST",), D + r"/status", change_status, "discussions"),
    Route(("POST",), D + r"/title", rename, "discussions"),
    Route(("POST",), D + r"/merge", merge, "discussions"),
]
