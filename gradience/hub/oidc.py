"""Keyless Hub login (trusted publishers) failing as one typed error instead of a library exception.

huggingface_hub 2.x logs in by itself when ``HF_OIDC_RESOURCE`` is set: it gets a GitHub Actions
OIDC id token (or takes ``HF_OIDC_ID_TOKEN``) and exchanges it at the Hub for a short-lived token,
inside the first request that needs a token. Left there, a misconfigured workflow fails deep in
some request, as an ``OIDCError``, an HTTP error from GitHub or from ``/oauth/token``, or a
connection error, each of which gradience would otherwise report as "check the token" or as an
internal error. :func:`ensure_oidc_login` makes the exchange happen first, where every failure is
an OIDC failure and becomes a :class:`~gradience.errors.HubOIDCError` saying what to change
(``permissions: id-token: write``, the trusted publisher, or ``HF_OIDC_RESOURCE``). The token it
returns stays in huggingface_hub's cache, so later requests without an explicit token use it and
it is refreshed as the library refreshes it; :func:`is_oidc_failure` catches a refresh that fails
later. Messages never carry a token: they are built from the environment and the server's error
code and description, with anything token-shaped in those redacted.
"""

from __future__ import annotations

import os
import re
from typing import Any

from gradience.errors import HubOIDCError

__all__ = ["ensure_oidc_login", "is_oidc_failure", "oidc_enabled", "oidc_error"]

_EXCHANGE_PATH = "/oauth/token"
# JWTs, Hub tokens and GitHub tokens, should a server ever echo one in an error description.
_SECRET = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|\b(?:hf|gh[pousr])_\w{8,}")
_UNSET = "or unset HF_OIDC_RESOURCE to use HF_TOKEN instead"


def oidc_enabled() -> bool:
    """Whether huggingface_hub will log in with OIDC (and only so) for requests without a token."""
    return bool(os.environ.get("HF_OIDC_RESOURCE"))


def ensure_oidc_login() -> str | None:
    """The exchanged Hub token when ``HF_OIDC_RESOURCE`` is set (None otherwise).

    Raises:
        HubOIDCError: no id token could be had, or the Hub refused to exchange it.
    """
    if not oidc_enabled():
        return None
    from huggingface_hub import get_token

    try:
        _mint_github_id_token()
        return get_token()
    except Exception as e:  # everything that can fail here is the login
        raise oidc_error(e) from e


def _mint_github_id_token() -> None:
    """Get the GitHub Actions id token here and hand it to huggingface_hub as ``HF_OIDC_ID_TOKEN``.

    Why: the runner's ``ACTIONS_ID_TOKEN_REQUEST_URL`` already has a query (``?api-version=…``)
    and huggingface_hub asks for ``audience`` with ``params=``, which *replaces* that query in
    its HTTP client; the service then never sees its ``api-version``. Merging the parameters
    keeps both. The id token lives only in this process's environment, and a run is far
    shorter than its lifetime.
    """
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if os.environ.get("HF_OIDC_ID_TOKEN") or os.environ.get("GITHUB_ACTIONS") != "true":
        return
    if not (url and request_token):
        return  # huggingface_hub raises the "id-token: write" error, which oidc_error words
    import httpx2
    from huggingface_hub import constants

    full = httpx2.URL(url).copy_merge_params({"audience": constants.ENDPOINT})
    response = httpx2.get(full, headers={"Authorization": f"Bearer {request_token}"}, timeout=30.0)
    response.raise_for_status()
    os.environ["HF_OIDC_ID_TOKEN"] = str(response.json()["value"])


def is_oidc_failure(e: BaseException) -> bool:
    """Whether ``e`` came from the OIDC login rather than from the request that triggered it."""
    if not oidc_enabled():
        return False
    from huggingface_hub.errors import OIDCError

    return isinstance(e, OIDCError) or _is_exchange(_request_url(e)) or _is_id_token_service(_request_url(e))


