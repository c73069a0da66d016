"""Exact byte-range reads from the Hub that survive the real Hub: CDNs, stalls, 429s, odd servers.

The Hub answers a large file's ``/resolve`` with a redirect to a CDN whose signed URL is the
credential: the token is sent to the Hub only, never to the CDN, and a CDN that refuses an expired
URL is answered by resolving again. Every request has connect and read timeouts and the whole
operation has a deadline, so a stalled connection ends in a clear error, not a hang. A 429 is
waited out as the Hub asks (``RateLimit`` or ``Retry-After``), within a bounded total wait.
A server that ignores ``Range`` is accepted when the whole file fits the byte cap; a 206 must
name the bytes that were asked for; a body shorter than announced is resumed from where it
stopped. Bytes are counted as they arrive, so the count is what the network really carried.
"""

from __future__ import annotations

import re
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from gradience.errors import (
    GradienceError,
    HubTimeoutError,
    HubTransferError,
    RateLimitedError,
    TooLargeError,
)
from gradience.hub.oidc import is_oidc_failure, oidc_error

__all__ = ["ByteBudget", "Deadline", "HubSession", "HubTransferError", "Transfer"]

#: Failed attempts (dropped connections, timeouts, 5xx, refused CDN URLs) allowed per read.
MAX_ATTEMPTS = 5
#: Redirects followed per request (the Hub's own plus the one to the CDN).
MAX_REDIRECTS = 5
#: Longest total time spent waiting out 429s in one operation before giving up.
DEFAULT_MAX_RATE_LIMIT_WAIT = 120.0
#: A body the server sent whole (ignoring ``Range``) is kept on disk past this size.
_SPOOL_BYTES = 8 * 1024 * 1024
#: Unusable bodies up to this size are read (and counted) rather than cut off.
_DISCARD_BYTES = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class Deadline:
    """One operation's total time, shared by every request and every wait it makes."""

    def __init__(self, seconds: float | None, *, repo_id: str | None = None) -> None:
        self.seconds = seconds
        self.repo_id = repo_id
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def clip(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first (never below a few milliseconds)."""
        left = self.remaining()
        return seconds if left is None else max(0.005, min(seconds, left))

    def expired(self, cause: str = "") -> HubTimeoutError:
        where = f" for {self.repo_id}" if self.repo_id else ""
        why = f" ({cause})" if cause else ""
        return HubTimeoutError(
            f"gave up on the Hub{where}: the {self.seconds:g} s deadline passed{why}",
            repo_id=self.repo_id,
            deadline=self.seconds,
        )

    def check(self, cause: str = "") -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise self.expired(cause)

    def sleep(self, seconds: float, cause: str = "") -> None:
        """Wait, unless the wait would outlast the deadline: then fail now rather than later."""
        left = self.remaining()
        if left is not None and seconds >= left:
            raise self.expired(cause)
        time.sleep(max(0.0, seconds))


class ByteBudget:
    """The ``max_bytes`` cap for one operation: config, header and tensors all count toward it."""

    def __init__(self, limit: int, *, repo_id: str | None = None, param: str = "max_bytes") -> None:
        self.limit = limit
        self.used = 0
        self.repo_id = repo_id
        self.param = param

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def check(self, n: int, what: str) -> None:
        """Refuse, before any byte moves, a read that would take the operation past the cap."""
        if self.used + n > self.limit:
            raise TooLargeError(
                f"reading {what} needs {n} more bytes, {self.used + n} in all, above the "
                f"{self.limit}-byte cap",
                repo_id=self.repo_id,
                param=self.param,
                needed=self.used + n,
                limit=self.limit,
            )

    def spend(self, n: int) -> None:
        self.used += n


@dataclass
class HubSession:
    """What every request of one operation shares: token, timeouts, deadline, byte cap, 429 budget."""

    token: str | bool | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: Deadline = field(default_factory=lambda: Deadline(None))
    budget: ByteBudget | None = None
    max_rate_limit_wait: float = DEFAULT_MAX_RATE_LIMIT_WAIT
    rate_limit_waited: float = 0.0

    def timeout(self) -> Any:
        import httpx2

        read = self.deadline.clip(self.read_timeout)
        return httpx2.Timeout(read, connect=self.deadline.clip(self.connect_timeout), pool=read)

    def wait_for_rate_limit(self, headers: Any, repo_id: str, attempt: int) -> None:
        """Sleep as long as a 429 asks, or raise :class:`RateLimitedError` if that is too long."""
        from gradience.hub.errors import retry_after

        asked = retry_after(headers)
        wait = asked if asked is not None else min(2.0**attempt, 30.0)
        left = self.deadline.remaining()
        if self.rate_limit_waited + wait > self.max_rate_limit_wait or (left is not None and wait >= left):
            raise RateLimitedError(
                f"the Hub rate-limited requests for {repo_id} and asks to wait {wait:.0f} s, "
                "longer than this operation may wait",
                repo_id=repo_id,
                retry_after=wait,
            )
        self.rate_limit_waited += wait
        time.sleep(wait)


class _Retry(Exception):
    """A failure worth another attempt: what went wrong, and whether it was a timeout."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


def _origin(url: str) -> tuple[str, str, int | None]:
    split = urlsplit(url)
    return split.scheme, (split.hostname or "").lower(), split.port


def _is_transport_error(e: Exception) -> bool:
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore")


@dataclass
class Transfer:
    """Reads byte ranges of one file at one commit and counts what it transfers."""

    repo_id: str
    repo_type: str
    commit: str
    filename: str
    token: str | bool | None = None
    progress: Callable[[int], None] | None = None
    session: HubSession | None = None
    size: int | None = None
    bytes_transferred: int = 0
    requests: int = 0
    seconds: float = 0.0
    _url: str = field(default="", init=False)
    _cdn: str | None = field(default=None, init=False, repr=False)
    _whole: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from huggingface_hub import constants, hf_hub_url

        if self.session is None:
            self.session = HubSession(token=self.token)
        elif self.token is None:
            self.token = self.session.token
        self._url = hf_hub_url(
            self.repo_id,
            self.filename,
            repo_type=self.repo_type,
            revision=self.commit,
            endpoint=constants.ENDPOINT,
        )

    # -- public reads ---------------------------------------------------------------------------

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file, in memory (for configs and headers)."""
        import io

        buf = io.BytesIO()
        self._read(start, end, buf)
        return buf.getvalue()

    def fetch_to(self, start: int, end: int, dest: Path) -> None:
        """Write bytes [start, end) of the file to ``dest`` (atomically)."""
        import os

        tmp = dest.with_name(dest.name + f".{os.getpid()}.partial")
        try:
            with open(tmp, "wb") as out:
                self._read(start, end, out)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def check_access(self) -> None:
        """One authenticated request proving this caller may download the file (no body).

        Cached bytes of a gated or private repo are served only after this succeeds: the cache
        is shared by every token on the machine, the right to read it is not.
        """
        assert self.session is not None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self._exchange("HEAD", self._url, {}, hub=True) as response:
                    status = response.status_code
                    if status == 429:
                        self.session.wait_for_rate_limit(response.headers, self.repo_id, attempt)
                        continue
                    if status < 400:
                        return
                    if status < 500 and status != 408:
                        self._raise_for_status(response)
                    reason = f"HTTP {status}"
            except _Retry as e:
                reason = e.reason
            if attempt == MAX_ATTEMPTS:
                raise HubTransferError(
                    f"could not check access to {self.repo_id}: {reason}; try again later",
                    repo_id=self.repo_id,
                )
            self.session.deadline.sleep(min(0.25 * 2.0 ** (attempt - 1), 4.0), reason)

    # -- the loop -------------------------------------------------------------------------------

    def _read(self, start: int, end: int, out: IO[bytes]) -> None:
        assert self.session is not None
        if end <= start:
            return  # nothing to read: no request
        if self._whole is not None:
            self._whole.seek(start)
            out.write(self._whole.read(end - start))
            return
        if self.session.budget is not None:
            self.session.budget.check(end - start, f"{self.repo_id}/{self.filename}")
            self.session.budget.spend(end - start)
        pos, failures, redirects, last = start, 0, 0, None
        while pos < end:
            self.session.deadline.check(last.reason if last else "")
            written = [0]
            try:
                outcome = self._attempt(pos, end, out, written)
            except _Retry as e:
                pos += written[0]  # bytes that did arrive are kept: the next attempt resumes
                if pos >= end:
                    break
                failures += 1
                last = e
                if failures >= MAX_ATTEMPTS:
                    if e.timeout:
                        raise HubTimeoutError(
                            f"the Hub stopped answering for {self.repo_id}/{self.filename} "
                            f"({failures} attempts): {e.reason}",
                            repo_id=self.repo_id,
                            deadline=self.session.deadline.seconds,
                        ) from None
                    raise HubTransferError(
                        f"could not download {self.repo_id}/{self.filename} (bytes {pos}-{end - 1}) "
                        f"after {failures} attempts: {e.reason}; try again later",
                        repo_id=self.repo_id,
                    ) from None
                self.session.deadline.sleep(min(0.25 * 2.0 ** (failures - 1), 4.0), e.reason)
                continue
            if outcome == "redirected":
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise HubTransferError(f"too many redirects for {self.repo_id}/{self.filename}")
                continue
            if outcome == "whole":
                assert self._whole is not None
                self._whole.seek(pos)
                out.write(self._whole.read(end - pos))
                return
            pos += written[0]

    def _attempt(self, pos: int, end: int, out: IO[bytes], written: list[int]) -> str:
        """One GET of bytes [pos, end): 'redirected', 'ranged' (``written[0]`` bytes) or 'whole'."""
        assert self.session is not None
        hub = self._cdn is None
        url = self._url if hub else self._cdn
        assert url is not None
        headers = {"Range": f"bytes={pos}-{end - 1}", "Accept-Encoding": "identity"}
        with self._exchange("GET", url, headers, hub=hub) as response:
            status = response.status_code
            if status in (301, 302, 303, 307, 308) and "location" in response.headers:
                target = urljoin(url, response.headers["location"])
                if _origin(target) == _origin(self._url):
                    self._url = target  # the Hub moved the file (a renamed repo): keep the token
                else:
                    self._cdn = target  # a signed CDN URL: the URL is the credential
                return "redirected"
            if status == 429:
                self.session.wait_for_rate_limit(response.headers, self.repo_id, min(self.requests, 5))
                return "again"
            if not hub and status in (400, 401, 403, 404, 410):
                # An expired or refused signed URL: the Hub will sign a fresh one.
                self._cdn = None
                raise _Retry(f"the CDN refused the download URL (HTTP {status})")
            if status in (408, 500, 502, 503, 504) or status >= 500:
                raise _Retry(f"HTTP {status}")
            if status >= 400:
                self._raise_for_status(response)
            if status == 206:
                return self._ranged(response, pos, end, out, written)
            if status == 200:
                return self._whole_body(response, pos, end)
            raise _Retry(f"unexpected HTTP {status}")

    @contextmanager
    def _exchange(self, method: str, url: str, headers: dict[str, str], *, hub: bool) -> Iterator[Any]:
        """One request: the token only to the Hub, timeouts from the session, errors sorted."""
        from huggingface_hub.utils import build_hf_headers, get_session

        assert self.session is not None
        try:  # with no token given, huggingface_hub's (OIDC-exchanged, HF_TOKEN or saved) one
            all_headers = build_hf_headers(token=self.token if hub else False)
        except Exception as e:
            if is_oidc_failure(e):
                raise oidc_error(e) from e
            raise
        all_headers.update(headers)
        self.requests += 1
        t0 = time.perf_counter()
        try:
            with get_session().stream(
                method, url, headers=all_headers, follow_redirects=False, timeout=self.session.timeout()
            ) as response:
                yield response
        except (_Retry, GradienceError):
            raise
        except Exception as e:
            if not _is_transport_error(e):
                raise
            timeout = "timeout" in type(e).__name__.lower()
            raise _Retry(f"{type(e).__name__}: {str(e)[:120]}".rstrip(": "), timeout=timeout) from e
        finally:
            self.seconds += time.perf_counter() - t0

    def _ranged(self, response: Any, pos: int, end: int, out: IO[bytes], written: list[int]) -> str:
        m = _CONTENT_RANGE.fullmatch((response.headers.get("content-range") or "").strip())
        if m is None or int(m.group(1)) != pos or not pos <= int(m.group(2)) < end:
            got = response.headers.get("content-range")
            self._discard(response)
            raise _Retry(f"asked for bytes {pos}-{end - 1}, the answer says {got!r}")
        want = int(m.group(2)) + 1 - pos
        for chunk in self._body(response):
            take = chunk[: want - written[0]]
            out.write(take)
            written[0] += len(take)
            if self.progress is not None and take:
                self.progress(len(take))
            if written[0] >= want:
                break
        if written[0] < want:
            raise _Retry(f"the body ended after {written[0]} of {want} bytes")
        return "ranged"

    def _whole_body(self, response: Any, pos: int, end: int) -> str:
        """A 200 to a ranged request: keep the whole file if it fits the cap, else refuse it."""
        assert self.session is not None
        raw = response.headers.get("content-length")
        size = int(raw) if raw and raw.isdigit() else self.size
        budget = self.session.budget
        extra = (size or 0) - (end - pos)  # beyond the range already reserved in the budget
        if size is None or (budget is not None and extra > budget.left):
            limit = budget.limit if budget is not None else 0
            raise TooLargeError(
                f"the Hub ignored a range request for {self.filename} and sent the whole "
                f"{size if size is not None else 'unknown-size'}-byte file, above the {limit}-byte cap",
                repo_id=self.repo_id,
                param="max_bytes",
                needed=(budget.used if budget else 0) + (size or 0),
                limit=limit,
            )
        if budget is not None:
            budget.spend(max(0, extra))
        # Kept open as the file's bytes for every later read of this Transfer (closed when dropped).
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        got = 0
        for chunk in self._body(response):
            spool.write(chunk)
            got += len(chunk)
        if got != size:
            spool.close()
            raise _Retry(f"the whole-file answer ended after {got} of {size} bytes")
        if self.progress is not None:
            self.progress(end - pos)
        self._whole = spool
        weakref.finalize(self, spool.close)  # closed with the Transfer, whoever drops it last
        return "whole"

    def _discard(self, response: Any) -> None:
        """Read and count a small unusable body (keeps the count honest and the connection);
        a large one is left unread and its connection closed."""
        raw = response.headers.get("content-length") or ""
        if raw.isdigit() and int(raw) <= _DISCARD_BYTES:
            for _ in self._body(response):
                pass

    def _body(self, response: Any) -> Iterator[bytes]:
        """The body as it arrives, each byte counted; a drop or stall mid-body is a retry."""
        try:
            for chunk in response.iter_bytes():  # as they arrive: a chunk size would hold bytes back
                self.bytes_transferred += len(chunk)
                yield chunk
        except Exception as e:
            if not _is_transport_error(e):
                raise
            timeout = "timeout" in type(e).__name__.lower()
            raise _Retry(f"{type(e).__name__} mid-body", timeout=timeout) from e

    def _raise_for_status(self, response: Any) -> None:
        from huggingface_hub.utils import hf_raise_for_status

        from gradience.hub.errors import translate

        response.read()
        try:
            hf_raise_for_status(response)
        except Exception as e:
            translated = translate(e, self.repo_id, self.filename)
            if translated is not None:
                raise translated from e
            raise
        raise HubTransferError(f"unexpected HTTP {response.status_code} for {self.repo_id}/{self.filename}")
