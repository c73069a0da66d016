"""GitHub calls, through PyGithub (imported only here, and only when a run needs it).

The sticky comment is found again by its hidden marker *and* its author: a comment someone
else wrote, even one quoting the marker, is never edited. A token that may not write (a fork's
pull request) is a normal outcome, reported as ``posted=False`` with the reason, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradience.action.adapters import ChangedFile
from gradience.action.render import marker, read_digest
from gradience.errors import GitHubError

if TYPE_CHECKING:
    from github.PullRequest import PullRequest as GhPull


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


def _explain(e: Exception) -> str:
    """GitHub's own message (``data.message``), never request headers."""
    status = getattr(e, "status", None)
    data = getattr(e, "data", None)
    msg = data.get("message") if isinstance(data, dict) else None
    return f"GitHub answered {status}: {msg or type(e).__name__}"


class GitHub:
    def __init__(self, api_url: str, token: str, repository: str) -> None:
        from github import Auth, Github
        from urllib3.util import Retry

        # Reads are retried on a server error (a few times, backing off); writes never are, so a
        # comment is not posted twice. The last answer reaches PyGithub, which raises on it.
        retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504),
                      allowed_methods=frozenset({"GET"}), raise_on_status=False)  # fmt: skip
        self._gh = Github(
            base_url=api_url,
            auth=Auth.Token(token),
            retry=retry,
            timeout=30,
            per_page=100,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self.repository = repository
        self._repo: Any = None
        self._login: str | None = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from github import GithubException

        try:
            return fn(*args, **kwargs)
        except GithubException as e:
            raise GitHubError(f"cannot {what} in {self.repository}: {_explain(e)}") from None

    def pull(self, number: int) -> GhPull:
        """The pull request, read now (one GET; the repository itself is never fetched)."""
        if self._repo is None:
            self._repo = self._gh.withLazy(True).get_repo(self.repository)

        def read() -> GhPull:
            pull = self._repo.get_pull(number)
            _ = pull.head.sha  # a lazy object: this is the request, so errors surface here
            return pull

        return self._call(f"read pull request #{number}", read)

    def changed_files(self, pull: GhPull) -> list[ChangedFile]:
        files = self._call("list the pull request's files", lambda: list(pull.get_files()))
        return [ChangedFile(f.filename, f.status, f.previous_filename) for f in files]

    def login(self) -> str | None:
        """Who this token writes as, when GitHub says (``/user`` answers for a person's token;
        an installation token, like the Actions one, may not ask)."""
        if self._login is None:
            from github import GithubException

            try:
                self._login = self._gh.get_user().login or ""
            except GithubException:
                self._login = ""
        return self._login or None

    def _ours(self, comment: Any, tag: str, author: str | None) -> bool:
        """A comment this token wrote for this scope: the marker, and the author — the token's
        login when known, otherwise a bot (``github-actions[bot]``, ``<app>[bot]``), never a person."""
        if not (comment.body or "").startswith(tag) or comment.user is None:
            return False
        login = comment.user.login or ""
        if author:
            return login == author
        return comment.user.type == "Bot" or login.endswith("[bot]")

    def upsert_comment(
        self,
        pull: GhPull,
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
        from github import GithubException

        author = author or self.login()
        tag = marker(scope)
        # the pull request's conversation, addressed by number (no request, no reliance on issue_url)
        issue = self._repo.get_issue(pull.number)
        try:
            existing = None
            if mode == "sticky":
                existing = next((c for c in issue.get_comments() if self._ours(c, tag, author)), None)
            if existing is not None:
                if skip_unchanged and read_digest(existing.body) == read_digest(body):
                    return CommentResult("unchanged", True, existing.id, existing.html_url)
                if existing.body == body:
                    return CommentResult("unchanged", True, existing.id, existing.html_url)
                existing.edit(body)
                return CommentResult("edited", True, existing.id, existing.html_url)
            if not create:
                return CommentResult("skipped", False, reason="nothing to report and no earlier comment")
            c = issue.create_comment(body)
            return CommentResult("created", True, c.id, c.html_url)
        except GithubException as e:
            reason = _explain(e)
            if e.status in (403, 404):
                reason += " (a read-only token, as on pull requests from forks)"
            return CommentResult("failed", False, reason=reason)
