"""The Space through its public API (gradio_client) and its MCP tool list, against the local Hub.

The app is launched once per session on a free loopback port, exactly as ``make space`` does,
and audits repos on the local Hub (``hub`` fixture), so nothing here reaches the internet.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the Space needs the space extra: pip install -e '.[space]'")

from servers.hub import (
    ALICE_READ_TOKEN,
    BASE_REPO,
    EXAMPLE_REPOS,
    GATED_REPO,
    PRIVATE_REPO,
    LocalHub,
    free_port,
)

# gradio's server threads leave event loops and sockets for the garbage collector; that is
# gradio's housekeeping, not something these tests check.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore::ResourceWarning",
    "ignore:.*no_silent_downcasting:Warning",
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENDPOINTS = {"audit", "merge_audit", "compress", "merge", "badge"}


def _app() -> Any:
    if str(ROOT / "space") not in sys.path:
        sys.path.insert(0, str(ROOT / "space"))
    import app

    return app


def _endpoints() -> Any:
    _app()
    import endpoints

    return endpoints


@pytest.fixture(scope="session")
def space_url(hub: LocalHub) -> Iterator[str]:
    """The Space on a free loopback port, reading from the local Hub (HF_ENDPOINT)."""
    app = _app()
    demo = app.build()
    _, url, _ = app.launch(demo, server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def client(space_url: str) -> Any:
    from gradio_client import Client

    return Client(space_url, verbose=False)


def _app_error(client: Any, *args: Any, api_name: str) -> Any:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return info.value


def _oauth(token: str) -> Any:
    import gradio as gr

    return gr.OAuthToken(token=token, scope="openid profile write-repos", expires_at=0)


def test_named_endpoints(client: Any) -> None:
    named = {
        name.lstrip("/")
        for name in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    }
    assert named >= ENDPOINTS
    assert named - ENDPOINTS <= {"_check_login_status"}  # the rendering steps stay private


def test_audit_hub_repo_shows_the_single_recommendation(client: Any, hub: LocalHub) -> None:
    import gradience

    repo = EXAMPLE_REPOS["overprovisioned-r64"]
    report, path = client.predict(repo, api_name="/audit")  # revision, subfolder, files are optional
    expected = gradience.audit(EXAMPLES / "overprovisioned-r64")
    assert report["schema"] == "gradience.audit/v1"
    assert report["source"]["name"] == repo and report["source"]["kind"] == "hub"
    assert report["utilization_mean"] == pytest.approx(expected.to_dict()["utilization_mean"], rel=1e-9)
    assert report["recommendation"] == json.loads(json.dumps(expected.recommendation.to_dict()))
    assert len(report["layer_data"]["layer_rows"]) == 14
    saved = json.loads(Path(path).read_text())
    assert saved["source"]["path"] == repo  # the downloadable file keeps the schema's field names
    assert hub.stats()["total_bytes"] > 0  # it really read from the (local) Hub
    # The badge shows the same recommendation as the report.
    rec = report["recommendation"]
    snippet = client.predict(repo, api_name="/badge")
    assert f"r{rec['nominal_r']}→{rec['rank']}" in snippet
    assert snippet.endswith(f"-red)](https://huggingface.co/spaces/gradience/gradience?repo={repo})")


def test_audit_hub_url_with_revision(client: Any, hub: LocalHub) -> None:
    repo = EXAMPLE_REPOS["healthy-r8"]
    report, _ = client.predict(f"{hub.url}/{repo}", "main", "", None, api_name="/audit")
    assert report["adapter"]["r"] == 8
    assert report["source"]["revision"] == "main" and report["source"]["commit"]


def test_audit_upload_wins_over_a_typed_id(client: Any) -> None:
    from gradio_client import handle_file

    files = [handle_file(str(p)) for p in sorted((EXAMPLES / "healthy-r8").iterdir())]
    report, _ = client.predict(EXAMPLE_REPOS["overprovisioned-r64"], "", "", files, api_name="/audit")
    assert report["adapter"]["r"] == 8  # the upload, not the repo typed
    assert report["source"]["kind"] == "upload"
    assert report["source"]["name"] == "upload: adapter_config.json, adapter_model.safetensors"
    assert "/tmp" not in json.dumps(report)  # no server path leaks into the report


def test_untrained_adapter_has_no_rank(client: Any) -> None:
    report, _ = client.predict("examples/untrained-r8", api_name="/audit")
    assert report["recommendation"]["status"] == "untrained"
    assert report["recommendation"]["rank"] is None
    e = _app_error(client, "examples/untrained-r8", api_name="/compress")
    assert e.title == "Untrained adapter" and "nothing to compress" in e.message.lower()
    assert "untrained" in client.predict(EXAMPLE_REPOS["untrained-r8"], api_name="/badge")
    assert _app_error(client, "examples/untrained-r8", api_name="/badge").title == "Badges are for Hub repos"


def test_merge_audit_two_repos(client: Any) -> None:
    repos = f"{EXAMPLE_REPOS['merge-conflict-a']}\n{EXAMPLE_REPOS['merge-conflict-b']}"
    report, plan_path = client.predict(repos, api_name="/merge_audit")
    assert report["aggregate"]["overall_verdict"] == "CONFLICTING"
    assert [a["name"] for a in report["adapters"]] == repos.splitlines()
    plan = json.loads(Path(plan_path).read_text())
    assert plan["schema"] == "gradience.merge_plan/v1" and plan["layers"]
    assert plan["adapters"] == repos.splitlines()


def test_merge_audit_r_above_width_pair(client: Any) -> None:
    """The pair that crashed: r=64 on 64-wide layers against r=8."""
    report, _ = client.predict("examples/healthy-r8\nexamples/overprovisioned-r64", api_name="/merge_audit")
    assert report["aggregate"]["overall_verdict"] in {"SAFE", "REDUNDANT", "IMBALANCED", "CONFLICTING"}
    assert report["aggregate"]["n_layers_compared"] == 14


def test_merge_follows_only_a_plan_for_the_listed_adapters(client: Any) -> None:
    from gradio_client import handle_file

    _, plan = client.predict("examples/merge-related-a\nexamples/merge-related-b", api_name="/merge_audit")
    zpath, summary = client.predict(
        "examples/merge-related-a\nexamples/merge-related-b",
        None,
        "auto",
        handle_file(plan),
        api_name="/merge",
    )
    assert "plan" in summary
    with zipfile.ZipFile(zpath) as z:
        assert "adapter_model.safetensors" in z.namelist()
    _, summary = client.predict("examples/merge-related-a\nexamples/merge-related-b", api_name="/merge")
    assert summary == "**Merged 2 adapters** (auto): 14 layers written."  # every other argument optional
    e = _app_error(
        client,
        "examples/merge-conflict-a\nexamples/merge-conflict-b",
        None,
        "auto",
        handle_file(plan),
        api_name="/merge",
    )
    assert e.title == "Merge plan out of date" and "examples/merge-related-a" in e.message


def _other_base_repo(hub: LocalHub, tmp_path: Path) -> str:
    """healthy-r8's weights under a config naming another base model, as a new Hub repo."""
    from huggingface_hub import HfApi

    folder = tmp_path / "other-base"
    shutil.copytree(EXAMPLES / "healthy-r8", folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someone/another-base"
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    api = HfApi(endpoint=hub.url, token=hub.tokens["alice"])
    repo = f"alice/other-base-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo)
    api.upload_folder(folder_path=str(folder), repo_id=repo)
    return repo


def test_cross_base_merge_is_refused_with_an_explanation(client: Any, hub: LocalHub, tmp_path: Path) -> None:
    repos = f"{EXAMPLE_REPOS['healthy-r8']}\n{_other_base_repo(hub, tmp_path)}"
    report, _ = client.predict(repos, api_name="/merge_audit")
    assert report["aggregate"]["overall_verdict"] == "INCOMPATIBLE"
    assert "different base models" in report["aggregate"]["incompatible"]
    e = _app_error(client, repos, None, "linear", None, api_name="/merge")
    assert e.title == "These adapters cannot be merged"
    assert "base model" in e.message and "--" not in e.message  # browser wording, no CLI flag


def test_compress_reports_the_size_reduction(client: Any) -> None:
    zpath, summary = client.predict("examples/healthy-r8", api_name="/compress")  # the recommended rank
    with zipfile.ZipFile(zpath) as z:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(z.namelist())
        r = json.loads(z.read("adapter_config.json"))["r"]
    import gradience

    assert r == gradience.audit(EXAMPLES / "healthy-r8").recommendation.rank
    assert "Parameters:" in summary and "LoRA weights:" in summary and "→" in summary
    zpath, summary = client.predict("examples/healthy-r8", "", "", None, 4, api_name="/compress")
    with zipfile.ZipFile(zpath) as z:
        assert json.loads(z.read("adapter_config.json"))["r"] == 4
    assert "Parameters: 16,384 → 8,192 (50% of the original)" in summary
    _, summary = client.predict("examples/healthy-r8", "", "", None, 32, api_name="/compress")
    assert "above this adapter's rank (8)" in summary


@pytest.mark.parametrize(
    ("repo", "title", "words"),
    [
        ("not a repo!!", "Not a repo id", "is not a hub repo id"),
        ("nobody/no-such-adapter", "Not found", "not found"),
        (GATED_REPO, "Gated repo", "sign in"),
        (BASE_REPO, "Not a LoRA adapter", "subfolder"),
        (PRIVATE_REPO, "Not found", "private"),
        ("", "Nothing to audit", "enter a hub repo id"),
    ],
)
def test_titled_errors(client: Any, repo: str, title: str, words: str) -> None:
    e = _app_error(client, repo, "", "", None, api_name="/audit")
    assert e.title == title
    assert words in e.message.lower()
    assert "Traceback" not in e.message and "--" not in e.message


def test_local_paths_are_not_readable(client: Any) -> None:
    """Only bundled examples are local: anything else must be a Hub reference."""
    for path in (str(ROOT / "tests"), "../../etc"):
        assert "is not a Hub repo id" in _app_error(client, path, api_name="/audit").message


def test_mcp_tools(space_url: str) -> None:
    with urllib.request.urlopen(space_url + "gradio_api/mcp/schema", timeout=30) as r:
        tools = json.load(r)
    names = {t["name"] for t in tools}
    assert names == ENDPOINTS
    audit_tool = next(t for t in tools if t["name"] == "audit")
    assert "revision" in audit_tool["inputSchema"]["properties"]
    assert "oauth_token" not in audit_tool["inputSchema"]["properties"]
    assert "Hub model repo id" in audit_tool["inputSchema"]["properties"]["repo"]["description"]


# -- whose token: the visitor's, never the Space's own secret -------------------------------------------


def test_space_secret_token_is_never_used_for_a_visitor(
    client: Any, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the Space's HF_TOKEN set to alice's (who owns the private repo), an anonymous
    visitor still cannot read it, through any endpoint; alice signed in can."""
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", hub.tokens["alice"])
    assert huggingface_hub.get_token() == hub.tokens["alice"]  # the secret is really visible to the app
    assert _app_error(client, PRIVATE_REPO, api_name="/audit").title == "Not found"
    assert _app_error(client, PRIVATE_REPO, api_name="/badge").title == "Not found"
    assert _app_error(client, PRIVATE_REPO, api_name="/compress").title == "Not found"
    assert _app_error(
        client, f"{PRIVATE_REPO}\n{EXAMPLE_REPOS['healthy-r8']}", api_name="/merge_audit"
    ).title == ("Not found")
    endpoints = _endpoints()
    report, _ = endpoints.audit(PRIVATE_REPO, oauth_token=_oauth(hub.tokens["alice"]))
    assert report["source"]["repo"] == PRIVATE_REPO
    import gradio as gr

    with pytest.raises(gr.Error):  # carol signed in: her token, not the secret
        endpoints.audit(PRIVATE_REPO, oauth_token=_oauth(hub.tokens["carol"]))


# -- "open a pull request with this badge", with the visitor's own token ------------------------------


def test_badge_pr_opens_then_finds_the_pr(hub: LocalHub) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    import gradience
    from gradience.hub.badges import PR_TITLE
    from gradience.hub.cards import upsert_section
    from gradience.report.badge import badge_markdown

    endpoints = _endpoints()
    repo = EXAMPLE_REPOS["healthy-r8"]
    api = HfApi(endpoint=hub.url, token=hub.tokens["bob"])
    before = Path(hf_hub_download(repo, "README.md", endpoint=hub.url, token=hub.tokens["bob"])).read_text()
    message = endpoints.badge_pr(repo, _oauth(hub.tokens["bob"]))
    assert message.startswith("✅ Opened pull request")
    prs = [d for d in api.get_repo_discussions(repo, discussion_type="pull_request", author="bob")
           if d.title == PR_TITLE and d.status == "open"]  # fmt: skip
    assert len(prs) == 1
    after = Path(
        hf_hub_download(
            repo, "README.md", revision=f"refs/pr/{prs[0].num}", endpoint=hub.url, token=hub.tokens["bob"]
        )
    ).read_text()
    # The badge carries this repo's own audit (re-audited for the PR), whatever the page showed.
    assert after == upsert_section(before, badge_markdown(repo, gradience.audit(EXAMPLES / "healthy-r8")))
    again = endpoints.badge_pr(repo, _oauth(hub.tokens["bob"]))
    assert f"#{prs[0].num}" in again and "already shows this badge" in again


def test_badge_pr_refusals(hub: LocalHub) -> None:
    import gradio as gr

    endpoints = _endpoints()
    with pytest.raises(gr.Error, match=r"(?i)sign in with Hugging Face"):
        endpoints.badge_pr(EXAMPLE_REPOS["healthy-r8"], None)
    with pytest.raises(gr.Error, match="refused to write"):  # a read-only token
        endpoints.badge_pr(EXAMPLE_REPOS["untrained-r8"], _oauth(ALICE_READ_TOKEN))
    with pytest.raises(gr.Error, match="not found"):  # carol cannot see alice's private repo
        endpoints.badge_pr(PRIVATE_REPO, _oauth(hub.tokens["carol"]))
    with pytest.raises(gr.Error, match="gated"):  # nor bob's gated one
        endpoints.badge_pr(GATED_REPO, _oauth(hub.tokens["carol"]))


def test_with_an_ecosystem_dataset_an_audit_is_placed_among_public_adapters(
    hub: LocalHub, tmp_path, monkeypatch
):
    from gradience.ecosystem.dataset import write_tables

    ep = _endpoints()
    rows = [
        {"repo_id": f"pub/a{i}", "subfolder": "", "status": "ok", "untrained": False, "r": 8,
         "utilization_mean": u, "discovered_by": "all", "gradience_version": "t", "dataset_version": 1}
        for i, u in enumerate([0.1, 0.2, 0.3, 0.5, 0.9])
    ]  # fmt: skip
    write_tables(rows, [], tmp_path / "eco")
    monkeypatch.setattr(ep, "DATASET", str(tmp_path / "eco"))
    monkeypatch.setattr(ep, "_dataset_dir", [])
    report, _ = ep.audit(EXAMPLE_REPOS["healthy-r8"])
    assert report["ecosystem"]["among"]["same_r"] == {"n": 5, "below": 3, "percentile": 60.0}
    render = sys.modules["render"]
    assert "higher utilisation than 60% of 5 public r=8 adapters" in render.headline(report)
    untrained, _ = ep.audit(EXAMPLE_REPOS["untrained-r8"])
    assert "ecosystem" not in untrained  # nothing to place
    monkeypatch.setattr(ep, "DATASET", None)
    assert "ecosystem" not in ep.audit(EXAMPLE_REPOS["healthy-r8"])[0]
