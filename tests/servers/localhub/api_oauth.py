"""Trusted publishers: ``POST /oauth/token`` swaps a CI job's OIDC id token for a short-lived Hub token.

huggingface_hub 2.x does the client side by itself when ``HF_OIDC_RESOURCE`` is set: it gets a
GitHub Actions id token whose audience is the Hub's URL and posts it here as an RFC 8693 token
exchange (a JSON body). The Hub hands out a token only for a genuine id token (signed by the
trusted issuer, see ``oidc.py``), meant for this Hub (``aud``), unexpired, and only when a
trusted publisher configured on the asked ``resource`` names the token's GitHub ``repository``
(and any further claims it pins, matched exactly, as the Hub does). What the token may do
depends on the resource:

- a repo (``ns/name``, ``datasets/ns/name``, ``spaces/ns/name``): that repo only, read and write
  (read only for a ``read_only`` publisher), acting for the user who set the publisher up;
- a user name (the Hub's "CI/CD identity"): that user's reads of public and gated repos, never of
  private ones, and no writes.

Exchanged tokens live ``oidc_token_lifetime`` seconds (the Hub's hour) and are then refused like
unknown ones. Failures are OAuth error documents (RFC 6749 §5.2: 400, ``error`` and
``error_description``, ``Cache-Control: no-store``), not the Hub's ``X-Error-*`` answers: the
client builds its message from the JSON alone. Descriptions never echo a token.

Publishers are set through ``/_admin/trusted-publishers`` (``LocalHub.add_trusted_publisher``),
live in memory, and go when settings are reset (``/_admin/config/reset``), so no test inherits
another's trust.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import oidc
from .accounts import READ_SCOPES, Token
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REPO_TOKEN_SCOPES = frozenset({"read-repos", "write-repos", "write-discussions"})
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_RESOURCE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_GITHUB_REPOSITORY = re.compile(rf"{_NAME}/{_NAME}")
_CLOCK_SKEW = 60  # seconds an id token's nbf may lie ahead of this clock


class OAuthError(Exception):
    """An RFC 6749 error answer (``invalid_grant``...), always 400 here."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class Publisher:
    """One trust: id tokens of GitHub ``repository`` (and ``claims``) may act on ``resource``."""

    id: str
    resource: str  # as HF_OIDC_RESOURCE names it: a repo (ns/name, datasets/ns/name...) or a user
    repository: str
    user: str
    claims: dict[str, str] = field(default_factory=dict)
    read_only: bool = False

    def matches(self, claims: dict[str, Any]) -> bool:
        pinned = {"repository": self.repository, **self.claims}
        return all(claims.get(k) == v for k, v in pinned.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "repository": self.repository,
            "user": self.user,
            "claims": dict(self.claims),
            "read_only": self.read_only,
        }


@dataclass
class Minted:
    """An exchanged token as tests read it back: what it is for, and how often it was used."""

    token: Token
    resource: str
    repository: str
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        t = self.token
        return {
            "token": t.value,  # admin-only answer of a test server: tests check it never leaks
            "resource": self.resource,
            "repository": self.repository,
            "user": t.user,
            "scopes": sorted(t.scopes),
            "repos": sorted(t.repos) if t.repos is not None else None,
            "expires_at": t.expires_at,
            "expired": t.expired(),
            "requests": self.requests,
        }


