"""The Space through its public API (gradio_client) and its MCP tool list, against the local Hub.

The app is launched once per session on a free loopback port, exactly as ``make space`` does,
and audits repos on the local Hub (``hub`` fixture), so nothing here reaches the internet.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the Space needs the space extra: pip install -e '.[space]'")

from servers.hub import BASE_REPO, EXAMPLE_REPOS, GATED_REPO, PRIVATE_REPO, LocalHub, free_port

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


def _app_error(client: Any, *args: Any, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_named_endpoints(client: Any) -> None:
    named = {
        name.lstrip("/")
        for name in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    }
    assert named >= ENDPOINTS
    assert named - ENDPOINTS <= {"_check_login_status"}  # the rendering steps stay private


def test_audit_hub_repo(client: Any, hub: LocalHub) -> None:
    import gradience

    repo = EXAMPLE_REPOS["overprovisioned-r64"]
    report, path = client.predict(repo, "", "", None, api_name="/audit")
    expected = gradience.audit(EXAMPLES / "overprovisioned-r64").to_dict(layers=True)
    assert report["schema"] == "gradience.audit/v1"
    assert report["source"]["name"] == repo
    assert report["utilization_mean"] == pytest.approx(expected["utilization_mean"], rel=1e-9)
    assert report["rank_suggestions"]["default_r"] == expected["rank_suggestions"]["default_r"]
    assert len(report["layer_data"]["layer_rows"]) == 14
    saved = json.loads(Path(path).read_text())
    assert saved["source"]["path"] == repo  # the downloadable file keeps the schema's field names
    assert hub.stats()["total_bytes"] > 0  # it really read from the (local) Hub


def test_audit_hub_url_with_revision(client: Any, hub: LocalHub) -> None:
    repo = EXAMPLE_REPOS["healthy-r8"]
    report, _ = client.predict(f"{hub.url}/{repo}", "main", "", None, api_name="/audit")
    assert report["adapter"]["r"] == 8


def test_audit_upload(client: Any) -> None:
    from gradio_client import handle_file

    files = [handle_file(str(p)) for p in sorted((EXAMPLES / "healthy-r8").iterdir())]
    report, _ = client.predict("", "", "", files, api_name="/audit")
    assert report["n_layers"] == 14
    assert report["source"]["name"] == "uploaded adapter"


def test_merge_audit_two_repos(client: Any) -> None:
    repos = f"{EXAMPLE_REPOS['merge-conflict-a']}\n{EXAMPLE_REPOS['merge-conflict-b']}"
    report, plan_path = client.predict(repos, None, api_name="/merge_audit")
    assert report["aggregate"]["overall_verdict"] == "CONFLICTING"
    assert [a["name"] for a in report["adapters"]] == [f"hf://{r}" for r in repos.splitlines()]
    plan = json.loads(Path(plan_path).read_text())
    assert plan["schema"] == "gradience.merge_plan/v1" and plan["layers"]


def test_compress_and_merge_return_adapters(client: Any) -> None:
    import zipfile

    zpath, summary = client.predict(
        "examples/healthy-r8", "", "", None, 4, "energy@0.9", False, api_name="/compress"
    )
    with zipfile.ZipFile(zpath) as z:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(z.namelist())
        assert json.loads(z.read("adapter_config.json"))["r"] == 4
    assert "112 → 56" in summary
    zpath, _ = client.predict(
        "examples/merge-related-a\nexamples/merge-related-b", None, "linear", None, api_name="/merge"
    )
    with zipfile.ZipFile(zpath) as z:
        assert "adapter_model.safetensors" in z.namelist()


def test_badge(client: Any) -> None:
    snippet = client.predict(EXAMPLE_REPOS["overprovisioned-r64"], api_name="/badge")
    assert snippet.startswith(
        "[![LoRA utilisation: 4% · r64→4](https://img.shields.io/badge/LoRA%20utilisation-4%25"
    )
    assert snippet.endswith(
        f"-red)](https://huggingface.co/spaces/gradience/gradience?repo={EXAMPLE_REPOS['overprovisioned-r64']})"
    )


@pytest.mark.parametrize(
    ("repo", "words"),
    [
        ("not a repo!!", "is not a Hub repo id"),
        ("nobody/no-such-adapter", "not found"),
        (GATED_REPO, "gated"),
        (BASE_REPO, "not a PEFT adapter"),
        (PRIVATE_REPO, "not found"),
        ("", "enter a Hub repo id"),
    ],
)
def test_friendly_errors(client: Any, repo: str, words: str) -> None:
    message = _app_error(client, repo, "", "", None, api_name="/audit")
    assert words in message
    assert "Traceback" not in message


def test_local_paths_are_not_readable(client: Any) -> None:
    """Only bundled examples are local: anything else must be a Hub reference."""
    assert "is not a Hub repo id" in _app_error(client, str(ROOT / "tests"), "", "", None, api_name="/audit")
    assert "is not a Hub repo id" in _app_error(client, "../../etc", "", "", None, api_name="/audit")


def test_mcp_tools(space_url: str) -> None:
    with urllib.request.urlopen(space_url + "gradio_api/mcp/schema", timeout=30) as r:
        tools = json.load(r)
    names = {t["name"] for t in tools}
    assert names == ENDPOINTS
    audit_tool = next(t for t in tools if t["name"] == "audit")
    assert "revision" in audit_tool["inputSchema"]["properties"]
    assert "Hub model repo id" in audit_tool["inputSchema"]["properties"]["repo"]["description"]


# -- "open a pull request with this badge", with the user's own token ---------------------------------


def _oauth(token: str) -> Any:
    import gradio as gr

    return gr.OAuthToken(token=token, scope="openid profile write-repos", expires_at=0)


def test_badge_pr_opens_pr_with_card_edit(hub: LocalHub) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    from gradience.hub.badges import PR_TITLE
    from gradience.hub.cards import upsert_section

    app = _app()
    repo = EXAMPLE_REPOS["healthy-r8"]
    api = HfApi(endpoint=hub.url, token=hub.tokens["alice"])
    before = Path(hf_hub_download(repo, "README.md", endpoint=hub.url, token=hub.tokens["alice"])).read_text()
    snippet = "[![LoRA utilisation: 40% · r8→8](https://img.shields.io/badge/x)](https://example.test?repo=r)"
    message = app.badge_pr(repo, snippet, _oauth(hub.tokens["alice"]))
    assert message.startswith("✅ Opened pull request")
    prs = [d for d in api.get_repo_discussions(repo, discussion_type="pull_request") if d.title == PR_TITLE]
    assert len(prs) == 1
    after = Path(
        hf_hub_download(
            repo, "README.md", revision=f"refs/pr/{prs[0].num}", endpoint=hub.url, token=hub.tokens["alice"]
        )
    ).read_text()
    assert after == upsert_section(before, snippet)
    assert after.startswith(before.split("\n---\n", 1)[0])  # front matter untouched
    # A second click finds the same open PR instead of opening another.
    again = app.badge_pr(repo, snippet, _oauth(hub.tokens["alice"]))
    assert "already have an open pull request" in again
    assert (
        len(
            [d for d in api.get_repo_discussions(repo, discussion_type="pull_request") if d.title == PR_TITLE]
        )
        == 1
    )


def test_badge_pr_refusals(hub: LocalHub) -> None:
    import gradio as gr

    app = _app()
    snippet = "[![b](https://img.shields.io/badge/x)](https://example.test)"
    with pytest.raises(gr.Error, match="sign in with Hugging Face"):
        app.badge_pr(EXAMPLE_REPOS["healthy-r8"], snippet, None)
    with pytest.raises(gr.Error, match="refused to write"):  # a read-only token
        app.badge_pr(EXAMPLE_REPOS["untrained-r8"], snippet, _oauth(hub.admin_token and _read_token()))
    with pytest.raises(gr.Error, match="not found"):  # carol cannot see alice's private repo
        app.badge_pr(PRIVATE_REPO, snippet, _oauth(hub.tokens["carol"]))
    with pytest.raises(gr.Error, match="gated"):  # nor bob's gated one
        app.badge_pr(GATED_REPO, snippet, _oauth(hub.tokens["carol"]))


def _read_token() -> str:
    from servers.hub import ALICE_READ_TOKEN

    return ALICE_READ_TOKEN
