"""HTTP plumbing: requests, responses, Hub-style errors, the route table and the threaded server.

Everything Hub-specific about *errors* lives here: the client (``hf_raise_for_status``) decides
which exception to raise from the ``X-Error-Code`` header and builds its message from
``X-Error-Message`` and the JSON ``{"error": ...}`` body, so every error carries all three.

Responses are lists of parts (bytes, or a byte range of a blob file) so a range of a large file is
streamed from disk in chunks and never loaded whole. Faults and statistics wrap every request here,
in one place, so no route can forget them.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .accounts import Token
    from .app import HubApp
    from .instrument import Fault

CHUNK = 1 << 20  # bytes per read/write when streaming blobs and bodies
MAX_BUFFERED_BODY = 2 << 30  # a JSON/NDJSON body larger than this is refused


class HubError(Exception):
    """An error answer: status, message, and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass(frozen=True)
class FilePart:
    """Bytes ``[start, end)`` of a file on disk, streamed when the response is written."""

    path: Path
    start: int
    end: int


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    parts: list[bytes | FilePart] = field(default_factory=list)
    # (repo_type, repo_id, path) when the body is a repo file: its bytes count per file in the stats
    file_key: tuple[str, str, str] | None = None
    # A body of unknown length (server-sent events): sent chunked, each piece flushed as it comes
    stream: Iterator[bytes] | None = None

    @property
    def length(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.end - p.start for p in self.parts)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, [body])


def _header_safe(text: str) -> str:
    """Header values must be latin-1; keep messages ASCII and on one line."""
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


def error_response(err: HubError) -> Response:
    headers = {"X-Error-Message": _header_safe(err.message), **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return json_response({"error": err.message, **err.extra}, err.status, headers)


# S3-style codes the CDN answers with, by status.
XML_CODES = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchKey",
    416: "InvalidRange",
    429: "SlowDown",
}


def xml_error_response(err: HubError) -> Response:
    """How a storage CDN fails: an XML ``<Error>`` document and none of the Hub's error headers."""
    from xml.sax.saxutils import escape

    code = XML_CODES.get(err.status, "InternalError" if err.status >= 500 else "Error")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(err.message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    keep = {k: v for k, v in err.headers.items() if not k.lower().startswith("x-error")}
    return Response(err.status, {"Content-Type": "application/xml", **keep}, [body])


def cut_body(response: Response, n: int) -> None:
    """Keep only the first ``n`` body bytes, as a complete answer (a ``short`` fault)."""
    kept: list[bytes | FilePart] = []
    left = n
    for part in response.parts:
        size = len(part) if isinstance(part, bytes) else part.end - part.start
        take = min(size, left)
        if take > 0:
            kept.append(
                part[:take] if isinstance(part, bytes) else FilePart(part.path, part.start, part.start + take)
            )
        left -= take
    response.parts = kept
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if m and n > 0:
        start = int(m.group(1))
        end = min(int(m.group(2)), start + n - 1)
        response.headers["Content-Range"] = f"bytes {start}-{end}/{m.group(3)}"


def shift_content_range(response: Response) -> None:
    """Name other bytes than the ones sent (a ``bad_content_range`` fault)."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if m:
        start, end = int(m.group(1)) + 1, int(m.group(2)) + 1
        response.headers["Content-Range"] = f"bytes {start}-{end}/{m.group(3)}"


class BodyReader:
    """Reads a request body once, by Content-Length or chunked transfer encoding."""

    def __init__(self, rfile: Any, headers: Message) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        raw_length = (headers.get("Content-Length") or "0").strip()
        if not self.chunked and not raw_length.isdigit():
            raise HubError(400, f"Invalid Content-Length {raw_length!r}")
        self.length: int | None = None if self.chunked else int(raw_length)
        self._remaining = self.length or 0
        self.done = not self.chunked and self._remaining == 0

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        if self.done:
            return
        if not self.chunked:
            while self._remaining > 0:
                chunk = self._rfile.read(min(size, self._remaining))
                if not chunk:
                    raise HubError(400, "Request body ended early")
                self._remaining -= len(chunk)
                yield chunk
        else:
            while True:
                line = self._rfile.readline(65537)
                if not line:
                    raise HubError(400, "Chunked request body ended early")
                n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = n
                while left > 0:
                    chunk = self._rfile.read(min(size, left))
                    if not chunk:
                        raise HubError(400, "Chunked request body ended early")
                    left -= len(chunk)
                    yield chunk
                self._rfile.readline(3)  # CRLF after the chunk
        self.done = True

    def read_all(self) -> bytes:
        if self.length is not None and self.length > MAX_BUFFERED_BODY:
            raise HubError(413, "Request body too large")
        return b"".join(self.iter_chunks())

    def drain(self) -> None:
        for _ in self.iter_chunks():
            pass


class Request:
    """One request as the routes see it: decoded query, lazily read body, the caller's token."""

    def __init__(self, method: str, target: str, headers: Message, body: BodyReader, base_url: str) -> None:
        split = urlsplit(target)
        self.method = method
        self.raw_path = split.path  # still percent-encoded: routes unquote their own groups
        self.raw_query = split.query
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers = headers
        self.body = body
        self.base_url = base_url
        self.token: Token | None = None
        self._body: bytes | None = None

    @property
    def user(self) -> str | None:
        return self.token.user if self.token else None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name) or self.query.get(name + "[]")
        return values[0] if values else default

    def args(self, name: str) -> list[str]:
        return [*self.query.get(name, []), *self.query.get(name + "[]", [])]

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def read(self) -> bytes:
        if self._body is None:
            self._body = self.body.read_all()
        return self._body

    def json(self) -> Any:
        raw = self.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.read().decode(), keep_blank_values=True)


