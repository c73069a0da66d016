"""Put an audit's badge on a Hub repo's model card: the one pipeline the Space and the bot share.

``publish_badge(repo_id, report, token)`` renders the badge for the report, puts it in the
card's marked Gradience section (:mod:`gradience.hub.cards`, every other byte unchanged) and
proposes it as a pull request in the token owner's name. It is written for two callers:

* the Space, with the signed-in visitor's OAuth token (never the Space's own token);
* a bot, with its own token, re-run whenever an adapter changes.

So it is idempotent and safe to repeat: a card that already shows this badge is
``unchanged`` (not an error), an open PR of ours is ``updated`` in place instead of opening a
second one, and every commit names its ``parent_commit``, so a README edited concurrently is
never overwritten (the edit is re-read and re-applied, a bounded number of times)::

    from gradience.hub.badges import publish_badge

    result = publish_badge("user/my-lora", gradience.audit("user/my-lora"), token)
    result.status   # "created" | "updated" | "unchanged"
    result.pr_url   # the pull request (None when the card was already current)

Errors are the typed ones of :mod:`gradience.errors`: ``HubAccessError`` (the token may not
write: read-only token, not a member), ``AdapterNotFoundError`` (no such repo, or private),
``GatedRepoError``, ``HubTransferError`` (the Hub kept failing, or the card kept changing
under us), ``UsageError`` (no token).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

from gradience.errors import GradienceError, HubAccessError, HubTransferError, UsageError
from gradience.hub.cards import decode_card, encode_card, has_section, upsert_section
from gradience.report.badge import badge_markdown

__all__ = [
    "CARD_PATH",
    "PR_TITLE",
    "BadgeResult",
    "badge_section",
    "minimal_card",
    "our_open_pr",
    "publish_badge",
    "read_card",
]

PR_TITLE = "Add the Gradience LoRA utilisation badge"
CARD_PATH = "README.md"
DEFAULT_DESCRIPTION = (
    "This adds a badge showing how much of its LoRA rank this adapter uses, from a spectral "
    "audit of its weights by Gradience. Only the marked Gradience section of the card changes; "
    "close the pull request if you would rather not have it."
)
#: How many times a commit is retried after the card (or the PR) changed under us.
MAX_ATTEMPTS = 3

Status = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class BadgeResult:
    """What :func:`publish_badge` did.

    Attributes:
        status: ``created`` (a new PR, or a new section when committing directly),
            ``updated`` (our open PR, or the existing section, now shows the new badge) or
            ``unchanged`` (the card, or our open PR, already shows exactly this badge).
        repo_id: the repo whose card it is.
        section: the Markdown put between the markers (the badge line).
        pr_num / pr_url: the pull request concerned, or None (card already current on the
            base branch, or a direct commit).
        commit: the commit made, or None when nothing was committed.
    """

    status: Status
    repo_id: str
    section: str
    pr_num: int | None = None
    pr_url: str | None = None
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "repo_id": self.repo_id,
            "section": self.section,
            "pr_num": self.pr_num,
            "pr_url": self.pr_url,
            "commit": self.commit,
        }


def badge_section(repo_id: str, report: Any, *, link: str | None = None) -> str:
    """The Markdown that goes in the card's Gradience section for ``report``."""
    return badge_markdown(repo_id, report, link=link)


def minimal_card(report: Any) -> str:
    """The card a repo without one gets: just enough metadata for the Hub to list the adapter
    (``library_name: peft`` and its ``base_model``), then the badge section."""
    adapter = (report.to_dict() if hasattr(report, "to_dict") else dict(report or {})).get("adapter") or {}
    base = adapter.get("base_model")
    lines = ["---", "library_name: peft"]
    if base:
        lines.append(f"base_model: {json.dumps(str(base))}")
    return "\n".join([*lines, "---", ""])


class _Conflict(Exception):
    """The branch or PR moved between our read and our commit (HTTP 412)."""


def publish_badge(
    repo_id: str,
    report: Any,
    token: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    create_pr: bool = True,
    endpoint: str | None = None,
    link: str | None = None,
    section: str | None = None,
    title: str = PR_TITLE,
    description: str | None = None,
) -> BadgeResult:
    """Put the badge for ``report`` in ``repo_id``'s card, as a PR by the owner of ``token``.

    Args:
        repo_id: the Hub repo (``user/name``) the badge is for.
        report: the audit, an ``AdapterAudit`` or its ``to_dict()``; the badge shows its
            mean utilisation and its single recommendation.
        token: the user's OAuth token or the bot's token. Required: there is no fallback to
            a saved login or ``HF_TOKEN``, so a service never acts with a token it was not
            handed for this call.
        repo_type: ``model`` (default), ``dataset`` or ``space``.
        revision: the branch the PR targets (and is compared against).
        create_pr: False commits straight to ``revision`` (for a token with write access
            whose owner asked for it); still only the section changes.
        endpoint: the Hub (default ``HF_ENDPOINT`` or huggingface.co).
        link: where the badge links (default: the Gradience Space).
        section: Markdown for the section instead of the badge (the bot may add a line).
        title / description: the PR's title (also how our open PR is recognised) and body.

    Returns:
        A :class:`BadgeResult`: ``created``, ``updated`` or ``unchanged``.

    Raises:
        UsageError: no token. HubAccessError: the token may not open a PR or commit.
        AdapterNotFoundError / GatedRepoError: no such repo, private, or gated.
        HubTransferError: the Hub kept failing, or the card kept changing under us.
    """
    if not token or not isinstance(token, str):
        raise UsageError("a Hub token is needed to propose the badge: it is proposed in its owner's name",
                         param="token", repo_id=repo_id)  # fmt: skip
    content = section if section is not None else badge_section(repo_id, report, link=link)
    blank = minimal_card(report)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    for _ in range(MAX_ATTEMPTS):
        try:
            return _publish_once(
                api, repo_id, content, repo_type, revision, create_pr, title, description, blank
            )
        except _Conflict:
            continue
        except GradienceError:
            raise
        except Exception as e:
            raise _typed(e, repo_id, revision) from e
    raise HubTransferError(
        f"the card of {repo_id} kept changing while the badge was being added; try again in a moment",
        repo_id=repo_id,
        revision=revision,
    )


