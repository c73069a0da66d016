"""Read endpoints: whoami, repo info, listing, tree, paths-info, refs, commits, resolve.

Shapes follow what huggingface_hub 2.4 parses (``ModelInfo``, ``RepoFile``, ``GitRefs``...), and
the headers ``hf_hub_download`` needs on ``resolve`` (``X-Repo-Commit``, ``ETag``,
``Content-Length``, and 206 answers to ``Range``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from .cards import CardError, base_model_relation, base_models, derived_tags, parse_front_matter
from .storage import Commit, Repo, Tree, TreeItem, hub_date, last_commit_touching, lfs_pointer
from .web import FilePart, HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp

REPO = r"/api/(?P<plural>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
# A revision in a path is URL-encoded by the client (refs%2Fpr%2F1); accept the raw form too.
REV = r"(?P<rev>refs/pr/\d+|refs/convert/[^/]+|[^/]+)"

MODEL_EXPAND = {
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
    "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
    "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token", "model-index",
    "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags",
    "transformersInfo", "trendingScore", "usedStorage", "widgetData",
}  # fmt: skip
DATASET_EXPAND = {
    "author", "cardData", "citation", "createdAt", "description", "disabled", "downloads",
    "downloadsAllTime", "gated", "lastModified", "likes", "mainSize", "paperswithcode_id", "private",
    "resourceGroup", "sha", "siblings", "tags", "trendingScore", "usedStorage",
}  # fmt: skip
SPACE_EXPAND = {
    "author", "cardData", "createdAt", "datasets", "disabled", "lastModified", "likes", "models",
    "private", "resourceGroup", "runtime", "sdk", "sha", "siblings", "subdomain", "tags",
    "trendingScore", "usedStorage",
}  # fmt: skip
EXPAND = {"model": MODEL_EXPAND, "dataset": DATASET_EXPAND, "space": SPACE_EXPAND}
SORT_KEYS = {"downloads", "likes", "lastModified", "createdAt", "trendingScore", "id"}
SAFE_SCAN = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None}, "pickleImportScan": None}


# -- small helpers ------------------------------------------------------------------------------------


def object_id(text: str) -> str:
    """A stable 24-hex id in the shape of the Hub's Mongo ids."""
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def read_small(app: HubApp, commit: Commit, path: str, limit: int = 1 << 20) -> bytes | None:
    entry = commit.files.get(path)
    if entry is None or app.store.blobs.meta(entry.blob).size > limit:
        return None
    return app.store.blobs.path(entry.blob).read_bytes()


def card_of(app: HubApp, commit: Commit) -> dict[str, Any]:
    raw = read_small(app, commit, "README.md")
    if raw is None:
        return {}
    try:
        return parse_front_matter(raw.decode("utf-8", "replace"))
    except CardError:
        return {}


def config_of(app: HubApp, commit: Commit) -> dict[str, Any] | None:
    raw = read_small(app, commit, "config.json")
    if raw is None:
        return None
    try:
        cfg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(cfg, dict):
        return None
    return {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}


def used_storage(app: HubApp, repo: Repo) -> int:
    blobs = {e.blob for c in repo.commits.values() for e in c.files.values()}
    return sum(app.store.blobs.meta(b).size for b in blobs)


def next_link(req: Request, cursor_name: str, cursor_value: str) -> dict[str, str]:
    """A GitHub-style ``Link: <url>; rel="next"`` carrying every original query parameter."""
    items = [(k, v) for k, vs in req.query.items() if k != cursor_name for v in vs]
    items.append((cursor_name, cursor_value))
    return {"Link": f'<{req.base_url}{req.raw_path}?{urlencode(items)}>; rel="next"'}


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(raw.split(":", 1)[1]))
    except (ValueError, IndexError) as e:
        raise HubError(400, f"Invalid cursor {cursor!r}") from e


def paged(req: Request, items: list[Any], page_size: int) -> tuple[list[Any], dict[str, str]]:
    start = decode_cursor(req.arg("cursor"))
    page = items[start : start + page_size]
    more = start + page_size < len(items)
    return page, (next_link(req, "cursor", encode_cursor(start + page_size)) if more else {})


