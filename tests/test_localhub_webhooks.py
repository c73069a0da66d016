"""The local Hub's webhooks: management through the unmodified huggingface_hub client, and real
deliveries to a loopback receiver with the Hub's version-3 payloads and ``X-Webhook-Secret``.

Every change below is made through the client (commits, PRs, discussions, comments, statuses);
the receiver records what arrived and the Hub's admin view records what it sent and got back.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, WebhookPayload, WebhookWatchedItem
from huggingface_hub.errors import HfHubHTTPError
from servers import hub as H
from servers.webhook_receiver import WebhookReceiver, deliveries, delivery_fault, delivery_faults

SECRET = "s3cret with spaces & symbols!"


@pytest.fixture()
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.tokens["alice"])


@pytest.fixture()
def repo(api) -> str:
    repo_id = f"alice/webhooks-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture()
def make_webhook(api) -> Iterator[Callable[..., object]]:
    """Create webhooks that are deleted after the test, so later tests' events never reach them."""
    created = []

    def make(**kwargs):
        hook = api.create_webhook(**kwargs)
        created.append(hook.id)
        return hook

    yield make
    for hook_id in created:
        with contextlib.suppress(HfHubHTTPError):
            api.delete_webhook(hook_id)


def _watch(repo: str) -> list[WebhookWatchedItem]:
    return [WebhookWatchedItem(type="model", name=repo)]


def _upload(api: HfApi, repo: str, name: str, text: str = "hello", **kwargs):
    return api.upload_file(path_or_fileobj=text.encode(), path_in_repo=name, repo_id=repo, **kwargs)


def test_management_api(api, hub, receiver, make_webhook):
    hook = make_webhook(url=receiver.url, watched=[WebhookWatchedItem(type="user", name="alice")], secret="x")
    assert hook.url == receiver.url and hook.domains == ["repo", "discussion"] and hook.disabled is False
    assert hook.watched == [WebhookWatchedItem(type="user", name="alice")] and hook.secret == "x"
    assert api.get_webhook(hook.id) == hook
    assert hook.id in [h.id for h in api.list_webhooks()]

    updated = api.update_webhook(
        hook.id,
        url=receiver.url + "?v=2",
        watched=[{"type": "org", "name": "gradience-test"}],
        domains=["discussion"],
    )
    assert updated.url.endswith("?v=2") and updated.domains == ["discussion"] and updated.secret == "x"
    assert updated.watched == [WebhookWatchedItem(type="org", name="gradience-test")]
    assert api.disable_webhook(hook.id).disabled is True
    assert api.enable_webhook(hook.id).disabled is False

    # Webhooks are their owner's: another user sees none of them.
    carol = HfApi(endpoint=hub.url, token=hub.tokens["carol"])
    assert hook.id not in [h.id for h in carol.list_webhooks()]
    with pytest.raises(HfHubHTTPError) as e:
        carol.get_webhook(hook.id)
    assert e.value.response.status_code == 404

    api.delete_webhook(hook.id)
    with pytest.raises(HfHubHTTPError) as e:
        api.get_webhook(hook.id)
    assert e.value.response.status_code == 404


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "https://example.com/hook", "watched": [{"type": "user", "name": "alice"}]},
        {"url": "http://127.0.0.1:9/hook", "watched": [{"type": "galaxy", "name": "alice"}]},
        {
            "url": "http://127.0.0.1:9/hook",
            "watched": [{"type": "user", "name": "alice"}],
            "domains": ["everything"],
        },
        {
            "url": "http://127.0.0.1:9/hook",
            "watched": [{"type": "user", "name": "alice"}],
            "secret": "sécret",
        },
    ],
    ids=["not-loopback", "watch-type", "domain", "non-ascii-secret"],
)
def test_invalid_webhooks_are_refused(api, kwargs):
    with pytest.raises(HfHubHTTPError) as e:
        api.create_webhook(**kwargs)
    assert e.value.response.status_code == 400


