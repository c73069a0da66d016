"""Fault injection and statistics: how tests make the Hub misbehave and measure what it sent.

Faults match request paths by regular expression so a test can target one file, one endpoint kind
or everything. Statistics count response *body* bytes, because that is what a client pays for and
what the "read only the LoRA tensors" target is measured in.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .storage import hub_date, utc_now

# What a fault can do; each is described on ``Fault``.
EFFECTS = (
    "status", "latency", "truncate", "rate_limit", "ignore_range", "bad_content_range", "short", "stall_after",
)  # fmt: skip

# Byte ranges kept per file; enough for any test, bounded so a long manual session stays small.
MAX_RANGES_PER_FILE = 2000


@dataclass
class Fault:
    """One injected misbehaviour.

    ``times`` is how many matching requests it still affects; ``None`` means until cleared.
    ``status`` replaces the answer with a Hub-style error; ``latency`` delays the answer;
    ``truncate`` sends only that many body bytes of the real answer and then drops the connection.
    ``rate_limit`` answers 429 with only the Hub's ``RateLimit`` header (``"api";r=0;t=N``).
    ``ignore_range`` answers a ranged request with 200 and the whole body; ``bad_content_range``
    sends the asked bytes under a ``Content-Range`` that names other ones; ``short`` sends only
    that many body bytes as a complete, well-formed answer (a smaller ``Content-Length`` and
    ``Content-Range``) and keeps the connection; ``stall_after`` sends that many body bytes, then
    sends nothing for ``stall_seconds`` (or until the client gives up) before dropping it.
    """

    id: str
    path: str
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    latency: float | None = None
    truncate: int | None = None
    rate_limit: int | None = None
    ignore_range: bool = False
    bad_content_range: bool = False
    short: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    times: int | None = None
    hits: int = 0
    abandoned: int = 0  # stalls the client walked away from before the stall ended
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path)

    def matches(self, method: str, raw_path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.times is not None and self.times <= 0:
            return False
        return bool(self._regex.search(raw_path) or self._regex.search(unquote(raw_path)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "truncate": self.truncate,
            "rate_limit": self.rate_limit,
            "ignore_range": self.ignore_range,
            "bad_content_range": self.bad_content_range,
            "short": self.short,
            "stall_after": self.stall_after,
            "stall_seconds": self.stall_seconds,
            "times": self.times,
            "hits": self.hits,
            "abandoned": self.abandoned,
        }


class FaultTable:
    """Thread-safe list of faults; the first live match wins and is consumed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        allowed = {"path", "method", "times", "retry_after", "stall_seconds", *EFFECTS}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if not isinstance(spec.get("path"), str):
            raise ValueError("a fault needs a 'path' regular expression")
        spec = {k: v for k, v in spec.items() if v is not None}
        if not any(spec.get(k) not in (None, False) for k in EFFECTS):
            raise ValueError(f"a fault needs at least one of {', '.join(EFFECTS)}")
        with self._lock:
            fault = Fault(id=f"f{next(self._ids)}", **spec)
            self._faults.append(fault)
        return fault

    def take(self, method: str, raw_path: str) -> Fault | None:
        """Return the fault for this request, counting it as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, raw_path):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def abandoned(self, fault: Fault) -> None:
        with self._lock:
            fault.abandoned += 1

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]


@dataclass
class _FileStats:
    requests: int = 0
    bytes: int = 0
    ranges: list[list[int]] = field(default_factory=list)


@dataclass
class _KindStats:
    count: int = 0
    bytes: int = 0
    faulted: int = 0
    methods: dict[str, int] = field(default_factory=dict)


class Stats:
    """Request counts per route kind and body bytes per (repo, file).

    ``ranges`` records ``[start, end_exclusive, bytes_sent, status]`` for every file GET, which
    lets a test check that a client asked for exact byte bounds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Requests still being answered: a client can hold its whole response before the
        # server has recorded the bytes, so readers of the statistics wait for these.
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._kinds: dict[str, _KindStats] = {}
        self._files: dict[tuple[str, str, str], _FileStats] = {}
        self._total = 0
        self._since = utc_now()

    def reset(self) -> None:
        with self._lock:
            self._kinds = {}
            self._files = {}
            self._total = 0
            self._since = utc_now()

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no counted request is in flight (bounded, so a stuck client can't hang it)."""
        with self._lock:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def request(self, kind: str, method: str, *, faulted: bool) -> None:
        with self._lock:
            k = self._kinds.setdefault(kind, _KindStats())
            k.count += 1
            k.methods[method] = k.methods.get(method, 0) + 1
            if faulted:
                k.faulted += 1

    def body(
        self,
        kind: str,
        sent: int,
        *,
        file_key: tuple[str, str, str] | None = None,
        file_bytes: int = 0,
        ranges: list[tuple[int, int, int]] | None = None,
        status: int = 200,
    ) -> None:
        with self._lock:
            self._total += sent
            self._kinds.setdefault(kind, _KindStats()).bytes += sent
            if file_key is not None:
                f = self._files.setdefault(file_key, _FileStats())
                f.requests += 1
                f.bytes += file_bytes
                if len(f.ranges) < MAX_RANGES_PER_FILE:
                    for start, end, range_sent in ranges or []:
                        f.ranges.append([start, end, range_sent, status])

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "since": hub_date(self._since),
                "total_bytes": self._total,
                "requests": {
                    kind: {
                        "count": k.count,
                        "bytes": k.bytes,
                        "faulted": k.faulted,
                        "methods": dict(k.methods),
                    }
                    for kind, k in sorted(self._kinds.items())
                },
                "files": [
                    {
                        "repo_type": key[0],
                        "repo_id": key[1],
                        "path": key[2],
                        "requests": f.requests,
                        "bytes": f.bytes,
                        "ranges": [list(r) for r in f.ranges],
                    }
                    for key, f in sorted(self._files.items())
                ],
            }
