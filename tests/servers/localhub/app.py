"""The application object every route receives: state, settings, and the Hub's access checks.

Routes stay small because the common questions ("is this repo visible to this caller?", "which
commit is this revision?") are answered here once, with the Hub's status codes and error codes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import (
    admin,
    api_datasets,
    api_discussions,
    api_jobs,
    api_oauth,
    api_read,
    api_webhooks,
    api_write,
    seed_scale,
)
from .accounts import ADMIN_TOKEN, Accounts, Token
from .instrument import FaultTable, Stats
from .jobs_runner import Jobs
from .storage import REPO_TYPES, Commit, Repo, Store
from .web import HubError, HubHTTPServer, Request, Router
from .webhook_delivery import Webhooks


@dataclass
class Config:
    """Settings a test may change at runtime through ``/_admin/config``.

    Page sizes default to the Hub's own caps; a test lowers them to exercise pagination.
    ``upload_mode`` is what ``/preupload`` answers: ``regular`` (content inline in the commit,
    works with Xet-enabled clients) or ``lfs`` (the git-LFS batch protocol, for clients with
    ``HF_HUB_DISABLE_XET=1``). ``lfs_multipart_chunk`` > 0 makes LFS uploads multipart.
    """

    page_size: int = 1000
    tree_page_size: int = 1000
    discussions_page_size: int = 50
    jobs_page_size: int = 50  # list_jobs (Link pagination)
    jobs_scheduling_delay_ms: int = 0  # how long a new job stays in SCHEDULING
    upload_mode: str = "regular"
    lfs_threshold: int = 10 * 1024 * 1024
    lfs_multipart_chunk: int = 0
    oidc_token_lifetime: int = 3600  # seconds a token from /oauth/token lives; 0 mints expired ones

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}; known: {sorted(known)}")
            if key == "upload_mode":
                if value not in ("regular", "lfs"):
                    raise ValueError("upload_mode must be 'regular' or 'lfs'")
            elif not isinstance(value, int) or value < (1 if key.endswith("page_size") else 0):
                raise ValueError(f"{key} must be a non-negative integer (page sizes at least 1)")
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_upload_mode() -> str:
    """A server started by hand in a shell with HF_HUB_DISABLE_XET=1 speaks LFS, like the Hub."""
    return (
        "lfs" if os.environ.get("HF_HUB_DISABLE_XET", "").lower() in ("1", "true", "yes", "on") else "regular"
    )


class HubApp:
    def __init__(self, data_dir: Path, *, config: Config | None = None, verbose: bool = False) -> None:
        self.store = Store(data_dir)
        self.accounts = Accounts()
        for repo in self.store.repos.values():
            self.accounts.ensure_user(repo.namespace)
        self.config = config or Config(upload_mode=default_upload_mode())
        self.defaults = Config(**self.config.to_dict())
        self.faults = FaultTable()
        self.stats = Stats()
        self.verbose = verbose
        self.lfs_uploads: dict[str, dict[str, Any]] = {}  # ticket -> pending LFS object
        self.lfs_objects: dict[str, set[str]] = {}  # repo key -> LFS oids uploaded, maybe not committed yet
        self.lfs_lock = threading.Lock()
        self.cdn_url: str | None = None  # the CDN origin LFS files redirect to, once cdn.serve_cdn runs
        self.router = Router([])
        # Order matters only where patterns overlap; module lists are independent today.
        # Jobs and webhooks slot in here as further modules with a ROUTES list.
        self.oidc = api_oauth.TrustedPublishers()
        for module in (admin, api_read, api_write, api_discussions, api_datasets, api_oauth, seed_scale):
            self.router.add(module.ROUTES)
        # Jobs run as subprocesses; webhooks hear every change the store announces.
        self.jobs = Jobs(data_dir / "jobs")
        self.webhooks = Webhooks(self)
        self.store.listeners.append(self.webhooks.on_event)
        for module in (api_jobs, api_webhooks):
            self.router.add(module.ROUTES)

    # -- auth -----------------------------------------------------------------------------------

    def authenticate(self, req: Request, mode: str) -> None:
        header = req.headers.get("Authorization") or ""
        value = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if mode == "none":
            return
        if mode == "admin":
            if value != ADMIN_TOKEN:
                raise HubError(401, "Admin token required (Authorization: Bearer <ADMIN_TOKEN>)")
            return
        if not value:
            return
        token = self.accounts.token(value)
        if token is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        req.token = token
        if token.kind == "oidc":
            self.oidc.used(token.value)  # tests check requests really carried the exchanged token

    def require_user(self, req: Request) -> Token:
        if req.token is None:
            raise HubError(401, "You must be authenticated to do this (send Authorization: Bearer <token>)")
        return req.token

    # -- repos ----------------------------------------------------------------------------------

    def repo_type(self, plural: str) -> str:
        repo_type = plural[:-1] if plural.endswith("s") else plural
        if repo_type not in REPO_TYPES:
            raise HubError(404, f"Unknown repo type {plural!r}")
        return repo_type

    def not_found(self, req: Request) -> HubError:
        # The Hub answers 401 to anonymous callers (it cannot say whether the repo exists).
        status = 401 if req.token is None else 404
        return HubError(status, "Repository not found", code="RepoNotFound")

    def visible_repo(self, req: Request, repo_type: str, repo_id: str) -> Repo:
        repo = self.store.get(repo_type, repo_id)
        if repo is None or not self.accounts.can_see(repo, req.user, req.token):
            raise self.not_found(req)
        return repo

    def downloadable_repo(self, req: Request, repo_type: str, repo_id: str) -> Repo:
        repo = self.visible_repo(req, repo_type, repo_id)
        if not self.accounts.can_download(repo, req.user, req.token):
            if req.token is None:
                msg = (
                    f"Access to {repo_type} {repo.id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."
                )
                raise HubError(401, msg, code="GatedRepo")
            msg = (
                f"Access to {repo_type} {repo.id} is restricted and you are not in the authorized "
                f"list. Visit {req.base_url}/{repo.url_path} to ask for access."
            )
            raise HubError(403, msg, code="GatedRepo")
        return repo

    def writable_repo(self, req: Request, repo_type: str, repo_id: str) -> Repo:
        token = self.require_user(req)
        repo = self.visible_repo(req, repo_type, repo_id)
        if not self.accounts.can_write(repo, token):
            if token.role != "write" and self.accounts.owns_namespace(token.user, repo.namespace):
                raise HubError(
                    403, "Forbidden: this token has the 'read' role; writing needs a 'write' token"
                )
            raise HubError(403, f"You don't have write access to {repo_type} {repo.id}")
        return repo

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        oid = repo.resolve(revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return repo.commits[oid]

    # -- running --------------------------------------------------------------------------------

    def serve(self, port: int) -> HubHTTPServer:
        """Bind 127.0.0.1:port (0 picks a free port); call ``serve_forever()`` on the result."""
        return HubHTTPServer(port, self)