def test_a_commit_is_delivered_with_the_secret_head_sha_and_updated_refs(
    api, hub, repo, receiver, make_webhook
):
    hook = make_webhook(url=receiver.url, watched=_watch(repo), secret=SECRET)
    before = api.repo_info(repo).sha
    commit = _upload(api, repo, "adapter_config.json", "{}")
    [sent] = deliveries(hub, hook.id)
    assert sent["status"] == 200 and sent["delivered"] is True and sent["response"] == '{"ok": true}'

    [got] = receiver.received
    assert got.headers["X-Webhook-Secret"] == SECRET  # as-is: the Hub sends no signature
    assert got.headers["Content-Type"] == "application/json"
    assert got.payload == sent["payload"]
    payload = WebhookPayload.model_validate(got.payload)  # the client's own model of version 3
    assert (payload.event.scope, payload.event.action) == ("repo.content", "update")
    assert payload.webhook.id == hook.id and payload.webhook.version == 3
    assert payload.repo.name == repo and payload.repo.type == "model" and payload.repo.private is False
    assert (
        payload.repo.url.web == f"{hub.url}/{repo}" and payload.repo.url.api == f"{hub.url}/api/models/{repo}"
    )
    assert got.payload["repo"]["headSha"] == commit.oid  # the Hub's key (the client's model reads head_sha)
    assert got.payload["updatedRefs"] == [{"ref": "refs/heads/main", "oldSha": before, "newSha": commit.oid}]
    assert payload.discussion is None and payload.comment is None


@pytest.mark.filterwarnings("ignore:Hidden comments' content:UserWarning")
def test_pull_requests_discussions_and_comments(api, hub, repo, receiver, make_webhook):
    make_webhook(url=receiver.url, watched=_watch(repo))
    pr = api.create_commit(
        repo,
        [CommitOperationAdd("README.md", b"# card\n")],
        commit_message="Add a card",
        commit_description="Please merge",
        create_pr=True,
    )
    pr_num = pr.pr_num
    head = api.list_repo_refs(repo, include_pull_requests=True).pull_requests[0].target_commit
    disc = api.create_discussion(repo, title="A question", description="Why rank 8?")
    comment = api.comment_discussion(repo, disc.num, "Because.")
    api.edit_discussion_comment(repo, disc.num, comment.id, "Because it is enough.")
    api.hide_discussion_comment(repo, disc.num, comment.id)
    api.rename_discussion(repo, disc.num, "A question about rank")
    api.change_discussion_status(repo, disc.num, "closed", comment="Answered")
    api.merge_pull_request(repo, pr_num)
    deliveries(hub)

    assert receiver.scopes() == [
        ("repo.content", "update"),  # refs/pr/1 created
        ("discussion", "create"),  # the PR
        ("discussion", "create"),
        ("discussion.comment", "create"),
        ("discussion.comment", "update"),  # edit
        ("discussion.comment", "update"),  # hide
        ("discussion", "update"),  # title
        ("discussion", "update"),  # status
        ("repo.content", "update"),  # merge moves main
        ("discussion", "update"),  # merged
    ]
    p = [WebhookPayload.model_validate(r.payload) for r in receiver.received]
    raw = [r.payload for r in receiver.received]
    assert raw[0]["updatedRefs"] == [{"ref": f"refs/pr/{pr_num}", "oldSha": None, "newSha": head}]
    assert (
        p[1].discussion.isPullRequest and p[1].discussion.num == pr_num and p[1].discussion.status == "open"
    )
    assert p[1].discussion.changes.base == "refs/heads/main" and p[1].comment.content == "Please merge"
    assert "headSha" not in raw[1]["repo"]  # only repo events carry it
    assert p[2].discussion.isPullRequest is False and p[2].discussion.title == "A question"
    assert p[2].comment.content == "Why rank 8?"
    assert p[2].discussion.url.web == f"{hub.url}/{repo}/discussions/{disc.num}"
    assert p[3].comment.id == comment.id and p[3].comment.content == "Because."
    assert p[3].comment.url.web.endswith(f"/discussions/{disc.num}#{comment.id}")
    assert p[4].comment.content == "Because it is enough." and p[4].comment.hidden is False
    assert p[5].comment.hidden is True
    assert p[6].discussion.title == "A question about rank"
    assert p[7].discussion.status == "closed"
    main = api.repo_info(repo).sha
    assert raw[8]["repo"]["headSha"] == main and raw[8]["updatedRefs"][0]["newSha"] == main
    assert p[9].discussion.status == "merged" and p[9].discussion.changes.mergeCommitId == main


