"""huggingface_hub's exceptions → typed Gradience errors, at the boundary."""

from __future__ import annotations

from typing import Any

from gradience.errors import (
    AdapterNotFoundError,
    GatedRepoError,
    GradienceError,
    HubAccessError,
    HubTransferError,
    RateLimitedError,
    RevisionNotFoundError,
)

__all__ = ["HubAccessError", "translate"]


def translate(
    e: Exception, repo_id: str, what: str | None = None, revision: str | None = None
) -> GradienceError | None:
    """The typed error for a Hub failure, or None if it is not one we can explain."""
    from huggingface_hub import errors as hfe

    from gradience.hub.oidc import is_oidc_failure, oidc_error

    if is_oidc_failure(e):  # the login inside the request failed, not the request itself
        return oidc_error(e)
    where = {"repo_id": repo_id, "revision": revision}
    if isinstance(e, hfe.GatedRepoError):
        return GatedRepoError(
            f"{repo_id} is gated: accept its conditions on the Hub, then use a token with access", **where
        )
    if isinstance(e, hfe.RepositoryNotFoundError):
        return AdapterNotFoundError(f"repo {repo_id} not found on the Hub, or it is private", **where)
    if isinstance(e, hfe.RevisionNotFoundError):
        return RevisionNotFoundError(
            f"revision {revision or ''} not found in {repo_id}; check the branch, tag or commit".replace(
                "revision  ", "revision "
            ),
            **where,
        )
    if isinstance(e, hfe.RemoteEntryNotFoundError):
        return AdapterNotFoundError(f"{what or 'file'} not found in {repo_id}", **where)
    if isinstance(e, hfe.HfHubHTTPError):
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        if status in (401, 403):
            return HubAccessError(
                f"the Hub refused access to {repo_id} (HTTP {status}); check the token", **where
            )
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        if status in (404, 410):
            # A 404 without the Hub's error code (a proxy, a mirror, an endpoint that moved) is
            # still "not there": retrying it would only repeat the answer.
            return AdapterNotFoundError(
                f"{f'{what} of ' if what else ''}{repo_id} not found on the Hub (HTTP {status})", **where
            )
        if status == 429:
            return RateLimitedError(
                f"the Hub rate-limited requests for {repo_id}: {first}",
                **where,
                retry_after=retry_after(e.response.headers),
            )
        return HubTransferError(
            f"the Hub answered HTTP {status or '?'} for {repo_id}: {first}; try again later", **where
        )
    return None


def retry_after(headers: Any) -> float | None:
    """Seconds a 429 asks to wait: the Hub's ``RateLimit`` header first, then ``Retry-After``."""
    from huggingface_hub.utils._http import parse_ratelimit_headers

    info = parse_ratelimit_headers(headers)
    if info is not None:
        return float(info.reset_in_seconds)
    value = (headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None
