"""``gradience action run`` as a runner runs it: a subprocess with a real ``pull_request`` event
payload, a runner-like environment and a real git checkout holding the base and head commits,
against the local GitHub (tests/servers/github) and, for Hub adapters, the local Hub.

Each test builds its repository from the bundled examples, so the expected changes are known
from the files themselves: ``healthy-r8`` and ``untrained-r8`` differ in every layer,
``overprovisioned-r64`` is flagged, a truncated weights file cannot be read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import hub as H
from servers.github import LocalGitHub

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
REPO = "acme/adapters"
FORK = "outsider/adapters"
TOKEN = "ghs_write_0123456789abcdefghijklmnopqrstuv"
READ_TOKEN = "ghs_read_0123456789abcdefghijklmnopqrstuvw"
PAT = "ghp_personal_0123456789abcdefghijklmnopqrs"
MARKER = "<!-- gradience-action:sticky scope="


@pytest.fixture
def gh(github):
    github.reset()
    github.add_repo(REPO)
    github.add_repo(FORK, fork=True)
    github.add_token(TOKEN, "github-actions[bot]", repos=[REPO])
    github.add_token(READ_TOKEN, "github-actions[bot]", permission="read", repos=[REPO])
    github.add_token(PAT, "octo-reviewer", app=False)
    github.configure(page_size_cap=2)  # every listing takes several pages
    return github


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return p.stdout.strip()


def put(repo: Path, folder: str, example: str) -> None:
    dest = repo / folder
    if dest.exists():
        shutil.rmtree(dest)
    # fresh mtimes: with copied ones, a same-size file swapped within a second looks unchanged to git
    shutil.copytree(EXAMPLES / example, dest, copy_function=shutil.copyfile)


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def pr_files(repo: Path, base: str, head: str, *, renames: bool = False) -> list[dict]:
    """The pull request's file list as GitHub reports it, from git itself."""
    out = git(repo, "diff", "--name-status", "-M" if renames else "--no-renames", f"{base}...{head}")
    words = {"A": "added", "M": "modified", "D": "removed"}
    files = []
    for line in out.splitlines():
        code, *paths = line.split("\t")
        if code.startswith("R"):
            files.append({"filename": paths[1], "status": "renamed", "previous_filename": paths[0]})
        else:
            files.append({"filename": paths[0], "status": words[code[0]]})
    return files


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    summary: str
    outputs: dict[str, str]
    report: dict | None