def test_only_matching_webhooks_hear_an_event(api, hub, repo, make_webhook):
    with (
        WebhookReceiver() as by_repo,
        WebhookReceiver() as by_user,
        WebhookReceiver() as other,
        WebhookReceiver() as talk,
    ):
        make_webhook(url=by_repo.url, watched=_watch(repo))
        make_webhook(url=by_user.url, watched=[WebhookWatchedItem(type="user", name="alice")])
        make_webhook(url=other.url, watched=_watch("alice/some-other-repo"))
        make_webhook(url=talk.url, watched=_watch(repo), domains=["discussion"])
        disabled = make_webhook(url=other.url, watched=_watch(repo))
        api.disable_webhook(disabled.id)
        _upload(api, repo, "a.txt")
        api.create_discussion(repo, title="Hello there")
        deliveries(hub)
        assert by_repo.scopes() == [("repo.content", "update"), ("discussion", "create")]
        assert [r.payload["repo"]["name"] for r in by_user.received if r.payload["repo"]["name"] == repo] == [
            repo
        ] * 2
        assert other.received == []
        assert talk.scopes() == [("discussion", "create")]


def test_private_repos_reach_only_those_who_can_see_them(api, hub, make_webhook):
    repo = f"alice/private-webhooks-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo, private=True)
    carol = HfApi(endpoint=hub.url, token=hub.tokens["carol"])
    with WebhookReceiver() as alices, WebhookReceiver() as carols:
        make_webhook(url=alices.url, watched=_watch(repo))
        hook = carol.create_webhook(url=carols.url, watched=[WebhookWatchedItem(type="user", name="alice")])
        try:
            _upload(api, repo, "a.txt")
            deliveries(hub)
        finally:
            carol.delete_webhook(hook.id)
        assert (
            alices.scopes() == [("repo.content", "update")] and alices.received[0].payload["repo"]["private"]
        )
        assert carols.received == []


def test_the_receivers_answer_is_recorded(api, hub, repo, make_webhook):
    with WebhookReceiver(status=500) as failing:
        hook = make_webhook(url=failing.url, watched=_watch(repo))
        _upload(api, repo, "a.txt")
        [sent] = deliveries(hub, hook.id)
    assert sent["status"] == 500 and sent["delivered"] is False and "receiver says no" in sent["response"]
    # Nobody listening any more: the connection error is recorded, the commit still succeeds.
    _upload(api, repo, "b.txt")
    [_, refused] = deliveries(hub, hook.id)
    assert refused["status"] is None and refused["delivered"] is False and "Connection" in refused["error"]


def test_delivery_faults_drop_duplicate_and_delay(api, hub, repo, receiver, make_webhook):
    hook = make_webhook(url=receiver.url, watched=_watch(repo))

    delivery_fault(hub, "drop", times=1, webhook_id=hook.id)
    first = _upload(api, repo, "1.txt")
    deliveries(hub)
    assert receiver.received == []
    [dropped] = deliveries(hub, hook.id)
    assert dropped["fault"] == "drop" and dropped["delivered"] is False
    assert dropped["payload"]["repo"]["headSha"] == first.oid
    assert delivery_faults(hub)[0]["hits"] == 1

    delivery_fault(hub, "duplicate", times=1, scope=r"repo\..*")
    second = _upload(api, repo, "2.txt")
    deliveries(hub)
    assert [r.payload["repo"]["headSha"] for r in receiver.received] == [second.oid, second.oid]
    assert receiver.received[0].payload == receiver.received[1].payload

    # A delayed delivery arrives after the events behind it: receivers must not rely on order.
    receiver.received.clear()
    delivery_fault(hub, "delay", delay=2.0, times=1, webhook_id=hook.id)  # ample for the next commit
    third = _upload(api, repo, "3.txt")
    fourth = _upload(api, repo, "4.txt")
    deliveries(hub)
    assert [r.payload["repo"]["headSha"] for r in receiver.received] == [fourth.oid, third.oid]
    assert [f["hits"] for f in delivery_faults(hub)] == [1, 1, 1]


