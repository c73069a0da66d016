"""``gradience crawl status``: last runs, next scheduled run, counts and failures.

Read straight from the two SQLite files (the crawl state and the scheduler's job store), so
the status works while a crawl or the scheduler is running, and never unpickles the job store
(only its ``next_run_time`` column is read).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JOBS_DB = "jobs.sqlite"


def crawl_status(out: Path, *, jobs_db: Path | None = None) -> dict[str, Any]:
    from gradience.ecosystem.state import CrawlState
    from gradience.errors import UsageError

    state_path = out / ".crawl" / "state.sqlite"
    if not state_path.is_file():
        raise UsageError(f"no crawl state in {out}: nothing has been crawled into it yet", param="out")
    state = CrawlState(state_path)
    try:
        runs = state.runs(10)
        counts = state.counts()
        failures = [
            {
                "repo_id": r["repo_id"],
                "subfolder": r["subfolder"],
                "detail": r["status_detail"],
                "attempts": r["attempts"],
            }
            for r in state.db.execute(
                "SELECT repo_id, subfolder, status_detail, attempts FROM candidates"
                " WHERE status = 'transient_error' ORDER BY repo_id, subfolder LIMIT 20"
            )
        ]
    finally:
        state.close()
    jobs_path = jobs_db or out / ".crawl" / JOBS_DB
    jobs = _jobs(jobs_path)
    return {
        "last_run": runs[0] if runs else None,
        "runs": runs,
        "next_run": min((j["next_run_time"] for j in jobs if j["next_run_time"]), default=None),
        "jobs": jobs,
        "counts": counts,
        "failures": failures,
        "scheduler_events": _events(jobs_path),
    }


def _events(path: Path, limit: int = 10) -> list[dict[str, Any]]:
    """The scheduler's last events (started, finished, error, skipped, missed), newest first."""
    if not path.is_file():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT at, job_id, event, detail FROM scheduler_events ORDER BY rowid DESC LIMIT ?", (limit,)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return [{"at": a, "job_id": j, "event": e, "detail": d} for a, j, e, d in rows]


def _jobs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, next_run_time FROM apscheduler_jobs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return [
        {
            "id": jid,
            "next_run_time": datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None,
        }
        for jid, t in rows
    ]


def format_status(s: dict[str, Any]) -> str:
    last = s["last_run"]
    lines = []
    if last is None:
        lines.append("last run: none")
    else:
        state = (
            "running or killed"
            if not last["finished_at"]
            else ("failed: " + last["error"])
            if last["error"]
            else "ok"
        )
        lines.append(
            f"last run: #{last['id']} started {last['started_at']}, finished {last['finished_at'] or '–'} ({state});"
            f" {last['audited'] or 0} audited, {last['failed'] or 0} transient failures"
        )
    lines.append(f"next run: {s['next_run'] or 'not scheduled'}")
    lines.append("counts: " + (", ".join(f"{k} {v}" for k, v in s["counts"].items()) or "none"))
    for e in s.get("scheduler_events", [])[:3]:
        lines.append(f"  scheduler: {e['at']} {e['event']}" + (f" ({e['detail']})" if e["detail"] else ""))
    for f in s["failures"][:5]:
        lines.append(
            f"  failing: {f['repo_id']}{'/' + f['subfolder'] if f['subfolder'] else ''}: {f['detail']}"
        )
    return "\n".join(lines)