class PR:
    """A repository with a pull request open on the local GitHub, and the runner around it."""

    def __init__(self, tmp: Path, gh: LocalGitHub, *, number: int = 7, head_repo: str = REPO) -> None:
        self.tmp, self.gh, self.number, self.head_repo = tmp, gh, number, head_repo
        self.repo = tmp / "work"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        (self.repo / "README.md").write_text("adapters\n")
        for i in range(5):  # unrelated files, so the file list spans pages
            (self.repo / "docs").mkdir(exist_ok=True)
            (self.repo / "docs" / f"n{i}.md").write_text("0\n")
        self.base = ""
        self.head = ""
        self.runs = 0

    def open(self, base: str, head: str, *, renames: bool = False) -> None:
        self.base, self.head = base, head
        files = pr_files(self.repo, base, head, renames=renames)
        self.gh.add_pull(REPO, self.number, head_sha=head, base_sha=base, files=files,
                         head_repo=None if self.head_repo == REPO else self.head_repo)  # fmt: skip
        self.action = "opened"

    def push(self, head: str) -> None:
        self.head = head
        self.gh.update_pull(REPO, self.number, head_sha=head, files=pr_files(self.repo, self.base, head))
        self.action = "synchronize"

    def run(
        self,
        *flags: str,
        token: str | None = TOKEN,
        event: str = "pull_request",
        extra_env=None,
        payload=None,
        module: bool = False,
    ) -> Run:
        self.runs += 1
        d = self.tmp / f"run{self.runs}"
        d.mkdir()
        event_payload = payload
        payload = {
            "action": self.action,
            "number": self.number,
            "pull_request": {
                "number": self.number,
                "html_url": f"https://github.com/{REPO}/pull/{self.number}",
                "head": {"sha": self.head, "ref": "feature", "repo": {"full_name": self.head_repo,
                         "fork": self.head_repo != REPO}},
                "base": {"sha": self.base, "ref": "main", "repo": {"full_name": REPO}},
            },
            "repository": {"full_name": REPO, "name": "adapters", "owner": {"login": "acme"}},
            "sender": {"login": "contributor"},
        }  # fmt: skip
        (d / "event.json").write_text(json.dumps(payload if event_payload is None else event_payload))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_", "ACTIONS_", "HF_OIDC_"))
        }
        env.update(
            GITHUB_EVENT_PATH=str(d / "event.json"), GITHUB_EVENT_NAME=event, GITHUB_REPOSITORY=REPO,
            GITHUB_API_URL=self.gh.url, GITHUB_SERVER_URL="https://github.com", GITHUB_RUN_ID="4242",
            GITHUB_WORKSPACE=str(self.repo), GITHUB_STEP_SUMMARY=str(d / "summary.md"),
            GITHUB_OUTPUT=str(d / "output.txt"), RUNNER_TEMP=str(d / "temp"), GITHUB_SHA="f" * 40,
            GRADIENCE_CACHE=str(self.tmp / "cache"),
        )  # fmt: skip
        (d / "temp").mkdir()
        if token:
            env["INPUT_GITHUB_TOKEN"] = token
        env.update(extra_env or {})
        p = subprocess.run(
            [sys.executable, "-m", *(["gradience.action"] if module else ["gradience", "action", "run"]), *flags],
            capture_output=True, text=True, env=env, cwd=self.repo, timeout=300,
        )  # fmt: skip
        summary = (d / "summary.md").read_text() if (d / "summary.md").exists() else ""
        outputs = _outputs((d / "output.txt").read_text()) if (d / "output.txt").exists() else {}
        report = json.loads(Path(outputs["report"]).read_text()) if outputs.get("report") else None
        if report is not None:
            _validate(report)
        run = Run(p.returncode, p.stdout, p.stderr, summary, outputs, report)
        hf_token = (extra_env or {}).get("HF_TOKEN")
        for secret in (TOKEN, READ_TOKEN, PAT, *([hf_token] if hf_token else [])):  # nothing secret leaks
            everything = [run.stdout.replace(f"::add-mask::{secret}", ""), run.stderr, run.summary,
                          json.dumps(run.outputs), json.dumps(run.report)]  # fmt: skip
            assert all(secret not in text for text in everything), "a token leaked"
        assert "Traceback" not in p.stderr, p.stderr
        return run

    def comments(self) -> list:
        return self.gh.comments(REPO, self.number)


def _outputs(text: str) -> dict[str, str]:
    out, lines, i = {}, text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<")[0]:
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1 : j])
            i = j + 1
        else:
            name, _, value = line.partition("=")
            out[name] = value
            i += 1
    return out


def _validate(report: dict) -> None:
    """Every report follows gradience.action/v1, and each adapter's diff gradience.diff/v1."""
    import jsonschema

    schemas = ROOT / "gradience" / "schemas"
    jsonschema.validate(report, json.loads((schemas / "action_report.schema.json").read_text()))
    diff_schema = json.loads((schemas / "diff.schema.json").read_text())
    for a in report["adapters"]:
        if a["diff"] is not None:
            jsonschema.validate(a["diff"], diff_schema)


def by_name(run: Run) -> dict[str, dict]:
    return {a["name"]: a for a in run.report["adapters"]}


def writes(gh: LocalGitHub) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in gh.requests if r["method"] != "GET"]


# -----------------------------------------------------------------------------------------------


