"""Users, organisations and tokens, and the Hub's access rules built on them.

The rules mirror the Hub's: a private repo is invisible to anyone outside its namespace (the
answer is "not found", never "forbidden"), a gated repo shows its metadata to everyone but serves
files only to its namespace and to users granted access, and only a namespace's owner or an
organisation's members may write, with a ``write`` token.

Tokens carry what the Hub's do: a role (``read``, ``write``, ``fineGrained``), a kind
(``access_token``, ``oauth``, or ``oidc`` for the short-lived ones ``/oauth/token`` mints) and a
set of scopes. Read tokens hold ``read-repos`` only; write tokens hold every scope; OAuth tokens
hold the scopes their login asked for; fine-grained tokens hold their scopes on the repos they
list and nothing more. Routes ask one question,
``require_scope(token, scope, repo)``, and get the Hub's 401/403 when the answer is no.

The token values are fixed so a server started by hand and a test suite agree on them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Literal

from .storage import Repo
from .web import HubError

ALICE_TOKEN = "hf_localhub_alice_0000000000000000000001"
ALICE_READ_TOKEN = "hf_localhub_alice_read_00000000000000002"
BOB_TOKEN = "hf_localhub_bob_000000000000000000000003"
CAROL_TOKEN = "hf_localhub_carol_00000000000000000000004"
ADMIN_TOKEN = "hf_localhub_admin_00000000000000000000005"
# alice through "Sign in with HF" on a Space: may read and open discussions/PRs, not push
ALICE_OAUTH_TOKEN = "hf_oauth_localhub_alice_000000000000000006"
# alice's fine-grained token: read, write and discussions on FINE_GRAINED_REPOS only
ALICE_FINE_GRAINED_TOKEN = "hf_localhub_alice_fine_0000000000000007"
FINE_GRAINED_REPOS = frozenset({"model/alice/fine-grained-sandbox"})  # created by whoever needs it

# Scopes as the Hub names them for OAuth apps; a write token holds all of them.
SCOPES = frozenset(
    {
        "openid",
        "profile",
        "read-repos",
        "write-repos",
        "manage-repos",
        "write-discussions",
        "jobs",
        "webhooks",
    }
)
READ_SCOPES = frozenset({"openid", "profile", "read-repos"})
OAUTH_SCOPES = frozenset({"openid", "profile", "read-repos", "write-discussions"})
# Scopes that act on one repo: a fine-grained token holds them only on the repos it lists.
REPO_SCOPES = frozenset({"read-repos", "write-repos", "manage-repos", "write-discussions"})

# user -> write token, the handy form for tests
TOKENS: dict[str, str] = {"alice": ALICE_TOKEN, "bob": BOB_TOKEN, "carol": CAROL_TOKEN}


@dataclass(frozen=True)
class Account:
    name: str
    fullname: str
    type: Literal["user", "org"] = "user"
    members: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.type}:{self.name}".encode()).hexdigest()[:24]

    def avatar_url(self, base_url: str) -> str:
        return f"{base_url}/avatars/{self.name}.svg"


@dataclass(frozen=True)
class Token:
    """A credential: whose it is, its Hub role and kind, and the scopes it grants.

    ``repos`` is None for tokens valid on every repo, else the repo keys (``model/ns/name``) a
    fine-grained token is limited to. ``expires_at`` (epoch seconds) ends a short-lived token;
    ``reads_private`` False is the Hub's CI/CD identity token, which reads gated repos its user
    may read but never private ones.
    """

    value: str
    user: str
    role: Literal["read", "write", "fineGrained"]
    name: str
    kind: Literal["access_token", "oauth", "oidc"] = "access_token"
    scopes: frozenset[str] = SCOPES
    repos: frozenset[str] | None = None
    expires_at: float | None = None
    reads_private: bool = True

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    def to_auth(self) -> dict[str, object]:
        """The ``auth`` block of ``whoami-v2``: type, token role and (a local extension) scopes."""
        access: dict[str, object] = {
            "displayName": self.name,
            "role": self.role,
            "createdAt": "2025-01-01T00:00:00.000Z",
        }
        if self.role == "fineGrained":
            scoped_perms = sorted(_FINE_GRAINED_PERMISSIONS[s] for s in self.scopes & REPO_SCOPES)
            access["fineGrained"] = {
                "canReadGatedRepos": False,
                "global": sorted(
                    _FINE_GRAINED_PERMISSIONS[s]
                    for s in self.scopes - REPO_SCOPES
                    if s in _FINE_GRAINED_PERMISSIONS
                ),
                "scoped": [
                    {
                        "entity": {"type": key.split("/", 1)[0], "name": key.split("/", 1)[1]},
                        "permissions": scoped_perms,
                    }
                    for key in sorted(self.repos or ())
                ],
            }
        auth: dict[str, object] = {"type": self.kind, "accessToken": access, "scopes": sorted(self.scopes)}
        if self.kind == "oauth":
            auth["scope"] = " ".join(sorted(self.scopes))
            auth["expiresAt"] = "2099-01-01T00:00:00.000Z"
        if self.expires_at is not None:
            auth["expiresAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.expires_at))
        return auth


# How the Hub's fine-grained token settings name the scopes they grant.
_FINE_GRAINED_PERMISSIONS = {
    "read-repos": "repo.content.read",
    "write-repos": "repo.write",
    "manage-repos": "repo.manage",
    "write-discussions": "discussion.write",
    "jobs": "job.write",
    "webhooks": "webhook.write",
}


class Accounts:
    """Who exists, which token is whose, and what each may see or change."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        for user, fullname in [
            ("alice", "Alice Adapter"),
            ("bob", "Bob Gatekeeper"),
            ("carol", "Carol Outsider"),
        ]:
            self.add(Account(user, fullname))
        self.add(Account("gradience-examples", "Gradience examples", "org", frozenset({"alice"})))
        self.add(Account("gradience-test", "Gradience test fixtures", "org", frozenset({"alice"})))
        for token in [
            Token(ALICE_TOKEN, "alice", "write", "alice-write"),
            Token(ALICE_READ_TOKEN, "alice", "read", "alice-read", scopes=READ_SCOPES),
            Token(ALICE_OAUTH_TOKEN, "alice", "read", "alice-oauth", kind="oauth", scopes=OAUTH_SCOPES),
            Token(
                ALICE_FINE_GRAINED_TOKEN,
                "alice",
                "fineGrained",
                "alice-fine-grained",
                scopes=frozenset({"read-repos", "write-repos", "write-discussions"}),
                repos=FINE_GRAINED_REPOS,
            ),
            Token(BOB_TOKEN, "bob", "write", "bob-write"),
            Token(CAROL_TOKEN, "carol", "write", "carol-write"),
        ]:
            self.tokens[token.value] = token

    def add(self, account: Account) -> None:
        self.accounts.setdefault(account.name, account)

    def ensure_user(self, name: str) -> None:
        """Namespaces of seeded third-party repos exist as users that nobody can log in as."""
        self.add(Account(name, name))

    def token(self, value: str) -> Token | None:
        """The live token with this value; an expired one is as unknown as a made-up one."""
        token = self.tokens.get(value)
        return None if token is None or token.expired() else token

    def orgs_of(self, user: str) -> list[Account]:
        return [a for a in self.accounts.values() if a.type == "org" and user in a.members]

    def owns_namespace(self, user: str | None, namespace: str) -> bool:
        if user is None:
            return False
        if user == namespace:
            return True
        account = self.accounts.get(namespace)
        return account is not None and account.type == "org" and user in account.members

    # The three questions every route asks. With a token, its scopes count too: a fine-grained
    # token outside its repos, or an OAuth token without read-repos, reads like nobody.
    def can_see(self, repo: Repo, user: str | None, token: Token | None = None) -> bool:
        if repo.private and token is not None and not has_scope(token, "read-repos", repo):
            return False
        return not repo.private or self.owns_namespace(user, repo.namespace)

    def can_download(self, repo: Repo, user: str | None, token: Token | None = None) -> bool:
        if not self.can_see(repo, user, token):
            return False
        if not repo.gated:
            return True
        if token is not None and not has_scope(token, "read-repos", repo):
            return False
        return self.owns_namespace(user, repo.namespace) or (user is not None and user in repo.gated_access)

    def can_write(self, repo: Repo, token: Token | None) -> bool:
        return has_scope(token, "write-repos", repo) and self.owns_namespace(token.user, repo.namespace)  # type: ignore[union-attr]


