"""Write endpoints: repos, settings, branches/tags, validate-yaml, preupload, git-LFS, commits.

The upload sequence of ``create_commit`` is: validate-yaml (only with a README.md), preupload
(which tells the client ``regular`` or ``lfs`` per file), the LFS batch + PUT + verify for ``lfs``
files, then one NDJSON commit. Xet is not implemented: ``/preupload`` answers ``regular`` by
default precisely so a Xet-enabled client never needs it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .accounts import require_scope
from .api_discussions import comment_event, commit_event
from .api_read import REPO, object_id
from .cards import CardError, parse_front_matter
from .storage import (
    REPO_TYPES,
    URL_PREFIXES,
    Change,
    Commit,
    Discussion,
    FileEntry,
    HubEvent,
    MissingPathError,
    Repo,
    utc_now,
)
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .accounts import Token
    from .app import HubApp

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
SHA256 = re.compile(r"[0-9a-f]{64}")
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
MISSING_LFS = "Your push was rejected because an LFS pointer pointed to a file that does not exist"


def repo_url(req: Request, repo_type: str, repo_id: str) -> str:
    return f"{req.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"


def write_token(app: HubApp, req: Request) -> Token:
    # Opening a PR is a discussion on the Hub: an OAuth token with write-discussions may do it.
    scope = "write-discussions" if req.flag("create_pr") else "write-repos"
    return require_scope(app.require_user(req), scope)


def check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


# -- repos ----------------------------------------------------------------------------------------


def create_repo(app: HubApp, req: Request) -> Response:
    token = write_token(app, req)
    data = req.json()
    name, namespace = data.get("name"), data.get("organization") or token.user
    repo_type = data.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise HubError(400, f"Invalid repo type {repo_type!r}")
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name or name.endswith((".git", ".")):
        raise HubError(400, f"Invalid repo name {name!r}")
    if not app.accounts.owns_namespace(token.user, namespace):
        raise HubError(
            403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
        )
    repo_id = f"{namespace}/{name}"
    url = repo_url(req, repo_type, repo_id)
    private = data.get("visibility") == "private" or data.get("private") is True
    with app.store.lock:
        if app.store.get(repo_type, repo_id) is not None:
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        repo = app.store.create_repo(repo_type, repo_id, author=token.user, private=private)
        app.store.save()
        app.store.emit(HubEvent("repo", "create", repo, req.base_url))
    return json_response({"url": url, "name": repo_id, "id": object_id(repo.key)})


def delete_repo(app: HubApp, req: Request) -> Response:
    token = write_token(app, req)
    data = req.json()
    repo_type = data.get("type") or "model"
    repo_id = f"{data.get('organization') or token.user}/{data.get('name')}"
    with app.store.lock:
        repo = app.writable_repo(req, repo_type, repo_id)
        app.store.remove(repo)
        app.store.save()
        app.store.emit(HubEvent("repo", "delete", repo, req.base_url))
    return json_response({})


def repo_settings(app: HubApp, req: Request, plural: str, repo: str) -> Response:
    repo_type = app.repo_type(plural)
    data = req.json()
    with app.store.lock:
        r = app.writable_repo(req, repo_type, unquote(repo))
        if "private" in data:
            r.private = bool(data["private"])
        if "visibility" in data:
            r.private = data["visibility"] == "private"
        if "gated" in data:
            if data["gated"] not in (False, "auto", "manual"):
                raise HubError(400, "gated must be false, 'auto' or 'manual'")
            r.gated = data["gated"]
        app.store.save()
        changed = {"private": r.private} if "private" in data or "visibility" in data else {}
        app.store.emit(HubEvent("repo.config", "update", r, req.base_url, updated_config=changed))
    return json_response({})


def create_branch(app: HubApp, req: Request, plural: str, repo: str, branch: str) -> Response:
    repo_type, branch = app.repo_type(plural), unquote(branch)
    data = req.json()
    with app.store.lock:
        r = app.writable_repo(req, repo_type, unquote(repo))
        if branch in r.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        r.branches[branch] = app.commit_at(r, data.get("startingPoint") or "main").oid
        app.store.save()
        refs = [(f"refs/heads/{branch}", None, r.branches[branch])]
        app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
    return json_response({})


def delete_branch(app: HubApp, req: Request, plural: str, repo: str, branch: str) -> Response:
    repo_type, branch = app.repo_type(plural), unquote(branch)
    with app.store.lock:
        r = app.writable_repo(req, repo_type, unquote(repo))
        if branch not in r.branches:
            raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
        if branch == "main":
            raise HubError(403, "The main branch cannot be deleted")
        old = r.branches.pop(branch)
        app.store.save()
        refs = [(f"refs/heads/{branch}", old, None)]
        app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
    return json_response({})


def create_tag(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type = app.repo_type(plural)
    data = req.json()
    tag = data.get("tag")
    if not isinstance(tag, str) or not tag:
        raise HubError(400, "A tag name is required")
    with app.store.lock:
        r = app.writable_repo(req, repo_type, unquote(repo))
        if tag in r.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        r.tags[tag] = app.commit_at(r, unquote(rev)).oid
        app.store.save()
        refs = [(f"refs/tags/{tag}", None, r.tags[tag])]
        app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
    return json_response({})


def delete_tag(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type, tag = app.repo_type(plural), unquote(rev)
    with app.store.lock:
        r = app.writable_repo(req, repo_type, unquote(repo))
        if tag not in r.tags:
            raise HubError(404, f"Invalid rev id: {tag}", code="RevisionNotFound")
        old = r.tags.pop(tag)
        app.store.save()
        refs = [(f"refs/tags/{tag}", old, None)]
        app.store.emit(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
    return json_response({})


def validate_yaml(app: HubApp, req: Request) -> Response:
    data = req.json()
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, str):
        raise HubError(
            400, "content must be a string", extra={"errors": [{"message": "content must be a string"}]}
        )
    try:
        parse_front_matter(content)
    except CardError as e:
        raise HubError(400, str(e), extra={"errors": [{"message": str(e)}], "warnings": []}) from e
    # Never warnings: the client turns them into Python warnings, which the suite treats as errors.
    return json_response({"errors": [], "warnings": []})


# -- preupload and LFS ------------------------------------------------------------------------------


def lfs_patterns(app: HubApp, commit: Commit | None) -> list[str]:
    raw = b""
    if commit is not None and ".gitattributes" in commit.files:
        raw = app.store.blobs.path(commit.files[".gitattributes"].blob).read_bytes()
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            out.append(parts[0])
    return out


def wants_lfs(path: str, size: int, patterns: list[str], threshold: int) -> bool:
    if size == 0:
        return False
    if size >= threshold:
        return True
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in p else name, p.lstrip("/")) for p in patterns)


def repo_has_object(app: HubApp, repo: Repo, oid: str) -> bool:
    """LFS storage is per repo on the Hub: content uploaded elsewhere must be uploaded again."""
    with app.lfs_lock:
        if oid in app.lfs_objects.get(repo.key, set()):
            return app.store.blobs.has(oid)
    return any(e.blob == oid for c in repo.commits.values() for e in c.files.values())


def preupload(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type = app.repo_type(plural)
    write_token(app, req)
    data = req.json()
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise HubError(400, "files must be a list")
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        oid = r.resolve(unquote(rev))
        commit = r.commits[oid] if oid else None
        patterns = lfs_patterns(app, commit)
        out = []
        for f in files:
            path, size = f.get("path"), int(f.get("size") or 0)
            mode = "regular"
            if app.config.upload_mode == "lfs" and wants_lfs(
                str(path), size, patterns, app.config.lfs_threshold
            ):
                mode = "lfs"
            item: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            entry = commit.files.get(str(path)) if commit else None
            if entry is not None:
                # Same id the client computes locally: sha256 for LFS, git sha1 for regular.
                item["oid"] = entry.blob if mode == "lfs" else app.store.blobs.meta(entry.blob).sha1
            out.append(item)
    return json_response({"files": out, "commitOid": oid})


def lfs_batch(app: HubApp, req: Request, repo: str, prefix: str | None = None) -> Response:
    repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(prefix or "", "model")
    write_token(app, req)
    data = req.json()
    if data.get("operation") != "upload":
        raise HubError(400, "Only the 'upload' LFS operation is supported by the local Hub")
    r = app.visible_repo(req, repo_type, unquote(repo))
    chunk = app.config.lfs_multipart_chunk
    objects, multipart = [], False
    for obj in data.get("objects", []):
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not SHA256.fullmatch(oid) or not isinstance(size, int) or size < 0:
            objects.append(
                {"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "Invalid object"}}
            )
            continue
        if repo_has_object(app, r, oid) and app.store.blobs.meta(oid).size == size:
            objects.append({"oid": oid, "size": size})  # already stored: no actions, the client skips it
            continue
        ticket = uuid.uuid4().hex
        with app.lfs_lock:
            app.lfs_uploads[ticket] = {"oid": oid, "size": size, "repo": r.key, "parts": {}}
        base = f"{req.base_url}/_lfs"
        if chunk and size > chunk:
            multipart = True
            n_parts = -(-size // chunk)
            header: dict[str, str] = {"chunk_size": str(chunk)}
            header.update({f"{i:05d}": f"{base}/upload/{ticket}/{i}" for i in range(1, n_parts + 1)})
            upload = {"href": f"{base}/complete/{ticket}", "header": header}
        else:
            upload = {"href": f"{base}/upload/{ticket}"}
        actions = {"upload": upload, "verify": {"href": f"{base}/verify/{ticket}"}}
        objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
    payload = {"transfer": "multipart" if multipart else "basic", "objects": objects, "hash_algo": "sha256"}
    response = json_response(payload)
    response.headers["Content-Type"] = LFS_CONTENT_TYPE
    return response


def _ticket(app: HubApp, ticket: str) -> dict[str, Any]:
    with app.lfs_lock:
        pending = app.lfs_uploads.get(ticket)
    if pending is None:
        raise HubError(404, "Unknown or expired LFS upload URL")
    return pending


def _stored(app: HubApp, pending: dict[str, Any]) -> None:
    with app.lfs_lock:
        app.lfs_objects.setdefault(pending["repo"], set()).add(pending["oid"])


def lfs_upload(app: HubApp, req: Request, ticket: str) -> Response:
    """The basic transfer: one PUT of the whole object (stands in for the Hub's S3 URL)."""
    pending = _ticket(app, ticket)
    writer = app.store.blobs.writer(req.body.length)
    try:
        for chunk in req.body.iter_chunks():
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    if writer.size != pending["size"] or writer.digest() != pending["oid"]:
        writer.abort()
        raise HubError(400, "Uploaded content does not match the LFS oid/size announced in the batch")
    writer.finish()
    _stored(app, pending)
    return Response(200, {"ETag": f'"{pending["oid"]}"'})


def lfs_upload_part(app: HubApp, req: Request, ticket: str, part: str) -> Response:
    pending = _ticket(app, ticket)
    target = app.store.blobs.tmp / f"lfs-{ticket}-{int(part):05d}"
    md5 = hashlib.md5()
    with open(target, "wb") as f:
        for chunk in req.body.iter_chunks():
            f.write(chunk)
            md5.update(chunk)
    with app.lfs_lock:
        pending["parts"][int(part)] = str(target)
    return Response(200, {"ETag": f'"{md5.hexdigest()}"'})


def lfs_complete(app: HubApp, req: Request, ticket: str) -> Response:
    pending = _ticket(app, ticket)
    data = req.json()
    numbers = [int(p["partNumber"]) for p in data.get("parts", [])]
    if data.get("oid") != pending["oid"] or numbers != sorted(pending["parts"]):
        raise HubError(400, "Multipart completion does not match the uploaded parts")
    with app.store.blobs.writer(pending["size"]) as writer:
        for n in numbers:
            with open(pending["parts"][n], "rb") as f:
                while chunk := f.read(1 << 20):
                    writer.write(chunk)
        if writer.size != pending["size"] or writer.digest() != pending["oid"]:
            raise HubError(400, "Reassembled content does not match the LFS oid/size")
    for path in pending["parts"].values():
        Path(path).unlink(missing_ok=True)
    _stored(app, pending)
    return json_response({})


def lfs_verify(app: HubApp, req: Request, ticket: str) -> Response:
    app.require_user(req)
    pending = _ticket(app, ticket)
    data = req.json()
    oid, size = data.get("oid"), data.get("size")
    if oid != pending["oid"] or not app.store.blobs.has(oid) or app.store.blobs.meta(oid).size != size:
        raise HubError(404, f"LFS object {oid} was not uploaded")
    with app.lfs_lock:
        app.lfs_uploads.pop(ticket, None)
    return json_response({"success": True})


def xet_token(app: HubApp, req: Request, **_: str) -> Response:
    raise HubError(
        501,
        "The local Hub does not implement Xet storage. Set HF_HUB_DISABLE_XET=1 in the client to upload "
        "through git-LFS, or keep the server's upload_mode 'regular'.",
    )


# -- commits --------------------------------------------------------------------------------------


def parse_operations(app: HubApp, body: bytes) -> tuple[dict[str, Any], list[Change]]:
    """The NDJSON payload: a header line, then file / lfsFile / deletedFile / deletedFolder lines."""
    header: dict[str, Any] | None = None
    changes: list[Change] = []
    for n, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as e:
            raise HubError(400, f"Invalid commit payload at line {n}: {e}") from e
        if key == "header":
            header = value
        elif key == "file":
            path = check_path(value.get("path"))
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
            try:
                content = base64.b64decode(value.get("content", ""), validate=True)
            except binascii.Error as e:
                raise HubError(400, f"Invalid base64 content for {path}") from e
            changes.append(Change("add", path, app.store.add_file_bytes(content, lfs=False)))
        elif key == "lfsFile":
            path, oid, size = check_path(value.get("path")), value.get("oid"), value.get("size")
            if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
                raise HubError(400, f"Invalid LFS pointer for {path}")
            if not app.store.blobs.has(oid) or app.store.blobs.meta(oid).size != size:
                raise HubError(400, f"{MISSING_LFS}: {path}")
            changes.append(Change("add", path, FileEntry(oid, lfs=True)))
        elif key == "deletedFile":
            changes.append(Change("delete", check_path(value.get("path"))))
        elif key == "deletedFolder":
            changes.append(Change("delete_folder", str(value.get("path", "")).strip("/")))
        else:
            raise HubError(400, f"Unknown commit operation {key!r} at line {n}")
    if header is None or not str(header.get("summary", "")).strip():
        raise HubError(400, "The commit needs a header line with a non-empty summary")
    return header, changes


def _apply(
    app: HubApp, repo: Repo, parent: str, changes: list[Change], header: dict[str, Any], author: str
) -> Commit:
    try:
        return app.store.commit(
            repo,
            parent,
            changes,
            title=str(header["summary"]).strip(),
            message=str(header.get("description") or ""),
            author=author,
        )
    except MissingPathError as e:
        raise HubError(404, f"A file with this name doesn't exist: {e.args[0]}", code="EntryNotFound") from e


def commit(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type, rev = app.repo_type(plural), unquote(rev)
    token = write_token(app, req)
    create_pr = req.flag("create_pr")
    header, changes = parse_operations(app, req.read())
    parent_commit = header.get("parentCommit")
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        for change in changes:
            if (
                change.entry is not None
                and change.entry.lfs
                and not repo_has_object(app, r, change.entry.blob)
            ):
                raise HubError(400, f"{MISSING_LFS}: {change.path}")
        writer = app.accounts.can_write(r, token)
        pr_url: str | None = None
        events: list[HubEvent] = []
        if create_pr:
            base = app.commit_at(r, parent_commit) if parent_commit else app.commit_at(r, rev)
            branch = rev.removeprefix("refs/heads/")
            new = _apply(app, r, base.oid, changes, header, token.user)
            num = r.next_discussion_num()
            r.prs[str(num)] = new.oid
            discussion = Discussion(
                num=num,
                title=str(header["summary"]).strip(),
                author=token.user,
                is_pr=True,
                status="open",
                created_at=utc_now(),
                base_ref=f"refs/heads/{branch if branch in r.branches else 'main'}",
                base_commit=base.oid,
            )
            discussion.events.append(comment_event(token.user, str(header.get("description") or "")))
            discussion.events.append(commit_event(token.user, new))
            r.discussions.append(discussion)
            pr_url = f"{repo_url(req, repo_type, r.id)}/discussions/{num}"
            refs = [(f"refs/pr/{num}", None, new.oid)]
            events.append(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
            comment = discussion.events[0]
            events.append(HubEvent("discussion", "create", r, req.base_url, discussion, comment))
        elif m := re.fullmatch(r"refs/pr/(\d+)", rev):
            discussion = r.discussion(int(m.group(1)))
            if discussion is None or not discussion.is_pr or m.group(1) not in r.prs:
                raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
            if not writer and discussion.author != token.user:
                raise HubError(
                    403,
                    f"Only the author of pull request #{discussion.num} or the repo owners may push to it",
                )
            if discussion.status not in ("open", "draft"):
                raise HubError(400, f"Pull request #{discussion.num} is {discussion.status}")
            head = r.prs[m.group(1)]
            if parent_commit and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            new = _apply(app, r, head, changes, header, token.user)
            r.prs[m.group(1)] = new.oid
            discussion.events.append(commit_event(token.user, new))
            refs = [(rev, head, new.oid)]
            events.append(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
        else:
            branch = rev.removeprefix("refs/heads/")
            if branch not in r.branches:
                if r.resolve(rev) is not None:
                    raise HubError(400, f"Commits must target a branch or a pull request ref, not {rev}")
                raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
            if not writer:
                raise HubError(
                    403, f"You don't have write access to {repo_type} {r.id}; open a pull request instead"
                )
            head = r.branches[branch]
            if parent_commit and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            new = _apply(app, r, head, changes, header, token.user)
            r.branches[branch] = new.oid
            refs = [(f"refs/heads/{branch}", head, new.oid)]
            events.append(HubEvent("repo.content", "update", r, req.base_url, updated_refs=refs))
        app.store.save()
        for event in events:
            app.store.emit(event)
    payload: dict[str, Any] = {
        "success": True,
        "commitOid": new.oid,
        "commitUrl": f"{repo_url(req, repo_type, r.id)}/commit/{new.oid}",
        "hookOutput": "",
    }
    if pr_url is not None:
        payload["pullRequestUrl"] = pr_url
    return json_response(payload)


ROUTES = [
    Route(("POST",), r"/api/repos/create", create_repo, "create-repo"),
    Route(("DELETE",), r"/api/repos/delete", delete_repo, "delete-repo"),
    Route(("PUT",), REPO + r"/settings", repo_settings, "repo-settings"),
    Route(("POST",), REPO + r"/branch/(?P<branch>.+)", create_branch, "branch"),
    Route(("DELETE",), REPO + r"/branch/(?P<branch>.+)", delete_branch, "branch"),
    Route(("POST",), REPO + r"/tag/(?P<rev>.+)", create_tag, "tag"),
    Route(("DELETE",), REPO + r"/tag/(?P<rev>.+)", delete_tag, "tag"),
    Route(("POST",), r"/api/validate-yaml", validate_yaml, "validate-yaml"),
    Route(("POST",), REPO + r"/preupload/(?P<rev>.+)", preupload, "preupload"),
    Route(
        ("POST",),
        r"/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/batch",
        lfs_batch,
        "lfs-batch",
    ),
    Route(("PUT",), r"/_lfs/upload/(?P<ticket>[0-9a-f]{32})", lfs_upload, "lfs-upload", auth="none"),
    Route(
        ("PUT",),
        r"/_lfs/upload/(?P<ticket>[0-9a-f]{32})/(?P<part>\d+)",
        lfs_upload_part,
        "lfs-upload",
        auth="none",
    ),
    Route(("POST",), r"/_lfs/complete/(?P<ticket>[0-9a-f]{32})", lfs_complete, "lfs-upload", auth="none"),
    Route(("POST",), r"/_lfs/verify/(?P<ticket>[0-9a-f]{32})", lfs_verify, "lfs-verify"),
    Route(("GET",), REPO + r"/xet-(?P<kind>write|read)-token/(?P<rev>.+)", xet_token, "xet-token"),
    Route(("POST",), REPO + r"/commit/(?P<rev>.+)", commit, "commit"),
]
