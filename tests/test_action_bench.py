"""The Action's GPU bench: ``gradience action run --bench`` starts ``gradience bench --on
hf-jobs`` on the local Hub's Jobs (jobs really run, as subprocesses in the project's
environment) and keeps the outcome in the same sticky comment — pending, then the result, or
the failure with its last log lines; a timeout always ends it."""

from __future__ import annotations

import pytest

pytest.importorskip("peft", reason="the bench needs the bench extra (torch, peft, transformers)")
pytest.importorskip("gradience.bench.jobs", reason="gradience bench --on hf-jobs is not in this checkout")

from huggingface_hub import HfApi
from test_action import PR, REPO, commit, put

pytestmark = pytest.mark.peft

TINY = "seeds = 1\nsteps = 3\nprobe_rank = 4\nbatch_size = 16\nmodes = ['truncated']\n"


@pytest.fixture
def gh(github):
    from test_action import TOKEN

    github.reset()
    github.add_repo(REPO)
    github.add_token(TOKEN, "github-actions[bot]", repos=[REPO])
    return github


def _pr(tmp_path, gh, config: str) -> PR:
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    put(pr.repo, "lora", "healthy-r8")
    (pr.repo / "bench.toml").write_text(config)
    pr.open(base, commit(pr.repo, "add an adapter and bench settings"))
    return pr


def _bench(pr: PR, hub, *flags: str):
    return pr.run(
        "--bench", "--bench-config", "bench.toml", "--bench-namespace", "alice", *flags,
        extra_env={"HF_TOKEN": hub.tokens["alice"]},
    )  # fmt: skip


def _comment_edits(gh, comment_id: int) -> int:
    return sum(r["method"] == "PATCH" and r["path"].endswith(f"/comments/{comment_id}") for r in gh.requests)


def test_bench_result_lands_in_the_sticky_comment(tmp_path, gh, hub):
    pr = _pr(tmp_path, gh, TINY)
    run = _bench(pr, hub, "--bench-timeout", "5m")
    assert run.code == 0, run.stderr
    bench = run.report["bench"]
    assert bench["status"] in ("passed", "no_smaller") and bench["report"]["task"]["name"] == "synthetic"
    (c,) = pr.comments()
    assert "#### GPU bench (`a10g-small`, timeout 5m)" in c.body and "| candidate |" in c.body
    assert "⏳" not in c.body and _comment_edits(gh, c.id) == 2  # pending, then the result
    assert hub.tokens["alice"] not in c.body  # (stdout, stderr, summary and report: checked by PR.run)
    jobs = HfApi(endpoint=hub.url, token=hub.tokens["alice"]).list_jobs(labels={"pr": "7"}, namespace="alice")
    assert [j.labels["commit"] for j in jobs] == [pr.head]


def test_a_failed_bench_shows_its_last_log_lines(tmp_path, gh, hub):
    pr = _pr(tmp_path, gh, TINY + "model = 'alice/no-such-model'\ndataset = 'alice/no-such-data'\n")
    run = _bench(pr, hub, "--bench-timeout", "5m")
    assert run.code == 0, run.stderr  # the audit passed; the bench failure is a warning
    assert run.report["bench"]["status"] == "failed" and run.report["bench"]["tail"]
    assert "::warning::gradience: GPU bench failed" in run.stdout
    body = pr.comments()[0].body
    assert "❌" in body and "<summary>last log lines</summary>" in body and "gradience bench: error:" in body


def test_a_bench_never_outlives_its_timeout(tmp_path, gh, hub):
    pr = _pr(tmp_path, gh, TINY)
    run = _bench(pr, hub, "--bench-timeout", "1s")
    assert run.code == 0, run.stderr
    assert run.report["bench"]["status"] == "failed" and "timed out" in run.report["bench"]["message"]
    assert "timed out" in pr.comments()[0].body


def test_a_fork_pull_request_does_not_start_a_bench(tmp_path, gh, hub):
    from test_action import FORK

    gh.add_repo(FORK, fork=True)
    pr = PR(tmp_path, gh, head_repo=FORK)
    base = commit(pr.repo, "empty")
    put(pr.repo, "lora", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    run = pr.run("--bench", "--comment", "off")
    assert run.code == 0 and run.report["bench"]["status"] == "skipped"
    assert "no secrets" in run.report["bench"]["message"]
