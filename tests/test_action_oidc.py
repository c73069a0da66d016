"""Hub access without a long-lived secret: OIDC trusted publishers, end to end and offline.

The Action runs as a runner runs it (a subprocess, a real ``pull_request`` payload and git
checkout, ``GITHUB_ACTIONS=true``, no ``HF_TOKEN``): huggingface_hub asks the local GitHub's
id-token service for a token (``ACTIONS_ID_TOKEN_REQUEST_URL``) and exchanges it at the local
Hub's ``/oauth/token`` for a token scoped to one private repo. The server side is also driven
directly through huggingface_hub's own ``exchange_oidc_token`` / ``oidc_login``, and the CLI with
``HF_OIDC_ID_TOKEN``. Nothing secret (the request token, an id token, an exchanged token) may
appear in anything a run leaves behind.

Each test writes only to repos it creates; trusted publishers go with the ``hub`` fixture's
settings reset after every test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from servers.github import LocalGitHub
from servers.hub import ALICE_TOKEN, GATED_REPO, PRIVATE_REPO, LocalHub
from test_action import PR, REPO, Run, commit

GITHUB_TOKEN = "ghs_oidc_0123456789abcdefghijklmnopqrstuv"
REQUEST_TOKEN = "actions-idtoken-request-0123456789abcdef"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
NUMBER = 7


def clean_env(tmp: Path) -> dict[str, str]:
    """This process's environment (local HF_ENDPOINT, no HF_TOKEN) minus anything a runner sets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_", "ACTIONS_", "HF_OIDC_"))}  # fmt: skip
    env.pop("HF_TOKEN", None)
    env["GRADIENCE_CACHE"] = str(tmp / "cache")
    return env


@pytest.fixture
def minted(hub: LocalHub):
    """The tokens the Hub's ``/oauth/token`` handed out during this test (the session's Hub
    remembers every earlier one)."""
    before = {t["token"] for t in hub.oidc_tokens()}
    return lambda: [t for t in hub.oidc_tokens() if t["token"] not in before]


@pytest.fixture
def gh(github: LocalGitHub) -> LocalGitHub:
    github.reset()
    github.add_repo(REPO)
    github.add_token(GITHUB_TOKEN, "github-actions[bot]", repos=[REPO])
    return github


@pytest.fixture
def pr(tmp_path: Path, gh: LocalGitHub) -> PR:
    """A pull request that touches no local adapter: the Hub adapter is the whole audit."""
    pull = PR(tmp_path, gh)
    base = commit(pull.repo, "base")
    pull.open(base, commit(pull.repo, "head"))
    return pull


def run_action(pr: PR, env_extra: dict[str, str], *flags: str) -> Run:
    """The runtime as a runner starts it on this job, opted in to the keyless Hub login."""
    env = {"GITHUB_ACTIONS": "true", "HF_OIDC_RESOURCE": PRIVATE_REPO, **env_extra}
    return pr.run("--hub-repos", PRIVATE_REPO, *flags, token=GITHUB_TOKEN, extra_env=env)


def everything(run: Run, gh: LocalGitHub) -> list[str]:
    """What a run leaves for people to read; ``::add-mask::`` lines are the runner's, not theirs."""
    stdout = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("::add-mask::"))
    comments = [c.body for c in gh.comments(REPO, NUMBER)]
    return [stdout, run.stderr, run.summary, json.dumps(run.outputs), json.dumps(run.report), *comments]


def id_token_env(gh: LocalGitHub, pr: PR) -> dict[str, str]:
    """What ``permissions: id-token: write`` gives a pull request's job."""
    url = gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO, ref=f"refs/pull/{NUMBER}/merge", sha=pr.head,
                             event_name="pull_request")  # fmt: skip
    return {"ACTIONS_ID_TOKEN_REQUEST_URL": url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}


def assert_no_secret(run: Run, gh: LocalGitHub, hub: LocalHub) -> None:
    secrets = [REQUEST_TOKEN, GITHUB_TOKEN, *(t["token"] for t in hub.oidc_tokens())]  # every one ever
    for text in everything(run, gh):
        assert not JWT.search(text), "an id token leaked"
        assert all(s not in text for s in secrets), "a token leaked"


def id_token_requests(gh: LocalGitHub) -> list[dict]:
    return [r for r in gh.requests if r["path"] == "/_actions/idtoken"]


# -- the Action ---------------------------------------------------------------------------------


