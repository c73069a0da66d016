"""The Jobs API as huggingface_hub 2.x calls it: run, inspect, list, logs, metrics, cancel, labels,
hardware, and scheduled jobs. The processes themselves are in ``jobs_runner``.

Access follows the Hub: jobs belong to a namespace (a user, or an organisation its members act
for); running, cancelling or relabelling needs the ``jobs`` scope (write tokens hold it), reading
needs any token of someone in the namespace. Logs and metrics are server-sent events (``data: {...}`` lines) streamed while
the job runs and closed once it has finished, which is what the client's follow loop expects.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .accounts import require_scope
from .jobs_runner import Job, ScheduledJob, new_id, next_run
from .storage import hub_date, utc_now
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .accounts import Token
    from .app import HubApp

NS = r"(?P<namespace>[A-Za-z0-9][A-Za-z0-9._-]*)"
JOB = r"(?P<job_id>[0-9a-f]{24})"
LABEL = re.compile(r"[A-Za-z0-9_-]{1,100}")
LABEL_VALUE = re.compile(r"[A-Za-z0-9_-]{0,100}")
STAGES = ("COMPLETED", "CANCELED", "ERROR", "DELETED", "SCHEDULING", "RUNNING")
KEEP_ALIVE = 10.0  # seconds of silence before a comment line (more than the client's 5 s no-follow wait)


def _hw(name: str, pretty: str, cpu: int, ram: int, disk: int, cost: int, gpu: tuple[str, int, int] | None):
    accelerator = (
        {
            "type": "gpu",
            "model": gpu[0],
            "quantity": str(gpu[1]),
            "vram": f"{gpu[2]} GB",
            "manufacturer": "Nvidia",
        }
        if gpu
        else None
    )
    return {
        "name": name,
        "prettyName": pretty,
        "cpu": f"{cpu} vCPU",
        "ram": f"{ram} GB",
        "ephemeralStorage": f"{disk} GB",
        "accelerator": accelerator,
        "unitCostMicroUSD": cost,
        "unitCostUSD": cost / 1e6,
        "unitLabel": "minute",
    }


# Flavors a job may ask for; the local Hub records the flavor and runs every job on this machine.
HARDWARE = [
    _hw("cpu-basic", "CPU Basic", 2, 16, 50, 167, None),
    _hw("cpu-upgrade", "CPU Upgrade", 8, 32, 50, 500, None),
    _hw("cpu-performance", "CPU Performance", 32, 256, 50, 3167, None),
    _hw("cpu-xl", "CPU XL", 16, 124, 50, 1667, None),
    _hw("t4-small", "Nvidia T4 - small", 4, 15, 50, 667, ("T4", 1, 16)),
    _hw("t4-medium", "Nvidia T4 - medium", 8, 30, 100, 1000, ("T4", 1, 16)),
    _hw("l4x1", "1x Nvidia L4", 8, 30, 400, 1333, ("L4", 1, 24)),
    _hw("l4x4", "4x Nvidia L4", 48, 186, 3200, 6333, ("L4", 4, 96)),
    _hw("l40sx1", "1x Nvidia L40S", 8, 62, 380, 3000, ("L40S", 1, 48)),
    _hw("l40sx4", "4x Nvidia L40S", 48, 382, 3200, 13833, ("L40S", 4, 192)),
    _hw("l40sx8", "8x Nvidia L40S", 192, 1534, 6500, 39000, ("L40S", 8, 384)),
    _hw("a10g-small", "Nvidia A10G - small", 4, 15, 110, 1667, ("A10G", 1, 24)),
    _hw("a10g-large", "Nvidia A10G - large", 12, 46, 200, 2500, ("A10G", 1, 24)),
    _hw("a10g-largex2", "2x Nvidia A10G - large", 24, 92, 1000, 5000, ("A10G", 2, 48)),
    _hw("a10g-largex4", "4x Nvidia A10G - large", 48, 184, 2000, 8333, ("A10G", 4, 96)),
    _hw("a100-large", "Nvidia A100 - large", 12, 142, 1000, 4167, ("A100", 1, 80)),
    _hw("a100x4", "4x Nvidia A100", 48, 568, 4000, 16667, ("A100", 4, 320)),
    _hw("a100x8", "8x Nvidia A100", 96, 1136, 8000, 33333, ("A100", 8, 640)),
    _hw("h200", "Nvidia H200", 23, 256, 3000, 8333, ("H200", 1, 141)),
    _hw("h200x2", "2x Nvidia H200", 46, 512, 6000, 16667, ("H200", 2, 282)),
    _hw("h200x4", "4x Nvidia H200", 92, 1024, 12000, 33333, ("H200", 4, 564)),
    _hw("h200x8", "8x Nvidia H200", 184, 2048, 24000, 66667, ("H200", 8, 1128)),
    _hw("rtx-pro-6000", "Nvidia RTX PRO 6000", 23, 180, 1000, 4500, ("RTX PRO 6000", 1, 96)),
    _hw("rtx-pro-6000x2", "2x Nvidia RTX PRO 6000", 46, 360, 2000, 9000, ("RTX PRO 6000", 2, 192)),
    _hw("rtx-pro-6000x4", "4x Nvidia RTX PRO 6000", 92, 720, 4000, 18000, ("RTX PRO 6000", 4, 384)),
    _hw("rtx-pro-6000x8", "8x Nvidia RTX PRO 6000", 184, 1440, 8000, 36000, ("RTX PRO 6000", 8, 768)),
]
FLAVORS = {h["name"] for h in HARDWARE}


# -- access ---------------------------------------------------------------------------------------


def _member(app: HubApp, req: Request, namespace: str, *, write: bool) -> Token:
    """Reading needs any token of a namespace member; changing needs the ``jobs`` scope too."""
    token = require_scope(req.token, "jobs") if write else app.require_user(req)
    if namespace not in app.accounts.accounts or not app.accounts.owns_namespace(token.user, namespace):
        raise HubError(403, f"You don't have access to jobs in the namespace {namespace!r}")
    return token


def _owner(app: HubApp, namespace: str) -> dict[str, str]:
    account = app.accounts.accounts[namespace]
    return {"id": account.id, "name": account.name, "type": account.type}


def _job(app: HubApp, req: Request, namespace: str, job_id: str, *, write: bool = False) -> Job:
    _member(app, req, namespace, write=write)
    job = app.jobs.jobs.get(job_id)
    if job is None or job.namespace != namespace:
        raise HubError(404, f"Job {job_id} not found")
    return job


# -- validation -----------------------------------------------------------------------------------


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HubError(400, "labels must be an object of key: value strings")
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL.fullmatch(key):
            raise HubError(400, f"Invalid label key {key!r}: 1-100 letters, digits, dashes or underscores")
        if not isinstance(val, str) or not LABEL_VALUE.fullmatch(val):
            raise HubError(
                400, f"Invalid label value {val!r}: up to 100 letters, digits, dashes or underscores"
            )
    return dict(value)


def _spec(data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The recorded spec (secrets reduced to their names) and the secret values, or a 400."""
    if not isinstance(data, dict):
        raise HubError(400, "A job spec must be a JSON object")
    image, space = data.get("dockerImage"), data.get("spaceId")
    if not (isinstance(image, str) and image) and not (isinstance(space, str) and space):
        raise HubError(400, "A job needs a dockerImage or a spaceId")
    command = data.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise HubError(400, "command must be a non-empty list of strings")
    arguments = data.get("arguments") or []
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise HubError(400, "arguments must be a list of strings")
    flavor = data.get("flavor") or "cpu-basic"
    if flavor not in FLAVORS:
        raise HubError(400, f"Unknown flavor {flavor!r}; see /api/jobs/hardware")
    timeout = data.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
        raise HubError(400, "timeoutSeconds must be a positive integer")
    env = data.get("environment") or {}
    secrets = data.get("secrets") or {}
    for name, mapping in (("environment", env), ("secrets", secrets)):
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and k for k in mapping):
            raise HubError(400, f"{name} must be an object of NAME: value")
    spec = {k: v for k, v in data.items() if k != "secrets"}
    spec.update(
        command=command,
        arguments=arguments,
        flavor=flavor,
        environment={k: "" if v is None else str(v) for k, v in env.items()},
        labels=_labels(data.get("labels")),
        secretNames=sorted(secrets),
    )
    return spec, {k: str(v) for k, v in secrets.items() if v is not None}


