"""The crawl's memory: one SQLite row per (repo, subfolder), written one transaction per result.

SQLite in WAL mode because a crawl must survive ``kill -9`` at any instant: a result is either
committed or not there, never half-written, and the next run picks up exactly the candidates
whose audit is missing, stale (the repo's commit moved) or failed transiently. The dataset is
always rebuilt from this table, so a killed-and-resumed crawl and a clean one publish the same
rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradience.ecosystem.discovery import Candidate

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    repo_id TEXT NOT NULL,
    subfolder TEXT NOT NULL,
    sha TEXT,
    last_modified TEXT,
    downloads INTEGER,
    gated TEXT,
    private INTEGER NOT NULL DEFAULT 0,
    base_model TEXT,
    task TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    discovered_by TEXT NOT NULL DEFAULT '[]',
    listed INTEGER NOT NULL DEFAULT 1,
    status TEXT,
    status_detail TEXT,
    audited_sha TEXT,
    audited_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    row TEXT,
    layers TEXT,
    PRIMARY KEY (repo_id, subfolder)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    passes TEXT,
    shard TEXT,
    discovered INTEGER,
    audited INTEGER,
    failed INTEGER,
    published TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

#: A transient failure is retried on this many runs for the same commit, then kept as is.
MAX_ATTEMPTS = 5


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CrawlState:
    """The state database of one crawl folder (``<out>/.crawl/state.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- candidates -------------------------------------------------------------------------------

    def upsert(
        self,
        candidates: Iterable[Candidate],
        *,
        full_listing: bool,
        in_scope: Callable[[str], bool] | None = None,
    ) -> None:
        """Record what discovery found, in one transaction.

        A repo whose commit moved gets its attempt count reset (its audit is now stale). After
        a full listing, rows it no longer returned are marked unlisted and later published as
        ``not_found`` (``in_scope``: only rows of repos this crawl could have seen: its shard).
        """
        cands = list(candidates)
        with self._tx():
            for c in cands:
                old = self.db.execute(
                    "SELECT sha, discovered_by FROM candidates WHERE repo_id = ? AND subfolder = ?", c.key
                ).fetchone()
                passes = set(c.discovered_by)
                if old is not None:
                    passes |= set(json.loads(old["discovered_by"]))
                values = (
                    c.sha, c.last_modified, c.downloads, c.gated, int(c.private), c.base_model, c.task,
                    json.dumps(sorted(c.tags)), json.dumps(sorted(passes)),
                )  # fmt: skip
                if old is None:
                    self.db.execute(
                        "INSERT INTO candidates (sha, last_modified, downloads, gated, private, base_model, task,"
                        " tags, discovered_by, repo_id, subfolder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*values, *c.key),
                    )
                else:
                    reset = ", attempts = 0" if old["sha"] != c.sha else ""
                    self.db.execute(
                        "UPDATE candidates SET sha = ?, last_modified = ?, downloads = ?, gated = ?, private = ?,"
                        f" base_model = ?, task = ?, tags = ?, discovered_by = ?, listed = 1{reset}"
                        " WHERE repo_id = ? AND subfolder = ?",
                        (*values, *c.key),
                    )
            if full_listing:
                seen = {c.key for c in cands}
                for row in self.db.execute(
                    "SELECT repo_id, subfolder FROM candidates WHERE listed = 1"
                ).fetchall():
                    key = (row["repo_id"], row["subfolder"])
                    if key not in seen and (in_scope is None or in_scope(row["repo_id"])):
                        self.db.execute(
                            "UPDATE candidates SET listed = 0 WHERE repo_id = ? AND subfolder = ?", key
                        )

    def due(self, keys: Iterable[tuple[str, str]] | None = None) -> list[sqlite3.Row]:
        """Listed candidates whose audit is missing, stale, or a transient failure to retry."""
        rows = self.db.execute(
            "SELECT * FROM candidates WHERE listed = 1 AND (status IS NULL OR audited_sha IS NOT sha"
            " OR (status = 'transient_error' AND attempts < ?)) ORDER BY repo_id, subfolder",
            (MAX_ATTEMPTS,),
        ).fetchall()
        if keys is None:
            return rows
        wanted = set(keys)
        return [r for r in rows if (r["repo_id"], r["subfolder"]) in wanted]

    def record(
        self,
        key: tuple[str, str],
        sha: str | None,
        status: str,
        detail: str | None,
        row: dict[str, Any] | None,
        layers: list[dict[str, Any]] | None,
    ) -> None:
        """One audit result, committed on its own: a kill after this line loses nothing."""
        with self._tx():
            self.db.execute(
                "UPDATE candidates SET status = ?, status_detail = ?, audited_sha = ?, audited_at = ?,"
                " attempts = attempts + 1, row = ?, layers = ? WHERE repo_id = ? AND subfolder = ?",
                (
                    status,
                    detail,
                    sha,
                    utc_now(),
                    json.dumps(row) if row is not None else None,
                    json.dumps(layers) if layers is not None else None,
                    *key,
                ),
            )

    def rows(self) -> Iterator[sqlite3.Row]:
        """Every audited candidate, in (repo, subfolder) order."""
        yield from self.db.execute(
            "SELECT * FROM candidates WHERE status IS NOT NULL ORDER BY repo_id, subfolder"
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.db.execute(
            "SELECT CASE WHEN listed = 0 THEN 'not_found' ELSE COALESCE(status, 'pending') END AS s,"
            " COUNT(*) FROM candidates GROUP BY s"
        ):
            out[row[0]] = out.get(row[0], 0) + int(row[1])
        return dict(sorted(out.items()))

    # -- runs -------------------------------------------------------------------------------------

    def start_run(self, passes: list[str], shard: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (started_at, passes, shard) VALUES (?, ?, ?)",
            (utc_now(), ",".join(passes), shard),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, **fields: Any) -> None:
        fields["finished_at"] = utc_now()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))]

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