def test_action_audits_a_private_hub_adapter_with_an_exchanged_token(tmp_path, gh, hub, pr, minted):
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    run = run_action(pr, id_token_env(gh, pr))
    assert run.code == 0, run.stderr
    (a,) = run.report["adapters"]
    assert (a["kind"], a["status"], a["error"]) == ("hub", "added", None)
    assert a["head"] == f"{PRIVATE_REPO}@main" and a["diff"]["head"]["n_layers"] > 0
    assert f"`{PRIVATE_REPO}@main`" in gh.comments(REPO, NUMBER)[0].body

    # GitHub minted one id token for this Hub; the Hub exchanged it once, for this repo only
    (asked,) = id_token_requests(gh)
    assert asked["status"] == 200 and asked["query"]["audience"] == hub.url
    (issued,) = minted()
    assert (issued["resource"], issued["repository"]) == (PRIVATE_REPO, REPO)
    assert issued["repos"] == [f"model/{PRIVATE_REPO}"] and not issued["expired"]
    # every authenticated request carried it: the API call (HfApi) and the byte ranges (build_hf_headers)
    requests = hub.stats()["requests"]
    assert requests["oauth-token"]["count"] == 1
    assert issued["requests"] == requests["repo-info"]["count"] + requests["resolve"]["count"] > 1
    assert hub.bytes_served(PRIVATE_REPO) > 0
    # masked for the runner, and in nothing people read
    assert f"::add-mask::{issued['token']}" in run.stdout and f"::add-mask::{REQUEST_TOKEN}" in run.stdout
    assert_no_secret(run, gh, hub)


def test_action_without_id_token_permission_stops_with_one_line(tmp_path, gh, hub, pr, minted):
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    run = run_action(pr, {})  # no ACTIONS_ID_TOKEN_REQUEST_URL / _TOKEN
    assert run.code == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("gradience: error:") and "`permissions: id-token: write`" in line
    assert "HF_OIDC_RESOURCE" in line and "--token" not in line
    assert minted() == [] and gh.comments(REPO, NUMBER) == []
    assert_no_secret(run, gh, hub)


def test_action_trusted_for_another_repository_is_refused(tmp_path, gh, hub, pr, minted):
    hub.add_trusted_publisher(PRIVATE_REPO, "acme/other-adapters")
    run = run_action(pr, id_token_env(gh, pr))
    assert run.code == 2
    (line,) = run.stderr.strip().splitlines()
    assert f"the Hub refused the OIDC token exchange for {PRIVATE_REPO} (HTTP 400, invalid_grant" in line
    assert f"GitHub repository {REPO}" in line and "trusted publisher" in line
    assert len(id_token_requests(gh)) == 1 and minted() == []
    assert hub.bytes_served(PRIVATE_REPO) == 0
    assert_no_secret(run, gh, hub)


def test_action_with_a_forged_id_token_is_refused(tmp_path, gh, hub, pr, minted):
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    env = id_token_env(gh, pr)
    gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO, signing_key=b"not the issuer's key")
    run = run_action(pr, env)
    assert run.code == 2 and "bad signature" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert minted() == []
    assert_no_secret(run, gh, hub)


def test_action_prefers_the_oidc_login_over_hf_token(tmp_path, gh, hub, pr):
    """As huggingface_hub does: setting HF_OIDC_RESOURCE opts in, and its failure is not hidden."""
    run = run_action(pr, {**id_token_env(gh, pr), "HF_TOKEN": ALICE_TOKEN})  # no publisher
    assert run.code == 2 and "invalid_grant" in run.stderr and ALICE_TOKEN not in run.stderr


# -- the CLI ------------------------------------------------------------------------------------


def cli(tmp: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(tmp), **env_extra}
    p = subprocess.run([sys.executable, "-m", "gradience", *args], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_cli_audits_a_private_repo_with_a_given_id_token(tmp_path, gh, hub, minted):
    gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO)
    id_token = gh.mint_id_token(REQUEST_TOKEN, hub.url)
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    env = {"HF_OIDC_ID_TOKEN": id_token, "HF_OIDC_RESOURCE": PRIVATE_REPO}
    p = cli(tmp_path, "audit", PRIVATE_REPO, "--json", "--quiet", env_extra=env)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["n_layers"] > 0 and data["source"]["repo"] == PRIVATE_REPO
    (issued,) = minted()
    assert issued["requests"] > 1 and issued["token"] not in p.stdout + p.stderr
    assert id_token not in p.stdout + p.stderr


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("no id token", "HF_OIDC_ID_TOKEN is not set"),
        ("expired", "the id token has expired"),
        ("other audience", "audience is not this Hub"),
        ("wrong request token", "GitHub refused to issue an OIDC id token (HTTP 403)"),
    ],
)
def test_cli_oidc_failures_are_one_line_and_exit_2(tmp_path, gh, hub, case, needle):
    gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO)
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    env = {"HF_OIDC_RESOURCE": PRIVATE_REPO}
    if case == "expired":
        env["HF_OIDC_ID_TOKEN"] = gh.mint_id_token(REQUEST_TOKEN, hub.url, expires_in=-60)
    elif case == "other audience":
        env["HF_OIDC_ID_TOKEN"] = gh.mint_id_token(REQUEST_TOKEN, "https://huggingface.co")
    elif case == "wrong request token":
        env.update(GITHUB_ACTIONS="true", ACTIONS_ID_TOKEN_REQUEST_URL=gh.id_token_url,
                   ACTIONS_ID_TOKEN_REQUEST_TOKEN="not-this-jobs-token")  # fmt: skip
    p = cli(tmp_path, "audit", PRIVATE_REPO, "--json", "--quiet", env_extra=env)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("gradience: error:") and needle in line and "HF_OIDC_RESOURCE" in line
    assert not JWT.search(p.stderr)


