"""The badge → card section → PR pipeline (gradience.hub.badges) against the local Hub.

Each test works on a fresh repo of alice's, so the statuses it sees (created / updated /
unchanged) come from that repo alone. Cards are compared byte for byte.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from servers.hub import ALICE_READ_TOKEN, GATED_REPO, PRIVATE_REPO, LocalHub

import gradience
from gradience.errors import (
    AdapterNotFoundError,
    GatedRepoError,
    HubAccessError,
    HubError,
    UsageError,
)
from gradience.hub.badges import PR_TITLE, BadgeResult, publish_badge
from gradience.hub.cards import encode_card, upsert_section
from gradience.report.badge import badge_markdown

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Front matter, an existing badge under the title, quoted markers in a code fence, CRLF line
# endings and no final newline: all of it must survive the edit.
CARD = (
    b"---\r\nlicense: mit\r\nbase_model: gpt2\r\n---\r\n# My LoRA\r\n"
    b"[![CI](https://img.shields.io/badge/CI-passing-green)](https://ci.example)\r\n\r\n"
    b"```md\r\n<!-- gradience:start -->\r\nquoted\r\n<!-- gradience:end -->\r\n```\r\n\r\nBye"
)


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    return {n: gradience.audit(EXAMPLES / n).to_dict() for n in ("healthy-r8", "overprovisioned-r64")}


def _api(hub: LocalHub, user: str = "alice") -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=hub.tokens[user])


def _fresh_repo(hub: LocalHub, card: bytes | None = CARD) -> str:
    api = _api(hub)
    repo_id = f"alice/badge-{uuid.uuid4().hex[:10]}"
    api.create_repo(repo_id)
    if card is not None:
        api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=repo_id)
    return repo_id


def _card_at(hub: LocalHub, repo_id: str, revision: str) -> bytes:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        repo_id, "README.md", revision=revision, endpoint=hub.url, token=hub.tokens["alice"]
    )
    return Path(path).read_bytes()


def _open_prs(hub: LocalHub, repo_id: str, author: str) -> list[int]:
    return [
        d.num
        for d in _api(hub).get_repo_discussions(
            repo_id, discussion_type="pull_request", discussion_status="open"
        )
        if d.title == PR_TITLE and d.author == author
    ]


def _expected(repo_id: str, report: dict[str, Any], card: bytes = CARD) -> bytes:
    return encode_card(upsert_section(card.decode(), badge_markdown(repo_id, report)))


def test_created_then_unchanged_then_updated_in_the_same_pr(hub: LocalHub, reports: dict) -> None:
    repo = _fresh_repo(hub)
    healthy, over = reports["healthy-r8"], reports["overprovisioned-r64"]

    first = publish_badge(repo, healthy, hub.tokens["carol"])
    assert first.status == "created" and first.pr_num is not None and first.commit
    assert first.pr_url and first.pr_url.endswith(f"/{repo}/discussions/{first.pr_num}")
    assert first.section == badge_markdown(repo, healthy)
    assert _card_at(hub, repo, f"refs/pr/{first.pr_num}") == _expected(repo, healthy)
    assert _card_at(hub, repo, "main") == CARD  # the author's branch is untouched

    again = publish_badge(repo, healthy, hub.tokens["carol"])
    assert (again.status, again.pr_num, again.commit) == ("unchanged", first.pr_num, None)

    newer = publish_badge(repo, over, hub.tokens["carol"])
    assert (newer.status, newer.pr_num) == ("updated", first.pr_num)
    assert _card_at(hub, repo, f"refs/pr/{first.pr_num}") == _expected(repo, over)
    assert _open_prs(hub, repo, "carol") == [first.pr_num]

    # Another identity (a bot's token) gets its own PR: it never pushes to a user's.
    bot = publish_badge(repo, healthy, hub.tokens["bob"])
    assert bot.status == "created" and bot.pr_num != first.pr_num
    assert _open_prs(hub, repo, "bob") == [bot.pr_num]
    assert bot.to_dict()["status"] == "created"


def test_direct_commit_then_card_current(hub: LocalHub, reports: dict) -> None:
    repo = _fresh_repo(hub)
    healthy, over = reports["healthy-r8"], reports["overprovisioned-r64"]
    made = publish_badge(repo, healthy, hub.tokens["alice"], create_pr=False)
    assert made.status == "created" and made.pr_num is None and made.commit
    assert _card_at(hub, repo, "main") == _expected(repo, healthy)
    # The card already shows this badge: nothing to propose, for anyone.
    same = publish_badge(repo, healthy, hub.tokens["carol"])
    assert same == BadgeResult("unchanged", repo, badge_markdown(repo, healthy))
    assert _open_prs(hub, repo, "carol") == []
    moved = publish_badge(repo, over, hub.tokens["alice"], create_pr=False)
    assert moved.status == "updated"
    assert _card_at(hub, repo, "main") == _expected(repo, over)


def test_repo_without_a_card(hub: LocalHub, reports: dict) -> None:
    repo = _fresh_repo(hub, card=None)
    result = publish_badge(repo, reports["healthy-r8"], hub.tokens["carol"], section="hello")
    assert result.status == "created"
    assert (
        _card_at(hub, repo, f"refs/pr/{result.pr_num}")
        == b'---\nlibrary_name: peft\nbase_model: "gradience-examples/tiny-llama"\n---\n'
        b"<!-- gradience:start -->\nhello\n<!-- gradience:end -->\n"
    )


def test_concurrent_readme_edit_is_not_overwritten(hub: LocalHub, reports: dict) -> None:
    """The README changes between our read and our commit: parent_commit makes the Hub refuse
    the stale commit, and the edit is re-read and kept."""
    repo = _fresh_repo(hub)
    fault = hub.fault(rf"/api/models/{repo}/commit/", method="POST", latency=3.0, times=1)
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: box.update(
            r=publish_badge(repo, reports["healthy-r8"], hub.tokens["alice"], create_pr=False)
        )
    )
    worker.start()
    while not any(f["id"] == fault and f["hits"] for f in hub.faults()):  # our commit is in flight
        worker.join(0.05)
        assert worker.is_alive(), "publish_badge finished before its commit was held"
    edited = CARD.replace(b"Bye", b"Bye, edited meanwhile")
    _api(hub).upload_file(path_or_fileobj=edited, path_in_repo="README.md", repo_id=repo)
    worker.join(60)
    assert box["r"].status == "created"
    assert _card_at(hub, repo, "main") == _expected(repo, reports["healthy-r8"], edited)


def test_refusals_are_typed(hub: LocalHub, reports: dict) -> None:
    report = reports["healthy-r8"]
    repo = _fresh_repo(hub)
    with pytest.raises(UsageError) as no_token:
        publish_badge(repo, report, "")
    assert no_token.value.param == "token"
    with pytest.raises(HubAccessError) as read_only:  # a read-only token may not open a PR
        publish_badge(repo, report, ALICE_READ_TOKEN)
    assert read_only.value.code == "access_denied" and read_only.value.repo_id == repo
    with pytest.raises(HubAccessError):  # carol may propose, not commit, to alice's repo
        publish_badge(repo, report, hub.tokens["carol"], create_pr=False)
    with pytest.raises(AdapterNotFoundError):  # carol cannot see alice's private repo
        publish_badge(PRIVATE_REPO, report, hub.tokens["carol"])
    with pytest.raises(GatedRepoError):  # nor read bob's gated card
        publish_badge(GATED_REPO, report, hub.tokens["carol"])
    with pytest.raises(HubError) as flaky:  # the Hub keeps failing: a typed transfer error
        hub.fault(rf"/api/models/{repo}/commit/", method="POST", status=500)
        publish_badge(repo, report, hub.tokens["carol"])
    assert flaky.value.code in ("transient_error", "rate_limited")
    assert _card_at(hub, repo, "main") == CARD
