"""Model-card edits that touch only Gradience's own marked section.

A card belongs to its author: the Space's "open a PR with this badge" and the bot both change
nothing but the lines between ``<!-- gradience:start -->`` and ``<!-- gradience:end -->``.
The YAML front matter and every other byte stay as they were, so the PR diff shows exactly
one section and the author can review it at a glance. markdown-it-py finds the markers, so a
marker quoted inside a code block or a list is never mistaken for the section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gradience.errors import GradienceError, UsageError

__all__ = [
    "END_MARKER",
    "START_MARKER",
    "BadgePullRequest",
    "find_section",
    "open_badge_pr",
    "upsert_section",
]

START_MARKER = "<!-- gradience:start -->"
END_MARKER = "<!-- gradience:end -->"
PR_TITLE = "Add the Gradience LoRA utilisation badge"
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


def _split_front_matter(card: str) -> tuple[str, str]:
    m = _FRONT_MATTER.match(card)
    return (card[: m.end()], card[m.end() :]) if m else ("", card)


def find_section(body: str) -> tuple[int, int] | None:
    """Line span ``[start, end)`` of the marked section in ``body`` (no front matter), or None.

    Only top-level HTML blocks count as markers, so quoting them in a code fence is safe.
    """
    from markdown_it import MarkdownIt

    start = end = None
    for tok in MarkdownIt("commonmark").parse(body):
        if tok.type != "html_block" or tok.level != 0 or tok.map is None:
            continue
        if start is None and START_MARKER in tok.content:
            start = tok.map[0]
            if END_MARKER in tok.content.split(START_MARKER, 1)[1]:
                return start, tok.map[1]
        elif start is not None and END_MARKER in tok.content:
            end = tok.map[1]
            return start, end
    return None


def upsert_section(card: str, content: str) -> str:
    """``card`` with the Gradience section set to ``content``; everything else byte-identical.

    An existing section is replaced in place. Otherwise the section goes right after the
    card's first top-level heading (where badges usually sit), or at the top of the body.
    Line endings follow the card's own (``\\r\\n`` stays ``\\r\\n``).
    """
    from markdown_it import MarkdownIt

    front, body = _split_front_matter(card)
    nl = "\r\n" if "\r\n" in card else "\n"
    section = nl.join([START_MARKER, *content.strip("\r\n").splitlines(), END_MARKER]) + nl
    lines = body.splitlines(keepends=True)
    span = find_section(body)
    if span is not None:
        a, b = span
        return front + "".join(lines[:a]) + section + "".join(lines[b:])
    at = 0
    for tok in MarkdownIt("commonmark").parse(body):
        if tok.type == "heading_open" and tok.level == 0 and tok.map is not None:
            at = tok.map[1]
            break
    head = "".join(lines[:at])
    if head and not head.endswith(("\n", "\r")):
        head += nl  # a heading on the card's last line, with no newline after it
    tail = "".join(lines[at:])
    # One blank line around the section, reusing a blank line that is already there.
    before = nl if head.strip() else ""
    after = nl if tail.strip() and tail.lstrip(" \t")[:1] not in ("\n", "\r") else ""
    return front + head + before + section + after + tail


@dataclass(frozen=True)
class BadgePullRequest:
    """The PR opened (or found already open) on the adapter's repo."""

    url: str
    num: int
    created: bool


def open_badge_pr(
    repo_id: str,
    badge_md: str,
    token: str,
    *,
    repo_type: str = "model",
    endpoint: str | None = None,
    description: str | None = None,
) -> BadgePullRequest:
    """Open a PR that puts ``badge_md`` in the repo's card, with the *user's* token.

    The caller passes the signed-in user's own token (never a service token), so the PR is
    theirs and the Hub's permission rules apply to them. A card that already carries the same
    section is left alone; an open PR with our title from the same user is reused.

    Raises:
        GradienceError: one line the user can act on (no access, read-only token, no repo).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from gradience.hub.errors import translate

    if not token:
        raise UsageError("sign in with Hugging Face first: the PR is opened in your name")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        try:
            path = api.hf_hub_download(repo_id, "README.md", repo_type=repo_type)
            with open(path, encoding="utf-8", newline="") as f:
                card = f.read()
        except EntryNotFoundError:
            card = ""
        new = upsert_section(card, badge_md)
        if new == card:
            raise UsageError(f"{repo_id}'s card already shows this badge; nothing to change")
        user = api.whoami().get("name")
        for d in api.get_repo_discussions(repo_id, repo_type=repo_type, author=user,
                                          discussion_type="pull_request", discussion_status="open"):  # fmt: skip
            if d.title == PR_TITLE:
                return BadgePullRequest(url=_discussion_url(api, repo_id, repo_type, d.num), num=d.num,
                                        created=False)  # fmt: skip
        info = api.create_commit(
            repo_id,
            [CommitOperationAdd("README.md", new.encode("utf-8"))],
            commit_message=PR_TITLE,
            commit_description=description
            or (
                "This adds a badge showing how much of its LoRA rank this adapter uses, from a "
                "spectral audit of its weights by Gradience. Only the marked Gradience section "
                "of the card changes; close the PR if you would rather not have it."
            ),
            repo_type=repo_type,
            create_pr=True,
        )
    except GradienceError:
        raise
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        if status == 403:
            raise GradienceError(
                f"the Hub refused to open a pull request on {repo_id} with your token (HTTP 403): "
                "sign in again granting write access, or ask the repo's owner for access"
            ) from e
        mapped = translate(e, repo_id, "README.md")
        if mapped is not None:
            raise mapped from e
        raise
    return BadgePullRequest(url=info.pr_url or "", num=int(info.pr_num or 0), created=True)


def _discussion_url(api, repo_id: str, repo_type: str, num: int) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{api.endpoint}/{prefix}{repo_id}/discussions/{num}"
