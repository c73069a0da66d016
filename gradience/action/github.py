"""GitHub's REST API: the five calls the Action makes, over the HTTP client the core already has.

Why not PyGithub: it requires PyNaCl and ``pyjwt[crypto]`` (cryptography), 24 MB for secrets
encryption and App authentication the Action never uses — the difference between the action's
install staying under its 100 MB target or not. The calls themselves are small and stable:
read a pull request, list its files, list / create / edit issue comments, and ask ``/user`` who
the token is.

The sticky comment is found again by its hidden marker *and* its author: a comment someone
else wrote, even one quoting the marker, is never edited. A token that may not write (a fork's
pull request) is a normal outcome, reported as ``posted=False`` with the reason, not an error.

Reads are retried on a server error or a dropped connection (a few times, backing off); writes
never are, so a comment is not posted twice. A secondary rate limit (``Retry-After``) is waited
out for any request — GitHub did not act on it — up to :data:`MAX_RATE_LIMIT_WAIT` seconds in
all; an exhausted primary limit is reported with the time it resets. The token is sent to the
API's own origin only, even when a ``Link`` header or a redirect names another.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gradience.action.adapters import ChangedFile
from gradience.action.render import marker, read_digest
from gradience.action.runner import PullRequest
from gradience.errors import GitHubError

if TYPE_CHECKING:
    import httpx2

#: GitHub's largest page; it caps ``per_page`` there anyway.
PER_PAGE = 100
#: Retries of a read after a 5xx or a dropped connection, and the first backoff (doubling).
READ_RETRIES = 3
BACKOFF_S = 0.5
#: The most a run waits, in all, for secondary rate limits before giving up.
MAX_RATE_LIMIT_WAIT = 60.0
#: Redirects followed (a renamed repository answers 301 with its new address).
MAX_REDIRECTS = 5
API_VERSION = "2022-11-28"
_RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class CommentResult:
    mode: str  # created | edited | unchanged | skipped | failed
    posted: bool
    comment_id: int | None = None
    url: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "posted": self.posted, "id": self.comment_id, "url": self.url,
                "reason": self.reason}  # fmt: skip


class APIError(Exception):
    """A non-2xx answer: the status and GitHub's own message (never request headers)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub answered {status}: {message}")
        self.status = status