def oidc_error(e: BaseException) -> HubOIDCError:
    """The typed error, in one line, for a failed OIDC login."""
    resource = os.environ.get("HF_OIDC_RESOURCE") or ""
    url = _request_url(e)
    status = _status(e)
    where = {"repo_id": resource or None, "resource": resource or None}
    if _is_exchange(url):
        return _exchange_error(e, status, resource, where)
    if os.environ.get("HF_OIDC_ID_TOKEN"):
        return HubOIDCError(f"OIDC login to the Hub failed: {_first_line(e)}", **where)
    on_github = os.environ.get("GITHUB_ACTIONS") == "true"
    if not on_github:
        return HubOIDCError(
            "HF_OIDC_RESOURCE is set but there is no OIDC id token to log in to the Hub with: this is "
            f"not a GitHub Actions job and HF_OIDC_ID_TOKEN is not set; set HF_OIDC_ID_TOKEN, {_UNSET}",
            **where,
        )
    if not (
        os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    ):
        return HubOIDCError(
            "HF_OIDC_RESOURCE is set but this GitHub Actions job may not request an OIDC id token; "
            f"grant the job `permissions: id-token: write`, {_UNSET}",
            **where,
        )
    if status is not None:
        return HubOIDCError(
            f"GitHub refused to issue an OIDC id token (HTTP {status}); check that the job has "
            f"`permissions: id-token: write`, {_UNSET}",
            **where,
            status=status,
        )
    return HubOIDCError(
        f"could not get an OIDC id token from GitHub Actions ({_first_line(e)}); try again, {_UNSET}",
        **where,
    )


def _exchange_error(
    e: BaseException, status: int | None, resource: str, where: dict[str, Any]
) -> HubOIDCError:
    if status is None:  # no answer at all
        return HubOIDCError(
            f"could not reach the Hub to exchange the OIDC id token ({_first_line(e)}); try again later",
            **where,
        )
    error, description = _oauth_error(e)
    said = ": ".join(x for x in (error, description) if x) or "no reason given"
    if status >= 500:
        advice = "try again later"
    elif error == "invalid_target":
        advice = f"HF_OIDC_RESOURCE must name a Hub repo (ns/name, datasets/ns/name) or a user, {_UNSET}"
    else:
        advice = (
            f"make sure {resource or 'the resource'} lists this repository as a trusted publisher on the "
            f"Hub and the id token is fresh, {_UNSET}"
        )
    return HubOIDCError(
        f"the Hub refused the OIDC token exchange for {resource or '?'} (HTTP {status}, {said}); {advice}",
        **where,
        status=status,
        oauth_error=error or None,
    )


def _request_url(e: BaseException) -> str:
    response = getattr(e, "response", None)
    request = getattr(response, "request", None) if response is not None else None
    if request is None:
        try:
            request = getattr(e, "request", None)  # httpx errors raise when they have no request
        except RuntimeError:
            request = None
    url = getattr(request, "url", None)
    return str(url) if url is not None else ""


def _is_exchange(url: str) -> bool:
    return bool(url) and url.split("?", 1)[0].rstrip("/").endswith(_EXCHANGE_PATH)


def _is_id_token_service(url: str) -> bool:
    service = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") or ""
    return bool(url and service) and url.split("?", 1)[0] == service.split("?", 1)[0]


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _oauth_error(e: BaseException) -> tuple[str, str]:
    """``error`` and ``error_description`` of an RFC 6749 answer (empty when it is not one)."""
    try:
        data = e.response.json()  # type: ignore[attr-defined]
    except Exception:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    error = data.get("error")
    description = data.get("error_description")
    return _clean(error if isinstance(error, str) else ""), _clean(
        description if isinstance(description, str) else ""
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return _clean(f"{type(e).__name__}: {line}" if line else type(e).__name__)


def _clean(text: str) -> str:
    return _SECRET.sub("***", " ".join(text.split()))[:200]
