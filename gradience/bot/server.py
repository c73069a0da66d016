"""The webhook receiver: answers every delivery at once, queues it durably, never acts inline.

``POST /webhook`` checks ``X-Webhook-Secret`` in constant time (missing → 401, wrong → 403,
and nothing is stored), stores the delivery (202), and wakes the worker. ``GET /healthz``
answers 200 while the worker thread lives; ``GET /status`` reports queue counts (never the
token or the secret).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gradience.bot.config import BotConfig
from gradience.bot.events import delivery_key
from gradience.bot.state import State
from gradience.bot.worker import Worker
from gradience.errors import UsageError

__all__ = ["MAX_BODY", "Bot"]

log = logging.getLogger("gradience.bot")

#: Webhook payloads are small; anything bigger is refused before it is read.
MAX_BODY = 1024 * 1024


class Bot:
    """The receiver and its worker thread. ``start()`` / ``stop()``, or ``with Bot(...)``."""

    def __init__(self, config: BotConfig) -> None:
        if not config.secret:
            raise UsageError(
                "the bot needs a webhook secret (GRADIENCE_WEBHOOK_SECRET): without one anybody could "
                "make it act",
                param="secret",
            )
        if not config.token:
            raise UsageError("the bot needs its Hub token (HF_TOKEN)", param="token")
        self.config = config
        self.state = State(config.state)
        self.worker = Worker(config, self.state)
        self.httpd = ThreadingHTTPServer((config.host, config.port), _handler(self))
        self.httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Bot:
        for target, name in ((self.httpd.serve_forever, "bot-http"), (self.worker.run, "bot-worker")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("Gradience bot listening on %s/webhook", self.url)
        return self

    def serve_forever(self) -> None:
        self.start()
        try:
            while all(t.is_alive() for t in self._threads):
                self._threads[1].join(1.0)
        finally:
            self.stop()

    def stop(self) -> None:
        self.worker.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(10)
        self.state.close()

    def __enter__(self) -> Bot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        return {
            "ok": all(t.is_alive() for t in self._threads) if self._threads else False,
            "deliveries": self.state.counts(),
            "pending": self.state.pending(),
        }


def _handler(bot: Bot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "gradience-bot"

        def log_message(self, fmt: str, *args: Any) -> None:  # no request lines with headers
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                st = bot.status()
                self._send(200 if st["ok"] else 503, {"ok": st["ok"]})
            elif self.path == "/status":
                self._send(200, bot.status())
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/webhook":
                self._send(404, {"error": "not found"})
                return
            given = self.headers.get("X-Webhook-Secret")
            if given is None:
                self._send(401, {"error": "missing X-Webhook-Secret"})
                return
            if not hmac.compare_digest(given.encode(), (bot.config.secret or "").encode()):
                self._send(403, {"error": "wrong X-Webhook-Secret"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self._send(
                    413 if length > MAX_BODY else 400, {"error": "a JSON body of at most 1 MB is needed"}
                )
                return
            body = self.rfile.read(length)
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._send(400, {"error": "the body is not a JSON object"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            queued, reason = bot.worker.accept(delivery_key(body, headers), payload)
            self._send(202 if queued else 200, {"queued": queued, "reason": reason})

    return Handler