def test_one_comment_across_pushes_with_added_changed_removed_and_corrupt_adapters(tmp_path, gh):
    pr = PR(tmp_path, gh)
    put(pr.repo, "adapters/keep", "healthy-r8")
    put(pr.repo, "adapters/retrain", "untrained-r8")
    put(pr.repo, "adapters/old", "healthy-r8")
    base = commit(pr.repo, "base")
    git(pr.repo, "checkout", "-q", "-b", "feature")
    put(pr.repo, "adapters/retrain", "healthy-r8")  # trained now: every layer changes
    shutil.rmtree(pr.repo / "adapters/old")
    put(pr.repo, "adapters/new", "overprovisioned-r64")
    put(pr.repo, "adapters/broken", "healthy-r8")
    w = pr.repo / "adapters/broken/adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])  # truncated upload
    (pr.repo / "docs/n0.md").write_text("1\n")
    head1 = commit(pr.repo, "retrain, add, remove")
    pr.open(base, head1)

    first = pr.run()
    assert first.code == 3, first.stderr  # the unreadable adapter fails the gate (fail-on error)
    got = by_name(first)
    assert {k: v["status"] for k, v in got.items()} == {
        "adapters/retrain": "changed", "adapters/old": "removed",
        "adapters/new": "added", "adapters/broken": "unreadable",
    }  # fmt: skip
    assert "adapters/keep" not in got  # untouched adapters are not reported
    assert got["adapters/broken"]["error"]["code"] == "corrupt"
    retrain = got["adapters/retrain"]["diff"]
    assert retrain["flags"]["cleared"] == ["untrained"]
    assert retrain["layer_counts"]["changed"] == retrain["head"]["n_layers"] > 0
    assert got["adapters/new"]["diff"]["flags"]["head"] == ["over_provisioned"]
    assert first.outputs["verdict"] == "fail" and first.report["verdict"] == "fail"
    assert "::error file=adapters/broken/adapter_config.json,line=1" in first.stdout
    assert f"::add-mask::{TOKEN}" in first.stdout.splitlines()[0]  # masked before anything else

    comments = pr.comments()
    assert len(comments) == 1 and comments[0].body.startswith(MARKER + "default -->")
    body = comments[0].body
    for name, status in [("adapters/retrain", "changed"), ("adapters/old", "removed"),
                         ("adapters/new", "added"), ("adapters/broken", "unreadable")]:  # fmt: skip
        assert any(f"`{name}` | {status} |" in line for line in body.splitlines()), name
    assert "recommended r untrained →" in body and "−untrained" in body
    assert head1[:7] in body and "| `adapters/new` | added | 64 |" in body
    assert first.report["comment"]["mode"] == "created" and first.outputs["comment-posted"] == "true"
    # the job summary has the per-layer detail the comment leaves out
    assert "Per-layer changes" in first.summary and "base.model.layers" not in body
    # the file list was read across pages (2 per page on this server)
    assert any(
        r["path"].endswith(f"/pulls/{pr.number}/files") and r["query"].get("page") == "2" for r in gh.requests
    )

    # synchronize: the broken adapter is fixed, a rule is added; the same comment is edited
    put(pr.repo, "adapters/broken", "healthy-r8")
    head2 = commit(pr.repo, "fix upload")
    pr.push(head2)
    before = len(gh.requests)
    second = pr.run("--forbid-flags", "over_provisioned")
    assert second.code == 3  # the new over-provisioned adapter breaks the rule
    assert by_name(second)["adapters/broken"]["status"] == "added"
    assert (
        "::error file=adapters/new/adapter_config.json,line=1,title=gradience%3A forbid_flags::"
        in second.stdout
    )
    comments = pr.comments()
    assert len(comments) == 1 and comments[0].id == first.report["comment"]["id"]
    assert second.report["comment"]["mode"] == "edited" and head2[:7] in comments[0].body
    assert ("PATCH", f"/repos/{REPO}/issues/comments/{comments[0].id}") in [
        (r["method"], r["path"]) for r in gh.requests[before:]
    ]

    # a push that changes no adapter: with --skip-unchanged the comment is left alone
    (pr.repo / "README.md").write_text("adapters, documented\n")
    pr.push(commit(pr.repo, "docs only"))
    before = len(gh.requests)
    third = pr.run("--forbid-flags", "over_provisioned", "--skip-unchanged")
    assert third.code == 3 and third.report["comment"]["mode"] == "unchanged"
    assert [r for r in gh.requests[before:] if r["method"] != "GET"] == []
    assert len(pr.comments()) == 1 and head2[:7] in pr.comments()[0].body


