"""The bot's memory, in SQLite (WAL): a restart neither loses nor repeats work.

A delivery is written before the receiver answers 202, so an accepted delivery survives a
crash; a job found ``running`` at start-up was interrupted and runs again. Work is
deduplicated twice: by the delivery (its id, or the hash of its body when the sender gives
none — a replayed delivery is byte-identical) and by what it asks for (``work_key``: repo +
kind + head commit), so two deliveries about one push cause one action.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Job", "State"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY, received_at REAL NOT NULL, kind TEXT NOT NULL, repo TEXT NOT NULL,
    work_key TEXT, payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (status, next_at);
CREATE TABLE IF NOT EXISTS work (work_key TEXT PRIMARY KEY, done_at REAL NOT NULL, outcome TEXT);
CREATE TABLE IF NOT EXISTS prs (
    repo TEXT PRIMARY KEY, num INTEGER, state TEXT NOT NULL, section TEXT, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS comments (
    repo TEXT NOT NULL, pr INTEGER NOT NULL, comment_id TEXT NOT NULL, head TEXT, body_hash TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (repo, pr)
);
CREATE TABLE IF NOT EXISTS actions (repo TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Job:
    """One queued delivery."""

    key: str
    kind: str
    repo: str
    work_key: str | None
    payload: dict[str, Any]
    attempts: int


class State:
    """Thread-safe access to the bot's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # jobs a crash interrupted run again
        self._db.execute("UPDATE deliveries SET status='queued' WHERE status='running'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the queue ---------------------------------------------------------------------------

    def enqueue(self, key: str, kind: str, repo: str, work_key: str | None, payload: dict[str, Any]) -> bool:
        """Store a delivery; False when this delivery was seen before (nothing is queued)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO deliveries (key, received_at, kind, repo, work_key, payload, status, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                (key, now, kind, repo, work_key, json.dumps(payload), now),
            )
            return cur.rowcount == 1

    def next_job(self) -> Job | None:
        """Claim the oldest job that is due (marks it running)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT key, kind, repo, work_key, payload, attempts FROM deliveries "
                "WHERE status='queued' AND next_at <= ? ORDER BY received_at LIMIT 1",
                (time.time(),),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE deliveries SET status='running' WHERE key=?", (row[0],))
        return Job(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])

    def finish(self, job: Job, status: str, detail: str = "") -> None:
        """``done``, ``skipped`` or ``failed``; a done job's work key is remembered."""
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET status=?, detail=? WHERE key=?", (status, detail[:500], job.key)
            )
            if status == "done" and job.work_key:
                db.execute(
                    "INSERT OR REPLACE INTO work (work_key, done_at, outcome) VALUES (?, ?, ?)",
                    (job.work_key, time.time(), detail[:200]),
                )

    def retry_later(self, job: Job, delay: float, detail: str, *, count: bool = True) -> None:
        """Back to the queue after ``delay`` seconds (a 429 does not count as an attempt)."""
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET status='queued', next_at=?, attempts=attempts+?, detail=? WHERE key=?",
                (time.time() + delay, 1 if count else 0, detail[:500], job.key),
            )

    def work_done(self, work_key: str | None) -> bool:
        if not work_key:
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM work WHERE work_key=?", (work_key,)).fetchone() is not None

    def pending(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued','running')"
            ).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()
        return {s: n for s, n in rows}

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, kind, repo, status, attempts, detail FROM deliveries ORDER BY received_at"
            ).fetchall()
        return [
            dict(zip(("key", "kind", "repo", "status", "attempts", "detail"), r, strict=True)) for r in rows
        ]

    # -- rate limits -------------------------------------------------------------------------

    def wait_for_slot(self, repo: str, repo_interval: float, per_minute: int) -> float:
        """Seconds until an action on ``repo`` respects both limits (0: go now)."""
        now = time.time()
        with self._lock:
            last = self._db.execute("SELECT max(at) FROM actions WHERE repo=?", (repo,)).fetchone()[0]
            recent = self._db.execute(
                "SELECT at FROM actions WHERE at > ? ORDER BY at", (now - 60,)
            ).fetchall()
        waits = [0.0]
        if last is not None:
            waits.append(last + repo_interval - now)
        if len(recent) >= per_minute:
            waits.append(recent[len(recent) - per_minute][0] + 60 - now)
        return max(waits)

    def record_action(self, repo: str) -> None:
        with self._tx() as db:
            now = time.time()
            db.execute("INSERT INTO actions (repo, at) VALUES (?, ?)", (repo, now))
            db.execute("DELETE FROM actions WHERE at < ?", (now - 3600,))

    # -- what the bot has on the Hub ----------------------------------------------------------

    def pr(self, repo: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT num, state, section FROM prs WHERE repo=?", (repo,)).fetchone()
        return None if row is None else {"num": row[0], "state": row[1], "section": row[2]}

    def set_pr(self, repo: str, num: int | None, state: str, section: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO prs (repo, num, state, section, updated_at) VALUES (?, ?, ?, ?, ?)",
                (repo, num, state, section, time.time()),
            )

    def comment(self, repo: str, pr: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT comment_id, head, body_hash FROM comments WHERE repo=? AND pr=?", (repo, pr)
            ).fetchone()
        return None if row is None else {"id": row[0], "head": row[1], "body_hash": row[2]}

    def set_comment(self, repo: str, pr: int, comment_id: str, head: str | None, body_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO comments (repo, pr, comment_id, head, body_hash, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (repo, pr, comment_id, head, body_hash, time.time()),
            )
