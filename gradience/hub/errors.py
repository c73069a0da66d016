"""huggingface_hub's exceptions → one-line Gradience errors, at the boundary."""

from __future__ import annotations

from gradience.errors import AdapterNotFoundError, GradienceError

__all__ = ["HubAccessError", "translate"]


class HubAccessError(GradienceError, PermissionError):
    """A gated or private repo the token cannot read."""


def translate(e: Exception, repo_id: str, what: str | None = None) -> GradienceError | None:
    """The user-facing error for a Hub failure, or None if it is not one we can explain."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return HubAccessError(
            f"{repo_id} is gated: accept its conditions on the Hub, then use a token with access "
            "(--token or HF_TOKEN)"
        )
    if isinstance(e, RepositoryNotFoundError):
        return AdapterNotFoundError(
            f"repo {repo_id} not found on the Hub (a private repo needs a token with access: --token or HF_TOKEN)"
        )
    if isinstance(e, RevisionNotFoundError):
        return AdapterNotFoundError(f"revision not found in {repo_id}; check the branch, tag or commit")
    if isinstance(e, RemoteEntryNotFoundError):
        return AdapterNotFoundError(f"{what or 'file'} not found in {repo_id}")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if getattr(e, "response", None) is not None else "?"
        if status in (401, 403):
            return HubAccessError(f"the Hub refused access to {repo_id} (HTTP {status}); check your token")
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return GradienceError(f"the Hub answered HTTP {status} for {repo_id}: {first}; try again later")
    return None