def _message(response: httpx2.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    msg = data.get("message") if isinstance(data, dict) else None
    return str(msg or response.reason_phrase or "no message")


def _rate_limited(response: httpx2.Response) -> bool:
    if response.status_code == 429:
        return True
    h = response.headers
    return response.status_code == 403 and (h.get("x-ratelimit-remaining") == "0" or "retry-after" in h)


class GitHub:
    """One repository's pull requests and comments, as one token sees them."""

    def __init__(
        self, api_url: str, token: str, repository: str, *, timeout: float = 30.0, sleep: Any = time.sleep
    ) -> None:
        import httpx2

        from gradience import __version__

        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._origin = urlsplit(self.api_url)[:2]
        self._sleep = sleep
        self._waited = 0.0
        self._login: str | None = None
        self._client = httpx2.Client(
            timeout=httpx2.Timeout(timeout, connect=10.0),
            follow_redirects=False,  # followed by hand, and only within the API's origin (the token goes along)
            headers={
                "Authorization": f"token {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"gradience-action/{__version__}",
            },
        )

    def close(self) -> None:
        self._client.close()

    # -- transport ------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if "://" not in path_or_url:
            return f"{self.api_url}/{path_or_url.lstrip('/')}"
        if urlsplit(path_or_url)[:2] != self._origin:
            raise GitHubError(
                f"GitHub pointed to {urlsplit(path_or_url).netloc}, not the API at {self._origin[1]}; "
                "the token is not sent there"
            )
        return path_or_url

    def _request(self, method: str, path_or_url: str, **kwargs: Any) -> httpx2.Response:
        import httpx2

        url = self._url(path_or_url)
        attempt = redirects = 0
        while True:
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx2.TransportError as e:
                if method != "GET" or attempt >= READ_RETRIES:
                    raise APIError(0, f"no answer ({type(e).__name__})") from None
                self._sleep(BACKOFF_S * 2**attempt)
                attempt += 1
                continue
            if response.is_redirect and redirects < MAX_REDIRECTS:
                # a renamed or transferred repository; followed only within the API's origin
                url = self._url(str(response.url.join(response.headers["location"])))
                redirects += 1
                continue
            if method == "GET" and response.status_code in _RETRY_STATUSES and attempt < READ_RETRIES:
                self._sleep(BACKOFF_S * 2**attempt)
                attempt += 1
                continue
            if _rate_limited(response):
                self._wait_out(response)
                continue
            if response.status_code >= 400:
                raise APIError(response.status_code, _message(response))
            return response

    def _wait_out(self, response: httpx2.Response) -> None:
        """Sleep as a secondary limit asks, or fail saying when the limit lifts."""
        h = response.headers
        retry_after = (h.get("retry-after") or "").strip()
        if retry_after.isdigit():
            wait = float(retry_after)
        elif h.get("x-ratelimit-remaining") == "0" and (h.get("x-ratelimit-reset") or "").isdigit():
            wait = max(0.0, int(h["x-ratelimit-reset"]) - time.time())
        else:
            wait = 60.0  # GitHub's advice when it names no time
        if self._waited + wait > MAX_RATE_LIMIT_WAIT:
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
            raise APIError(
                response.status_code,
                f"{_message(response)} (rate limited until about {when:%Y-%m-%d %H:%M} UTC)",
            )
        self._waited += wait
        self._sleep(wait)

    def _get_all(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated list, following ``Link: rel="next"``."""
        items: list[dict[str, Any]] = []
        response = self._request("GET", path, params={"per_page": PER_PAGE})
        while True:
            page = response.json()
            if not isinstance(page, list):
                raise APIError(response.status_code, "expected a list")
            items += page
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return items
            response = self._request("GET", nxt)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except APIError as e:
            raise GitHubError(f"cannot {what} in {self.repository}: {e}") from None

    # -- the calls ------------------------------------------------------------------------------
    def pull(self, number: int) -> PullRequest:
        """The pull request, read now."""

        def read() -> PullRequest:
            data = self._request("GET", f"repos/{self.repository}/pulls/{int(number)}").json()
            return PullRequest.from_json(data, self.repository)

        return self._call(f"read pull request #{number}", read)

    def changed_files(self, number: int) -> list[ChangedFile]:
        files = self._call(
            "list the pull request's files",
            self._get_all,
            f"repos/{self.repository}/pulls/{int(number)}/files",
        )
        return [ChangedFile(f["filename"], f["status"], f.get("previous_filename")) for f in files]

    def login(self) -> str | None:
        """Who this token writes as, when GitHub says (``/user`` answers for a person's token;
        an installation token, like the Actions one, may not ask)."""
        if self._login is None:
            try:
                self._login = str(self._request("GET", "user").json().get("login") or "")
            except APIError:
                self._login = ""
        return self._login or None

    @staticmethod
    def _ours(comment: dict[str, Any], tag: str, author: str | None) -> bool:
        """A comment this token wrote for this scope: the marker, and the author — the token's
        login when known, otherwise a bot (``github-actions[bot]``, ``<app>[bot]``), never a person."""
        user = comment.get("user") or {}
        if not str(comment.get("body") or "").startswith(tag) or not user:
            return False
        login = str(user.get("login") or "")
        if author:
            return login == author
        return user.get("type") == "Bot" or login.endswith("[bot]")

    def upsert_comment(
        self,
        number: int,
        body: str,
        *,
        scope: str,
        mode: str,
        skip_unchanged: bool,
        create: bool = True,
        author: str | None = None,
    ) -> CommentResult:
        """Create or edit this scope's comment; ``mode`` is ``sticky`` or ``new``. With
        ``create=False`` (nothing to report) an earlier comment is updated but none is started."""
        author = author or self.login()
        tag = marker(scope)
        comments = f"repos/{self.repository}/issues/{int(number)}/comments"
        try:
            existing = None
            if mode == "sticky":
                existing = next((c for c in self._get_all(comments) if self._ours(c, tag, author)), None)
            if existing is not None:
                cid, url, old = int(existing["id"]), existing.get("html_url"), str(existing.get("body") or "")
                if old == body or (skip_unchanged and read_digest(old) == read_digest(body)):
                    return CommentResult("unchanged", True, cid, url)
                self._request("PATCH", f"repos/{self.repository}/issues/comments/{cid}", json={"body": body})
                return CommentResult("edited", True, cid, url)
            if not create:
                return CommentResult("skipped", False, reason="nothing to report and no earlier comment")
            made = self._request("POST", comments, json={"body": body}).json()
            return CommentResult("created", True, int(made["id"]), made.get("html_url"))
        except APIError as e:
            reason = str(e)
            if e.status in (403, 404):
                reason += " (a read-only token, as on pull requests from forks)"
            return CommentResult("failed", False, reason=reason)
