"""The Hub bot end to end: the local Hub delivers real webhooks to the bot, which acts through
the real huggingface_hub client. The repo owner is bob; the bot runs with carol's token."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from servers import hub as H
from servers.webhook_receiver import deliveries

from gradience.bot.config import BotConfig, load_config
from gradience.bot.server import Bot
from gradience.bot.worker import COMMENT_MARKER, wait_idle
from gradience.errors import UsageError
from gradience.hub.badges import PR_TITLE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SECRET = "s3cret-for-tests"
# A card that exercises the edges: front matter, HTML, a code fence holding the marker text,
# CRLF line ends, an existing badge, and no trailing newline.
CARD = (
    "---\r\nlicense: apache-2.0\r\ntags:\r\n- gradience\r\n- lora\r\nbase_model: test/base\r\n---\r\n"
    "# My adapter\r\n\r\n[![other](https://img.shields.io/badge/x-y-blue)](https://x)\r\n\r\n"
    "<div align=center><b>html</b></div>\r\n\r\n```md\r\n<!-- gradience:start -->\r\nnot a section\r\n"
    "<!-- gradience:end -->\r\n```\r\n\r\nTrained on things."
)


def _adapter_ops(name: str, prefix: str = "") -> list[CommitOperationAdd]:
    src = EXAMPLES / name
    return [
        CommitOperationAdd(prefix + f, str(src / f))
        for f in ("adapter_config.json", "adapter_model.safetensors")
    ]


@pytest.fixture
def bob() -> HfApi:
    return HfApi(endpoint=os.environ["HF_ENDPOINT"], token=H.BOB_TOKEN)


@pytest.fixture
def bot(tmp_path, hub):
    config = BotConfig(
        port=0, state=tmp_path / "bot.sqlite", token=H.CAROL_TOKEN, secret=SECRET, repo_interval=0.0,
        global_per_minute=1000,
    )  # fmt: skip
    with Bot(config) as b:
        yield b


def _repo(bob: HfApi, bot: Bot, card: str = CARD) -> tuple[str, str]:
    """An opted-in adapter repo of bob's with a webhook to the bot (made before any content,
    so the bot hears the first push)."""
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    bob.create_repo(repo)
    hook = bob.create_webhook(url=f"{bot.url}/webhook", watched=[{"type": "model", "name": repo}],
                              domains=["repo", "discussion"], secret=SECRET)  # fmt: skip
    ops = [*_adapter_ops("healthy-r8"), CommitOperationAdd("README.md", card.encode())]
    bob.create_commit(repo, ops, commit_message="adapter")
    return repo, hook.id


def _settle(hub, bot: Bot, hook_id: str) -> None:
    deliveries(hub, hook_id)  # the Hub has sent everything queued
    assert wait_idle(bot.worker, 60), bot.state.deliveries()


def _bot_prs(api: HfApi, repo: str, status: str = "open") -> list:
    return [
        d
        for d in api.get_repo_discussions(repo, discussion_type="pull_request", discussion_status=status)
        if d.author == "carol"
    ]


def _card_at(api: HfApi, repo: str, revision: str) -> bytes:
    return Path(api.hf_hub_download(repo, "README.md", revision=revision)).read_bytes()


def test_push_opens_one_badge_pr_updates_it_and_ignores_unchanged_weights(hub, bot, bob):
    repo, hook = _repo(bob, bot)
    _settle(hub, bot, hook)
    (pr,) = _bot_prs(bob, repo)
    assert pr.title == PR_TITLE
    details = bob.get_discussion_details(repo, pr.num)
    assert "opt out" in details.events[0].content.lower()
    before, after = _card_at(bob, repo, "main"), _card_at(bob, repo, f"refs/pr/{pr.num}")
    text = after.decode()
    assert "LoRA utilisation" in text and "recommended rank **" in text
    # every byte outside the inserted section (CRLF, front matter, HTML, the fenced fake markers,
    # the missing final newline) is the original card's
    i = after.index(b"<!-- gradience:start -->")
    j = after.index(b"<!-- gradience:end -->\r\n\r\n", i) + len(b"<!-- gradience:end -->\r\n\r\n")
    assert after[:i] + after[j:] == before
    assert after.count(b"not a section") == 1 and not after.endswith(b"\n")
    first_section = text

    # new weights on main → the same PR is updated, no second PR
    bob.create_commit(repo, _adapter_ops("overprovisioned-r64"), commit_message="retrain")
    _settle(hub, bot, hook)
    (pr2,) = _bot_prs(bob, repo)
    assert pr2.num == pr.num
    updated = _card_at(bob, repo, f"refs/pr/{pr.num}").decode()
    assert updated != first_section and "of 64" in updated

    # a push that leaves the weights alone → nothing is pushed to the PR
    pr_head = bob.list_repo_refs(repo, include_pull_requests=True).pull_requests[0].target_commit
    bob.upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id=repo)
    _settle(hub, bot, hook)
    assert bob.list_repo_refs(repo, include_pull_requests=True).pull_requests[0].target_commit == pr_head
    assert len(_bot_prs(bob, repo)) == 1


def test_secret_is_required_and_replays_are_deduplicated(hub, bot, bob):
    repo, hook = _repo(bob, bot)
    _settle(hub, bot, hook)
    sent = [d for d in deliveries(hub, hook) if d["event"]["scope"] == "repo.content"]
    body = json.dumps(sent[-1]["payload"]).encode()
    before = bot.state.counts()

    def post(headers: dict[str, str]) -> int:
        req = urllib.request.Request(f"{bot.url}/webhook", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post({}) == 401
    assert post({"X-Webhook-Secret": "wrong"}) == 403
    assert post({"X-Webhook-Secret": SECRET + "x"}) == 403
    assert bot.state.counts() == before  # nothing stored, nothing done
    assert post({"X-Webhook-Secret": SECRET}) == 200  # the very same delivery again: a duplicate
    assert bot.state.counts() == before
    assert len(_bot_prs(bob, repo)) == 1


def test_pull_request_changing_weights_gets_one_comment_edited_on_push(hub, bot, bob):
    repo, hook = _repo(bob, bot)
    _settle(hub, bot, hook)
    alice = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=H.ALICE_TOKEN)
    c = alice.create_commit(
        repo, _adapter_ops("overprovisioned-r64"), commit_message="bigger", create_pr=True
    )
    _settle(hub, bot, hook)
    num = c.pr_num

    def ours():
        events = bob.get_discussion_details(repo, num).events
        return [e for e in events if e.type == "comment" and COMMENT_MARKER in (e.content or "")]

    (comment,) = ours()
    assert "r=8" in comment.content or "8 → 64" in comment.content or "64" in comment.content
    first = comment.content
    alice.create_commit(repo, _adapter_ops("merge-related-a"), commit_message="other",
                        revision=f"refs/pr/{num}")  # fmt: skip
    _settle(hub, bot, hook)
    (edited,) = ours()
    assert edited.id == comment.id and edited.content != first
    # a PR that does not touch the adapter gets no comment
    c2 = alice.create_commit(
        repo, [CommitOperationAdd("notes.txt", b"hi")], commit_message="n", create_pr=True
    )
    _settle(hub, bot, hook)
    assert not [e for e in bob.get_discussion_details(repo, c2.pr_num).events if e.type == "comment"
                and COMMENT_MARKER in (e.content or "")]  # fmt: skip


def test_opt_out_closes_the_open_badge_pr_and_proposes_nothing_more(hub, bot, bob):
    repo, hook = _repo(bob, bot)
    _settle(hub, bot, hook)
    (pr,) = _bot_prs(bob, repo)
    bob.upload_file(path_or_fileobj=CARD.replace("- lora", "- gradience-opt-out").encode(),
                    path_in_repo="README.md", repo_id=repo)  # fmt: skip
    _settle(hub, bot, hook)
    assert _bot_prs(bob, repo) == []
    closed = bob.get_discussion_details(repo, pr.num)
    assert (closed.status == "closed" and "opted out" in closed.events[-1].content.lower()) or any(
        "opted out" in (e.content or "").lower() for e in closed.events
    )
    bob.create_commit(repo, _adapter_ops("overprovisioned-r64"), commit_message="retrain")
    _settle(hub, bot, hook)
    assert _bot_prs(bob, repo) == []


def test_a_restart_during_a_burst_loses_and_repeats_nothing(hub, tmp_path, bob, caplog):
    caplog.set_level(logging.DEBUG, logger="gradience.bot")
    config = BotConfig(port=0, state=tmp_path / "bot.sqlite", token=H.CAROL_TOKEN, secret=SECRET,
                       repo_interval=0.0, global_per_minute=1000)  # fmt: skip
    first = Bot(config)
    t = threading.Thread(target=first.httpd.serve_forever, daemon=True)  # receiver only, no worker
    t.start()
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    bob.create_repo(repo)
    hook = bob.create_webhook(
        url=f"{first.url}/webhook", watched=[{"type": "model", "name": repo}], secret=SECRET
    )
    bob.create_commit(repo, [*_adapter_ops("healthy-r8"), CommitOperationAdd("README.md", CARD.encode())],
                      commit_message="adapter")  # fmt: skip
    for i in range(4):  # a burst: each push leaves the weights alone
        bob.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo=f"n{i}.txt", repo_id=repo)
    accepted = [d for d in deliveries(hub, hook.id) if d["status"] == 202]
    assert len(accepted) == 5
    first.httpd.shutdown()
    first.httpd.server_close()
    first.state.close()

    second = Bot(config.replace(port=0)).start()  # the same state file
    try:
        assert wait_idle(second.worker, 60), second.state.deliveries()
        states = [d["status"] for d in second.state.deliveries()]
        assert len(states) == 5 and states.count("done") == 1 and set(states) <= {"done", "skipped"}
        assert len(_bot_prs(bob, repo)) == 1
        status = json.loads(urllib.request.urlopen(f"{second.url}/status", timeout=5).read())
        assert status["deliveries"] == {"done": 1, "skipped": 4}
        assert urllib.request.urlopen(f"{second.url}/healthz", timeout=5).status == 200
    finally:
        second.stop()
    assert H.CAROL_TOKEN not in caplog.text and SECRET not in caplog.text


def test_badge_commands_open_refresh_and_close(hub, tmp_path, bob):
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    bob.create_repo(repo)
    bob.create_commit(repo, [*_adapter_ops("healthy-r8"), CommitOperationAdd("README.md", b"# plain card\n")],
                      commit_message="adapter")  # fmt: skip
    env = {**os.environ, "HF_TOKEN": H.CAROL_TOKEN}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gradience", "badge", *argv, "--state",
                               str(tmp_path / "s.sqlite"), "--json"], capture_output=True, text=True, env=env)  # fmt: skip

    p = run("refresh", repo)
    assert p.returncode == 2 and "open one first" in p.stderr
    p = run("open", repo)
    assert p.returncode == 0, p.stderr
    opened = json.loads(p.stdout)
    assert opened["status"] == "done" and opened["pr"] == _bot_prs(bob, repo)[0].num
    p = run("refresh", repo)
    assert p.returncode == 0 and len(_bot_prs(bob, repo)) == 1
    p = run("close", repo)
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "done"
    assert _bot_prs(bob, repo) == [] and H.CAROL_TOKEN not in p.stdout + p.stderr


def test_configuration_refuses_secrets_in_files_and_needs_both_secrets(tmp_path, monkeypatch):
    f = tmp_path / "bot.toml"
    f.write_text('[bot]\nport = 9000\nrepos = ["a/b"]\n')
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.delenv("GRADIENCE_WEBHOOK_SECRET", raising=False)
    cfg = load_config(f)
    assert (cfg.port, cfg.repos, cfg.token, cfg.secret) == (9000, ("a/b",), "hf_x", None)
    assert "hf_x" not in repr(cfg)
    with pytest.raises(UsageError, match="webhook secret"):
        Bot(cfg.replace(port=0, state=tmp_path / "s.sqlite"))
    f.write_text('token = "hf_leak"\n')
    with pytest.raises(UsageError, match="secrets come from the environment"):
        load_config(f)
    shutil.rmtree(tmp_path / "s.sqlite", ignore_errors=True)


def test_a_rate_limited_hub_delays_the_job_without_dropping_it(hub, bot, bob):
    """429s while the bot looks for its open PR: the job waits the Hub's window (not an attempt) and lands once."""
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    fault = hub.fault(rf"/api/models/{repo}/discussions", status=429, retry_after=1, times=2, method="GET")
    bob.create_repo(repo)
    hook = bob.create_webhook(url=f"{bot.url}/webhook", watched=[{"type": "model", "name": repo}],
                              domains=["repo", "discussion"], secret=SECRET)  # fmt: skip
    bob.create_commit(repo, [*_adapter_ops("healthy-r8"), CommitOperationAdd("README.md", CARD.encode())],
                      commit_message="adapter")  # fmt: skip
    _settle(hub, bot, hook.id)
    assert hub.fault_hits(fault) == 2
    assert len(_bot_prs(bob, repo)) == 1
    card_jobs = [d for d in bot.state.deliveries() if d["kind"] == "card"]
    assert [d["status"] for d in card_jobs] == ["done"] and card_jobs[0]["attempts"] == 0