def test_rules_and_fail_on_decide_the_exit_status(tmp_path, gh):
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    put(pr.repo, "models/lora", "untrained-r8")
    put(pr.repo, "models/big", "overprovisioned-r64")
    pr.open(base, commit(pr.repo, "add two adapters"))

    ok = pr.run("--comment", "off")
    assert ok.code == 0 and ok.outputs["verdict"] == "pass" and "::error" not in ok.stdout

    strict = pr.run("--comment", "off", "--forbid-flags", "untrained", "--min-utilization", "0.05")
    assert strict.code == 3 and strict.outputs["verdict"] == "fail"
    errors = [x for x in strict.stdout.splitlines() if x.startswith("::error ")]
    assert any("file=models/lora/adapter_config.json" in x and "forbid_flags" in x for x in errors)
    rules = {
        v["rule"] for a in strict.report["adapters"] for v in a["violations"] if v["severity"] == "error"
    }
    assert "forbid_flags" in rules
    assert writes(gh) == []  # comment: off posts nothing

    # the same rule from INPUT_* variables, as action.yml passes them, and fail-on none
    env = {"INPUT_FORBID_FLAGS": "untrained", "INPUT_COMMENT": "off", "INPUT_FAIL_ON": "none"}
    lenient = pr.run(extra_env=env)
    assert lenient.code == 0 and lenient.outputs["verdict"] == "warn"
    assert "::error file=models/lora/adapter_config.json" in lenient.stdout  # still annotated
    # GitHub's own spelling of input variables (hyphens kept) reads the same, and
    # python -m gradience.action is the same runtime
    hyphens = pr.run(
        extra_env={"INPUT_FORBID-FLAGS": "untrained", "INPUT_COMMENT": "off", "INPUT_FAIL-ON": "none"},
        module=True,
    )
    assert hyphens.code == 0 and hyphens.outputs["verdict"] == "warn"


