"""The ecosystem crawl on a schedule: APScheduler 3.x, a persistent SQLite job store, cron.

    python -m bot.scheduler --out ecosystem/ --cron "0 */6 * * *" --publish me/lora-audits

runs the incremental crawl (and publish) every six hours. Three settings carry the behaviour a
long-lived crawler needs:

- ``max_instances=1``: a crawl still running when the next one is due makes that one skip
  (recorded as ``skipped``), never two crawls writing one state at once;
- ``coalesce=True`` with a generous ``misfire_grace_time``: after downtime, the missed runs
  collapse into one catch-up run as soon as the process is back;
- the job store is SQLite next to the crawl state, and the job has a stable id with
  ``replace_existing=True``, so a restart neither loses nor duplicates the schedule.

Every scheduler event worth knowing (run, error, skipped overlap, missed run) is appended to
``scheduler_events`` in the same SQLite file; ``gradience crawl status`` reads it with the crawl
state. APScheduler 4 is a pre-release with another API; the ``bot`` extra pins ``<4``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JOB_ID = "ecosystem-crawl"
CRAWL_JOB = "bot.scheduler:crawl_job"
MISFIRE_GRACE_S = 24 * 3600
EVENTS_TABLE = "CREATE TABLE IF NOT EXISTS scheduler_events (at TEXT NOT NULL, job_id TEXT, event TEXT NOT NULL, detail TEXT)"


def jobs_db_path(out: Path) -> Path:
    return out / ".crawl" / "jobs.sqlite"


def crawl_job(config: dict[str, Any]) -> dict[str, Any]:
    """One scheduled run: the incremental crawl, then publish when a repo is configured.

    ``config`` holds plain values (it is pickled into the job store): ``out``, and optionally
    ``passes``, ``concurrency``, ``publish``, ``token_env`` (the *name* of the environment
    variable holding the token, so no secret is written to the job store).
    """
    from gradience.ecosystem.crawl import CrawlConfig, run_crawl

    token = os.environ.get(config["token_env"]) if config.get("token_env") else None
    crawl = CrawlConfig(
        out=Path(config["out"]),
        token=token,
        passes=list(config.get("passes") or ["all"]),
        concurrency=int(config.get("concurrency") or 8),
    )
    summary = run_crawl(crawl, progress=False)
    if config.get("publish"):
        from gradience.ecosystem.publish import publish

        summary["published"] = publish(crawl.out, config["publish"], token=token)
    return summary


class EventLog:
    """Appends scheduler events to ``scheduler_events`` (one short transaction each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute(EVENTS_TABLE)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, job_id: str | None, event: str, detail: str | None = None) -> None:
        with self._lock, self._connect() as con:
            con.execute(
                "INSERT INTO scheduler_events (at, job_id, event, detail) VALUES (?, ?, ?, ?)",
                (datetime.now(UTC).isoformat(timespec="seconds"), job_id, event, detail),
            )

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            sql = "SELECT * FROM scheduler_events" + (" WHERE event = ?" if event else "") + " ORDER BY rowid"
            return [dict(r) for r in con.execute(sql, (event,) if event else ())]


def build_scheduler(jobs_db: Path, *, blocking: bool = False) -> Any:
    """A scheduler on the SQLite job store with the no-overlap / catch-up defaults."""
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        EVENT_JOB_SUBMITTED,
    )
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    jobs_db.parent.mkdir(parents=True, exist_ok=True)
    cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = cls(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{jobs_db}")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
        timezone=UTC,
    )
    log = EventLog(jobs_db)
    names = {
        EVENT_JOB_SUBMITTED: "started",
        EVENT_JOB_EXECUTED: "finished",
        EVENT_JOB_ERROR: "error",
        EVENT_JOB_MAX_INSTANCES: "skipped",
        EVENT_JOB_MISSED: "missed",
    }

    def listen(event: Any) -> None:
        name = names.get(event.code)
        if name is None:
            return
        detail = None
        if name == "error":
            detail = f"{type(event.exception).__name__}: {event.exception}"[:500]
        elif name == "skipped":
            detail = "the previous run is still going (max one instance)"
        elif name == "finished" and isinstance(event.retval, dict):
            detail = f"audited {event.retval.get('audited')}, statuses {event.retval.get('statuses')}"[:500]
        log.add(event.job_id, name, detail)
        print(
            f"[scheduler] {event.job_id}: {name}" + (f" ({detail})" if detail else ""),
            file=sys.stderr,
            flush=True,
        )

    scheduler.add_listener(listen, sum(names))
    scheduler.event_log = log
    return scheduler


def schedule_crawl(
    scheduler: Any,
    cron: str,
    config: dict[str, Any],
    *,
    func: str = CRAWL_JOB,
    job_id: str = JOB_ID,
    **kw: Any,
) -> Any:
    """Add (or replace) the crawl job on a crontab schedule (``"0 */6 * * *"``, UTC)."""
    from apscheduler.triggers.cron import CronTrigger

    return scheduler.add_job(
        func,
        CronTrigger.from_crontab(cron, timezone=UTC),
        id=job_id,
        name="ecosystem crawl",
        kwargs={"config": config},
        replace_existing=True,
        **kw,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the ecosystem crawl (and publish) on a cron schedule.")
    parser.add_argument(
        "--out", type=Path, required=True, help="dataset folder (the crawl state lives inside)"
    )
    parser.add_argument(
        "--cron", default="0 */6 * * *", help="crontab schedule in UTC (default every 6 hours)"
    )
    parser.add_argument(
        "--publish", metavar="REPO_ID", help="publish to this Hub dataset repo after each crawl"
    )
    parser.add_argument("--passes", default="all", help="discovery passes (default all)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the Hub token")
    args = parser.parse_args(argv)
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(args.cron)
    except ValueError as e:
        print(f"bot.scheduler: error: invalid --cron {args.cron!r}: {e}", file=sys.stderr)
        return 2
    scheduler = build_scheduler(jobs_db_path(args.out), blocking=True)
    config = {
        "out": str(args.out),
        "passes": [p for p in args.passes.split(",") if p],
        "concurrency": args.concurrency,
        "publish": args.publish,
        "token_env": args.token_env,
    }
    schedule_crawl(scheduler, args.cron, config)
    print(f"[scheduler] crawl {args.cron} (UTC); state in {args.out / '.crawl'}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        scheduler.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
