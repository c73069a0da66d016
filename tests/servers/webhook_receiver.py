"""A webhook receiver for tests, and the local Hub's delivery records and faults.

``WebhookReceiver`` is a loopback HTTP server in the test process that records every POST (headers
and JSON body) and answers with a status the test chooses. ``deliveries``/``delivery_fault`` talk to
the local Hub's ``/_admin/webhooks/...``: what the Hub sent, what it got back, and the faults it
injects (``drop``, ``duplicate``, ``delay``). Faults are cleared with the Hub's other faults.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import LocalHub


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    payload: Any

    @property
    def scope(self) -> tuple[str, str]:
        """``(event.scope, event.action)``, the pair most assertions are about."""
        return self.payload["event"]["scope"], self.payload["event"]["action"]


@dataclass
class WebhookReceiver:
    """``with WebhookReceiver() as rx: ... rx.url ... rx.received``; ``status`` is what it answers."""

    status: int = 200
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "use the receiver as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook"

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = raw.decode("utf-8", "replace")
                receiver.received.append(Received(self.path, dict(self.headers.items()), payload))
                body = b'{"ok": true}' if receiver.status < 400 else b'{"error": "receiver says no"}'
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def scopes(self) -> list[tuple[str, str]]:
        return [r.scope for r in self.received]


def deliveries(hub: LocalHub, webhook_id: str | None = None, *, wait: bool = True) -> list[dict[str, Any]]:
    """The Hub's delivery records (oldest first), after queued ones are sent when ``wait``.

    Each: ``{id, webhook_id, url, event, payload, status, delivered, response, error, fault,
    attempt, created_at, delivered_at}``; ``status`` is None when nothing answered (dropped,
    connection refused).
    """
    query = "&".join(
        part for part in ("wait=1" if wait else "", f"webhook_id={webhook_id}" if webhook_id else "") if part
    )
    return list(hub._call("GET", "/_admin/webhooks/deliveries" + (f"?{query}" if query else "")))


def clear_deliveries(hub: LocalHub) -> None:
    hub._call("DELETE", "/_admin/webhooks/deliveries")


def delivery_fault(
    hub: LocalHub,
    action: str,
    *,
    delay: float | None = None,
    times: int | None = None,
    webhook_id: str | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """Make deliveries misbehave: ``drop`` (never sent), ``duplicate`` (sent twice), ``delay``
    (sent ``delay`` seconds later, after the events behind it). ``scope`` is a regex on
    ``event.scope``; ``times`` how many deliveries it affects (None: until cleared)."""
    spec = {"action": action, "delay": delay, "times": times, "webhook_id": webhook_id, "scope": scope}
    return dict(hub._call("POST", "/_admin/webhooks/faults", spec))


def delivery_faults(hub: LocalHub) -> list[dict[str, Any]]:
    """Active delivery faults with their ``hits`` and remaining ``times``."""
    return list(hub._call("GET", "/_admin/webhooks/faults"))