def test_fork_pull_request_cannot_comment_and_keeps_the_report(tmp_path, gh):
    pr = PR(tmp_path, gh, head_repo=FORK)
    base = commit(pr.repo, "empty")
    put(pr.repo, "lora", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    run = pr.run(token=READ_TOKEN)
    assert run.code == 0, run.stderr
    assert pr.comments() == []
    assert run.outputs["comment-posted"] == "false" and run.report["comment"]["mode"] == "failed"
    assert "Resource not accessible by integration" in run.report["comment"]["reason"]
    assert "::warning::gradience: comment not posted" in run.stdout
    bundle = Path(run.outputs["bundle"])
    assert (bundle / "comment.md").read_text().startswith(MARKER)
    assert json.loads((bundle / "pr.json").read_text()) == {"number": pr.number, "head_sha": pr.head}
    assert "`lora`" in run.summary and "could not be posted" in run.summary


def test_only_its_own_comment_of_its_own_scope_is_edited(tmp_path, gh):
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    put(pr.repo, "a", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    quoted = f"{MARKER}default -->\nsomeone pasted our marker"
    human = gh.add_comment(REPO, pr.number, quoted, login="maintainer")
    assert pr.run().report["comment"]["mode"] == "created"
    nightly = pr.run("--comment-scope", "nightly")
    assert nightly.report["comment"]["mode"] == "created"
    again = pr.run()
    assert again.report["comment"]["mode"] in ("edited", "unchanged")
    bodies = {c.id: c for c in pr.comments()}
    assert len(bodies) == 3 and bodies[human].body == quoted
    scopes = sorted(c.body.split("\n", 1)[0] for c in bodies.values() if c.login == "github-actions[bot]")
    assert scopes == [f"{MARKER}default -->", f"{MARKER}nightly -->"]
    # a personal token writes as its user: the bot's comment is not its own, so it starts one
    assert pr.run(token=PAT).report["comment"]["mode"] == "created"
    assert [c.login for c in pr.comments()].count("octo-reviewer") == 1


def test_merge_pairs_and_a_pull_request_without_adapters(tmp_path, gh):
    pr = PR(tmp_path, gh)
    put(pr.repo, "a", "merge-conflict-a")
    put(pr.repo, "b", "merge-conflict-b")
    base = commit(pr.repo, "two adapters")
    (pr.repo / "README.md").write_text("no adapter changes here\n")
    pr.open(base, commit(pr.repo, "docs"))
    run = pr.run("--merge-pairs", "a:b")
    assert run.code == 0 and run.report["adapters"] == []
    (pair,) = run.report["merge_pairs"]
    assert (
        pair["aggregate"]["overall_verdict"] == "CONFLICTING"
        and pair["violations"][0]["severity"] == "warning"
    )
    assert "::warning file=a/adapter_config.json" in run.stdout and "CONFLICTING" in run.summary
    # nothing changed: no comment is started (an earlier one would be updated)
    assert run.report["comment"]["mode"] == "skipped" and pr.comments() == []


def test_an_adapter_at_the_root_and_a_renamed_folder(tmp_path, gh):
    pr = PR(tmp_path, gh)

    def put_root(example: str) -> None:
        for f in (EXAMPLES / example).iterdir():
            shutil.copyfile(f, pr.repo / f.name)

    put_root("untrained-r8")
    put(pr.repo, "old place", "healthy-r8")
    base = commit(pr.repo, "base")
    put_root("healthy-r8")
    git(pr.repo, "mv", "old place", "new place")
    pr.open(base, commit(pr.repo, "train the root adapter, move the other"), renames=True)
    assert any(f["status"] == "renamed" for f in gh.state.repos[REPO.lower()].pulls[pr.number].files)
    gh.configure(fail_gets=2)  # two transient 502s: reads are retried
    run = pr.run("--forbid-flags", "untrained", "--comment", "off")
    assert run.code == 0, run.stderr
    assert [r["status"] for r in gh.requests[:3]] == [502, 502, 200]
    assert {a["name"]: a["status"] for a in run.report["adapters"]} == {
        ".": "changed", "old place": "removed", "new place": "added"}  # fmt: skip
    root = by_name(run)["."]
    assert root["config_path"] == "adapter_config.json" and root["diff"]["flags"]["cleared"] == ["untrained"]


def test_pull_request_target_with_a_fork_head_does_not_comment(tmp_path, gh):
    pr = PR(tmp_path, gh, head_repo=FORK)
    base = commit(pr.repo, "empty")
    put(pr.repo, "a", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    run = pr.run(event="pull_request_target")
    assert run.code == 0 and pr.comments() == [] and writes(gh) == []
    assert run.report["comment"]["reason"] == "untrusted head on pull_request_target"
    assert by_name(run)["a"]["status"] == "added"  # the files were still audited


def test_hub_adapters_compared_between_revisions(tmp_path, gh, hub):
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    pr.open(base, commit(pr.repo, "nothing local"))
    run = pr.run("--hub-repos", f"{H.REVISIONS_REPO}@v1..v2", "--comment", "off")
    assert run.code == 0, run.stderr
    (a,) = run.report["adapters"]
    assert a["kind"] == "hub" and a["status"] == "changed"
    assert a["diff"]["flags"]["cleared"] == ["untrained"]  # v1 is untrained, v2 trained
    assert a["head"] == f"{H.REVISIONS_REPO}@v2"


def test_private_hub_adapter_with_the_hf_token_input(tmp_path, gh, hub):
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    pr.open(base, commit(pr.repo, "nothing local"))
    denied = pr.run("--hub-repos", H.PRIVATE_REPO, "--comment", "off")
    (a,) = denied.report["adapters"]
    assert a["status"] == "unreadable" and denied.code == 3
    # GitHub's own spelling of the hf-token input (INPUT_HF-TOKEN) reads like HF_TOKEN
    run = pr.run(
        "--hub-repos", H.PRIVATE_REPO, "--comment", "off", extra_env={"INPUT_HF-TOKEN": H.ALICE_TOKEN}
    )
    (a,) = run.report["adapters"]
    assert run.code == 0 and (a["status"], a["error"]) == ("added", None)
    assert f"::add-mask::{H.ALICE_TOKEN}" in run.stdout
    rest = run.stdout.replace(f"::add-mask::{H.ALICE_TOKEN}", "")
    assert H.ALICE_TOKEN not in rest + run.stderr + run.summary + json.dumps(run.report)


def test_bad_input_is_one_line_and_exit_2(tmp_path, gh):
    pr = PR(tmp_path, gh)
    base = commit(pr.repo, "empty")
    pr.open(base, commit(pr.repo, "x"))
    bad_token = pr.run(token="ghs_not_a_real_token_000000000000000000")
    assert bad_token.code == 2 and "401" in bad_token.stderr and "Bad credentials" in bad_token.stderr
    assert "ghs_not_a_real_token" not in bad_token.stderr
    assert len(bad_token.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--fail-on", "sometimes"], {}, "fail-on must be one of none, warning, error"),
        (["--forbid-flags", "wobbly"], {}, "unknown flag 'wobbly'"),
        ([], {"INPUT_MIN_UTILIZATION": "lots"}, "min-utilization must be a number"),
        (["--comment-scope", "two words"], {}, "comment-scope must be"),
        ([], {"GITHUB_EVENT_NAME": "push"}, "runs on pull_request or pull_request_target events"),
        ([], {"GITHUB_EVENT_PATH": "/nonexistent/event.json"}, "cannot read the event payload"),
    ],
)
def test_bad_settings_and_events_are_one_line_errors(tmp_path, monkeypatch, capsys, args, env, message):
    from gradience.cli.main import main

    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"pull_request": {"number": 1, "head": {"sha": "a" * 40}, "base": {"sha": "b" * 40}}})
    )
    for k in [k for k in os.environ if k.startswith(("GITHUB_", "INPUT_"))]:
        monkeypatch.delenv(k)
    base = {"GITHUB_EVENT_PATH": str(event), "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REPOSITORY": REPO,
            "GITHUB_WORKSPACE": str(tmp_path), "RUNNER_TEMP": str(tmp_path)}  # fmt: skip
    for k, v in {**base, **env}.items():
        monkeypatch.setenv(k, v)
    assert main(["action", "run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_workflow_run_comments_for_a_fork_after_checking_the_head(tmp_path, gh):
    pr = PR(tmp_path, gh, head_repo=FORK)
    base = commit(pr.repo, "empty")
    put(pr.repo, "lora", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    trusted = {"workflow_run": {"head_sha": pr.head, "event": "pull_request", "id": 99,
                                "head_repository": {"full_name": FORK}}}  # fmt: skip
    run = pr.run("--pr-number", str(pr.number), event="workflow_run", payload=trusted)
    assert run.code == 0, run.stderr
    (c,) = pr.comments()
    assert c.body.startswith(MARKER) and "`lora` | added |" in c.body
    # a number that names another pull request (or a later push) is refused
    gh.add_pull(REPO, 8, head_sha=base, base_sha=base, files=[])
    forged = pr.run("--pr-number", "8", event="workflow_run", payload=trusted)
    assert forged.code == 2 and "refusing to comment" in forged.stderr
    assert len(pr.comments()) == 1 and gh.comments(REPO, 8) == []


def test_a_maintainers_comment_on_the_pull_request_runs_it_again(tmp_path, gh):
    pr = PR(tmp_path, gh, head_repo=FORK)
    base = commit(pr.repo, "empty")
    put(pr.repo, "lora", "healthy-r8")
    pr.open(base, commit(pr.repo, "add"))
    event = {"action": "created", "issue": {"number": pr.number, "pull_request": {"url": "..."}},
             "comment": {"body": "/gradience bench", "author_association": "MEMBER"}}  # fmt: skip
    run = pr.run(event="issue_comment", payload=event)
    assert run.code == 0, run.stderr
    assert run.report["pull_request"]["head_sha"] == pr.head  # read from GitHub, not the comment
    assert "`lora` | added |" in pr.comments()[0].body
    event["comment"]["author_association"] = "NONE"  # a passer-by cannot start work
    stranger = pr.run(event="issue_comment", payload=event)
    assert stranger.code == 2 and "only owners, members and collaborators" in stranger.stderr


def test_changes_are_measured_from_where_the_branch_left_the_base(tmp_path, gh):
    pr = PR(tmp_path, gh)
    put(pr.repo, "shared", "untrained-r8")
    fork_point = commit(pr.repo, "untrained adapter")
    git(pr.repo, "checkout", "-q", "-b", "feature")
    put(pr.repo, "shared", "healthy-r8")
    head = commit(pr.repo, "train it")
    git(pr.repo, "checkout", "-q", "main")
    put(pr.repo, "shared", "overprovisioned-r64")  # the base branch moves on meanwhile
    base_tip = commit(pr.repo, "someone else's change")
    pr.open(base_tip, head)
    run = pr.run("--comment", "off")
    (a,) = run.report["adapters"]
    assert run.report["pull_request"]["base_sha"] == fork_point
    assert a["status"] == "changed" and a["diff"]["flags"]["cleared"] == ["untrained"]  # not over_provisioned
    assert a["diff"]["base"]["r"] == 8
