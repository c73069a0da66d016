"""The crawl scheduler (bot/scheduler.py): no overlapping runs, one catch-up run after downtime,
a schedule that survives restarts, and `gradience crawl status` reading it back."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("apscheduler")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bot` is a top-level folder of the repo, not an installed package

from bot import scheduler as S  # noqa: E402

# Jobs are referenced by "module:function" text (the store pickles references, not code), so the
# test's own jobs live at module level here and talk to the test through files.
_RELEASE = threading.Event()


def counting_job(config: dict) -> dict:
    """Records one run, then waits until the test releases it (to hold the single instance)."""
    folder = Path(config["dir"])
    n = len(list(folder.glob("run-*")))
    (folder / f"run-{n}-{time.monotonic_ns()}").write_text("ran")
    if config.get("block"):
        _RELEASE.wait(60)
    return {"audited": 0, "statuses": {}}


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_a_running_crawl_makes_the_next_one_skip_not_overlap(tmp_path):
    _RELEASE.clear()
    sched = S.build_scheduler(tmp_path / "jobs.sqlite")
    job = S.schedule_crawl(
        sched, "0 0 1 1 *", {"dir": str(tmp_path), "block": True}, func=f"{__name__}:counting_job"
    )
    sched.start()
    try:
        sched.modify_job(job.id, next_run_time=datetime.now(UTC))
        _wait_for(lambda: len(list(tmp_path.glob("run-*"))) == 1, "the first run started")
        # Due again while the first is still running: it must be skipped, not started.
        sched.modify_job(job.id, next_run_time=datetime.now(UTC))
        _wait_for(lambda: sched.event_log.events("skipped"), "the overlapping run was skipped")
        assert len(list(tmp_path.glob("run-*"))) == 1
        _RELEASE.set()
        _wait_for(lambda: sched.event_log.events("finished"), "the first run finished")
    finally:
        _RELEASE.set()
        sched.shutdown(wait=True)
    events = [e["event"] for e in S.EventLog(tmp_path / "jobs.sqlite").events()]
    assert events.count("started") == 1 and events.count("skipped") == 1 and events.count("finished") == 1


def _pretend_downtime(db: Path, next_run: datetime) -> None:
    """Rewrite the stored job as a process that died before ``next_run`` would leave it."""
    con = sqlite3.connect(db)
    try:
        (blob,) = con.execute("SELECT job_state FROM apscheduler_jobs WHERE id = ?", (S.JOB_ID,)).fetchone()
        state = pickle.loads(blob)  # our own job store, written by this test
        state["next_run_time"] = next_run
        con.execute(
            "UPDATE apscheduler_jobs SET next_run_time = ?, job_state = ? WHERE id = ?",
            (next_run.timestamp(), pickle.dumps(state, pickle.HIGHEST_PROTOCOL), S.JOB_ID),
        )
        con.commit()
    finally:
        con.close()


def test_missed_runs_after_downtime_coalesce_into_one_catch_up_run(tmp_path):
    db = tmp_path / "jobs.sqlite"
    config = {"dir": str(tmp_path)}
    # An hourly crawl whose last due time was 5 minutes ago: the next regular run is ~55 min away,
    # so any run during this test is the catch-up.
    last_due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    first = S.build_scheduler(db)
    first.start(paused=True)
    S.schedule_crawl(first, f"{last_due.minute} * * * *", config, func=f"{__name__}:counting_job")
    first.shutdown(wait=True)
    # The process was down for three due times (2 h ago, 1 h ago, 5 min ago).
    _pretend_downtime(db, last_due - timedelta(hours=2))
    assert list(tmp_path.glob("run-*")) == []

    second = S.build_scheduler(db)  # the job comes back from the SQLite store, not from this code
    second.start()
    try:
        _wait_for(lambda: second.event_log.events("finished"), "the catch-up run finished")
        job = second.get_job(S.JOB_ID)
        assert job is not None and job.next_run_time == last_due + timedelta(hours=1)
    finally:
        second.shutdown(wait=True)
    assert len(list(tmp_path.glob("run-*"))) == 1  # three missed runs, one catch-up
    assert [e["event"] for e in S.EventLog(db).events()].count("started") == 1


def test_restarting_keeps_one_job_and_status_reports_the_next_run(tmp_path):
    from gradience.ecosystem.state import CrawlState

    out = tmp_path / "eco"
    db = S.jobs_db_path(out)
    for _ in range(2):  # two process starts with the same schedule: still one job
        sched = S.build_scheduler(db)
        sched.start(paused=True)
        S.schedule_crawl(sched, "30 */6 * * *", {"out": str(out)})
        sched.shutdown(wait=True)
    state = CrawlState(out / ".crawl" / "state.sqlite")
    run = state.start_run(["all"], None)
    state.finish_run(run, discovered=3, audited=2, failed=1)
    state.close()

    env = dict(os.environ)
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "status", "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    status = json.loads(p.stdout)
    assert [j["id"] for j in status["jobs"]] == [S.JOB_ID]
    nxt = datetime.fromisoformat(status["next_run"])
    assert nxt > datetime.now(UTC) and nxt.minute == 30 and nxt.hour % 6 == 0
    assert status["last_run"]["audited"] == 2 and status["last_run"]["failed"] == 1
    text = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "status", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert text.returncode == 0 and "next run: " + status["next_run"] in text.stdout


def test_status_without_a_crawl_is_a_one_line_error(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "status", "--out", str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no crawl state" in p.stderr