def has_scope(token: Token | None, scope: str, repo: Repo | None = None) -> bool:
    """Whether ``token`` grants ``scope`` (on ``repo`` when given: fine-grained tokens list theirs)."""
    if token is None or scope not in token.scopes:
        return False
    if repo is not None and repo.private and not token.reads_private and scope in REPO_SCOPES:
        return False
    if repo is None or token.repos is None or scope not in REPO_SCOPES:
        return True
    if scope == "read-repos" and not repo.private and not repo.gated:
        return True  # public content needs no grant
    return repo.key in token.repos


def require_scope(token: Token | None, scope: str, repo: Repo | None = None) -> Token:
    """The token, if it grants ``scope`` (on ``repo``); else the Hub's 401 (no token) or 403.

    Only the token is judged here; whether its user may act on the repo (namespace, gating) is
    the caller's second question.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(SCOPES)}")
    if token is None:
        raise HubError(401, "You must be authenticated to do this (send Authorization: Bearer <token>)")
    if has_scope(token, scope, repo):
        return token
    if scope in token.scopes and repo is not None:
        msg = f"Forbidden: this fine-grained token has no permission on {repo.type} {repo.id}"
    elif token.role == "read" and token.kind == "access_token":
        msg = f"Forbidden: this token has the 'read' role; '{scope}' needs a 'write' token"
    else:
        msg = f"Forbidden: this token lacks the '{scope}' scope"
    raise HubError(403, msg)