# -- rendering ------------------------------------------------------------------------------------


def _secs(start: datetime | None, end: datetime | None) -> int | None:
    if start is None:
        return None
    return int(((end or utc_now()) - start).total_seconds())


def render_job(job: Job) -> dict[str, Any]:
    spec = job.spec
    out: dict[str, Any] = {
        "id": job.id,
        "createdAt": hub_date(job.created_at),
        "startedAt": hub_date(job.started_at) if job.started_at else None,
        "finishedAt": hub_date(job.finished_at) if job.finished_at else None,
        "command": spec["command"],
        "arguments": spec["arguments"],
        "environment": spec["environment"],
        "secrets": dict.fromkeys(spec["secretNames"]),  # names only: values never leave the server
        "flavor": spec["flavor"],
        "labels": dict(job.labels),
        "status": {"stage": job.stage, "message": job.message},
        "durations": {
            "schedulingSecs": _secs(job.created_at, job.started_at or job.finished_at),
            "runningSecs": _secs(job.started_at, job.finished_at),
            "totalSecs": _secs(job.created_at, job.finished_at),
        },
        "owner": job.owner,
        "initiator": job.initiator,
        "timeoutSeconds": int(job.timeout),
    }
    if spec.get("dockerImage"):
        out["dockerImage"] = spec["dockerImage"]
    if spec.get("spaceId"):
        out["spaceId"] = spec["spaceId"]
    for key in ("volumes", "expose", "network"):
        if spec.get(key):
            out[key] = spec[key]
    if spec.get("attempts") is not None:
        out["retry"] = max(0, int(spec["attempts"]) - 1)
    return out


