"""Auditing at scale: discovery, then bounded-concurrency remote audits, then the dataset.

Audits run on a thread pool (the work is waiting on the Hub; the spectra of small LoRA
factors take milliseconds), and only the main thread writes the state, one transaction per
result, so a crash at any instant loses at most the audits in flight. Each audit goes through
the core's remote reader with the crawler's byte caps and timeouts, pinned to the commit the
listing reported, and its exception (if any) becomes a row status by type.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience.ecosystem.statuses import status_of
from gradience.errors import AdapterFormatError, UsageError

DEFAULT_CONCURRENCY = 8
#: The crawler's caps are tighter than an interactive audit's: one huge repo must not stall it.
DEFAULT_MAX_BYTES = 256 * 1024**2
DEFAULT_MAX_BIN_BYTES = 64 * 1024**2
DEFAULT_DEADLINE = 300.0
LFS_PREFIX = b"version https://git-lfs"


@dataclass
class CrawlConfig:
    """Everything one crawl run needs (the CLI and the scheduler build one of these)."""

    out: Path
    token: str | bool | None = None
    passes: list[str] = field(default_factory=lambda: ["all"])
    concurrency: int = DEFAULT_CONCURRENCY
    per_pass: int = 50
    max_bytes: int = DEFAULT_MAX_BYTES
    max_bin_bytes: int = DEFAULT_MAX_BIN_BYTES
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = DEFAULT_DEADLINE
    shard: tuple[int, int] | None = None
    limit: int | None = None
    write_dataset: bool = True
    repo_id: str | None = None  # where the dataset is published (for the card's examples)

    @property
    def state_path(self) -> Path:
        return self.out / ".crawl" / "state.sqlite"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise UsageError(f"shard must look like i/n (e.g. 0/4), not {text!r}", param="shard") from e
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"shard {text!r}: need 0 <= i < n", param="shard")
    return i, n


def in_shard(repo_id: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic partition by repo id (every machine agrees without coordination)."""
    if shard is None:
        return True
    i, n = shard
    return int(hashlib.sha1(repo_id.encode()).hexdigest()[:8], 16) % n == i


@dataclass
class AuditResult:
    key: tuple[str, str]
    sha: str | None
    status: str
    detail: str | None
    row: dict[str, Any] | None
    layers: list[dict[str, Any]] | None
    requests: int = 0