# -- whoami -------------------------------------------------------------------------------------------


def whoami(app: HubApp, req: Request) -> Response:
    if req.token is None:
        raise HubError(401, "Invalid username or password.")
    account = app.accounts.accounts[req.token.user]
    orgs = [
        {
            "type": "org",
            "id": org.id,
            "name": org.name,
            "fullname": org.fullname,
            "email": None,
            "canPay": False,
            "periodEnd": None,
            "avatarUrl": org.avatar_url(req.base_url),
            "roleInOrg": "admin",
            "isEnterprise": False,
        }
        for org in app.accounts.orgs_of(account.name)
    ]
    return json_response(
        {
            "type": "user",
            "id": account.id,
            "name": account.name,
            "fullname": account.fullname,
            "email": f"{account.name}@localhub.invalid",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": account.avatar_url(req.base_url),
            "orgs": orgs,
            "auth": req.token.to_auth(),
        }
    )


# -- repo info ----------------------------------------------------------------------------------------


def sibling(app: HubApp, tree: Tree, path: str) -> dict[str, Any]:
    """A ``siblings`` entry with sizes (``blobs=true``): blob id, and LFS details for LFS files."""
    entry = tree.files[path]
    meta = app.store.blobs.meta(entry.blob)
    out: dict[str, Any] = {"rfilename": path, "size": meta.size, "blobId": tree.file_oid(path)}
    if entry.lfs:
        pointer = len(lfs_pointer(entry.blob, meta.size))
        out["lfs"] = {"size": meta.size, "sha256": entry.blob, "pointerSize": pointer}
    return out


def repo_fields(app: HubApp, req: Request, repo: Repo, commit: Commit) -> dict[str, Callable[[], Any]]:
    """Every field the Hub can return for a repo, computed lazily (``expand`` picks a few)."""
    card = card_of(app, commit)
    paths = sorted(commit.files)
    bases = base_models(card)
    f: dict[str, Callable[[], Any]] = {
        "_id": lambda: object_id(repo.key),
        "id": lambda: repo.id,
        "author": lambda: repo.namespace,
        "sha": lambda: commit.oid,
        "lastModified": lambda: hub_date(commit.date),
        "createdAt": lambda: hub_date(repo.created_at),
        "private": lambda: repo.private,
        "gated": lambda: repo.gated,
        "disabled": lambda: False,
        "downloads": lambda: repo.downloads,
        "downloadsAllTime": lambda: repo.downloads * 3,
        "likes": lambda: repo.likes,
        "trendingScore": lambda: 0,
        "tags": lambda: with_library_tag(derived_tags(card, paths), inferred_library(card, paths)),
        "cardData": lambda: card or None,
        "siblings": lambda: [{"rfilename": p} for p in paths],
        "usedStorage": lambda: used_storage(app, repo),
        "resourceGroup": lambda: None,
    }
    if repo.type == "model":
        f.update(
            {
                "modelId": lambda: repo.id,
                "library_name": lambda: inferred_library(card, paths),
                "pipeline_tag": lambda: card.get("pipeline_tag"),
                "config": lambda: config_of(app, commit),
                "spaces": lambda: [],
                "childrenModelCount": lambda: 0,
                "model-index": lambda: card.get("model-index"),
                "baseModels": lambda: (
                    {"relation": base_model_relation(card), "models": [{"id": b} for b in bases]}
                    if bases
                    else None
                ),
            }
        )
    elif repo.type == "dataset":
        f.update({"description": lambda: None, "citation": lambda: None, "paperswithcode_id": lambda: None})
    else:
        f.update({"sdk": lambda: card.get("sdk"), "subdomain": lambda: repo.id.replace("/", "-").lower()})
    return f