def _public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k != "secretNames"}
    out["secrets"] = dict.fromkeys(spec["secretNames"])
    return out


def render_scheduled(s: ScheduledJob) -> dict[str, Any]:
    return {
        "id": s.id,
        "createdAt": hub_date(s.created_at),
        "jobSpec": _public_spec(s.spec),
        "schedule": s.schedule,
        "suspend": s.suspend,
        "concurrency": s.concurrency,
        "status": {
            "lastJob": {"id": s.last_job[0], "at": hub_date(s.last_job[1])} if s.last_job else None,
            "nextJobRunAt": hub_date(s.next_run_at) if s.next_run_at and not s.suspend else None,
        },
        "owner": s.owner,
    }


# -- jobs -----------------------------------------------------------------------------------------


def hardware(app: HubApp, req: Request) -> Response:
    return json_response(HARDWARE)


def run_job(app: HubApp, req: Request, namespace: str) -> Response:
    token = _member(app, req, namespace, write=True)
    spec, secrets = _spec(req.json())
    account = app.accounts.accounts[token.user]
    job = app.jobs.start(
        namespace=namespace,
        owner=_owner(app, namespace),
        initiator={"type": "user", "id": account.id, "name": account.name},
        spec=spec,
        secrets=secrets,
        base_url=req.base_url,
        scheduling_delay=app.config.jobs_scheduling_delay_ms / 1000,
    )
    return json_response(render_job(job))


def list_jobs(app: HubApp, req: Request, namespace: str) -> Response:
    _member(app, req, namespace, write=False)
    stages = [s.upper() for s in req.args("stage")]
    if any(s not in STAGES for s in stages):
        raise HubError(400, f"stage must be one of {', '.join(STAGES)}")
    wanted: dict[str, str] = {}
    for item in req.args("label"):
        key, sep, value = item.partition("=")
        if not sep:
            raise HubError(400, f"label filters are key=value, not {item!r}")
        wanted[key] = value
    cursor = req.arg("cursor")
    if cursor is not None and not cursor.isdigit():
        raise HubError(400, f"Invalid cursor {cursor!r}")
    with app.jobs.changed:
        chosen = [
            j
            for j in sorted(app.jobs.jobs.values(), key=lambda j: j.seq, reverse=True)
            if j.namespace == namespace
            and (not stages or j.stage in stages)
            and all(j.labels.get(k) == v for k, v in wanted.items())
            and (cursor is None or j.seq < int(cursor))  # keyset: new jobs never shift a page
        ]
        page = chosen[: app.config.jobs_page_size]
        body = [render_job(j) for j in page]
    headers: dict[str, str] = {}
    if len(chosen) > len(page):
        from .api_read import next_link

        headers = next_link(req, "cursor", str(page[-1].seq))
    return json_response(body, headers=headers)


def inspect_job(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id)
    with app.jobs.changed:
        return json_response(render_job(job))


def cancel_job(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id, write=True)
    app.jobs.cancel(job)
    return json_response({})


