"""The Action's GitHub client against the strict local GitHub: pagination, retries that never
post twice, rate limits waited out or reported, renamed repositories, and a token that never
leaves the API's origin."""

from __future__ import annotations

import pytest
from servers.github import LocalGitHub

from gradience.action.github import MAX_RATE_LIMIT_WAIT, GitHub
from gradience.action.render import marker
from gradience.errors import GitHubError

REPO = "acme/models"
TOKEN = "ghs_client_test_token_00000000000000000"
READ = "ghs_client_read_token_00000000000000000"
PAT = "ghp_client_user_token_00000000000000000"
TAG = marker("default")


@pytest.fixture
def gh(github):
    github.reset()
    github.add_repo(REPO)
    github.add_token(TOKEN, "github-actions[bot]", repos=[REPO])
    github.add_token(READ, "github-actions[bot]", permission="read", repos=[REPO])
    github.add_token(PAT, "octocat", app=False)
    files = [{"filename": f"f{i}.txt", "status": "modified"} for i in range(7)]
    files.append({"filename": "new/name.txt", "status": "renamed", "previous_filename": "old/name.txt"})
    github.add_pull(REPO, 3, head_sha="a" * 40, base_sha="b" * 40, files=files)
    return github


class Sleeps(list):
    """Records the waits instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


OPEN: list[GitHub] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while OPEN:
        OPEN.pop().close()


def client(server: LocalGitHub, token: str = TOKEN, repo: str = REPO) -> tuple[GitHub, Sleeps]:
    sleeps = Sleeps()
    OPEN.append(GitHub(server.url, token, repo, timeout=10, sleep=sleeps))
    return OPEN[-1], sleeps


def test_pull_and_files_across_capped_pages(gh):
    gh.configure(page_size_cap=3)
    c, sleeps = client(gh)
    pull = c.pull(3)
    assert (pull.number, pull.head_sha, pull.base_sha, pull.from_fork) == (3, "a" * 40, "b" * 40, False)
    files = c.changed_files(3)
    assert [f.filename for f in files] == [f"f{i}.txt" for i in range(7)] + ["new/name.txt"]
    assert (files[-1].status, files[-1].previous_filename) == ("renamed", "old/name.txt")
    pages = [r["query"].get("page") for r in gh.requests if r["path"].endswith("/files")]
    assert pages == [None, "2", "3"] and sleeps == []


def test_unknown_pull_or_repository_and_bad_token_are_one_line_errors(gh):
    with pytest.raises(GitHubError, match=r"cannot read pull request #9 in acme/models: GitHub answered 404"):
        client(gh)[0].pull(9)
    with pytest.raises(GitHubError, match="GitHub answered 404"):
        client(gh, repo="acme/hidden")[0].pull(3)
    with pytest.raises(GitHubError, match="GitHub answered 401: Bad credentials") as e:
        client(gh, token="ghs_wrong")[0].pull(3)
    assert "ghs_wrong" not in str(e.value)


def test_reads_are_retried_writes_are_not(gh):
    c, sleeps = client(gh)
    gh.configure(fail_gets=2)
    assert c.pull(3).number == 3
    assert [r["status"] for r in gh.requests] == [502, 502, 200] and sleeps == [0.5, 1.0]
    gh.configure(fail_gets=9)  # past the retries: an error, not a hang
    with pytest.raises(GitHubError, match="GitHub answered 502"):
        c.pull(3)
    gh.configure(fail_gets=0, fail_writes=1)  # the comment is made, the answer is lost
    res = c.upsert_comment(3, TAG + "\nhi", scope="default", mode="sticky",
                           skip_unchanged=False)  # fmt: skip
    assert (res.mode, res.posted) == ("failed", False) and "502" in res.reason
    assert len(gh.comments(REPO, 3)) == 1  # not posted twice
    # the next run finds that comment and edits it
    res = c.upsert_comment(3, TAG + "\nagain", scope="default", mode="sticky",
                           skip_unchanged=False)  # fmt: skip
    assert res.mode == "edited" and [x.body for x in gh.comments(REPO, 3)] == [
        TAG + "\nagain"]  # fmt: skip


def test_secondary_limit_is_waited_out_then_reported(gh):
    c, sleeps = client(gh)
    gh.configure(secondary_limited=1, retry_after=7)
    res = c.upsert_comment(3, TAG + "\nx", scope="default", mode="new",
                           skip_unchanged=False)  # fmt: skip
    assert res.mode == "created" and sleeps == [7.0] and len(gh.comments(REPO, 3)) == 1
    gh.configure(secondary_limited=1, retry_after=int(MAX_RATE_LIMIT_WAIT) + 1)
    with pytest.raises(GitHubError, match=r"secondary rate limit.*rate limited until about"):
        c.pull(3)
    assert sleeps == [7.0]  # the long wait was not slept


def test_exhausted_primary_limit_fails_at_once(gh):
    gh.configure(rate_remaining=0)
    c, sleeps = client(gh)
    with pytest.raises(GitHubError, match=r"API rate limit exceeded.*rate limited until about 2100"):
        c.changed_files(3)
    assert sleeps == []


def test_renamed_repository_is_followed_within_the_api(gh):
    gh.rename_repo(REPO, "acme/models-v2")
    c, _ = client(gh)  # still the old name
    assert c.pull(3).base_repo == "acme/models-v2"
    assert len(c.changed_files(3)) == 8
    res = c.upsert_comment(3, TAG + "\nmoved", scope="default", mode="sticky",
                           skip_unchanged=False)  # fmt: skip
    assert res.mode == "created" and len(gh.comments("acme/models-v2", 3)) == 1
    assert [r["status"] for r in gh.requests].count(301) == 4  # pull, files, comments list, create


def test_token_is_never_sent_to_another_origin(gh):
    gh.configure(page_size_cap=3, link_base="http://127.0.0.1:9")
    c, _ = client(gh)
    with pytest.raises(GitHubError, match=r"pointed to 127\.0\.0\.1:9.*the token is not sent there"):
        c.changed_files(3)
    gh.configure(link_base="")
    gh.rename_repo(REPO, "acme/elsewhere")
    gh.configure(link_base="http://127.0.0.1:9")
    with pytest.raises(GitHubError, match="not sent there"):
        c.pull(3)


def test_comments_of_others_are_never_edited(gh):
    tag = TAG
    human = gh.add_comment(REPO, 3, f"{tag}\nquoted by a person", login="maintainer")
    bot = gh.add_comment(REPO, 3, f"{tag}\nanother app's", login="other-app[bot]", user_type="Bot")
    c, _ = client(gh, token=PAT)  # a personal token: /user says who it is
    assert c.login() == "octocat"
    res = c.upsert_comment(3, f"{tag}\nmine", scope="default", mode="sticky", skip_unchanged=False)
    assert res.mode == "created"
    again = c.upsert_comment(3, f"{tag}\nmine, edited", scope="default", mode="sticky", skip_unchanged=False)
    assert again.mode == "edited" and again.comment_id == res.comment_id
    same = c.upsert_comment(3, f"{tag}\nmine, edited", scope="default", mode="sticky", skip_unchanged=False)
    assert same.mode == "unchanged"
    bodies = {x.id: x.body for x in gh.comments(REPO, 3)}
    assert bodies[human] == f"{tag}\nquoted by a person" and bodies[bot] == f"{tag}\nanother app's"
    # an installation token may not ask /user; it recognises its own comment as a bot's
    app, _ = client(gh)
    assert app.login() is None


def test_read_only_token_reports_why_no_comment(gh):
    c, _ = client(gh, token=READ)
    res = c.upsert_comment(3, TAG + "\nx", scope="default", mode="sticky",
                           skip_unchanged=False)  # fmt: skip
    assert not res.posted and "Resource not accessible by integration" in res.reason
    assert "read-only token" in res.reason and gh.comments(REPO, 3) == []


def test_runtime_needs_nothing_outside_the_action_install(gh):
    """The action installs ``.[action]`` only (under 100 MB): its runtime must not import PyGithub,
    its crypto dependencies, torch or gradio — checked with those imports made to fail."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import importlib.abc, sys
        BANNED = {{"github", "nacl", "jwt", "cryptography", "torch", "gradio", "requests"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BANNED:
                    raise ImportError(f"{{name}} is not in the action's install")
        sys.meta_path.insert(0, Block())
        import gradience.action.run, gradience.cli.main
        from gradience.action.github import GitHub
        c = GitHub({gh.url!r}, {TOKEN!r}, {REPO!r})
        print(c.pull(3).head_sha[:4], len(c.changed_files(3)))
        c.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["aaaa", "8"]
