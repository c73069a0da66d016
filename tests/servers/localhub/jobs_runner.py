"""Jobs that really run: one subprocess per job, its output kept as log lines, its stages tracked.

The Hub runs a job's command in a container built from its image. Here the command runs on this
machine, in the project's environment (the folder of the server's Python first on ``PATH``, so
``python`` is the venv's), in a fresh working folder, with only the job's environment and secrets
plus a few variables the Hub would set. The image name is recorded, never pulled.

Secrets reach the process and nothing else: they are kept apart from the recorded spec, never
rendered by the API, and any secret value a job prints is masked in the logs the server serves.

A scheduled job fires on its cron schedule (computed with APScheduler's cron trigger) from one
background thread, or at once through ``trigger``; each firing is an ordinary job.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .storage import utc_now

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
DEFAULT_TIMEOUT = 30 * 60  # the Hub's default job timeout
CANCEL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
MASK = "***"
# The shorthands the Hub accepts for a schedule, as cron expressions.
SCHEDULE_ALIASES = {
    "@annually": "0 0 1 1 *",
    "@yearly": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# A `uv` stand-in for jobs started with run_uv_job when uv is not installed: `uv run [opts] X args`
# runs X with this Python when X is a script (path or URL), or X itself when it is a command.
# Dependencies (--with) must already be importable: the job runs in the project's environment.
UV_SHIM = r"""import os, sys, urllib.request
args = sys.argv[1:]
if not args or args[0] != "run":
    sys.exit("local Hub uv stand-in: only `uv run` is supported")
args = args[1:]
while args and args[0].startswith("-"):
    option = args.pop(0)
    if option in ("--with", "--python", "-p", "--index-url", "--extra-index-url") and args:
        args.pop(0)
if not args:
    sys.exit("local Hub uv stand-in: `uv run` needs a script or a command")
target, rest = args[0], args[1:]
if target.startswith(("http://", "https://")):
    host = target.split("/")[2].split(":")[0]
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"local Hub uv stand-in: refusing to fetch {target} (loopback only)")
    with urllib.request.urlopen(target, timeout=30) as response:
        code = response.read()
    with open("script.py", "wb") as f:
        f.write(code)
    target = "script.py"
if target.endswith(".py"):
    os.execv(sys.executable, [sys.executable, target, *rest])
os.execvp(target, [target, *rest])
"""


def new_id() -> str:
    """24 hex characters, the shape of the Hub's job ids."""
    return uuid.uuid4().hex[:24]