Handler = Callable[..., Response]
AuthMode = Literal["hub", "none", "admin"]


@dataclass(frozen=True)
class Route:
    """A method + path pattern (a regex on the raw path, named groups become handler kwargs).

    ``kind`` names the endpoint in statistics; ``auth`` says how the Authorization header is
    treated: ``hub`` (a token must be valid if sent), ``none`` (ignored), ``admin`` (admin token).
    """

    methods: tuple[str, ...]
    pattern: str
    handler: Handler
    kind: str
    auth: AuthMode = "hub"
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)

    def add(self, routes: list[Route]) -> None:
        self.routes.extend(routes)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known): path_known tells a 405 from a 404."""
        known = False
        for r in self.routes:
            m = r.regex.fullmatch(path)
            if m:
                known = True
                if method in r.methods or (method == "HEAD" and "GET" in r.methods):
                    return r, {k: v for k, v in m.groupdict().items() if v is not None}, True
        return None, {}, known


class HubRequestHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler: every answer has a Content-Length, unread bodies are drained."""

    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    timeout = 300  # idle keep-alive connections give their thread back
    server: HubHTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            sys.stderr.write(f"[localhub] {self.address_string()} {format % args}\n")

    def _handle(self) -> None:
        app = self.server.app
        method = self.command
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        try:
            body = BodyReader(self.rfile, self.headers)
        except HubError as e:  # an unreadable body: answer, then drop the connection
            self.close_connection = True
            self._send(error_response(e), kind="unknown", truncate=None, count=False)
            return
        req = Request(method, self.path, self.headers, body, f"http://{host}")
        route, params, known = (self.server.router or app.router).match(method, req.raw_path)
        kind = route.kind if route else "unknown"
        admin = route is not None and route.kind == "admin"
        fault = None if admin else app.faults.take(method, req.raw_path)
        if not admin:
            app.stats.request(kind, method, faulted=fault is not None)
            app.stats.begin()
        try:
            self._answer(app, req, route, params, known, kind, admin, fault, body)
        finally:
            if not admin:
                app.stats.end()

    def _answer(self, app, req, route, params, known, kind, admin, fault, body) -> None:
        if fault is not None and fault.latency:
            time.sleep(fault.latency)
        try:
            if fault is not None and fault.status:
                # delay-seconds must be an integer (clients ignore "0.5")
                extra = (
                    {"Retry-After": str(math.ceil(fault.retry_after))}
                    if fault.retry_after is not None
                    else {}
                )
                raise HubError(fault.status, f"Injected fault {fault.id} (local Hub)", headers=extra)
            if fault is not None and fault.rate_limit is not None:
                # The Hub's own form: no Retry-After, an IETF RateLimit header with the reset time.
                headers = {
                    "RateLimit": f'"api";r=0;t={fault.rate_limit}',
                    "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                }
                raise HubError(429, f"Injected rate limit {fault.id} (local Hub)", headers=headers)
            if route is None:
                raise HubError(405 if known else 404, "Method not allowed" if known else "Not Found")
            app.authenticate(req, route.auth)
            if fault is not None and fault.ignore_range and "Range" in req.headers:
                del req.headers["Range"]
            response = route.handler(app, req, **params)
            if fault is not None and fault.bad_content_range:
                shift_content_range(response)
            if fault is not None and fault.short is not None:
                cut_body(response, fault.short)
        except HubError as e:
            response = (xml_error_response if self.server.xml_errors else error_response)(e)
        except Exception as e:  # a bug in a route: answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            response = error_response(HubError(500, f"Internal error in the local Hub: {e!r}"))
        try:
            if not body.done:
                body.drain()
        except (HubError, OSError, ValueError):
            self.close_connection = True
        self._send(
            response, kind=kind, truncate=fault.truncate if fault else None, count=not admin, fault=fault
        )

    def _send(
        self, response: Response, *, kind: str, truncate: int | None, count: bool, fault: Fault | None = None
    ) -> None:
        if response.stream is not None:
            self._send_stream(response, kind=kind, count=count)
            return
        length = response.length
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            if count:
                self.server.app.stats.body(kind, 0)
            return
        stall = fault is not None and fault.stall_after is not None
        if stall:
            truncate = fault.stall_after  # type: ignore[union-attr]
        budget = length if truncate is None else min(truncate, length)
        sent = file_bytes = 0
        ranges: list[tuple[int, int, int]] = []
        try:
            for part in response.parts:
                if sent >= budget:
                    break
                if isinstance(part, bytes):
                    chunk = part[: budget - sent]
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    continue
                range_sent = 0
                with open(part.path, "rb") as f:
                    f.seek(part.start)
                    left = min(part.end - part.start, budget - sent)
                    while left > 0:
                        chunk = f.read(min(CHUNK, left))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)
                        sent += len(chunk)
                        range_sent += len(chunk)
                file_bytes += range_sent
                ranges.append((part.start, part.end, range_sent))
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if stall and sent < length:
            self._stall(fault)  # type: ignore[arg-type]
        if sent < length:
            # A truncated answer: the client must see the connection drop mid-body.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)  # FIN after the bytes: all of them arrive
        if count:
            self.server.app.stats.body(
                kind,
                sent,
                file_key=response.file_key,
                file_bytes=file_bytes,
                ranges=ranges,
                status=response.status,
            )

    def _stall(self, fault: Fault) -> None:
        """Send nothing more until ``stall_seconds`` pass or the client hangs up (then count it)."""
        import select

        until = time.monotonic() + fault.stall_seconds
        while (left := until - time.monotonic()) > 0:
            try:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
                if readable and not self.connection.recv(65536, socket.MSG_PEEK):
                    self.server.app.faults.abandoned(fault)
                    return
            except OSError:
                self.server.app.faults.abandoned(fault)
                return

    def _send_stream(self, response: Response, *, kind: str, count: bool) -> None:
        """Chunked transfer encoding, one chunk per piece, flushed at once (live logs)."""
        stream = response.stream
        assert stream is not None
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        self.end_headers()
        sent = 0
        try:
            if self.command != "HEAD":
                for piece in stream:
                    if piece:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        sent += len(piece)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if count:
            self.server.app.stats.body(kind, sent, status=response.status)


class HubHTTPServer(ThreadingHTTPServer):
    """Binds loopback only: the local Hub is never reachable from another machine."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, port: int, app: HubApp, *, router: Router | None = None, xml_errors: bool = False
    ) -> None:
        self.app = app
        self.router = router  # None: the Hub's routes; the CDN origin brings its own
        self.xml_errors = xml_errors  # the CDN answers errors as XML documents, like S3
        super().__init__(("127.0.0.1", port), HubRequestHandler)