def duplicate_job(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    source = _job(app, req, namespace, job_id, write=True)
    job = app.jobs.start(
        namespace=namespace,
        owner=source.owner,
        initiator={"type": "duplicated-job", "id": source.id},
        spec=dict(source.spec, labels=dict(source.labels)),
        secrets=source.secrets,
        base_url=req.base_url,
        scheduling_delay=app.config.jobs_scheduling_delay_ms / 1000,
    )
    return json_response(render_job(job))


def update_labels(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id, write=True)
    labels = _labels(req.json().get("labels"))
    with app.jobs.changed:
        job.labels = labels
        return json_response(render_job(job))


def update_expose(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id, write=True)
    data = req.json()
    ports = data.get("ports") or []
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise HubError(400, "ports must be a list of port numbers")
    with app.jobs.changed:
        job.spec["expose"] = {"ports": ports, "portsPublic": list(data.get("portsPublic") or [])}
        return json_response(render_job(job))


# -- server-sent events ---------------------------------------------------------------------------


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def job_logs(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id)
    tail = req.arg("tail")
    if tail is not None and not tail.isdigit():
        raise HubError(400, "tail must be a non-negative integer")

    def events() -> Iterator[bytes]:
        lines, _ = app.jobs.lines(job, 0)
        sent = len(lines)
        first = lines[-int(tail) :] if tail is not None and int(tail) > 0 else ([] if tail == "0" else lines)
        for line in first:
            yield _sse({"data": job.mask(line.text), "timestamp": hub_date(line.at)})
        quiet_since = time.monotonic()
        while True:
            lines, finished = app.jobs.lines(job, sent)
            for line in lines:
                yield _sse({"data": job.mask(line.text), "timestamp": hub_date(line.at)})
            sent += len(lines)
            if lines:
                quiet_since = time.monotonic()
            elif finished:
                return
            elif time.monotonic() - quiet_since > KEEP_ALIVE:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            app.jobs.wait_change(1.0)

    return Response(200, dict(SSE_HEADERS), stream=events())


def job_metrics(app: HubApp, req: Request, namespace: str, job_id: str) -> Response:
    job = _job(app, req, namespace, job_id)
    if job.stage != "RUNNING":
        raise HubError(406, f"Job {job.id} is not running ({job.stage}): no metrics")

    def events() -> Iterator[bytes]:
        while True:
            sample = app.jobs.metrics(job)
            if sample is None:
                return
            yield _sse(sample)
            time.sleep(1.0)

    return Response(200, dict(SSE_HEADERS), stream=events())


# -- scheduled jobs -------------------------------------------------------------------------------


def _scheduled(app: HubApp, req: Request, namespace: str, sid: str, *, write: bool = False) -> ScheduledJob:
    _member(app, req, namespace, write=write)
    s = app.jobs.scheduled.get(sid)
    if s is None or s.namespace != namespace:
        raise HubError(404, f"Scheduled job {sid} not found")
    return s


def _checked_schedule(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HubError(400, "schedule must be a cron expression or @hourly, @daily, ...")
    try:
        next_run(value, utc_now())
    except ValueError as e:
        raise HubError(400, f"Invalid schedule {value!r}: {e}") from e
    except ImportError as e:  # the one optional dependency of the server (the dev extra has it)
        raise HubError(
            501, "Scheduled jobs need APScheduler on the server: pip install 'apscheduler<4'"
        ) from e
    return value.strip()


def fire_scheduled(app: HubApp, s: ScheduledJob) -> Job:
    with app.jobs.changed:
        if not s.concurrency and s.last_job and not app.jobs.jobs[s.last_job[0]].finished:
            raise HubError(409, "An instance of this scheduled job is still running (concurrency is off)")
    job = app.jobs.start(
        namespace=s.namespace,
        owner=s.owner,
        initiator={"type": "scheduled-job", "id": s.id},
        spec=dict(s.spec),
        secrets=s.secrets,
        base_url=s.base_url,
        scheduled_job_id=s.id,
        scheduling_delay=app.config.jobs_scheduling_delay_ms / 1000,
    )
    s.last_job = (job.id, job.created_at)
    return job


def create_scheduled(app: HubApp, req: Request, namespace: str) -> Response:
    _member(app, req, namespace, write=True)
    data = req.json()
    if not isinstance(data, dict):
        raise HubError(400, "Expected {jobSpec, schedule}")
    spec, secrets = _spec(data.get("jobSpec"))
    schedule = _checked_schedule(data.get("schedule"))
    s = ScheduledJob(
        id=new_id(),
        namespace=namespace,
        owner=_owner(app, namespace),
        spec=spec,
        secrets=secrets,
        schedule=schedule,
        suspend=bool(data.get("suspend", False)),
        concurrency=bool(data.get("concurrency", False)),
        base_url=req.base_url,
    )
    s.next_run_at = next_run(schedule, utc_now())
    with app.jobs.changed:
        app.jobs.scheduled[s.id] = s
    app.jobs.ensure_scheduler(lambda sj: fire_scheduled(app, sj))
    return json_response(render_scheduled(s))


def list_scheduled(app: HubApp, req: Request, namespace: str) -> Response:
    _member(app, req, namespace, write=False)
    wanted = dict(item.partition("=")[::2] for item in req.args("label"))
    with app.jobs.changed:
        items = [
            render_scheduled(s)
            for s in sorted(app.jobs.scheduled.values(), key=lambda s: s.created_at, reverse=True)
            if s.namespace == namespace and all(s.spec["labels"].get(k) == v for k, v in wanted.items())
        ]
    return json_response(items)


def inspect_scheduled(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    return json_response(render_scheduled(_scheduled(app, req, namespace, sid)))


def delete_scheduled(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    s = _scheduled(app, req, namespace, sid, write=True)
    with app.jobs.changed:
        app.jobs.scheduled.pop(s.id, None)
    return json_response({})


def suspend_scheduled(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    _scheduled(app, req, namespace, sid, write=True).suspend = True
    return json_response({})


def resume_scheduled(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    s = _scheduled(app, req, namespace, sid, write=True)
    s.next_run_at = next_run(s.schedule, utc_now())
    s.suspend = False
    return json_response({})


def reschedule(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    s = _scheduled(app, req, namespace, sid, write=True)
    s.schedule = _checked_schedule(req.json().get("schedule"))
    s.next_run_at = next_run(s.schedule, utc_now())
    return json_response(render_scheduled(s))


def trigger_scheduled(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    s = _scheduled(app, req, namespace, sid, write=True)
    return json_response(render_job(fire_scheduled(app, s)))


def scheduled_labels(app: HubApp, req: Request, namespace: str, sid: str) -> Response:
    s = _scheduled(app, req, namespace, sid, write=True)
    s.spec["labels"] = _labels(req.json().get("labels"))
    return json_response(render_scheduled(s))


def admin_make_due(app: HubApp, req: Request, sid: str) -> Response:
    """Make a scheduled job due now and wait (up to 10 s) for the scheduler thread to fire it."""
    s = app.jobs.scheduled.get(sid)
    if s is None:
        raise HubError(404, f"Scheduled job {sid} not found")
    before = s.last_job
    s.next_run_at = utc_now()
    deadline = time.monotonic() + 10.0
    while s.last_job == before and time.monotonic() < deadline:
        app.jobs.wait_change(0.1)
    if s.last_job == before:
        raise HubError(504, f"Scheduled job {sid} did not fire (suspended?)")
    return json_response({"job_id": s.last_job[0] if s.last_job else None})


J = r"/api/jobs/" + NS + "/" + JOB
S = r"/api/scheduled-jobs/" + NS + r"/(?P<sid>[0-9a-f]{24})"
ROUTES = [
    Route(("GET",), r"/api/jobs/hardware", hardware, "jobs", auth="none"),
    Route(("POST",), r"/api/jobs/" + NS, run_job, "jobs"),
    Route(("GET",), r"/api/jobs/" + NS, list_jobs, "jobs"),
    Route(("GET",), J, inspect_job, "jobs"),
    Route(("GET",), J + r"/logs", job_logs, "job-logs"),
    Route(("GET",), J + r"/metrics", job_metrics, "job-metrics"),
    Route(("POST",), J + r"/cancel", cancel_job, "jobs"),
    Route(("POST",), J + r"/duplicate", duplicate_job, "jobs"),
    Route(("PUT",), J + r"/labels", update_labels, "jobs"),
    Route(("PUT",), J + r"/expose", update_expose, "jobs"),
    Route(("POST",), r"/api/scheduled-jobs/" + NS, create_scheduled, "scheduled-jobs"),
    Route(("GET",), r"/api/scheduled-jobs/" + NS, list_scheduled, "scheduled-jobs"),
    Route(("GET",), S, inspect_scheduled, "scheduled-jobs"),
    Route(("DELETE",), S, delete_scheduled, "scheduled-jobs"),
    Route(("POST",), S + r"/suspend", suspend_scheduled, "scheduled-jobs"),
    Route(("POST",), S + r"/resume", resume_scheduled, "scheduled-jobs"),
    Route(("POST",), S + r"/schedule", reschedule, "scheduled-jobs"),
    Route(("POST",), S + r"/run", trigger_scheduled, "scheduled-jobs"),
    Route(("PUT",), S + r"/labels", scheduled_labels, "scheduled-jobs"),
    Route(
        ("POST",), r"/_admin/scheduled-jobs/(?P<sid>[0-9a-f]{24})/due", admin_make_due, "admin", auth="admin"
    ),
]
