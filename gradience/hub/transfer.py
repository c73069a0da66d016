"""Exact byte-range reads from the Hub, with bounded retries, honest accounting and progress.

Every request goes through huggingface_hub (URLs, auth headers, the shared HTTP session,
its backoff helper, which honours ``Retry-After`` on 429 and retries 5xx). A body shorter
than the range asked for (a dropped connection) is retried too; a range that still cannot
be read raises — a wrong result is never returned.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gradience.errors import GradienceError, HubTransferError

__all__ = ["HubTransferError", "Transfer"]

#: Attempts for one range when the body comes back short (HTTP-level retries are extra).
SHORT_READ_ATTEMPTS = 4


@dataclass
class Transfer:
    """Reads byte ranges of one file at one commit. Counts what it transfers."""

    repo_id: str
    repo_type: str
    commit: str
    filename: str
    token: str | bool | None = None
    progress: Callable[[int], None] | None = None
    bytes_transferred: int = 0
    requests: int = 0
    seconds: float = 0.0
    _url: str = field(default="", init=False)

    def __post_init__(self) -> None:
        from huggingface_hub import constants, hf_hub_url

        self._url = hf_hub_url(
            self.repo_id,
            self.filename,
            repo_type=self.repo_type,
            revision=self.commit,
            endpoint=constants.ENDPOINT,
        )

    def fetch_to(self, start: int, end: int, dest: Path) -> None:
        """Write bytes [start, end) of the file to ``dest`` (atomically)."""
        tmp = dest.with_name(dest.name + f".{os.getpid()}.partial")
        last: Exception | None = None
        for attempt in range(SHORT_READ_ATTEMPTS):
            try:
                with open(tmp, "wb") as out:
                    got = self._stream(start, end, out)
                if got == end - start:
                    os.replace(tmp, dest)
                    return
                last = HubTransferError(f"{self.filename}: got {got} of {end - start} bytes")
            except GradienceError:
                raise  # an HTTP error the backoff helper already retried, translated
            except Exception as e:  # a dropped connection mid-body
                last = e
            time.sleep(min(2.0**attempt * 0.25, 4.0))
        tmp.unlink(missing_ok=True)
        raise HubTransferError(
            f"could not download {self.repo_id}/{self.filename} (bytes {start}-{end - 1}) after "
            f"{SHORT_READ_ATTEMPTS} attempts: {_short(last)}; try again later"
        )

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file, in memory (for headers and small files)."""
        import io

        for attempt in range(SHORT_READ_ATTEMPTS):
            buf = io.BytesIO()
            try:
                got = self._stream(start, end, buf)
            except GradienceError:
                raise
            except Exception as e:
                last: Exception | None = e
            else:
                if got == end - start:
                    return buf.getvalue()
                last = HubTransferError(f"got {got} of {end - start} bytes")
            time.sleep(min(2.0**attempt * 0.25, 4.0))
        raise HubTransferError(
            f"could not download {self.repo_id}/{self.filename}: {_short(last)}; try again later"
        )

    def _stream(self, start: int, end: int, out) -> int:
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

        from gradience.hub.errors import translate

        headers = build_hf_headers(token=self.token)
        headers["Range"] = f"bytes={start}-{end - 1}"
        headers["Accept-Encoding"] = "identity"
        t0 = time.perf_counter()
        got = 0
        self.requests += 1
        try:
            with http_stream_backoff(
                "GET", self._url, headers=headers, follow_redirects=True, max_retries=4, max_wait_time=8
            ) as response:
                hf_raise_for_status(response)
                if response.status_code != 206 and not (start == 0 and response.status_code == 200):
                    raise HubTransferError(
                        f"the Hub ignored a range request for {self.filename} (HTTP {response.status_code}); "
                        "refusing to download the whole file"
                    )
                for chunk in response.iter_bytes(1 << 20):
                    take = chunk[: end - start - got]
                    out.write(take)
                    got += len(take)
                    self.bytes_transferred += len(chunk)
                    if self.progress is not None:
                        self.progress(len(take))
                    if got >= end - start:
                        break
        except HubTransferError:
            raise
        except Exception as e:
            translated = translate(e, self.repo_id, self.filename)
            if translated is not None:
                raise translated from e
            raise
        finally:
            self.seconds += time.perf_counter() - t0
        return got


def _short(e: Exception | None) -> str:
    text = str(e).strip().splitlines()[0] if e is not None and str(e).strip() else type(e).__name__
    return text[:160]
