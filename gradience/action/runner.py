"""The GitHub Actions runner as the runtime sees it: its environment, the event that started the
workflow, and the workflow commands (masks, annotations, outputs, job summary).

Everything here reads or writes plain files and stdout, so the runtime behaves the same on a
runner, in a test with a runner-like environment, or on a laptop with the variables set by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gradience.errors import UsageError

#: Events whose payload carries a pull request the runtime can report on.
PR_EVENTS = ("pull_request", "pull_request_target")
#: GitHub rejects a job summary over 1 MiB per step; stay below it.
SUMMARY_LIMIT = 1024 * 1024 - 4096


@dataclass(frozen=True)
class PullRequest:
    """The pull request of a ``pull_request`` / ``pull_request_target`` event.

    ``head_sha`` comes from the payload, never from ``GITHUB_SHA``: on pull-request events
    the latter is the test merge commit, which is neither side of the comparison.
    """

    number: int
    head_sha: str
    base_sha: str
    head_repo: str
    base_repo: str
    html_url: str

    @property
    def from_fork(self) -> bool:
        return self.head_repo.lower() != self.base_repo.lower()

    @classmethod
    def from_json(cls, pr: Any, repository: str) -> PullRequest:
        """From the event payload's ``pull_request`` or the API's answer (the same shape)."""
        try:
            return cls(
                number=int(pr["number"]),
                head_sha=str(pr["head"]["sha"]),
                base_sha=str(pr["base"]["sha"]),
                head_repo=str((pr["head"].get("repo") or {}).get("full_name") or "(deleted fork)"),
                base_repo=str((pr["base"].get("repo") or {}).get("full_name") or repository),
                html_url=str(pr.get("html_url") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UsageError(
                "the event payload has no usable pull_request (number, head.sha, base.sha)"
            ) from None


@dataclass(frozen=True)
class Runner:
    """The variables a runner sets for every step (only those the runtime uses)."""

    event_name: str
    event: dict[str, Any]
    repository: str
    api_url: str
    server_url: str
    workspace: Path
    step_summary: Path | None
    output: Path | None
    temp: Path
    run_id: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runner:
        env = os.environ if env is None else env
        path = env.get("GITHUB_EVENT_PATH")
        if not path:
            raise UsageError("GITHUB_EVENT_PATH is not set: this command runs inside a GitHub Actions job")
        try:
            event = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read the event payload at {path}: {e}") from None
        if not isinstance(event, dict):
            raise UsageError(f"the event payload at {path} is not a JSON object")
        repository = env.get("GITHUB_REPOSITORY") or (event.get("repository") or {}).get("full_name")
        if not repository or "/" not in repository:
            raise UsageError("GITHUB_REPOSITORY is not set (expected owner/name)")
        workspace = Path(env.get("GITHUB_WORKSPACE") or os.getcwd())
        temp = Path(env.get("RUNNER_TEMP") or tempfile.gettempdir())
        return cls(
            event_name=env.get("GITHUB_EVENT_NAME") or _guess_event_name(event),
            event=event,
            repository=repository,
            api_url=(env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
            server_url=(env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
            workspace=workspace,
            step_summary=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
            output=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
            temp=temp,
            run_id=env.get("GITHUB_RUN_ID"),
        )

    @property
    def run_url(self) -> str | None:
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}" if self.run_id else None

    def pull_request(self) -> PullRequest:
        if self.event_name not in PR_EVENTS:
            raise UsageError(
                f"this runs on pull_request or pull_request_target events, not {self.event_name!r}"
            )
        return PullRequest.from_json(self.event.get("pull_request"), self.repository)


def _guess_event_name(event: dict[str, Any]) -> str:
    return "pull_request" if "pull_request" in event else "unknown"


# -- workflow commands ------------------------------------------------------------------------------


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


class Commands:
    """Workflow commands on ``out`` (stdout on a runner) and the files behind outputs/summary."""

    def __init__(self, runner: Runner | None, out: TextIO | None = None) -> None:
        self.runner = runner
        self.out = out or sys.stdout

    def mask(self, secret: str | None) -> None:
        """Ask the runner to redact ``secret`` from every later log line."""
        if secret:
            self._print(f"::add-mask::{escape_data(secret)}")

    def annotate(
        self, level: str, message: str, *, file: str | None = None, title: str | None = None
    ) -> None:
        props = []
        if file:
            props += [f"file={escape_property(file)}", "line=1"]
        if title:
            props.append(f"title={escape_property(title)}")
        head = f"::{level} {','.join(props)}" if props else f"::{level}"
        self._print(f"{head}::{escape_data(message)}")

    def group(self, title: str) -> None:
        self._print(f"::group::{escape_data(title)}")

    def endgroup(self) -> None:
        self._print("::endgroup::")

    def set_output(self, name: str, value: str) -> None:
        if not self.runner or not self.runner.output:
            return
        if "\n" in value or "\r" in value:
            delim = f"gradience_{secrets.token_hex(8)}"
            text = f"{name}<<{delim}\n{value}\n{delim}\n"
        else:
            text = f"{name}={value}\n"
        with self.runner.output.open("a", encoding="utf-8") as f:
            f.write(text)

    def summary(self, markdown: str) -> None:
        if not self.runner or not self.runner.step_summary:
            return
        if len(markdown.encode()) > SUMMARY_LIMIT:
            cut = markdown.encode()[:SUMMARY_LIMIT].decode("utf-8", errors="ignore")
            markdown = (
                cut.rsplit("\n", 1)[0] + "\n\n_(summary cut at GitHub's 1 MiB limit; see the report)_\n"
            )
        with self.runner.step_summary.open("a", encoding="utf-8") as f:
            f.write(markdown)

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
