"""Webhook management as huggingface_hub calls it (``/api/settings/webhooks``), and the admin view
of deliveries and delivery faults (``/_admin/webhooks/...``).

Webhooks belong to the user whose token created them; reading needs that user's token, changing
needs a write token. Delivery itself lives in ``webhook_delivery``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .accounts import require_scope
from .web import HubError, Request, Response, Route, json_response
from .webhook_delivery import DOMAINS, WATCH_TYPES, Webhook, is_loopback_url

if TYPE_CHECKING:
    from .accounts import Token
    from .app import HubApp

HOOK = r"/api/settings/webhooks/(?P<hook_id>[0-9a-f]{24})"


def render(hook: Webhook, app: HubApp) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": hook.id,
        "watched": [dict(w) for w in hook.watched],
        "domains": list(hook.domains),
        "secret": hook.secret,
        "disabled": hook.disabled,
    }
    if hook.url is not None:
        out["url"] = hook.url
    if hook.job_source is not None:
        source = app.jobs.jobs.get(hook.job_source)
        if source is not None:
            from .api_jobs import render_job

            job = render_job(source)
            out["job"] = {
                k: job[k]
                for k in ("dockerImage", "spaceId", "command", "arguments", "environment", "flavor", "labels")
                if k in job
            }
            out["job"]["secrets"] = dict.fromkeys(sorted({*source.secrets, *hook.job_secrets}))
    return out


def _writer(app: HubApp, req: Request) -> Token:
    """Every webhook call needs the ``webhooks`` scope (write tokens hold it, read tokens don't)."""
    return require_scope(req.token, "webhooks")


def _hook(app: HubApp, req: Request, hook_id: str) -> Webhook:
    token = _writer(app, req)
    hook = app.webhooks.hooks.get(hook_id)
    if hook is None or hook.owner != token.user:
        raise HubError(404, f"Webhook {hook_id} not found")
    return hook


def _watched(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise HubError(400, "watched must be a non-empty list of {type, name}")
    out = []
    for item in value:
        if not isinstance(item, dict) or item.get("type") not in WATCH_TYPES or not item.get("name"):
            raise HubError(400, f"Invalid watched item {item!r}: type one of {WATCH_TYPES}, and a name")
        out.append({"type": str(item["type"]), "name": str(item["name"])})
    return out


def _domains(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or any(d not in DOMAINS for d in value):
        raise HubError(400, f"domains must be a non-empty list of {DOMAINS}")
    return list(dict.fromkeys(value))


def _secret(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isascii():
        raise HubError(400, "A webhook secret must be ASCII text")
    return value


def _target(app: HubApp, token: Token, data: dict[str, Any], hook: Webhook) -> None:
    url, job_id = data.get("url"), data.get("jobSourceId")
    if url is not None and job_id is not None:
        raise HubError(400, "Set url or jobSourceId, not both")
    if url is not None:
        if not isinstance(url, str) or not is_loopback_url(url):
            raise HubError(
                400, f"Invalid webhook URL {url!r}: the local Hub delivers only to loopback http(s) URLs"
            )
        hook.url, hook.job_source = url, None
    elif job_id is not None:
        source = app.jobs.jobs.get(str(job_id))
        if source is None or not app.accounts.owns_namespace(token.user, source.namespace):
            raise HubError(404, f"Job {job_id} not found")
        hook.job_source, hook.url = source.id, None
    if "secrets" in data:
        if hook.job_source is None:
            raise HubError(400, "secrets can only be set on a webhook that runs a job")
        secrets = data["secrets"] or {}
        if not isinstance(secrets, dict):
            raise HubError(400, "secrets must be an object of NAME: value")
        hook.job_secrets = {str(k): str(v) for k, v in secrets.items() if v is not None}


def list_webhooks(app: HubApp, req: Request) -> Response:
    token = _writer(app, req)
    with app.webhooks.lock:
        hooks = [render(h, app) for h in app.webhooks.hooks.values() if h.owner == token.user]
    return json_response(hooks)


def create_webhook(app: HubApp, req: Request) -> Response:
    from .jobs_runner import new_id

    token = _writer(app, req)
    data = req.json()
    if not isinstance(data, dict):
        raise HubError(400, "Expected a JSON object")
    hook = Webhook(
        id=new_id(),
        owner=token.user,
        watched=_watched(data.get("watched")),
        domains=_domains(data.get("domains", list(DOMAINS))),
        secret=_secret(data.get("secret")),
    )
    if data.get("url") is None and data.get("jobSourceId") is None:
        raise HubError(400, "A webhook needs a url or a jobSourceId")
    _target(app, token, data, hook)
    with app.webhooks.lock:
        app.webhooks.hooks[hook.id] = hook
    app.webhooks.save()
    return json_response({"webhook": render(hook, app)})


def get_webhook(app: HubApp, req: Request, hook_id: str) -> Response:
    return json_response({"webhook": render(_hook(app, req, hook_id), app)})


def update_webhook(app: HubApp, req: Request, hook_id: str) -> Response:
    hook = _hook(app, req, hook_id)
    data = req.json()
    if not isinstance(data, dict):
        raise HubError(400, "Expected a JSON object")
    with app.webhooks.lock:
        if data.get("watched"):  # the client always sends the key, [] when the caller passed nothing
            hook.watched = _watched(data["watched"])
        if "domains" in data:
            hook.domains = _domains(data["domains"])
        if "secret" in data:
            hook.secret = _secret(data["secret"])
        _target(app, app.require_user(req), data, hook)
    app.webhooks.save()
    return json_response({"webhook": render(hook, app)})


def _switch(app: HubApp, req: Request, hook_id: str, *, disabled: bool) -> Response:
    hook = _hook(app, req, hook_id)
    with app.webhooks.lock:
        hook.disabled = disabled
    app.webhooks.save()
    return json_response({"webhook": render(hook, app)})


def enable_webhook(app: HubApp, req: Request, hook_id: str) -> Response:
    return _switch(app, req, hook_id, disabled=False)


def disable_webhook(app: HubApp, req: Request, hook_id: str) -> Response:
    return _switch(app, req, hook_id, disabled=True)


def delete_webhook(app: HubApp, req: Request, hook_id: str) -> Response:
    hook = _hook(app, req, hook_id)
    app.webhooks.delete(hook.id)
    return json_response({})


# -- admin ----------------------------------------------------------------------------------------


def admin_deliveries(app: HubApp, req: Request) -> Response:
    """Delivery records, oldest first; ``?wait=1`` first waits (up to 30 s) for queued ones."""
    if req.flag("wait"):
        app.webhooks.wait_idle()
    return json_response(app.webhooks.records(req.arg("webhook_id")))


def admin_clear_deliveries(app: HubApp, req: Request) -> Response:
    app.webhooks.wait_idle(5.0)
    app.webhooks.clear_deliveries()
    return json_response({})


def admin_faults(app: HubApp, req: Request) -> Response:
    with app.webhooks.lock:
        return json_response([f.to_dict() for f in app.webhooks.faults])


def admin_add_fault(app: HubApp, req: Request) -> Response:
    try:
        fault = app.webhooks.add_fault(req.json())
    except (ValueError, TypeError) as e:
        raise HubError(400, f"Invalid delivery fault: {e}") from e
    return json_response(fault.to_dict())


def admin_clear_faults(app: HubApp, req: Request) -> Response:
    app.webhooks.clear_faults()
    return json_response({})


ROUTES = [
    Route(("GET",), r"/api/settings/webhooks", list_webhooks, "webhooks"),
    Route(("POST",), r"/api/settings/webhooks", create_webhook, "webhooks"),
    Route(("GET",), HOOK, get_webhook, "webhooks"),
    Route(("POST",), HOOK, update_webhook, "webhooks"),
    Route(("DELETE",), HOOK, delete_webhook, "webhooks"),
    Route(("POST",), HOOK + r"/enable", enable_webhook, "webhooks"),
    Route(("POST",), HOOK + r"/disable", disable_webhook, "webhooks"),
    Route(("GET",), r"/_admin/webhooks/deliveries", admin_deliveries, "admin", auth="admin"),
    Route(("DELETE",), r"/_admin/webhooks/deliveries", admin_clear_deliveries, "admin", auth="admin"),
    Route(("GET",), r"/_admin/webhooks/faults", admin_faults, "admin", auth="admin"),
    Route(("POST",), r"/_admin/webhooks/faults", admin_add_fault, "admin", auth="admin"),
    Route(("DELETE",), r"/_admin/webhooks/faults", admin_clear_faults, "admin", auth="admin"),
]