def inferred_library(card: dict[str, Any], paths: list[str]) -> str | None:
    """The card's ``library_name``, else ``peft`` when the repo holds an ``adapter_config.json``
    anywhere (the Hub infers the library from the files, so card-less adapters are still found
    by ``filter=peft``)."""
    if isinstance(card.get("library_name"), str):
        return card["library_name"]
    return "peft" if any(p.rsplit("/", 1)[-1] == "adapter_config.json" for p in paths) else None


def with_library_tag(tags: list[str], library: str | None) -> list[str]:
    return [library, *tags] if library and library not in tags else tags


def select(fields: dict[str, Callable[[], Any]], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        if key in fields:
            value = fields[key]()
            if value is not None:
                out[key] = value
    return out


DEFAULT_INFO = {
    "model": ["_id", "id", "author", "sha", "lastModified", "private", "disabled", "gated", "downloads", "likes",
              "library_name", "tags", "pipeline_tag", "createdAt", "modelId", "config", "cardData", "siblings",
              "spaces", "usedStorage"],
    "dataset": ["_id", "id", "author", "sha", "lastModified", "private", "gated", "disabled", "downloads", "likes",
                "tags", "createdAt", "cardData", "siblings", "description", "citation", "usedStorage"],
    "space": ["_id", "id", "author", "sha", "lastModified", "private", "gated", "disabled", "likes", "sdk", "tags",
              "createdAt", "cardData", "siblings", "subdomain", "usedStorage"],
}  # fmt: skip


def checked_expand(req: Request, repo_type: str) -> list[str]:
    expand = req.args("expand")
    bad = [e for e in expand if e not in EXPAND[repo_type]]
    if bad:
        raise HubError(400, f"Invalid expand value(s) {bad}; allowed: {sorted(EXPAND[repo_type])}")
    return expand


def repo_info(app: HubApp, req: Request, plural: str, repo: str, rev: str | None = None) -> Response:
    repo_type = app.repo_type(plural)
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        commit = app.commit_at(r, unquote(rev) if rev is not None else "main")
        fields = repo_fields(app, req, r, commit)
        expand = checked_expand(req, repo_type)
        if expand:
            return json_response(select(fields, ["_id", "id", *expand]))
        payload = select(fields, DEFAULT_INFO[repo_type])
        if req.flag("blobs"):
            tree = app.store.tree(commit)
            payload["siblings"] = [sibling(app, tree, p) for p in sorted(commit.files)]
        if req.flag("securityStatus"):
            payload["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        return json_response(payload)


# -- listing ------------------------------------------------------------------------------------------

LIST_DEFAULT = {
    "model": ["_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag", "library_name",
              "createdAt", "modelId"],
    "dataset": ["_id", "id", "author", "likes", "trendingScore", "private", "downloads", "tags", "createdAt",
                "lastModified", "gated", "disabled", "sha", "description"],
    "space": ["_id", "id", "author", "likes", "trendingScore", "private", "sdk", "tags", "createdAt", "lastModified",
              "sha"],
}  # fmt: skip
LIST_FULL = ["author", "sha", "lastModified", "gated", "disabled", "siblings"]


def list_repos(app: HubApp, req: Request, plural: str) -> Response:
    repo_type = app.repo_type(plural)
    expand = checked_expand(req, repo_type)
    if expand and (req.flag("full") or req.flag("cardData") or req.flag("config")):
        raise HubError(400, "expand cannot be combined with full, cardData or config")
    filters = [v.lower() for raw in req.args("filter") for v in raw.split(",") if v]
    search = (req.arg("search") or "").lower()
    author = req.arg("author")
    gated = req.arg("gated")
    pipeline = req.arg("pipeline_tag")
    sort = req.arg("sort")
    if sort is not None and sort not in SORT_KEYS:
        raise HubError(400, f"Invalid sort {sort!r}; allowed: {sorted(SORT_KEYS)}")
    limit_arg = req.arg("limit")
    limit = int(limit_arg) if limit_arg and limit_arg.isdigit() else None

    rows: list[dict[str, Any]] = []
    with app.store.lock:
        for repo in app.store.repos.values():
            if repo.type != repo_type or not app.accounts.can_see(repo, req.user, req.token):
                continue
            if author is not None and repo.namespace != author:
                continue
            if search and search not in repo.id.lower():
                continue
            if gated is not None and bool(repo.gated) != (gated.lower() == "true"):
                continue
            fields = repo_fields(app, req, repo, repo.head())
            tags = [t.lower() for t in fields["tags"]()]
            if any(f not in tags for f in filters):
                continue
            if pipeline is not None and fields.get("pipeline_tag", lambda: None)() != pipeline:
                continue
            if expand:
                item = select(fields, ["_id", "id", *expand])
            else:
                keys = list(LIST_DEFAULT[repo_type])
                if req.flag("full"):
                    keys += LIST_FULL
                if req.flag("cardData") or req.flag("full"):
                    keys.append("cardData")
                if req.flag("config"):
                    keys.append("config")
                item = select(fields, keys)
            sort_value = fields[sort]() if sort in fields else repo.id if sort == "id" else None
            rows.append({"item": item, "sort": sort_value, "id": repo.id})
    if sort is not None:
        rows.sort(key=lambda r: r["id"])
        rows.sort(key=lambda r: (r["sort"] is not None, r["sort"]), reverse=True)
    page_size = min(app.config.page_size, limit) if limit else app.config.page_size
    page, headers = keyset_page(req, rows, page_size, sorted_by=sort)
    return json_response(page, headers=headers)


def _order_key(row: dict[str, Any]) -> tuple[bool, Any]:
    return (row["sort"] is not None, row["sort"] if row["sort"] is not None else 0)


def keyset_page(
    req: Request, rows: list[dict[str, Any]], page_size: int, *, sorted_by: str | None
) -> tuple[list[Any], dict[str, str]]:
    """One page of a listing whose cursor names the last row sent, not an offset.

    Repos created (or deleted) while a client pages through a listing shift every offset, so an
    offset cursor repeats or skips rows; a cursor holding the last (sort value, id) continues
    right after that row in the current order, as the Hub's does. Unsorted listings are in
    creation order, so new repos only ever append.
    """
    raw = req.arg("cursor")
    start = 0
    if raw:
        try:
            after = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            last_id, last_key = after["id"], tuple(after["key"])
        except (ValueError, KeyError, TypeError):
            start = decode_cursor(raw)  # an offset cursor from before: still honoured
        else:
            if sorted_by is None:
                ids = [r["id"] for r in rows]
                start = ids.index(last_id) + 1 if last_id in ids else int(after.get("offset", 0))
            else:
                start = next(
                    (
                        i
                        for i, r in enumerate(rows)
                        if _order_key(r) < last_key or (_order_key(r) == last_key and r["id"] > last_id)
                    ),
                    len(rows),
                )
    page = rows[start : start + page_size]
    if start + page_size >= len(rows) or not page:
        return [r["item"] for r in page], {}
    last = page[-1]
    token = json.dumps({"id": last["id"], "key": list(_order_key(last)), "offset": start + len(page)})
    cursor = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return [r["item"] for r in page], next_link(req, "cursor", cursor)


# -- tree, paths-info, refs, commits -------------------------------------------------------------------


def tree_item_json(
    app: HubApp, repo: Repo, commit: Commit, item: TreeItem, *, expand: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": item.type, "oid": item.oid, "path": item.path}
    if item.entry is not None:
        meta = app.store.blobs.meta(item.entry.blob)
        out["size"] = meta.size
        if item.entry.lfs:
            pointer = len(lfs_pointer(item.entry.blob, meta.size))
            out["lfs"] = {"oid": item.entry.blob, "size": meta.size, "pointerSize": pointer}
    if expand:
        last = last_commit_touching(repo, commit.oid, item.path, is_dir=item.type == "directory")
        out["lastCommit"] = {"id": last.oid, "title": last.title, "date": hub_date(last.date)}
        if item.type == "file":
            out["securityFileStatus"] = SAFE_SCAN
    return out


def tree(app: HubApp, req: Request, plural: str, repo: str, rev: str, path: str | None = None) -> Response:
    repo_type = app.repo_type(plural)
    expand = req.flag("expand")
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        commit = app.commit_at(r, unquote(rev))
        listing = app.store.tree(commit).list(unquote(path or ""), recursive=req.flag("recursive"))
        if listing is None:
            raise HubError(
                404,
                f"Entry not found: {unquote(path or '')}",
                code="EntryNotFound",
                headers={"X-Repo-Commit": commit.oid},
            )
        page_size = min(app.config.tree_page_size, 50) if expand else app.config.tree_page_size
        page, headers = paged(req, listing, page_size)
        return json_response(
            [tree_item_json(app, r, commit, i, expand=expand) for i in page], headers=headers
        )


def paths_info(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type = app.repo_type(plural)
    ctype = req.headers.get("Content-Type") or ""
    data = req.json() if "json" in ctype else req.form()
    raw_paths = data.get("paths", [])
    paths = [raw_paths] if isinstance(raw_paths, str) else list(raw_paths)
    expand_raw = data.get("expand", [])
    expand_value = expand_raw[0] if isinstance(expand_raw, list) and expand_raw else expand_raw
    expand = str(expand_value).lower() in ("1", "true")
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        commit = app.commit_at(r, unquote(rev))
        t = app.store.tree(commit)
        out = []
        for p in paths:
            item = t.item(p)
            if item is not None:
                out.append(tree_item_json(app, r, commit, item, expand=expand))
        return json_response(out)


def refs(app: HubApp, req: Request, plural: str, repo: str) -> Response:
    repo_type = app.repo_type(plural)
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        payload: dict[str, Any] = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
                for n, oid in sorted(r.branches.items())
            ],
            "converts": [],
            "tags": [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": oid} for n, oid in sorted(r.tags.items())
            ],
        }
        if req.flag("include_prs"):
            payload["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                for n, oid in sorted(r.prs.items(), key=lambda kv: int(kv[0]))
            ]
        return json_response(payload)


def commits(app: HubApp, req: Request, plural: str, repo: str, rev: str) -> Response:
    repo_type = app.repo_type(plural)
    page_size = min(app.config.page_size, 50)
    p_arg = req.arg("p") or "0"
    if not p_arg.isdigit():
        raise HubError(400, f"Invalid page {p_arg!r}")
    p = int(p_arg)
    formatted = "formatted" in req.args("expand")
    with app.store.lock:
        r = app.visible_repo(req, repo_type, unquote(repo))
        history = list(r.history(app.commit_at(r, unquote(rev)).oid))
        page = history[p * page_size : (p + 1) * page_size]
        items = []
        for c in page:
            item: dict[str, Any] = {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "date": hub_date(c.date),
                "authors": [{"user": c.author, "avatar": f"{req.base_url}/avatars/{c.author}.svg"}],
            }
            if formatted:
                item["formatted"] = {"title": f"<p>{c.title}</p>", "message": f"<p>{c.message}</p>"}
            items.append(item)
    more = (p + 1) * page_size < len(history)
    return json_response(items, headers=next_link(req, "p", str(p + 1)) if more else {})


# -- resolve (downloads) ----------------------------------------------------------------------------

RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """``[(start, end_exclusive), ...]`` for a ``bytes=`` header; None = ignore; [] = unsatisfiable."""
    if not header.strip().lower().startswith("bytes="):
        return None
    out: list[tuple[int, int]] = []
    for spec in header.split("=", 1)[1].split(","):
        m = RANGE.fullmatch(spec)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        if not m.group(1):  # suffix: the last N bytes
            n = int(m.group(2))
            if n > 0 and size > 0:
                out.append((max(0, size - n), size))
            continue
        start = int(m.group(1))
        end = int(m.group(2)) + 1 if m.group(2) else size
        if m.group(2) and end - 1 < start:
            return None
        if start < size:
            out.append((start, min(end, size)))
    return out


def resolve(app: HubApp, req: Request, repo: str, rev: str, path: str, prefix: str | None = None) -> Response:
    """A file at a revision: small files answer here, LFS files redirect to the CDN origin.

    The redirect carries what ``huggingface_hub`` reads from it without following it: the LFS
    file's size and sha256 (``X-Linked-Size``, ``X-Linked-Etag``) and the commit.
    """
    repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(prefix or "", "model")
    path = unquote(path)
    with app.store.lock:
        r = app.downloadable_repo(req, repo_type, unquote(repo))
        commit = app.commit_at(r, unquote(rev))
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(
                404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        meta = app.store.blobs.meta(entry.blob)
        blob_path = app.store.blobs.path(entry.blob)
        etag = entry.blob if entry.lfs else meta.sha1
    if entry.lfs and app.cdn_url:
        from .cdn import signed_url

        location = signed_url(app, repo_type, r.id, entry.blob, path)
        return Response(
            302,
            {
                "Location": location,
                "X-Linked-Size": str(meta.size),
                "X-Linked-Etag": f'"{entry.blob}"',
                "ETag": f'"{git_pointer_etag(entry.blob, meta.size)}"',
                "X-Repo-Commit": commit.oid,
                "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Size,X-Linked-Etag,ETag,Location",
                "Content-Type": "text/plain; charset=utf-8",
            },
            [f"Found. Redirecting to {location}".encode()],
        )
    headers = {"X-Repo-Commit": commit.oid}
    return file_response(req, headers, blob_path, meta.size, etag, path, key=(repo_type, r.id, path))


def git_pointer_etag(oid: str, size: int) -> str:
    return hashlib.sha1(b"blob %d\0" % len(lfs_pointer(oid, size)) + lfs_pointer(oid, size)).hexdigest()


def file_response(
    req: Request,
    extra: dict[str, str],
    blob_path: Path,
    size: int,
    etag: str,
    path: str,
    *,
    key: tuple[str, str, str],
) -> Response:
    """A file's bytes: whole, one range (206 + ``Content-Range``) or several (multipart)."""
    name = path.rsplit("/", 1)[-1]
    headers = {
        "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{etag}"',
        **extra,
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name.encode('ascii', 'replace').decode()}\"",
        "Access-Control-Expose-Headers": "X-Repo-Commit,ETag,Content-Range,Accept-Ranges",
    }
    range_header = req.headers.get("Range")
    if range_header is None and (req.headers.get("If-None-Match") or "").strip('W/"') == etag:
        return Response(304, headers)
    ranges = parse_range(range_header, size) if range_header else None
    if ranges is None:
        return Response(200, headers, [FilePart(blob_path, 0, size)], file_key=key)
    if not ranges:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    if len(ranges) == 1:
        start, end = ranges[0]
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return Response(206, headers, [FilePart(blob_path, start, end)], file_key=key)
    boundary = hashlib.sha1(f"{etag}{ranges}".encode()).hexdigest()
    content_type = headers["Content-Type"]
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    parts: list[bytes | FilePart] = []
    for start, end in ranges:
        head = f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
        parts += [head.encode(), FilePart(blob_path, start, end)]
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return Response(206, headers, parts, file_key=key)


ROUTES = [
    Route(("GET",), r"/api/whoami-v2", whoami, "whoami"),
    Route(("GET",), r"/api/(?P<plural>models|datasets|spaces)", list_repos, "list-repos"),
    Route(("GET",), REPO, repo_info, "repo-info"),
    Route(("GET",), REPO + r"/revision/(?P<rev>.+)", repo_info, "repo-info"),
    Route(("GET",), REPO + r"/tree/" + REV + r"(?:/(?P<path>.*))?", tree, "tree"),
    Route(("POST",), REPO + r"/paths-info/(?P<rev>.+)", paths_info, "paths-info"),
    Route(("GET",), REPO + r"/refs", refs, "refs"),
    Route(("GET",), REPO + r"/commits/(?P<rev>.+)", commits, "commits"),
    Route(
        ("GET", "HEAD"),
        r"/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/" + REV + r"/(?P<path>.+)",
        resolve,
        "resolve",
    ),
]