def audit_candidate(
    repo_id: str, subfolder: str, sha: str | None, config: CrawlConfig, cache: Path
) -> AuditResult:
    """Audit one adapter folder; never raises for anything the adapter or the Hub did."""
    import gradience
    from gradience.ecosystem.schema import audit_rows
    from gradience.open import OpenOptions

    opts = OpenOptions(
        token=config.token,
        revision=sha,
        subfolder=subfolder or None,
        max_bytes=config.max_bytes,
        max_bin_bytes=config.max_bin_bytes,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        deadline=config.deadline,
        cache_dir=cache,
    )
    key = (repo_id, subfolder)
    try:
        audit = gradience.audit(repo_id, options=opts)
        row, layers = audit_rows(audit)
        return AuditResult(key, sha, "ok", None, row, layers, int(audit.source.get("requests") or 0))
    except Exception as e:  # every failure becomes a status; KeyboardInterrupt still stops the crawl
        status, detail = status_of(e)
        if type(e) is AdapterFormatError and _is_lfs_pointer(repo_id, subfolder, sha, config):
            status, detail = "lfs_pointer", f"lfs_pointer: {e.message}"
        return AuditResult(key, sha, status, detail, None, None)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _is_lfs_pointer(repo_id: str, subfolder: str, sha: str | None, config: CrawlConfig) -> bool:
    """Does the safetensors file start with a Git LFS pointer? (one 64-byte read).

    A pointer committed as a regular file fails the header parse as "corrupt"; its first bytes
    tell the two apart, which is worth one small request on the rare corrupt row.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    name = f"{subfolder}/adapter_model.safetensors" if subfolder else "adapter_model.safetensors"
    url = hf_hub_url(repo_id, name, revision=sha or "main")
    headers = {**build_hf_headers(token=config.token), "Range": "bytes=0-63"}
    try:
        resp = get_session().get(url, headers=headers, follow_redirects=True, timeout=config.read_timeout)
    except Exception:
        return False
    return resp.status_code in (200, 206) and resp.content[:64].startswith(LFS_PREFIX)


class Progress:
    """A rich bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total: int, *, stream: Any = None, every: float = 5.0) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.stream = stream or sys.stderr
        self.every, self.last = every, self.t0
        self.bar: Any = None
        if total and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("crawl"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("crawl", total=total, rate="–/min")

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.bar is not None:
            rate = self.done * 60 / max(now - self.t0, 1e-9)
            self.bar.update(self.task, advance=1, rate=f"{rate:.0f}/min")
            return
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            print(
                f"crawl: {self.done}/{self.total} audited ({rate * 60:.0f}/min, eta {eta:.0f} s)",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_crawl(
    config: CrawlConfig, *, progress: bool = True, on_result: Callable[[AuditResult], None] | None = None
) -> dict[str, Any]:
    """One crawl: discover, audit what is due, record each result, write the dataset folder.

    Returns a summary (counts, statuses, rate, requests per adapter) that the CLI prints and
    the scheduler keeps.
    """
    from huggingface_hub import HfApi

    from gradience.ecosystem.discovery import discover
    from gradience.ecosystem.state import CrawlState

    state = CrawlState(config.state_path)
    shard_text = f"{config.shard[0]}/{config.shard[1]}" if config.shard else None
    run_id = state.start_run(config.passes, shard_text)
    t0 = time.monotonic()
    try:
        api = HfApi(token=config.token)
        try:
            found = discover(
                api,
                config.passes,
                per_pass=config.per_pass,
                since=state.get_meta("recent_watermark"),
                keep=lambda rid: in_shard(rid, config.shard),
            )
        except Exception as e:  # a listing the Hub kept refusing: one typed error, state untouched
            from gradience.hub.errors import translate

            translated = translate(e, "(listing)", "model listing")
            if translated is None:
                raise
            raise translated from e
        state.upsert(
            found.values(),
            full_listing="all" in config.passes,
            in_scope=lambda rid: in_shard(rid, config.shard),
        )
        marks = [c.last_modified for c in found.values() if c.last_modified]
        if marks and config.shard is None:
            state.set_meta("recent_watermark", max(marks))
        due = state.due()
        if config.limit is not None:
            due = due[: config.limit]
        t_audit = time.monotonic()
        results = _audit_all(state, due, config, progress=progress, on_result=on_result)
        elapsed = time.monotonic() - t_audit
        statuses: dict[str, int] = {}
        for r in results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        ok = [r for r in results if r.status == "ok" and r.requests]
        req_per_adapter = sum(r.requests for r in ok) / len(ok) if ok else None
        summary: dict[str, Any] = {
            "run": run_id,
            "shard": shard_text,
            "passes": config.passes,
            "discovered": len(found),
            "due": len(due),
            "audited": len(results),
            "statuses": dict(sorted(statuses.items())),
            "requests_per_adapter": req_per_adapter,
            "adapters_per_minute": len(results) * 60 / elapsed if elapsed > 0 and results else None,
            "concurrency": config.concurrency,
            "elapsed_s": time.monotonic() - t0,
            "state": state.counts(),
        }
        if config.write_dataset:
            from gradience.ecosystem.dataset import write_dataset

            summary["dataset"] = str(write_dataset(state, config.out, repo_id=config.repo_id))
        failed = sum(n for s, n in statuses.items() if s == "transient_error")
        state.finish_run(run_id, discovered=len(found), audited=len(results), failed=failed)
        return summary
    except BaseException as e:
        state.finish_run(run_id, error=f"{type(e).__name__}: {e}"[:500])
        raise
    finally:
        state.close()


def _audit_all(
    state: Any,
    due: list[Any],
    config: CrawlConfig,
    *,
    progress: bool,
    on_result: Callable[[AuditResult], None] | None,
) -> list[AuditResult]:
    results: list[AuditResult] = []
    bar = Progress(len(due)) if progress else None
    tmp = Path(tempfile.mkdtemp(prefix="gradience-crawl-"))
    pending = iter(due)
    serial = itertools.count()
    running: dict[Future[AuditResult], Any] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:

            def submit_next() -> bool:
                rec = next(pending, None)
                if rec is None:
                    return False
                cache = tmp / str(next(serial))
                fut = pool.submit(
                    audit_candidate, rec["repo_id"], rec["subfolder"], rec["sha"], config, cache
                )
                running[fut] = rec
                return True

            # Submit lazily (at most 2× concurrency queued): a kill leaves little half-done work.
            for _ in range(2 * max(1, config.concurrency)):
                if not submit_next():
                    break
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        running.pop(fut)
                        res = fut.result()
                        state.record(res.key, res.sha, res.status, res.detail, res.row, res.layers)
                        results.append(res)
                        if on_result is not None:
                            on_result(res)
                        if bar is not None:
                            bar.step()
                        submit_next()
            except BaseException:  # Ctrl-C: drop the queued audits instead of running them first
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results