class TrustedPublishers:
    """The publishers configured on this Hub and the tokens exchanged through them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.publishers: list[Publisher] = []
        self.minted: dict[str, Minted] = {}

    def add(self, publisher: Publisher) -> None:
        with self.lock:
            self.publishers = [
                p
                for p in self.publishers
                if (p.resource, p.repository, p.claims)
                != (publisher.resource, publisher.repository, publisher.claims)
            ]
            self.publishers.append(publisher)

    def remove(self, resource: str | None, repository: str | None) -> int:
        with self.lock:
            before = len(self.publishers)
            self.publishers = [
                p
                for p in self.publishers
                if not (
                    (resource is None or p.resource == resource)
                    and (repository is None or p.repository == repository)
                )
            ]
            return before - len(self.publishers)

    def clear(self) -> None:
        with self.lock:
            self.publishers = []

    def match(self, resource: str, claims: dict[str, Any]) -> Publisher | None:
        with self.lock:
            return next((p for p in self.publishers if p.resource == resource and p.matches(claims)), None)

    def record(self, minted: Minted) -> None:
        with self.lock:
            self.minted[minted.token.value] = minted

    def used(self, value: str) -> None:
        with self.lock:
            if value in self.minted:
                self.minted[value].requests += 1


def parse_resource(resource: str) -> tuple[str, str] | str:
    """``(repo_type, repo_id)`` for a repo resource, the name for a user; ``ValueError`` otherwise."""
    parts = resource.split("/") if isinstance(resource, str) else []
    if not parts or not all(re.fullmatch(_NAME, p) for p in parts):
        raise ValueError(f"resource {resource!r} is not a repo (ns/name, datasets/ns/name...) or a user name")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return ("model", resource)
    if len(parts) == 3 and parts[0] in _RESOURCE_PREFIXES:
        return (_RESOURCE_PREFIXES[parts[0]], f"{parts[1]}/{parts[2]}")
    raise ValueError(f"resource {resource!r} names no repo type this Hub has (datasets/, spaces/ or a model)")


# -- the exchange -------------------------------------------------------------------------------------


def _oauth_error(err: OAuthError) -> Response:
    return json_response(
        {"error": err.error, "error_description": err.description}, 400, {"Cache-Control": "no-store"}
    )


def _body(req: Request) -> dict[str, Any]:
    """RFC 8693 names a form body; huggingface_hub sends JSON. Either is read, nothing else."""
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = req.json()
        except HubError as e:
            raise OAuthError("invalid_request", "the body is not valid JSON") from e
        if not isinstance(data, dict):
            raise OAuthError("invalid_request", "the body must be a JSON object")
        return data
    if ctype == "application/x-www-form-urlencoded":
        return {k: v[0] for k, v in req.form().items() if len(v) == 1}
    raise OAuthError("invalid_request", "send the exchange as application/json (or a form)")


def _id_token_claims(req: Request, subject_token: str) -> dict[str, Any]:
    """The claims of a genuine, current id token meant for this Hub; ``invalid_grant`` otherwise."""
    try:
        claims = oidc.verify(subject_token)
    except ValueError as e:
        raise OAuthError("invalid_grant", f"the subject token is not a valid id token: {e}") from e
    if claims.get("iss") != oidc.ISSUER:
        raise OAuthError("invalid_grant", f"untrusted issuer {str(claims.get('iss'))[:100]!r}")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    own = req.base_url.rstrip("/")
    if not any(isinstance(a, str) and a.rstrip("/") == own for a in audiences):
        raise OAuthError("invalid_grant", f"the id token's audience is not this Hub (expected aud {own!r})")
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise OAuthError("invalid_grant", "the id token has no expiry (exp)")
    if exp <= now:
        raise OAuthError("invalid_grant", "the id token has expired; request a fresh one")
    if isinstance(nbf, int | float) and nbf > now + _CLOCK_SKEW:
        raise OAuthError("invalid_grant", "the id token is not valid yet (nbf)")
    if not isinstance(claims.get("repository"), str):
        raise OAuthError("invalid_grant", "the id token names no GitHub repository")
    return claims


def token_exchange(app: HubApp, req: Request) -> Response:
    try:
        return _exchange(app, req)
    except OAuthError as e:
        return _oauth_error(e)


def _exchange(app: HubApp, req: Request) -> Response:
    data = _body(req)
    if data.get("grant_type") != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
    if data.get("subject_token_type") != ID_TOKEN_TYPE:
        raise OAuthError("invalid_request", f"subject_token_type must be {ID_TOKEN_TYPE}")
    subject, resource = data.get("subject_token"), data.get("resource")
    if not isinstance(subject, str) or not subject:
        raise OAuthError("invalid_request", "subject_token is missing")
    if not isinstance(resource, str) or not resource:
        raise OAuthError("invalid_request", "resource is missing (a repo, or a user name)")
    try:
        target = parse_resource(resource)
    except ValueError as e:
        raise OAuthError("invalid_target", str(e)) from e
    claims = _id_token_claims(req, subject)
    publisher = app.oidc.match(resource, claims)
    if publisher is None:
        raise OAuthError(
            "invalid_grant",
            f"no trusted publisher on {resource} accepts id tokens of GitHub repository "
            f"{claims['repository'][:100]}",
        )
    lifetime = app.config.oidc_token_lifetime
    value = f"hf_oidc_{secrets.token_hex(20)}"
    name, expires_at = f"oidc {publisher.repository}", time.time() + lifetime
    if isinstance(target, tuple):
        with app.store.lock:
            repo = app.store.get(*target)
        if repo is None:  # the publisher outlived its repo
            raise OAuthError("invalid_target", f"{resource} does not exist")
        scopes = frozenset({"read-repos"}) if publisher.read_only else REPO_TOKEN_SCOPES
        token = Token(value, publisher.user, "fineGrained", name, kind="oidc", scopes=scopes,
                      repos=frozenset({repo.key}), expires_at=expires_at)  # fmt: skip
    else:
        token = Token(value, publisher.user, "read", name, kind="oidc", scopes=READ_SCOPES,
                      expires_at=expires_at, reads_private=False)  # fmt: skip
    app.accounts.tokens[value] = token
    app.oidc.record(Minted(token, resource, publisher.repository))
    return json_response(
        {
            "access_token": value,
            "token_type": "bearer",
            "expires_in": lifetime,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "scope": " ".join(sorted(token.scopes)),
        },
        headers={"Cache-Control": "no-store"},
    )


# -- admin --------------------------------------------------------------------------------------------


def list_publishers(app: HubApp, req: Request) -> Response:
    with app.oidc.lock:
        return json_response([p.to_dict() for p in app.oidc.publishers])


def add_publisher(app: HubApp, req: Request) -> Response:
    """Trust GitHub ``repository`` on ``resource`` (what a repo's or a user's settings do)."""
    data = req.json()
    resource, repository = data.get("resource"), data.get("repository")
    claims = data.get("claims") or {}
    try:
        target = parse_resource(resource)
    except ValueError as e:
        raise HubError(400, str(e)) from e
    if not isinstance(repository, str) or not _GITHUB_REPOSITORY.fullmatch(repository):
        raise HubError(400, "repository must be a GitHub owner/name")
    if not isinstance(claims, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in claims.items()
    ):
        raise HubError(400, "claims must map claim names to exact string values")
    user = data.get("user")
    accounts = app.accounts
    if isinstance(target, tuple):
        with app.store.lock:
            repo = app.store.get(*target)
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        ns = accounts.accounts.get(repo.namespace)
        user = user or (repo.namespace if ns is not None and ns.type == "user" else None)
        if not isinstance(user, str) or not accounts.owns_namespace(user, repo.namespace):
            raise HubError(400, f"user must be someone who administers {repo.namespace}")
    else:
        account = accounts.accounts.get(target)
        if account is None or account.type != "user":
            raise HubError(404, f"no user {target}")
        if user not in (None, target):
            raise HubError(400, "a user resource acts for that user only")
        user = target
    publisher = Publisher(
        uuid.uuid4().hex[:24], resource, repository, user, dict(claims), bool(data.get("read_only"))
    )
    app.oidc.add(publisher)
    return json_response(publisher.to_dict())


def remove_publishers(app: HubApp, req: Request) -> Response:
    """Forget the publishers of ``resource`` and/or ``repository`` (all of them with neither)."""
    data = req.json()
    removed = app.oidc.remove(data.get("resource"), data.get("repository"))
    return json_response({"removed": removed})


def list_minted(app: HubApp, req: Request) -> Response:
    with app.oidc.lock:
        return json_response([m.to_dict() for m in app.oidc.minted.values()])


ROUTES = [
    Route(("POST",), r"/oauth/token", token_exchange, "oauth-token", auth="none"),
    Route(("GET",), r"/_admin/trusted-publishers", list_publishers, "admin", auth="admin"),
    Route(("POST",), r"/_admin/trusted-publishers", add_publisher, "admin", auth="admin"),
    Route(("DELETE",), r"/_admin/trusted-publishers", remove_publishers, "admin", auth="admin"),
    Route(("GET",), r"/_admin/oidc-tokens", list_minted, "admin", auth="admin"),
]