def test_a_login_failing_inside_any_hub_call_is_the_oidc_error(monkeypatch):
    """A token refresh that fails mid-run reaches every caller of ``translate`` typed, too."""
    from huggingface_hub.errors import OIDCError

    from gradience.errors import HubOIDCError
    from gradience.hub.errors import translate

    monkeypatch.setenv("HF_OIDC_RESOURCE", PRIVATE_REPO)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    for var in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "HF_OIDC_ID_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    e = translate(OIDCError("Cannot request an OIDC id token from GitHub Actions."), PRIVATE_REPO)
    assert isinstance(e, HubOIDCError) and e.code == "oidc" and e.exit_code == 2
    assert "`permissions: id-token: write`" in str(e) and "\n" not in str(e)


# -- the local Hub's /oauth/token, through huggingface_hub ----------------------------------------


@pytest.fixture
def ci(gh: LocalGitHub, hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalGitHub:
    """This process as a GitHub Actions job that may mint id tokens."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO))
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    return gh


def _refused(call) -> tuple[int, dict]:
    with pytest.raises(HfHubHTTPError) as info:
        call()
    return info.value.response.status_code, info.value.response.json()


def test_id_token_request_keeps_the_runner_urls_query(hub, ci, monkeypatch):
    """The runner's id-token URL has ``?api-version=…``; huggingface_hub's own request replaces
    that query with ``audience`` (the stand-in refuses it), so gradience mints the id token
    itself with both, and the login works."""
    import huggingface_hub.utils._auth as auth
    from huggingface_hub._oidc import get_oidc_token

    from gradience.hub.oidc import ensure_oidc_login

    with pytest.raises(HfHubHTTPError) as info:
        get_oidc_token(audience=hub.url)
    assert info.value.response.status_code == 400 and "api-version" in info.value.response.text
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    monkeypatch.setenv("HF_OIDC_RESOURCE", PRIVATE_REPO)
    monkeypatch.delenv("HF_OIDC_ID_TOKEN", raising=False)
    monkeypatch.setattr(auth, "_OIDC_TOKEN_CACHE", None)
    token = ensure_oidc_login()
    assert token and HfApi(endpoint=hub.url, token=token).model_info(PRIVATE_REPO).private
    asked = [r for r in ci.requests if r["path"].endswith("/idtoken")][-1]["query"]
    assert asked == {"api-version": "2.0", "audience": hub.url}


def test_repo_publisher_token_reads_and_writes_that_repo_only(hub, ci):
    from huggingface_hub._oidc import oidc_login

    owner = HfApi(endpoint=hub.url, token=ALICE_TOKEN)
    sandbox, other = (f"alice/oidc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    owner.create_repo(sandbox, private=True)
    owner.create_repo(other)
    try:
        hub.add_trusted_publisher(sandbox, REPO)
        answer = oidc_login(
            resource=sandbox, endpoint=hub.url, subject_token=ci.mint_id_token(REQUEST_TOKEN, hub.url)
        )
        assert answer["token_type"] == "bearer" and answer["expires_in"] == 3600
        api = HfApi(endpoint=hub.url, token=answer["access_token"])
        api.upload_file(path_or_fileobj=b"ok", path_in_repo="from-ci.txt", repo_id=sandbox)
        assert "from-ci.txt" in api.list_repo_files(sandbox)
        assert api.whoami()["auth"]["type"] == "oidc"
        with pytest.raises(HfHubHTTPError) as info:  # scoped: not even alice's other repo
            api.upload_file(path_or_fileobj=b"no", path_in_repo="x.txt", repo_id=other)
        assert info.value.response.status_code == 403
        with pytest.raises(HfHubHTTPError) as info:  # nor her other private repo
            api.model_info(PRIVATE_REPO)
        assert info.value.response.status_code == 404
    finally:
        owner.delete_repo(sandbox)
        owner.delete_repo(other)


def test_user_publisher_token_reads_gated_repos_but_never_private_ones(tmp_path, hub, ci):
    from huggingface_hub import hf_hub_download
    from huggingface_hub._oidc import oidc_login

    hub.add_trusted_publisher("alice", REPO)
    token = oidc_login(
        resource="alice", endpoint=hub.url, subject_token=ci.mint_id_token(REQUEST_TOKEN, hub.url)
    )["access_token"]
    api = HfApi(endpoint=hub.url, token=token)
    assert api.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info(PRIVATE_REPO)  # alice's own, but a CI/CD identity never reads private repos
    assert info.value.response.status_code == 404
    hub.grant_access(GATED_REPO, "alice")
    try:
        path = hf_hub_download(GATED_REPO, "adapter_config.json", token=token, endpoint=hub.url,
                               cache_dir=tmp_path / "hf")  # fmt: skip
        assert json.loads(Path(path).read_text())["r"] == 64
    finally:
        hub.revoke_access(GATED_REPO, "alice")
    with pytest.raises(HfHubHTTPError) as info:  # read only
        api.create_repo("alice/oidc-not-allowed")
    assert info.value.response.status_code == 403


def test_exchange_refuses_bad_id_tokens(hub, ci, minted):
    from huggingface_hub._oidc import exchange_oidc_token

    hub.add_trusted_publisher(PRIVATE_REPO, REPO)

    def exchange(token: str, resource: str = PRIVATE_REPO):
        return lambda: exchange_oidc_token(subject_token=token, resource=resource, endpoint=hub.url)

    cases = {
        "the id token's audience is not this Hub": ci.mint_id_token(REQUEST_TOKEN, "https://huggingface.co"),
        "the id token has expired": ci.mint_id_token(REQUEST_TOKEN, hub.url, expires_in=-1),
        "not a compact JWT": "not-a-jwt",
        "unsupported signing algorithm 'none'": "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
    }
    for reason, token in cases.items():
        status, body = _refused(exchange(token))
        assert (status, body["error"]) == (400, "invalid_grant") and reason in body["error_description"], body
    status, body = _refused(exchange(ci.mint_id_token(REQUEST_TOKEN, hub.url), "datasets/a/b/c"))
    assert (status, body["error"]) == (400, "invalid_target")
    assert minted() == []


def test_exchange_refuses_other_grants_and_token_types(hub, ci):
    good = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "subject_token": ci.mint_id_token(REQUEST_TOKEN, hub.url),
        "resource": PRIVATE_REPO,
    }
    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    for change, error in [
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}, "invalid_request"),
        ({"subject_token": ""}, "invalid_request"),
    ]:
        r = httpx2.post(f"{hub.url}/oauth/token", json={**good, **change})
        assert (r.status_code, r.json()["error"]) == (400, error)
        assert r.headers["cache-control"] == "no-store" and "x-error-code" not in r.headers
    r = httpx2.post(f"{hub.url}/oauth/token", json=good)
    assert r.status_code == 200 and r.json()["access_token"].startswith("hf_oidc_")


def test_exchanged_tokens_expire(hub, ci, minted):
    from huggingface_hub._oidc import oidc_login

    hub.add_trusted_publisher(PRIVATE_REPO, REPO)
    with hub.configured(oidc_token_lifetime=0):  # minted already expired: no waiting
        token = oidc_login(
            resource=PRIVATE_REPO, endpoint=hub.url, subject_token=ci.mint_id_token(REQUEST_TOKEN, hub.url)
        )["access_token"]
    (issued,) = minted()
    assert issued["expired"]
    status, body = _refused(lambda: HfApi(endpoint=hub.url, token=token).model_info(PRIVATE_REPO))
    assert status == 401 and body["error"] == "Invalid credentials in Authorization header"


def test_id_token_service_needs_the_jobs_request_token(gh):
    url = gh.allow_id_tokens(REQUEST_TOKEN, repository=REPO)
    assert httpx2.get(url, params={"audience": "x"}).status_code == 401
    assert (
        httpx2.get(url, params={"audience": "x"}, headers={"Authorization": "Bearer guess"}).status_code
        == 403
    )
    auth = {"Authorization": f"Bearer {REQUEST_TOKEN}"}
    assert httpx2.get(url, params={"audience": "x"}, headers=auth).status_code == 400  # query replaced
    r = httpx2.get(httpx2.URL(url).copy_merge_params({"audience": "x"}), headers=auth)
    assert r.status_code == 200 and r.json()["count"] == 1 and JWT.fullmatch(r.json()["value"])
