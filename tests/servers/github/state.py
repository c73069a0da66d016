"""What the local GitHub remembers: repositories, pull requests, comments, check runs, statuses,
tokens. Plain data behind one lock; the HTTP layer (``server.py``) turns it into GitHub's JSON.

Tokens carry a permission, like GitHub's: ``write`` (the Actions token on a same-repo pull
request: may comment, create check runs and statuses) or ``read`` (the token a fork's pull
request gets: every write answers 403 "Resource not accessible by integration"). An
installation token (``app=True``) acts as ``github-actions[bot]`` and may not call ``/user``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Token:
    login: str
    permission: str = "write"  # write | read
    app: bool = True  # an installation token (the Actions GITHUB_TOKEN) rather than a user's PAT
    repos: frozenset[str] | None = None  # lower-case full names it may see; None = every repo

    @property
    def user_type(self) -> str:
        return "Bot" if self.app else "User"


@dataclass(frozen=True)
class OidcJob:
    """A job allowed to mint Actions id tokens (``permissions: id-token: write``): the claims
    they carry, how long they live, and the key they are signed with."""

    repository: str
    ref: str
    sha: str
    event_name: str
    workflow: str
    run_id: str
    expires_in: int
    signing_key: bytes


@dataclass
class Comment:
    id: int
    repo: str
    issue: int
    body: str
    login: str
    user_type: str
    created_at: str
    updated_at: str


@dataclass
class Pull:
    number: int
    title: str
    head_sha: str
    base_sha: str
    head_ref: str = "feature"
    base_ref: str = "main"
    head_repo: str | None = None  # full name of the fork, None = same repository
    files: list[dict[str, Any]] = field(default_factory=list)
    state: str = "open"


@dataclass
class Repo:
    full_name: str
    private: bool = False
    fork: bool = False
    default_branch: str = "main"
    pulls: dict[int, Pull] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class State:
    """All of the server's data; every method takes the lock, so handler threads never race."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, Token] = {}
        self.comments: dict[int, Comment] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.page_size_cap = 100  # GitHub's own maximum for per_page
        self.rate_limit = 5000
        self.rate_remaining = 5000
        self.fail_gets = 0  # the next N GETs answer 502 (a transient server error)
        self.secondary_limited = 0  # the next N requests hit a secondary rate limit (403 + Retry-After)
        self.retry_after = 1
        self.fail_writes = 0  # the next N writes are done, then answer 502 (the answer is lost)
        self.link_base: str | None = None  # another origin for Link / Location headers
        self.renamed: dict[str, str] = {}  # old full name (lower) -> new full name: answered with 301
        self.oidc_jobs: dict[str, OidcJob] = {}  # ACTIONS_ID_TOKEN_REQUEST_TOKEN -> its job
        self._ids = itertools.count(1001)

    def next_id(self) -> int:
        return next(self._ids)

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.tokens.clear()
            self.comments.clear()
            self.check_runs.clear()
            self.statuses.clear()
            self.requests.clear()
            self.page_size_cap = 100
            self.rate_remaining = self.rate_limit
            self.fail_gets = 0
            self.secondary_limited = 0
            self.renamed = {}
            self.oidc_jobs.clear()
            self.fail_writes = 0
            self.link_base = None
            self.retry_after = 1