def test_a_webhook_can_run_a_job_with_the_payload(api, hub, repo, make_webhook):
    # The source job is a template: its spec runs again, with the payload, on every event.
    code = (
        "import json, os; p = json.loads(os.environ['WEBHOOK_PAYLOAD']);"
        " print(p['event']['scope'], os.environ['WEBHOOK_REPO_ID'], os.environ['WEBHOOK_SECRET'] == 'hook-key-42')"
    )
    source = api.run_job(image="python:3.12", command=["python", "-c", code], namespace="alice")
    api.wait_for_job(source.id, namespace="alice", timeout=60, poll_interval=0.1)
    hook = make_webhook(job_id=source.id, watched=_watch(repo), secret="hook-key-42")
    assert hook.url is None and hook.job is not None and hook.job.command == source.command
    _upload(api, repo, "a.txt")
    [sent] = deliveries(hub, hook.id)
    job = api.wait_for_job(sent["job_id"], namespace="alice", timeout=60, poll_interval=0.1)
    assert job.initiator.type == "webhook" and job.status.stage == "COMPLETED"
    assert list(api.fetch_job_logs(job_id=job.id, namespace="alice")) == [f"repo.content {repo} True"]


def test_refs_repo_and_settings_events(api, hub, receiver, make_webhook):
    make_webhook(url=receiver.url, watched=[WebhookWatchedItem(type="org", name="gradience-test")])
    repo = f"gradience-test/webhook-refs-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo)
    main = api.repo_info(repo).sha
    api.create_branch(repo, branch="dev")
    api.create_tag(repo, tag="v1")
    api.delete_tag(repo, tag="v1")
    api.delete_branch(repo, branch="dev")
    api.update_repo_settings(repo, private=True)
    draft = api.create_pull_request(repo, title="Draft work", description="wip")
    api.delete_repo(repo)
    deliveries(hub)
    mine = [r for r in receiver.received if r.payload["repo"]["name"] == repo]
    assert [r.scope for r in mine] == [
        ("repo", "create"),
        ("repo.content", "update"),
        ("repo.content", "update"),
        ("repo.content", "update"),
        ("repo.content", "update"),
        ("repo.config", "update"),
        ("repo.content", "update"),
        ("discussion", "create"),
        ("repo", "delete"),
    ]
    refs = [r.payload.get("updatedRefs") for r in mine]
    assert refs[1:5] == [
        [{"ref": "refs/heads/dev", "oldSha": None, "newSha": main}],
        [{"ref": "refs/tags/v1", "oldSha": None, "newSha": main}],
        [{"ref": "refs/tags/v1", "oldSha": main, "newSha": None}],
        [{"ref": "refs/heads/dev", "oldSha": main, "newSha": None}],
    ]
    assert (
        mine[5].payload["updatedConfig"] == {"private": True} and mine[5].payload["repo"]["private"] is True
    )
    assert refs[6] == [{"ref": f"refs/pr/{draft.num}", "oldSha": None, "newSha": main}]
    assert (
        mine[7].payload["discussion"]["status"] == "draft" and mine[7].payload["comment"]["content"] == "wip"
    )


def test_webhooks_survive_a_restart_on_the_same_data(tmp_path):
    """Like repos, webhooks are kept in the data folder's index; a second server finds them."""
    first = H.start_local_hub(H.free_port(), tmp_path, seed_repos=False, corpus_dir=None)
    try:
        api = HfApi(endpoint=first.url, token=H.ALICE_TOKEN)
        hook = api.create_webhook(
            url="http://127.0.0.1:9/hook", watched=[{"type": "user", "name": "alice"}], secret="s"
        )
        api.disable_webhook(hook.id)
    finally:
        first.stop()
    second = H.start_local_hub(H.free_port(), tmp_path, seed_repos=False, corpus_dir=None)
    try:
        again = HfApi(endpoint=second.url, token=H.ALICE_TOKEN).get_webhook(hook.id)
    finally:
        second.stop()
    assert again.url == hook.url and again.secret == "s" and again.disabled is True