def cron_expression(schedule: str) -> str:
    return SCHEDULE_ALIASES.get(schedule.strip(), schedule.strip())


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that the schedule fires (ValueError if invalid)."""
    from apscheduler.triggers.cron import CronTrigger  # lazy: only scheduled jobs need it

    trigger = CronTrigger.from_crontab(cron_expression(schedule), timezone=UTC)
    fire = trigger.get_next_fire_time(None, after + timedelta(seconds=1))
    if fire is None:
        raise ValueError(f"schedule {schedule!r} never fires")
    return fire.astimezone(UTC)


@dataclass
class LogLine:
    text: str
    at: datetime


@dataclass
class Job:
    """One run. ``spec`` is what the client sent, secrets removed; ``secrets`` holds their values."""

    id: str
    namespace: str
    owner: dict[str, str]
    initiator: dict[str, Any]
    spec: dict[str, Any]
    secrets: dict[str, str]
    labels: dict[str, str]
    seq: int
    created_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stage: str = "SCHEDULING"
    message: str | None = None
    exit_code: int | None = None
    logs: list[LogLine] = field(default_factory=list)
    pid: int | None = None
    cancel_requested: bool = False
    scheduled_job_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.stage in TERMINAL

    @property
    def timeout(self) -> float:
        value = self.spec.get("timeoutSeconds")
        return float(value) if value else float(DEFAULT_TIMEOUT)

    def mask(self, text: str) -> str:
        for value in self.secrets.values():
            if value:
                text = text.replace(value, MASK)
        return text


@dataclass
class ScheduledJob:
    id: str
    namespace: str
    owner: dict[str, str]
    spec: dict[str, Any]
    secrets: dict[str, str]
    schedule: str
    suspend: bool
    concurrency: bool
    created_at: datetime = field(default_factory=utc_now)
    next_run_at: datetime | None = None
    last_job: tuple[str, datetime] | None = None
    base_url: str = ""


class Jobs:
    """Every job and scheduled job of the server, their processes and one scheduler thread."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.jobs: dict[str, Job] = {}
        self.scheduled: dict[str, ScheduledJob] = {}
        self.changed = threading.Condition()  # notified on every new log line and stage change
        self._seq = 0
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._scheduler: threading.Thread | None = None
        self._stopping = False
        atexit.register(self.stop_all)

    # -- running --------------------------------------------------------------------------------

    def start(
        self,
        *,
        namespace: str,
        owner: dict[str, str],
        initiator: dict[str, Any],
        spec: dict[str, Any],
        secrets: dict[str, str],
        base_url: str,
        scheduled_job_id: str | None = None,
        scheduling_delay: float = 0.0,
    ) -> Job:
        with self.changed:
            self._seq += 1
            job = Job(
                id=new_id(),
                namespace=namespace,
                owner=owner,
                initiator=initiator,
                spec=spec,
                secrets=dict(secrets),
                labels=dict(spec.get("labels") or {}),
                seq=self._seq,
                scheduled_job_id=scheduled_job_id,
            )
            self.jobs[job.id] = job
        thread = threading.Thread(
            target=self._run, args=(job, base_url, scheduling_delay), name=f"job-{job.id}", daemon=True
        )
        thread.start()
        return job

    def _environment(self, job: Job, folder: Path, base_url: str) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": os.pathsep.join(
                [str(folder / ".bin"), venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]
            ),
            "HOME": str(folder),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "HF_ENDPOINT": base_url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "JOB_ID": job.id,
        }
        for key, value in (job.spec.get("environment") or {}).items():
            env[str(key)] = str(value)
        for key, value in job.secrets.items():
            env[str(key)] = value
        return env

    def _log(self, job: Job, text: str) -> None:
        with self.changed:
            job.logs.append(LogLine(text, utc_now()))
            self.changed.notify_all()

    def _finish(self, job: Job, stage: str, message: str | None) -> None:
        with self.changed:
            if job.finished:
                return
            job.stage, job.message, job.finished_at = stage, message, utc_now()
            self.changed.notify_all()

    def _run(self, job: Job, base_url: str, scheduling_delay: float) -> None:
        folder = self.work_dir / job.id
        (folder / ".bin").mkdir(parents=True, exist_ok=True)
        # Always the stand-in, even where uv is installed: a real `uv run` would resolve packages
        # from the network, and jobs here run in the project's environment.
        shim = folder / ".bin" / "uv"
        shim.write_text(f"#!{sys.executable}\n{UV_SHIM}")
        shim.chmod(0o755)
        command = [str(c) for c in (job.spec.get("command") or [])] + [
            str(a) for a in (job.spec.get("arguments") or [])
        ]
        with self.changed:
            # A test may hold jobs in SCHEDULING (the jobs_scheduling_delay_ms setting); cancel wakes it.
            self.changed.wait_for(lambda: job.cancel_requested, timeout=scheduling_delay)
            if job.cancel_requested:
                job.stage, job.finished_at, job.message = "CANCELED", utc_now(), "Job canceled"
                self.changed.notify_all()
                return
        try:
            process = subprocess.Popen(
                command,
                cwd=folder,
                env=self._environment(job, folder, base_url),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel and timeout kill the tree
            )
        except OSError as e:
            self._log(job, f"Failed to start the job's command: {e.strerror or e}")
            self._finish(job, "ERROR", f"Failed to start the command {command[:1]}: {e.strerror or e}")
            return
        with self.changed:
            self._processes[job.id] = process
            job.pid = process.pid
            job.stage, job.started_at = "RUNNING", utc_now()
            job.logs.append(LogLine(f"===== Job started at {job.started_at.isoformat()} =====", utc_now()))
            self.changed.notify_all()
            cancelled_meanwhile = job.cancel_requested
        if cancelled_meanwhile:  # cancel came between the check above and the process existing
            threading.Thread(target=self._kill, args=(process,), daemon=True).start()
        reader = threading.Thread(target=self._read_output, args=(job, process), daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill(process)
        # Like a container torn down: nothing the job started outlives it (and holds its output open).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        reader.join(timeout=10)
        with self.changed:
            self._processes.pop(job.id, None)
            job.exit_code = process.returncode
        if job.cancel_requested:
            self._finish(job, "CANCELED", "Job canceled")
        elif timed_out:
            self._finish(job, "ERROR", f"Job timed out after {job.timeout:g} seconds")
        elif process.returncode == 0:
            self._finish(job, "COMPLETED", None)
        else:
            self._finish(job, "ERROR", f"Job failed with exit code {process.returncode}")

    def _read_output(self, job: Job, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self._log(job, raw.decode("utf-8", "replace").rstrip("\r\n"))
        process.stdout.close()

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the job's process group, SIGKILL after a grace period."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=CANCEL_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def cancel(self, job: Job) -> None:
        with self.changed:
            if job.finished:
                return
            job.cancel_requested = True
            self.changed.notify_all()  # wakes a job held in SCHEDULING
            process = self._processes.get(job.id)
        if process is not None:
            threading.Thread(target=self._kill, args=(process,), daemon=True).start()

    def stop_all(self) -> None:
        """At server exit: no job outlives the server."""
        self._stopping = True
        with self.changed:
            processes = list(self._processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    # -- reading --------------------------------------------------------------------------------

    def lines(self, job: Job, start: int) -> tuple[list[LogLine], bool]:
        """Log lines from index ``start``, and whether the job had finished when they were read."""
        with self.changed:
            return list(job.logs[start:]), job.finished

    def wait_change(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def metrics(self, job: Job) -> dict[str, Any] | None:
        """A sample in the Hub's shape for a running job's process tree, or None if not running."""
        pid = job.pid
        if job.stage != "RUNNING" or pid is None:
            return None
        try:
            import psutil  # lazy: only metrics need it
        except ImportError:
            return _metrics_from_proc(pid)
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
            cpu = sum(p.cpu_percent(interval=0.1) for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return None
        return {
            "cpu_usage_pct": round(cpu, 1),
            "cpu_millicores": int(cpu * 10),
            "memory_used_bytes": rss,
            "memory_total_bytes": psutil.virtual_memory().total,
            "rx_bps": 0,
            "tx_bps": 0,
            "gpus": {},
            "replica": job.id[-5:],
        }

    # -- schedules ------------------------------------------------------------------------------

    def ensure_scheduler(self, fire: Any) -> None:
        """Start the thread that fires due scheduled jobs (``fire(scheduled_job)`` starts one)."""
        with self.changed:
            if self._scheduler is not None:
                return
            self._scheduler = threading.Thread(target=self._schedule_loop, args=(fire,), daemon=True)
        self._scheduler.start()

    def _schedule_loop(self, fire: Any) -> None:
        while not self._stopping:
            now = utc_now()
            with self.changed:
                due = [
                    s
                    for s in self.scheduled.values()
                    if not s.suspend and s.next_run_at is not None and s.next_run_at <= now
                ]
            for s in due:
                s.next_run_at = next_run(s.schedule, now)
                with contextlib.suppress(Exception):  # a firing that fails must not stop the others
                    fire(s)
            time.sleep(0.5)


def _metrics_from_proc(pid: int) -> dict[str, Any] | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return {
        "cpu_usage_pct": 0,
        "cpu_millicores": 0,
        "memory_used_bytes": pages * os.sysconf("SC_PAGE_SIZE"),
        "memory_total_bytes": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
        "rx_bps": 0,
        "tx_bps": 0,
        "gpus": {},
        "replica": str(pid),
    }