def test_a_repo_without_a_card_gets_a_minimal_one(hub, bot, bob):
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    bob.create_repo(repo)
    bob.create_commit(repo, _adapter_ops("healthy-r8"), commit_message="adapter, no card")
    status, detail = bot.worker.open_badge(repo)
    assert status == "done" and "created" in detail
    (pr,) = _bot_prs(bob, repo)
    card = _card_at(bob, repo, f"refs/pr/{pr.num}").decode()
    front = card.split("---")[1]
    assert "library_name: peft" in front and 'base_model: "gradience-examples/tiny-llama"' in front
    assert "<!-- gradience:start -->" in card.split("---", 2)[2]
    meta = bob.model_info(repo, revision=f"refs/pr/{pr.num}").card_data.to_dict()
    assert meta["library_name"] == "peft" and meta["base_model"] == "gradience-examples/tiny-llama"


def test_with_an_ecosystem_dataset_the_badge_gives_the_percentile_among_the_same_r(hub, bot, bob, tmp_path):
    from gradience.ecosystem.dataset import write_tables

    utils = [0.1, 0.2, 0.3, 0.5, 0.9]  # healthy-r8 has 0.403: above 3 of these 5
    rows = [{"repo_id": f"pub/a{i}", "subfolder": "", "status": "ok", "untrained": False, "r": 8,
             "utilization_mean": u} for i, u in enumerate(utils)]  # fmt: skip
    rows.append({"repo_id": "pub/r16", "subfolder": "", "status": "ok", "untrained": False, "r": 16,
                 "utilization_mean": 0.01})  # fmt: skip
    for row in rows:
        row.update(discovered_by="all", gradience_version="test", dataset_version=1)
    write_tables(rows, [], tmp_path / "eco")
    bot.worker.config = bot.config.replace(dataset=str(tmp_path / "eco"))
    repo = f"bob/lora-{uuid.uuid4().hex[:8]}"
    bob.create_repo(repo)
    bob.create_commit(repo, _adapter_ops("healthy-r8"), commit_message="adapter")
    assert bot.worker.open_badge(repo)[0] == "done"
    (pr,) = _bot_prs(bob, repo)
    card = _card_at(bob, repo, f"refs/pr/{pr.num}").decode()
    assert "higher than 60% of 5 public r=8 adapters" in card


