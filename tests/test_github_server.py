"""The local GitHub answers PyGithub the way GitHub does: the calls the Action makes work, and
the mistakes a client can make (no token, a wrong one, an unknown repository, a write with a
read-only token, a body over the limit, an exhausted rate limit) fail as they would there."""

from __future__ import annotations

import github
import pytest
from github import Auth, Github
from servers.github import LocalGitHub

REPO = "acme/models"
TOKEN = "ghs_write_test_token_000000000000000000"
READ = "ghs_read_test_token_0000000000000000000"
PAT = "ghp_user_test_token_00000000000000000000"


@pytest.fixture
def gh(github):
    github.reset()
    github.add_repo(REPO)
    github.add_repo("acme/private", private=True)
    github.add_token(TOKEN, "github-actions[bot]", repos=[REPO])
    github.add_token(READ, "github-actions[bot]", permission="read", repos=[REPO])
    github.add_token(PAT, "octocat", app=False)
    files = [{"filename": f"f{i}.txt", "status": "modified"} for i in range(7)]
    files.append({"filename": "new/name.txt", "status": "renamed", "previous_filename": "old/name.txt"})
    github.add_pull(REPO, 3, head_sha="a" * 40, base_sha="b" * 40, files=files)
    return github


def client(server: LocalGitHub, token: str | None, **kw) -> Github:
    auth = Auth.Token(token) if token else None
    return Github(base_url=server.url, auth=auth, retry=None, seconds_between_requests=None,
                  seconds_between_writes=None, timeout=10, **kw)  # fmt: skip


def test_pull_and_its_files_across_pages(gh):
    pull = client(gh, TOKEN, per_page=3).get_repo(REPO).get_pull(3)
    assert (pull.number, pull.head.sha, pull.base.sha, pull.base.ref) == (3, "a" * 40, "b" * 40, "main")
    files = list(pull.get_files())
    assert [f.filename for f in files] == [f"f{i}.txt" for i in range(7)] + ["new/name.txt"]
    assert files[-1].status == "renamed" and files[-1].previous_filename == "old/name.txt"
    pages = [r["query"].get("page") for r in gh.requests if r["path"].endswith("/files")]
    assert pages == [None, "2", "3"]  # first page, then the Link rel="next" URLs


def test_per_page_is_capped_like_github(gh):
    gh.configure(page_size_cap=2)
    pull = client(gh, TOKEN, per_page=100).get_repo(REPO).get_pull(3)
    assert len(list(pull.get_files())) == 8
    assert sum(r["path"].endswith("/files") for r in gh.requests) == 4


def test_comments_create_list_edit_delete(gh):
    pull = client(gh, TOKEN).get_repo(REPO).get_pull(3)
    c = pull.create_issue_comment("first")
    assert c.user.login == "github-actions[bot]" and c.user.type == "Bot"
    c.edit("second")
    assert [x.body for x in pull.get_issue_comments()] == ["second"]
    c.delete()
    assert list(pull.get_issue_comments()) == []


def test_read_only_token_cannot_write(gh):
    pull = client(gh, READ).get_repo(REPO).get_pull(3)
    assert list(pull.get_files())  # reading is fine
    with pytest.raises(github.GithubException) as e:
        pull.create_issue_comment("hello")
    assert e.value.status == 403 and e.value.data["message"] == "Resource not accessible by integration"


def test_an_integration_cannot_edit_someone_elses_comment(gh):
    cid = gh.add_comment(REPO, 3, "a person's words", login="maintainer")
    comment = client(gh, TOKEN).get_repo(REPO).get_pull(3).get_issue_comment(cid)
    with pytest.raises(github.GithubException) as e:
        comment.edit("overwritten")
    assert e.value.status == 403
    assert gh.comments(REPO, 3)[0].body == "a person's words"


def test_authentication_is_required_and_checked(gh):
    with pytest.raises(github.GithubException) as none:
        client(gh, None).get_repo(REPO)
    assert none.value.status == 401
    with pytest.raises(github.BadCredentialsException):
        client(gh, "ghs_wrong").get_repo(REPO)


def test_unknown_and_out_of_scope_repositories_are_404(gh):
    with pytest.raises(github.UnknownObjectException):
        client(gh, TOKEN).get_repo("acme/nope")
    with pytest.raises(github.UnknownObjectException):  # the Actions token sees its own repo only
        client(gh, TOKEN).get_repo("acme/private")
    assert client(gh, PAT).get_repo("acme/private").private is True


def test_user_is_for_user_tokens_only(gh):
    assert client(gh, PAT).get_user().login == "octocat"
    with pytest.raises(github.GithubException) as e:
        _ = client(gh, TOKEN).get_user().login
    assert e.value.status == 403


def test_comment_body_limit(gh):
    pull = client(gh, TOKEN).get_repo(REPO).get_pull(3)
    with pytest.raises(github.GithubException) as e:
        pull.create_issue_comment("x" * 65537)
    assert e.value.status == 422
    pull.create_issue_comment("x" * 65536)


def test_check_runs_and_statuses(gh):
    repo = client(gh, TOKEN).get_repo(REPO)
    run = repo.create_check_run("gradience", "a" * 40, status="in_progress")
    run.edit(status="completed", conclusion="failure",
             output={"title": "1 error", "summary": "s", "annotations": [
                 {"path": "a/adapter_config.json", "start_line": 1, "end_line": 1,
                  "annotation_level": "failure", "message": "untrained"}]})  # fmt: skip
    (stored,) = gh.check_runs
    assert (
        stored["conclusion"] == "failure"
        and stored["output"]["annotations"][0]["path"] == "a/adapter_config.json"
    )
    too_many = [
        {"path": "x", "start_line": 1, "end_line": 1, "annotation_level": "warning", "message": "m"}
    ] * 51
    with pytest.raises(github.GithubException) as e:
        repo.create_check_run(
            "gradience", "a" * 40, output={"title": "t", "summary": "s", "annotations": too_many}
        )
    assert e.value.status == 422
    repo.get_commit("a" * 40).create_status("success", description="ok", context="gradience")
    assert gh.statuses[0]["state"] == "success" and gh.statuses[0]["sha"] == "a" * 40
    with pytest.raises(github.GithubException) as e:
        client(gh, PAT).get_repo(REPO).create_check_run("gradience", "a" * 40)
    assert e.value.status == 403  # only GitHub Apps (the Actions token is one) create check runs


def test_rate_limit_headers_and_exhaustion(gh):
    g = client(gh, TOKEN)
    g.get_repo(REPO)
    remaining, limit = g.rate_limiting
    assert limit == 5000 and remaining == 4999
    gh.configure(rate_remaining=0)
    with pytest.raises(github.RateLimitExceededException):
        g.get_repo(REPO)
