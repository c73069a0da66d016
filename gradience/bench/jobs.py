"""``gradience bench --on hf-jobs``: the same bench as an HF Job, watched from here.

The job runs :mod:`gradience.bench.remote` in an image that holds the project and torch
(the Dockerfile's ``bench`` target). The token travels only as the ``HF_TOKEN`` job secret;
the settings go in a plain environment variable. Jobs carry labels (a bench key, repo, PR,
commit) so a new run cancels the superseded ones with the same key. A timeout is always
set, and the watcher gives up a little after it: nothing waits forever. Ctrl-C cancels the
remote job before it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gradience.bench.config import BenchConfig
from gradience.bench.remote import CONFIG_ENV, MARKER
from gradience.errors import HubAccessError, HubError, UsageError

DEFAULT_IMAGE = "ghcr.io/gradience-dev/gradience-bench:latest"
KEY_LABEL = "gradience-bench"
ACTIVE = ("SCHEDULING", "RUNNING")
GRACE_S = 120.0  # how long past the job's own timeout the watcher waits for its end
TAIL = 20


class BenchJobError(HubError):
    """The remote bench failed, timed out or was cancelled (``stage``, last log lines)."""

    code = "job_failed"


def parse_timeout(text: str | int | float) -> int:
    """Seconds from ``90``, ``90s``, ``45m``, ``2h`` or ``1d``."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
        if not m:
            raise UsageError(f"expected a timeout like 45m, 2h or 600, got {text!r}", param="timeout")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise UsageError(f"the timeout must be positive, got {text!r}", param="timeout")
    return int(seconds)


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)[:100]


def job_labels(config: BenchConfig, repo: str | None, pr: str | None, commit: str | None) -> dict[str, str]:
    """The bench key names what a run is for (settings, repo, PR), not which commit: a newer
    commit's run supersedes an older one's."""
    what = json.dumps({"config": config.public(), "repo": repo, "pr": pr}, sort_keys=True)
    labels = {KEY_LABEL: hashlib.sha256(what.encode()).hexdigest()[:16]}
    for name, value in (("repo", repo), ("pr", pr), ("commit", commit)):
        if value:
            labels[name] = _label(value)
    return labels


def run_on_jobs(
    config: BenchConfig,
    *,
    token: str | None = None,
    flavor: str = "a10g-small",
    timeout: str | int = "45m",
    namespace: str | None = None,
    image: str | None = None,
    repo: str | None = None,
    pr: str | None = None,
    commit: str | None = None,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Submit the bench as an HF Job, stream its progress and return its report.

    ``repo``, ``pr`` and ``commit`` default to GitHub Actions' ``GITHUB_REPOSITORY``,
    ``GRADIENCE_PR`` and ``GITHUB_SHA``.

    Raises:
        HubAccessError: no token (Jobs always need one).
        BenchJobError: the job failed, timed out, was cancelled, or ended without a report;
            the message carries its last log lines.
    """
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubAccessError("running a bench on HF Jobs needs a Hub token with the jobs permission")
    seconds = parse_timeout(timeout)
    repo = repo or os.environ.get("GITHUB_REPOSITORY")
    pr = pr or os.environ.get("GRADIENCE_PR")
    commit = commit or os.environ.get("GITHUB_SHA")
    labels = job_labels(config, repo, pr, commit)
    say = log or (lambda line: None if quiet else print(line, file=sys.stderr, flush=True))
    api = HfApi(token=token)

    for old in api.list_jobs(labels={KEY_LABEL: labels[KEY_LABEL]}, namespace=namespace):
        if old.status.stage in ACTIVE:
            api.cancel_job(job_id=old.id, namespace=namespace)
            say(f"bench: cancelled superseded job {old.id}")

    job = api.run_job(
        image=image or os.environ.get("GRADIENCE_BENCH_IMAGE", DEFAULT_IMAGE),
        command=["python", "-m", "gradience.bench.remote"],
        env={CONFIG_ENV: json.dumps(config.public(), sort_keys=True), "PYTHONUNBUFFERED": "1"},
        secrets={"HF_TOKEN": token},
        flavor=flavor,
        timeout=seconds,
        labels=labels,
        namespace=namespace,
    )
    ns = namespace or (job.owner.name if job.owner else None)
    try:  # from here on, Ctrl-C cancels the job (even while this line is printed)
        where = f" · {job.url}" if getattr(job, "url", None) else ""
        say(f"bench: job {job.id} on {flavor} (timeout {seconds} s){where}")
        report, tail = _follow(api, job.id, ns, seconds + GRACE_S, token, say)
    except KeyboardInterrupt:
        api.cancel_job(job_id=job.id, namespace=ns)
        say(f"bench: cancelled job {job.id}")
        raise
    stage, message = _final_stage(api, job.id, ns)
    if stage == "COMPLETED" and report is not None:
        return report
    what = {
        "ERROR": "failed",
        "CANCELED": "was cancelled",
        "DELETED": "was deleted",
    }.get(stage, f"ended in stage {stage}")
    if stage == "COMPLETED":
        what = "completed without a report"
    if message and "timed out" in message.lower():
        what = "timed out"
    last = "\n".join(tail) or "(no log lines)"
    raise BenchJobError(
        f"HF Job {job.id} {what}{': ' + message if message else ''}; last log lines:\n{last}",
        stage=stage,
        job_id=job.id,
    )


def _follow(
    api: Any, job_id: str, namespace: str | None, deadline_s: float, token: str, say: Callable[[str], None]
) -> tuple[dict[str, Any] | None, list[str]]:
    """Read the job's logs until they end or the deadline passes (then cancel the job)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        try:
            for line in api.fetch_job_logs(job_id=job_id, namespace=namespace, follow=True):
                lines.put(line)
        except Exception as e:  # the stream broke: the stage check below decides
            lines.put(f"(log stream ended: {e.__class__.__name__})")
        finally:
            lines.put(None)

    threading.Thread(target=reader, daemon=True, name="bench-job-logs").start()
    deadline = time.monotonic() + deadline_s
    tail: deque[str] = deque(maxlen=TAIL)
    report = None
    while True:
        try:
            line = lines.get(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() >= deadline:
                api.cancel_job(job_id=job_id, namespace=namespace)
                tail.append("(gave up waiting past the job's timeout; cancelled it)")
                return None, list(tail)
            continue
        if line is None:
            return report, list(tail)
        line = line.rstrip("\n").replace(token, "***")
        if line.startswith(MARKER):
            try:
                report = json.loads(line[len(MARKER) :])
            except json.JSONDecodeError:
                tail.append("(a report line that is not valid JSON)")
            continue
        tail.append(line)
        if line.startswith("bench: "):
            say(line)


def _final_stage(api: Any, job_id: str, namespace: str | None) -> tuple[str, str | None]:
    """The job's last stage; logs can close a moment before the stage is final."""
    for _ in range(50):
        status = api.inspect_job(job_id=job_id, namespace=namespace).status
        if status.stage not in ACTIVE:
            return str(status.stage), status.message
        time.sleep(0.2)
    return str(status.stage), status.message
