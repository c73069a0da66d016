"""GPU bench from CI: ``gradience bench --on hf-jobs`` for the pull request, and its outcome as
a section of the same sticky comment (pending → result, or the failure with its last log lines).

The job is :func:`gradience.bench.jobs.run_on_jobs`'s: labelled with the repository, pull request
and commit, superseding earlier runs for the same pull request, with a timeout that is always
set. The flavor and the timeout come from the workflow's inputs, never from the pull request;
the bench settings file is read from the checkout the workflow names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradience.report.markdown import escape as cell
from gradience.report.markdown import name as code

#: Log lines shown under a failed bench (the job's own last lines).
TAIL_LINES = 15


@dataclass
class BenchOutcome:
    """What became of the bench: ``pending``, ``passed`` (a smaller configuration passed),
    ``no_smaller`` (none did), ``failed`` (the job failed, timed out or was cancelled),
    ``skipped`` (not run, with the reason)."""

    status: str
    flavor: str
    timeout: str
    message: str | None = None
    report: dict[str, Any] | None = None
    tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "flavor": self.flavor,
            "timeout": self.timeout,
            "message": self.message,
            "report": self.report,
            "tail": self.tail,
        }


def run_bench(
    *,
    config_path: str | None,
    flavor: str,
    timeout: str,
    namespace: str | None,
    image: str | None,
    token: str | None,
    repository: str,
    pr_number: int,
    commit: str,
    log: Callable[[str], None],
) -> BenchOutcome:
    """Run the bench on HF Jobs and wait for it, never past its timeout (plus the watcher's grace)."""
    from gradience.errors import GradienceError

    try:
        from gradience.bench.config import load_config
        from gradience.bench.jobs import BenchJobError, run_on_jobs
    except ImportError as e:  # pragma: no cover - an install without the bench module
        return BenchOutcome("skipped", flavor, timeout, f"the bench is not available here ({e})")
    try:
        config = load_config(config_path)
        report = run_on_jobs(
            config, token=token, flavor=flavor, timeout=timeout, namespace=namespace, image=image,
            repo=repository, pr=str(pr_number), commit=commit, quiet=True, log=log,
        )  # fmt: skip
    except BenchJobError as e:
        head, _, last = str(e).partition("; last log lines:\n")
        return BenchOutcome("failed", flavor, timeout, head, tail=last.splitlines()[-TAIL_LINES:])
    except GradienceError as e:
        return BenchOutcome("failed", flavor, timeout, str(e))
    status = "passed" if report.get("best") else "no_smaller"
    return BenchOutcome(status, flavor, timeout, report=report)


def section(outcome: BenchOutcome) -> str:
    """The comment's bench section."""
    head = f"#### GPU bench ({code(outcome.flavor)}, timeout {cell(outcome.timeout)})"
    if outcome.status == "pending":
        return f"{head}\n\n⏳ running on HF Jobs; this comment is updated when it ends.\n"
    if outcome.status == "skipped":
        return f"{head}\n\n⏭️ not run: {cell(outcome.message or '')}\n"
    if outcome.status == "failed":
        lines = [head, "", f"❌ {cell(outcome.message or 'the bench failed')}"]
        if outcome.tail:
            log = "\n".join(outcome.tail).replace("```", "'''")
            lines += [
                "",
                "<details><summary>last log lines</summary>",
                "",
                "```text",
                log,
                "```",
                "",
                "</details>",
            ]
        return "\n".join(lines) + "\n"
    report = outcome.report or {}
    lines = [head, ""]
    rows = ["| candidate | ranks | LoRA params | vs probe | verdict |", "|---|---|---:|---:|---|"]
    for c in report.get("candidates", []):
        values = sorted(set((c.get("ranks") or {}).values())) or [c.get("r")]
        ranks = f"r={values[0]}" if len(values) == 1 else f"{values[0]}–{values[-1]}"
        verdict = "✅ pass" if c.get("verdict") == "pass" else "❌ fail"
        rows.append(
            f"| {code(c['name'])} | {cell(ranks)} | {c['lora_params']:,} | {c['param_ratio']:.0%} | {verdict} |"
        )
    best = report.get("best")
    if best:
        lines.append(
            f"✅ smallest passing: {code(best['candidate'])} — {best['lora_params']:,} LoRA parameters "
            f"({best['param_reduction']:.0%} fewer than the probe)"
        )
    else:
        lines.append("⚠️ no smaller configuration passed: keep the probe's rank, or raise the tolerance")
    return "\n".join([*lines, "", *rows]) + "\n"
