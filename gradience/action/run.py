"""``gradience action run``: one pass of the Action over one pull request.

Order matters for safety and for what users see: secrets are masked before anything else is
printed; the comment is posted (or, when it cannot be, the reason recorded) before the report
is written, so the report says what happened; the exit status comes from the gate last, after
every output exists, so a failing check still leaves its summary and report behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gradience.action.adapters import GitRepo, config_path, glob_folders, touched_folders
from gradience.action.compare import AdapterResult, compare
from gradience.action.render import Context, comment, summary
from gradience.action.runner import Commands, PullRequest, Runner
from gradience.action.settings import Settings, input_env
from gradience.errors import GradienceError, UsageError

if TYPE_CHECKING:
    from gradience.action.github import GitHub

REPORT_SCHEMA = "gradience.action/v1"
#: Exit status when the gate fails (as ``gradience diff`` with rules): distinct from bad input (2).
EXIT_GATE = 3
#: GitHub's cap on a pull request's file list.
FILES_CAP = 3000
#: Warnings printed as annotations (GitHub shows about ten per kind per step).
MAX_WARNINGS = 20


@dataclass
class Outcome:
    verdict: str
    exit_code: int
    results: list[AdapterResult]
    merges: list[dict[str, Any]]
    comment: dict[str, Any]
    report_path: Path
    notes: list[str] = field(default_factory=list)


def _hf_token(env: Mapping[str, str]) -> str | None:
    """The Hub token: ``HF_TOKEN`` (what action.yml sets), or the ``hf-token`` input as GitHub
    spells it for other kinds of actions."""
    return env.get("HF_TOKEN") or input_env(env, "hf_token")


def _token(env: Mapping[str, str], given: str | None) -> str | None:
    return given or input_env(env, "github_token") or env.get("GITHUB_TOKEN") or None


def run(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    github_token: str | None = None,
    pr_number: int | None = None,
) -> Outcome:
    """Audit the pull request the runner's event names, comment, summarise, gate."""
    env = os.environ if env is None else env
    runner = Runner.from_env(env)
    cmds = Commands(runner, out or sys.stdout)
    token = _token(env, github_token)
    cmds.mask(token)
    cmds.mask(_hf_token(env))
    cmds.mask(env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
    if settings.hub_repos and env.get("HF_OIDC_RESOURCE"):
        from gradience.hub.oidc import ensure_oidc_login

        # Keyless Hub login first: a misconfigured one stops the run with one line (exit 2)
        # before any work, and the short-lived token is masked like the others.
        cmds.mask(ensure_oidc_login())
    gh = None
    if token:
        from gradience.action.github import GitHub

        gh = GitHub(runner.api_url, token, runner.repository)
    try:
        return _run(settings, runner, cmds, env, gh, pr_number)
    finally:
        if gh is not None:
            gh.close()


def _run(
    settings: Settings,
    runner: Runner,
    cmds: Commands,
    env: Mapping[str, str],
    gh: GitHub | None,
    pr_number: int | None,
) -> Outcome:
    notes: list[str] = []
    pr = _pull_request(runner, gh, pr_number)
    untrusted = runner.event_name == "pull_request_target" and pr.from_fork and not settings.allow_untrusted
    if untrusted:
        notes.append(
            "pull_request_target with a fork's head: the comment is skipped (set allow-untrusted to "
            "comment; the audit reads files only and never runs the pull request's code)"
        )
    git = GitRepo(runner.workspace)
    if not git.ensure_commit(pr.head_sha, pr_ref=pr.number):
        raise UsageError(
            f"the head commit {pr.head_sha[:12]} is not in the checkout at {runner.workspace}; "
            "check out the pull request with fetch-depth: 0"
        )
    base_ok = git.ensure_commit(pr.base_sha)
    if not base_ok:
        notes.append(
            f"the base commit {pr.base_sha[:12]} is not in the checkout: adapters are shown without a base"
        )
    if base_ok:
        # what the pull request changes, as GitHub shows it: against the point where its branch
        # left the base branch, not against whatever the base branch has gained since
        pr = dataclasses.replace(pr, base_sha=git.merge_base(pr.base_sha, pr.head_sha) or pr.base_sha)
    folders = _folders(settings, git, gh, pr, base_ok, notes)
    results, merges = _audit_all(settings, git, runner.workspace, pr, base_ok, folders, env)

    from gradience import __version__

    verdict = _verdict(results, merges, settings.fail_on)
    ctx = Context(runner.repository, pr.number, pr.head_sha, pr.base_sha if base_ok else None, settings.policy,
                  settings.fail_on, verdict, runner.run_url, __version__)  # fmt: skip

    def publish(sections: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        body = comment(results, merges, ctx, settings.comment_scope, notes, sections)
        return body, _post(settings, gh, pr.number, body, bool(results or sections), untrusted, notes, cmds)

    body, posted = publish()
    bench = None
    if settings.bench:
        bench, body, posted = _bench(settings, runner, pr, untrusted, env, cmds, publish)

    bundle = runner.temp / f"gradience-action-{settings.comment_scope}"  # one per scope, as comments
    bundle.mkdir(parents=True, exist_ok=True)
    report = _report(runner, pr, settings, verdict, results, merges, posted, notes)
    report["bench"] = bench.to_dict() if bench else None
    text = json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    report_path = (bundle / "report.json").resolve()
    report_path.write_text(text, encoding="utf-8")
    if settings.report:
        settings.report.parent.mkdir(parents=True, exist_ok=True)
        settings.report.write_text(text, encoding="utf-8")
        report_path = settings.report.resolve()
    (bundle / "comment.md").write_text(body, encoding="utf-8")
    (bundle / "pr.json").write_text(json.dumps({"number": pr.number, "head_sha": pr.head_sha}) + "\n")

    cmds.summary(summary(results, merges, ctx, notes))
    _annotate(cmds, results, merges)
    line = _one_line(results, verdict, posted)
    cmds.set_output("report", str(report_path))
    cmds.set_output("verdict", verdict)
    cmds.set_output("summary", line)
    cmds.set_output("bundle", str(bundle.resolve()))
    cmds.set_output("comment-posted", "true" if posted["posted"] else "false")
    cmds.set_output("comment-id", str(posted["id"] or ""))
    cmds.set_output("comment-url", str(posted["url"] or ""))
    cmds.out.write(f"gradience: {line}\n")
    code = EXIT_GATE if verdict == "fail" else 0
    return Outcome(verdict, code, results, merges, posted, report_path, notes)


def _folders(
    settings: Settings, git: GitRepo, gh: GitHub | None, pr: PullRequest, base_ok: bool, notes: list[str]
) -> list[str]:
    """Adapter folders to audit: those the pull request touches, then those ``paths`` names."""
    if gh is not None:
        files = gh.changed_files(pr.number)
        if len(files) >= FILES_CAP and base_ok:  # GitHub lists 3000 files at most; git lists them all
            files = git.changed_files(pr.base_sha, pr.head_sha)
    else:
        files = git.changed_files(pr.base_sha, pr.head_sha) if base_ok else []
        notes.append("no GitHub token: changed files come from git, and no comment is posted")
    folders = touched_folders(files)
    if settings.paths:
        folders += [f for f in glob_folders(git.configs(pr.head_sha), settings.paths) if f not in folders]
    return folders


def _audit_all(
    settings: Settings,
    git: GitRepo,
    workspace: Path,
    pr: PullRequest,
    base_ok: bool,
    folders: list[str],
    env: Mapping[str, str],
) -> tuple[list[AdapterResult], list[dict[str, Any]]]:
    """Each folder exported at both commits and compared; Hub adapters; merge pairs at the head."""
    rules = settings.rules()
    results: list[AdapterResult] = []
    merges: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gradience-action-") as tmp:
        exported: dict[str, Path | None] = {}
        for i, folder in enumerate(folders):
            head_dir = git.export(pr.head_sha, folder, Path(tmp) / str(i) / "head", workspace=workspace)
            exported[folder] = head_dir
            base_dir = git.export(pr.base_sha, folder, Path(tmp) / str(i) / "base") if base_ok else None
            if head_dir is None and base_dir is None:
                continue  # adapter files touched on neither side's tree (a rename away and back)
            results.append(
                compare(
                    folder, kind="git", base=base_dir, head=head_dir,
                    base_label=f"{folder}@{pr.base_sha[:7]}" if base_dir else None,
                    head_label=f"{folder}@{pr.head_sha[:7]}" if head_dir else None,
                    policy=settings.policy, rules=rules, config_path=config_path(folder),
                )
            )  # fmt: skip
        if settings.hub_repos:
            results += _hub_results(settings, rules, env)
        for j, (a, b) in enumerate(settings.merge_pairs):
            dirs = []
            for k, folder in enumerate((a, b)):
                if folder not in exported:
                    dest = Path(tmp) / f"m{j}-{k}"
                    exported[folder] = git.export(pr.head_sha, folder, dest, workspace=workspace)
                dirs.append(exported[folder])
            merges.append(_merge_pair(a, b, dirs))
    return results, merges


def _post(
    settings: Settings,
    gh: GitHub | None,
    number: int,
    body: str,
    anything: bool,
    untrusted: bool,
    notes: list[str],
    cmds: Commands,
) -> dict[str, Any]:
    """The comment, or why there is none (``comment`` in the report)."""
    skipped: dict[str, Any] = {"mode": "skipped", "posted": False, "id": None, "url": None, "reason": None}
    if settings.comment == "off":
        return {**skipped, "reason": "comment: off"}
    if untrusted:
        return {**skipped, "reason": "untrusted head on pull_request_target"}
    if gh is None:
        return {**skipped, "reason": "no GitHub token"}
    res = gh.upsert_comment(
        number, body, scope=settings.comment_scope, mode=settings.comment,
        skip_unchanged=settings.skip_unchanged, create=anything or settings.comment == "new",
    )  # fmt: skip
    note = f"the comment could not be posted: {res.reason}; it is in the job summary and the report artifact"
    if not res.posted and res.mode == "failed" and note not in notes:
        notes.append(note)
        cmds.annotate("warning", f"gradience: comment not posted: {res.reason}")
    return res.to_dict()


def _bench(
    settings: Settings,
    runner: Runner,
    pr: PullRequest,
    untrusted: bool,
    env: Mapping[str, str],
    cmds: Commands,
    publish: Callable[[Sequence[str]], tuple[str, dict[str, Any]]],
) -> tuple[Any, str, dict[str, Any]]:
    """The GPU bench: pending in the comment, run on HF Jobs, then its result in the comment."""
    from gradience.action.bench import BenchOutcome, run_bench, section

    flavor, timeout = settings.bench_flavor, settings.bench_timeout
    reason = None
    if untrusted:
        reason = "untrusted head on pull_request_target"
    elif pr.from_fork and runner.event_name == "pull_request":
        reason = "a fork's pull request gets no secrets; a maintainer can comment /gradience bench"
    if reason:
        outcome = BenchOutcome("skipped", flavor, timeout, reason)
    else:
        publish([section(BenchOutcome("pending", flavor, timeout))])
        cmds.group(f"GPU bench on HF Jobs ({flavor}, timeout {timeout})")
        outcome = run_bench(
            config_path=str(runner.workspace / settings.bench_config) if settings.bench_config else None,
            flavor=flavor, timeout=timeout, namespace=settings.bench_namespace, image=settings.bench_image,
            token=_hf_token(env), repository=runner.repository, pr_number=pr.number,
            commit=pr.head_sha, log=lambda line: cmds.out.write(line + "\n"),
        )  # fmt: skip
        cmds.endgroup()
        if outcome.status == "failed":
            cmds.annotate("warning", f"gradience: GPU bench failed: {outcome.message}")
    body, posted = publish([section(outcome)])
    return outcome, body, posted


def _pull_request(runner: Runner, gh: GitHub | None, pr_number: int | None) -> PullRequest:
    """The pull request: from the event payload, or — on ``workflow_run``, whose payload names
    no pull request for forks — from ``pr_number``, trusted only if GitHub says its head is the
    commit the triggering run audited."""
    if runner.event_name == "issue_comment":
        return _commented_pull_request(runner, gh)
    if runner.event_name != "workflow_run":
        return runner.pull_request()
    if pr_number is None:
        raise UsageError("on workflow_run, give the pull request number", param="pr_number")
    if gh is None:
        raise UsageError("on workflow_run, a GitHub token is needed to check the pull request")
    run = runner.event.get("workflow_run") or {}
    expected = run.get("head_sha")
    pull = gh.pull(pr_number)
    if not expected or pull.head_sha != expected:
        raise UsageError(
            f"pull request #{pr_number} is at {pull.head_sha[:12]}, not at the commit the triggering run "
            f"audited ({str(expected)[:12]}); refusing to comment on it"
        )
    return pull


#: Who may start work (a GPU bench) by commenting on a pull request.
TRUSTED_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")


def _commented_pull_request(runner: Runner, gh: GitHub | None) -> PullRequest:
    """``issue_comment`` (a ``/gradience bench`` comment): the pull request commented on, if the
    commenter may start work in this repository."""
    issue = runner.event.get("issue") or {}
    who = (runner.event.get("comment") or {}).get("author_association")
    if "pull_request" not in issue or not isinstance(issue.get("number"), int):
        raise UsageError("this comment is not on a pull request")
    if who not in TRUSTED_ASSOCIATIONS:
        raise UsageError(f"only owners, members and collaborators may start this (the commenter is {who})")
    if gh is None:
        raise UsageError("on issue_comment, a GitHub token is needed to read the pull request")
    return gh.pull(issue["number"])


def _hub_results(settings: Settings, rules: Any, env: Mapping[str, str]) -> list[AdapterResult]:
    from gradience.open import OpenOptions

    # With HF_OIDC_RESOURCE set, huggingface_hub's exchanged token, as it would choose itself.
    options = OpenOptions(token=None if env.get("HF_OIDC_RESOURCE") else _hf_token(env))
    out = []
    for spec in settings.hub_repos:
        base = f"{spec.repo_id}@{spec.base}" if spec.base else None
        head = f"{spec.repo_id}@{spec.head}"
        out.append(
            compare(
                spec.name,
                kind="hub",
                base=base,
                head=head,
                base_label=base,
                head_label=head,
                policy=settings.policy,
                rules=rules,
                options=options,
            )
        )
    return out


def _merge_pair(a: str, b: str, dirs: list[Path | None]) -> dict[str, Any]:
    from gradience.merge.pairwise import merge_audit

    entry: dict[str, Any] = {"a": a, "b": b, "aggregate": None, "error": None, "violations": []}
    missing = [name for name, d in zip((a, b), dirs, strict=True) if d is None]
    if missing:
        entry["error"] = {"code": "not_found", "message": f"no adapter at {', '.join(missing)} in the head"}
    else:
        try:
            entry["aggregate"] = merge_audit([str(d) for d in dirs]).pairs[0].aggregate()
        except GradienceError as e:
            entry["error"] = e.to_dict()
    verdict = (entry["aggregate"] or {}).get("overall_verdict")
    if entry["error"] or verdict in ("CONFLICTING", "INCOMPATIBLE"):
        what = entry["error"]["message"] if entry["error"] else f"merge verdict {verdict}"
        entry["violations"].append({"rule": "merge_pairs", "scope": "pair", "layer": None, "severity": "warning",
                                    "message": f"{a} + {b}: {what}", "value": verdict, "limit": None})  # fmt: skip
    return entry


def _verdict(results: list[AdapterResult], merges: list[dict[str, Any]], fail_on: str) -> str:
    sev = {v["severity"] for r in results for v in r.violations} | {
        v["severity"] for m in merges for v in m["violations"]
    }
    if (fail_on == "error" and "error" in sev) or (fail_on == "warning" and sev):
        return "fail"
    return "warn" if sev else "pass"


def _annotate(cmds: Commands, results: list[AdapterResult], merges: list[dict[str, Any]]) -> None:
    """Errors one by one; layer warnings one line per adapter and rule (GitHub shows about ten
    annotations of a kind per step, and fifty layers of one adapter would hide the rest)."""
    warnings = 0
    for r in results:
        layer_warnings: dict[str, list[dict[str, Any]]] = {}
        for v in r.violations:
            title = f"gradience: {v['rule']}"
            if v["severity"] == "error":
                cmds.annotate("error", f"{r.name}: {v['message']}", file=r.config_path, title=title)
            elif v.get("layer"):
                layer_warnings.setdefault(v["rule"], []).append(v)
            elif warnings < MAX_WARNINGS:
                warnings += 1
                cmds.annotate("warning", f"{r.name}: {v['message']}", file=r.config_path, title=title)
        for rule, vs in layer_warnings.items():
            if warnings >= MAX_WARNINGS:
                break
            warnings += 1
            first = vs[0]
            more = f" and {len(vs) - 1} more (see the job summary)" if len(vs) > 1 else ""
            msg = f"{r.name}: {len(vs)} layer(s) — {first['layer']}: {first['message']}{more}"
            cmds.annotate("warning", msg, file=r.config_path, title=f"gradience: {rule}")
    for m in merges:
        for v in m["violations"]:
            cmds.annotate(
                "warning", v["message"], file=f"{m['a']}/adapter_config.json", title="gradience: merge"
            )


def _one_line(results: list[AdapterResult], verdict: str, comment_result: dict[str, Any]) -> str:
    n_err = sum(v["severity"] == "error" for r in results for v in r.violations)
    n_warn = sum(v["severity"] == "warning" for r in results for v in r.violations)
    c = comment_result["mode"]
    return (f"{len(results)} adapter(s) audited, verdict {verdict} ({n_err} error(s), {n_warn} warning(s)); "
            f"comment {c}")  # fmt: skip


def _report(
    runner: Runner,
    pr: PullRequest,
    settings: Settings,
    verdict: str,
    results: list[AdapterResult],
    merges: list[dict[str, Any]],
    comment_result: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    from gradience import __version__

    return {
        "schema": REPORT_SCHEMA,
        "gradience_version": __version__,
        "repository": runner.repository,
        "event": runner.event_name,
        "pull_request": {
            "number": pr.number,
            "head_sha": pr.head_sha,
            "base_sha": pr.base_sha,
            "head_repo": pr.head_repo,
            "from_fork": pr.from_fork,
        },
        "settings": {
            "paths": list(settings.paths),
            "hub_repos": [
                s.name if not s.base else f"{s.repo_id}@{s.base}..{s.head}" for s in settings.hub_repos
            ],
            "fail_on": settings.fail_on,
            "rules": settings.rules().to_dict(),
            "comment": settings.comment,
            "comment_scope": settings.comment_scope,
            "skip_unchanged": settings.skip_unchanged,
            "policy": settings.policy,
        },
        "verdict": verdict,
        "adapters": [r.to_dict() for r in results],
        "merge_pairs": merges,
        "comment": comment_result,
        "notes": notes,
    }