def test_a_mention_asking_for_an_audit_gets_one_reply(hub, bot, bob):
    repo, hook = _repo(bob, bot)
    _settle(hub, bot, hook)
    handle = bot.worker.handle
    d = bob.create_discussion(repo, title="question", description=f"@{handle} please audit this")
    bob.comment_discussion(repo, d.num, f"hey @{handle}, audit please")
    bob.comment_discussion(repo, d.num, "no mention here, audit")
    _settle(hub, bot, hook)
    replies = [e for e in bob.get_discussion_details(repo, d.num).events
               if e.type == "comment" and e.author == handle]  # fmt: skip
    assert len(replies) == 1 and "Gradience audit of" in replies[0].content
    assert "Recommended rank" in replies[0].content or "recommended rank" in replies[0].content.lower()


def test_rate_limits_space_actions_per_repo_and_overall(tmp_path):
    from gradience.bot.state import State

    st = State(tmp_path / "s.sqlite")
    assert st.wait_for_slot("a/b", 10.0, 3) == 0
    st.record_action("a/b")
    assert 9.0 < st.wait_for_slot("a/b", 10.0, 3) <= 10.0  # the same repo waits its interval
    assert st.wait_for_slot("c/d", 10.0, 3) == 0  # another repo does not
    st.record_action("c/d")
    st.record_action("e/f")
    assert 59.0 < st.wait_for_slot("g/h", 0.0, 3) <= 60.0  # three actions this minute: everyone waits
    st.close()


def test_badge_open_refuses_a_repo_with_several_adapters(hub, tmp_path):
    env = {**os.environ, "HF_TOKEN": H.CAROL_TOKEN}
    p = subprocess.run([sys.executable, "-m", "gradience", "badge", "open", H.MERGE_PAIRS_REPO, "--state",
                        str(tmp_path / "s.sqlite")], capture_output=True, text=True, env=env)  # fmt: skip
    assert (
        p.returncode == 2 and "no single LoRA adapter" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    )
