"""Tokens like the Hub's: roles, OAuth scopes and fine-grained repo lists, seen through HfApi.

Each test writes only to repos it creates, so the seeded repos other tests read stay as seeded.
"""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from servers.hub import (
    ALICE_FINE_GRAINED_TOKEN,
    ALICE_OAUTH_TOKEN,
    ALICE_READ_TOKEN,
    ALICE_TOKEN,
    FINE_GRAINED_REPOS,
    LocalHub,
)


def _api(hub: LocalHub, token: str) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def _fresh_repo(hub: LocalHub) -> str:
    repo_id = f"alice/scopes-{uuid.uuid4().hex[:8]}"
    _api(hub, ALICE_TOKEN).create_repo(repo_id)
    return repo_id


def _status(call) -> int:
    with pytest.raises(HfHubHTTPError) as info:
        call()
    return info.value.response.status_code


@pytest.mark.parametrize(
    ("token", "kind", "role", "has", "lacks"),
    [
        (ALICE_TOKEN, "access_token", "write", {"write-repos", "write-discussions", "manage-repos"}, set()),
        (ALICE_READ_TOKEN, "access_token", "read", {"read-repos"}, {"write-repos", "write-discussions"}),
        (ALICE_OAUTH_TOKEN, "oauth", "read", {"read-repos", "write-discussions"}, {"write-repos"}),
        (ALICE_FINE_GRAINED_TOKEN, "access_token", "fineGrained", {"write-repos"}, {"manage-repos"}),
    ],
)
def test_whoami_reports_type_role_and_scopes(hub: LocalHub, token, kind, role, has, lacks) -> None:
    auth = _api(hub, token).whoami()["auth"]
    assert auth["type"] == kind
    assert auth["accessToken"]["role"] == role
    assert has <= set(auth["scopes"])
    assert not lacks & set(auth["scopes"])
    if role == "fineGrained":
        scoped = auth["accessToken"]["fineGrained"]["scoped"]
        assert {f"{s['entity']['type']}/{s['entity']['name']}" for s in scoped} == set(FINE_GRAINED_REPOS)


def test_read_token_can_neither_write_nor_open_discussions(hub: LocalHub) -> None:
    repo_id = _fresh_repo(hub)
    read = _api(hub, ALICE_READ_TOKEN)
    assert _status(lambda: read.create_discussion(repo_id, title="from a read token")) == 403
    assert (
        _status(lambda: read.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)) == 403
    )
    # the same user with a write token may do both
    write = _api(hub, ALICE_TOKEN)
    num = write.create_discussion(repo_id, title="from a write token").num
    assert _status(lambda: read.comment_discussion(repo_id, num, "read token comment")) == 403
    write.comment_discussion(repo_id, num, "write token comment")
    write.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert "x.txt" in write.list_repo_files(repo_id)


def test_oauth_token_opens_discussions_and_prs_but_cannot_push(hub: LocalHub) -> None:
    repo_id = _fresh_repo(hub)
    oauth = _api(hub, ALICE_OAUTH_TOKEN)
    assert oauth.create_discussion(repo_id, title="signed in with HF").num >= 1
    pr = oauth.upload_file(path_or_fileobj=b"badge", path_in_repo="BADGE.md", repo_id=repo_id, create_pr=True)
    assert pr.pr_num is not None
    assert (
        _status(lambda: oauth.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)) == 403
    )
    assert "x.txt" not in oauth.list_repo_files(repo_id)


def test_fine_grained_token_writes_only_to_its_repos(hub: LocalHub) -> None:
    (allowed,) = (key.split("/", 1)[1] for key in FINE_GRAINED_REPOS)
    _api(hub, ALICE_TOKEN).create_repo(allowed, exist_ok=True)
    other = _fresh_repo(hub)
    fine = _api(hub, ALICE_FINE_GRAINED_TOKEN)
    name = f"{uuid.uuid4().hex[:8]}.txt"
    fine.upload_file(path_or_fileobj=b"ok", path_in_repo=name, repo_id=allowed)
    assert name in fine.list_repo_files(allowed)
    assert _status(lambda: fine.upload_file(path_or_fileobj=b"no", path_in_repo=name, repo_id=other)) == 403
    assert _status(lambda: fine.create_discussion(other, title="outside my repos")) == 403
    assert name not in fine.list_repo_files(other)


def test_fine_grained_token_reads_private_repos_only_when_listed(hub: LocalHub) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError
    from servers.hub import PRIVATE_REPO

    assert _api(hub, ALICE_TOKEN).model_info(PRIVATE_REPO).id == PRIVATE_REPO
    with pytest.raises(RepositoryNotFoundError):
        _api(hub, ALICE_FINE_GRAINED_TOKEN).model_info(PRIVATE_REPO)
    assert _api(hub, ALICE_OAUTH_TOKEN).model_info(PRIVATE_REPO).id == PRIVATE_REPO  # read-repos
    listed = {m.id for m in _api(hub, ALICE_FINE_GRAINED_TOKEN).list_models(author="alice")}
    assert PRIVATE_REPO not in listed
    assert PRIVATE_REPO in {m.id for m in _api(hub, ALICE_TOKEN).list_models(author="alice")}
