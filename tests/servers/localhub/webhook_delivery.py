"""Webhooks: who watches what, the version-3 payloads, and their delivery with injectable faults.

Routes announce changes through ``Store.emit`` (a ``HubEvent``); ``Webhooks.on_event`` builds one
payload per matching webhook at once (so it shows the state right after the change) and queues it.
One worker thread posts the queue in order, so a receiver sees events in the order they happened,
unless a fault says otherwise: ``drop`` (recorded, never sent), ``duplicate`` (sent twice),
``delay`` (sent N seconds later, after the events behind it).

Every delivery is recorded with its answer (status, start of the body, or the connection error)
for ``/_admin/webhooks/deliveries``. Only loopback URLs are accepted: the local Hub never posts
anywhere else. The secret goes in ``X-Webhook-Secret`` as-is, like the Hub's (it is no signature).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .storage import HubEvent, hub_date, utc_now

if TYPE_CHECKING:
    from .app import HubApp

WATCH_TYPES = ("user", "org", "model", "dataset", "space")
DOMAINS = ("repo", "discussion")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DELIVERY_TIMEOUT = 10.0  # seconds a receiver has to answer
BODY_KEPT = 2048  # bytes of each answer kept in the record
FAULT_ACTIONS = ("drop", "duplicate", "delay")


def object_id(text: str) -> str:
    from .api_read import object_id as oid

    return oid(text)


@dataclass
class Webhook:
    id: str
    owner: str
    watched: list[dict[str, str]]
    domains: list[str]
    url: str | None = None
    job_source: str | None = None  # a job whose spec runs on each event instead of a POST
    job_secrets: dict[str, str] = field(default_factory=dict)
    secret: str | None = None
    disabled: bool = False

    def watches(self, event: HubEvent) -> bool:
        if self.disabled or event.scope.split(".", 1)[0] not in self.domains:
            return False
        repo = event.repo
        return any(
            (w["type"] in ("user", "org") and w["name"] == repo.namespace)
            or (w["type"] == repo.type and w["name"] == repo.id)
            for w in self.watched
        )


@dataclass
class DeliveryFault:
    id: str
    action: str
    delay: float = 0.0
    times: int | None = None  # None: until cleared
    webhook_id: str | None = None
    scope: str | None = None  # a regex on event.scope (re.fullmatch)
    hits: int = 0

    def matches(self, webhook: Webhook, scope: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.webhook_id is not None and self.webhook_id != webhook.id:
            return False
        return self.scope is None or re.fullmatch(self.scope, scope) is not None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Webhooks:
    def __init__(self, app: HubApp) -> None:
        self.app = app
        self.hooks: dict[str, Webhook] = {}
        self.faults: list[DeliveryFault] = []
        self.deliveries: list[dict[str, Any]] = []
        self.lock = threading.Condition()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending = 0  # queued, delayed or being sent
        self._worker: threading.Thread | None = None
        for data in app.store.meta.get("webhooks", []):  # a server restarted on its --data folder
            hook = Webhook(**data)
            self.hooks[hook.id] = hook

    def save(self) -> None:
        """Keep the webhooks in the store's index (call without holding ``self.lock``)."""
        with self.app.store.lock:
            with self.lock:
                self.app.store.meta["webhooks"] = [dict(h.__dict__) for h in self.hooks.values()]
            self.app.store.save()

    # -- payloads -------------------------------------------------------------------------------

    def _account_id(self, name: str) -> str:
        account = self.app.accounts.accounts.get(name)
        return account.id if account else object_id(f"user:{name}")

    def payload(self, hook: Webhook, event: HubEvent) -> dict[str, Any]:
        repo, base = event.repo, event.base_url
        plural = f"{repo.type}s"
        repo_part: dict[str, Any] = {
            "type": repo.type,
            "name": repo.id,
            "id": object_id(repo.key),
            "private": repo.private,
            "url": {"web": f"{base}/{repo.url_path}", "api": f"{base}/api/{plural}/{repo.id}"},
            "owner": {"id": self._account_id(repo.namespace)},
        }
        if event.scope.startswith("repo") and "main" in repo.branches:
            repo_part["headSha"] = repo.branches["main"]  # the Hub sends it on repo events only
        out: dict[str, Any] = {
            "event": {"action": event.action, "scope": event.scope},
            "repo": repo_part,
        }
        d = event.discussion
        if d is not None:
            web = f"{base}/{repo.url_path}/discussions/{d.num}"
            discussion: dict[str, Any] = {
                "id": object_id(f"{repo.key}#{d.num}"),
                "title": d.title,
                "url": {"web": web, "api": f"{base}/api/{plural}/{repo.id}/discussions/{d.num}"},
                "status": d.status,
                "author": {"id": self._account_id(d.author)},
                "num": d.num,
                "isPullRequest": d.is_pr,
            }
            if d.is_pr:
                changes: dict[str, Any] = {"base": d.base_ref or "refs/heads/main"}
                if d.merge_commit:
                    changes["mergeCommitId"] = d.merge_commit
                discussion["changes"] = changes
            out["discussion"] = discussion
            c = event.comment
            if c is not None:
                data = c["data"]
                out["comment"] = {
                    "id": c["id"],
                    "author": {"id": self._account_id(c["author"])},
                    "content": data["latest"]["raw"],
                    "hidden": bool(data["hidden"]),
                    "url": {"web": f"{web}#{c['id']}"},
                }
        out["webhook"] = {"id": hook.id, "version": 3}
        if event.updated_refs:
            out["updatedRefs"] = [
                {"ref": r, "oldSha": old, "newSha": new} for r, old, new in event.updated_refs
            ]
        if event.updated_config is not None:
            out["updatedConfig"] = event.updated_config
        return out

    # -- events ---------------------------------------------------------------------------------

    def on_event(self, event: HubEvent) -> None:
        """Called by the store under its lock: build payloads now, deliver later."""
        with self.lock:
            hooks = [h for h in self.hooks.values() if h.watches(event)]
        for hook in hooks:
            if not self.app.accounts.can_see(event.repo, hook.owner):
                continue  # a private repo's events reach only webhooks of those who can see it
            payload = self.payload(hook, event)
            record = {
                "id": uuid.uuid4().hex,
                "webhook_id": hook.id,
                "url": hook.url,
                "job_source": hook.job_source,
                "event": payload["event"],
                "payload": payload,
                "created_at": hub_date(utc_now()),
                "hub_url": event.base_url,
            }
            self._schedule(hook, record)

    def _schedule(self, hook: Webhook, record: dict[str, Any]) -> None:
        with self.lock:
            fault = next((f for f in self.faults if f.matches(hook, record["event"]["scope"])), None)
            if fault is not None:
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                record["fault"] = fault.action
            copies = 2 if fault is not None and fault.action == "duplicate" else 1
            if fault is not None and fault.action == "drop":
                record.update(status=None, delivered=False, error="dropped by an injected fault", attempt=1)
                self.deliveries.append(record)
                self.lock.notify_all()
                return
            self._pending += copies
            self._ensure_worker()
        for attempt in range(1, copies + 1):
            item = dict(record, id=uuid.uuid4().hex if attempt > 1 else record["id"], attempt=attempt)
            if fault is not None and fault.action == "delay":
                timer = threading.Timer(fault.delay, self._queue.put, args=(item,))
                timer.daemon = True
                timer.start()
            else:
                self._queue.put(item)

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="webhook-delivery", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._deliver(item)
            finally:
                with self.lock:
                    self.deliveries.append(item)
                    self._pending -= 1
                    self.lock.notify_all()

    def _deliver(self, item: dict[str, Any]) -> None:
        hook = self.hooks.get(item["webhook_id"])
        started = time.monotonic()
        item["delivered_at"] = hub_date(utc_now())
        if hook is None:
            item.update(status=None, delivered=False, error="the webhook was deleted before delivery")
            return
        if hook.job_source is not None:
            self._run_job(hook, item)
            return
        assert hook.url is not None
        split = urlsplit(hook.url)
        body = json.dumps(item["payload"]).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "localhub-webhooks/1.0"}
        if hook.secret:
            headers["X-Webhook-Secret"] = hook.secret
        path = split.path or "/"
        if split.query:
            path += "?" + split.query
        conn_cls = http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(split.hostname or "127.0.0.1", split.port, timeout=DELIVERY_TIMEOUT)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(BODY_KEPT)
            item.update(
                status=response.status,
                delivered=200 <= response.status < 300,
                response=answer.decode("utf-8", "replace"),
                error=None,
            )
        except OSError as e:
            item.update(status=None, delivered=False, response=None, error=f"{type(e).__name__}: {e}")
        finally:
            conn.close()
            item["duration_ms"] = int((time.monotonic() - started) * 1000)

    def _run_job(self, hook: Webhook, item: dict[str, Any]) -> None:
        """A job webhook: run the source job's spec with the payload in its environment."""
        source = self.app.jobs.jobs.get(hook.job_source or "")
        if source is None:
            item.update(status=None, delivered=False, error=f"source job {hook.job_source} not found")
            return
        payload = item["payload"]
        spec = dict(source.spec)
        spec["environment"] = {
            **source.spec.get("environment", {}),
            "WEBHOOK_PAYLOAD": json.dumps(payload),
            "WEBHOOK_REPO_ID": payload["repo"]["name"],
            "WEBHOOK_REPO_TYPE": payload["repo"]["type"],
        }
        secrets = {**source.secrets, **hook.job_secrets}
        if hook.secret:
            secrets["WEBHOOK_SECRET"] = hook.secret
        spec["secretNames"] = sorted(secrets)
        job = self.app.jobs.start(
            namespace=source.namespace,
            owner=source.owner,
            initiator={"type": "webhook", "id": hook.id},
            spec=spec,
            secrets=secrets,
            base_url=item["hub_url"],
            scheduling_delay=self.app.config.jobs_scheduling_delay_ms / 1000,
        )
        item.update(status=None, delivered=True, job_id=job.id, error=None)

    # -- admin ----------------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 30.0) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self._pending == 0, timeout=timeout)

    def add_fault(self, spec: dict[str, Any]) -> DeliveryFault:
        action = spec.get("action")
        if action not in FAULT_ACTIONS:
            raise ValueError(f"action must be one of {FAULT_ACTIONS}")
        delay = float(spec.get("delay") or 0.0)
        if action == "delay" and not 0 < delay <= 60:
            raise ValueError("a delay fault needs 0 < delay <= 60 seconds")
        times = spec.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer or null")
        scope = spec.get("scope")
        if scope is not None:
            re.compile(scope)
        fault = DeliveryFault(uuid.uuid4().hex[:12], action, delay, times, spec.get("webhook_id"), scope)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def clear_deliveries(self) -> None:
        with self.lock:
            self.deliveries.clear()

    def records(self, webhook_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(d) for d in self.deliveries if webhook_id is None or d["webhook_id"] == webhook_id]

    def delete(self, hook_id: str) -> None:
        with self.lock:
            self.hooks.pop(hook_id, None)
        self.save()


def is_loopback_url(url: str) -> bool:
    with contextlib.suppress(ValueError):
        split = urlsplit(url)
        return split.scheme in ("http", "https") and (split.hostname or "") in LOOPBACK
    return False