def _publish_once(
    api: Any,
    repo_id: str,
    content: str,
    repo_type: str,
    revision: str,
    create_pr: bool,
    title: str,
    description: str | None,
    blank: str = "",
) -> BadgeResult:
    base_sha = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
    card = read_card(api, repo_id, repo_type, base_sha)
    new = upsert_section(card or blank, content)
    if new == card:
        return BadgeResult("unchanged", repo_id, content)
    if not create_pr:
        had_section = has_section(card)
        info = _commit(api, repo_id, repo_type, revision, new, base_sha, title, description, create_pr=False)
        return BadgeResult("updated" if had_section else "created", repo_id, content, commit=info.oid)
    pr = our_open_pr(api, repo_id, repo_type, title)
    if pr is None:
        info = _commit(api, repo_id, repo_type, revision, new, base_sha, title, description, create_pr=True)
        num = int(info.pr_num) if info.pr_num is not None else None
        return BadgeResult("created", repo_id, content, num, info.pr_url, info.oid)
    ref = f"refs/pr/{pr}"
    pr_sha = api.repo_info(repo_id, repo_type=repo_type, revision=ref).sha
    pr_card = read_card(api, repo_id, repo_type, pr_sha)
    pr_new = upsert_section(pr_card or blank, content)
    url = _discussion_url(api.endpoint, repo_id, repo_type, pr)
    if pr_new == pr_card:
        return BadgeResult("unchanged", repo_id, content, pr, url)
    info = _commit(api, repo_id, repo_type, ref, pr_new, pr_sha, title, description, create_pr=False)
    return BadgeResult("updated", repo_id, content, pr, url, info.oid)


def read_card(api: Any, repo_id: str, repo_type: str = "model", sha: str = "main") -> str:
    """The card at ``sha`` (a commit or branch; "" when the repo has none), through a private
    cache folder so a long-running bot leaves no files behind and never reads a stale copy."""
    from huggingface_hub.errors import EntryNotFoundError

    with tempfile.TemporaryDirectory(prefix="gradience-card-") as tmp:
        try:
            path = api.hf_hub_download(repo_id, CARD_PATH, repo_type=repo_type, revision=sha, cache_dir=tmp)
        except EntryNotFoundError:
            return ""
        with open(path, "rb") as f:
            return decode_card(f.read())


def our_open_pr(api: Any, repo_id: str, repo_type: str = "model", title: str = PR_TITLE) -> int | None:
    """Our own open PR with this title (the token owner's, so a bot and a user never share)."""
    user = api.whoami().get("name")
    for d in api.get_repo_discussions(
        repo_id, repo_type=repo_type, author=user, discussion_type="pull_request", discussion_status="open"
    ):
        if d.title == title and d.author == user:
            return int(d.num)
    return None


def _commit(
    api: Any,
    repo_id: str,
    repo_type: str,
    revision: str,
    card: str,
    parent: str,
    title: str,
    description: str | None,
    *,
    create_pr: bool,
) -> Any:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.create_commit(
            repo_id,
            [CommitOperationAdd(CARD_PATH, encode_card(card))],
            commit_message=title,
            commit_description=description or DEFAULT_DESCRIPTION,
            repo_type=repo_type,
            revision=revision,
            create_pr=create_pr,
            parent_commit=parent,
        )
    except HfHubHTTPError as e:
        if _status(e) in (409, 412):
            raise _Conflict from e
        raise


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _typed(e: Exception, repo_id: str, revision: str) -> Exception:
    """A Hub failure as a typed Gradience error (the caller words it for its own users)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from gradience.hub.errors import translate

    if isinstance(e, HfHubHTTPError) and not isinstance(e, GatedRepoError | RepositoryNotFoundError):
        status = _status(e)
        if status in (401, 403):
            return HubAccessError(
                f"the Hub refused to write to {repo_id} with this token (HTTP {status}): it needs "
                "write access (or permission to open pull requests on this repo)",
                repo_id=repo_id,
                revision=revision,
            )
    mapped = translate(e, repo_id, CARD_PATH, revision)
    return mapped if mapped is not None else e


def _discussion_url(endpoint: str, repo_id: str, repo_type: str, num: int) -> str:
    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"{endpoint.rstrip('/')}/{prefix}{repo_id}/discussions/{num}"
