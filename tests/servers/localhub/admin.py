"""The test-only surface under ``/_admin/``: faults, statistics, settings, gated access, state.

Everything here needs the admin token except ``/_admin/health``, which a launcher polls before it
has any reason to authenticate. Admin requests are never faulted and never counted, so measuring
a client is not disturbed by the measuring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp


def health(app: HubApp, req: Request) -> Response:
    with app.store.lock:
        return json_response(
            {
                "ok": True,
                "repos": len(app.store.repos),
                "seeded": bool(app.store.meta.get("seeded")),
                "cdn": app.cdn_url,
            }
        )


def list_faults(app: HubApp, req: Request) -> Response:
    return json_response(app.faults.to_list())


def add_fault(app: HubApp, req: Request) -> Response:
    try:
        fault = app.faults.add(req.json())
    except (ValueError, TypeError) as e:  # bad regex or fields
        raise HubError(400, f"Invalid fault: {e}") from e
    return json_response(fault.to_dict())


def clear_faults(app: HubApp, req: Request) -> Response:
    app.faults.clear()
    app.webhooks.clear_faults()  # webhook delivery faults go with the others
    return json_response({})


def get_stats(app: HubApp, req: Request) -> Response:
    app.stats.wait_idle()
    return json_response(app.stats.to_dict())


def reset_stats(app: HubApp, req: Request) -> Response:
    app.stats.wait_idle()
    app.stats.reset()
    return json_response({})


def get_config(app: HubApp, req: Request) -> Response:
    return json_response(app.config.to_dict())


def set_config(app: HubApp, req: Request) -> Response:
    previous = app.config.to_dict()
    try:
        app.config.update(req.json())
    except ValueError as e:
        raise HubError(400, str(e)) from e
    return json_response({"previous": previous, "config": app.config.to_dict()})


def reset_config(app: HubApp, req: Request) -> Response:
    app.config.update(app.defaults.to_dict())
    app.oidc.clear()  # trusted publishers are settings too: none at start-up
    return json_response(app.config.to_dict())


def gated_access(app: HubApp, req: Request) -> Response:
    """Grant (POST) or revoke (DELETE) a user's access to a gated repo."""
    data = req.json()
    with app.store.lock:
        repo = app.store.get(data.get("repo_type") or "model", str(data.get("repo_id")))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        user = str(data.get("user"))
        if req.method == "POST" and user not in repo.gated_access:
            repo.gated_access.append(user)
        elif req.method == "DELETE" and user in repo.gated_access:
            repo.gated_access.remove(user)
        app.store.save()
        return json_response({"repo_id": repo.id, "gated_access": repo.gated_access})


def repos(app: HubApp, req: Request) -> Response:
    with app.store.lock:
        return json_response(
            [
                {
                    "type": r.type,
                    "id": r.id,
                    "private": r.private,
                    "gated": r.gated,
                    "downloads": r.downloads,
                    "branches": r.branches,
                    "tags": r.tags,
                    "prs": r.prs,
                    "commits": len(r.commits),
                    "discussions": len(r.discussions),
                }
                for r in app.store.repos.values()
            ]
        )


ROUTES = [
    Route(("GET",), r"/_admin/health", health, "admin", auth="none"),
    Route(("GET",), r"/_admin/faults", list_faults, "admin", auth="admin"),
    Route(("POST",), r"/_admin/faults", add_fault, "admin", auth="admin"),
    Route(("DELETE",), r"/_admin/faults", clear_faults, "admin", auth="admin"),
    Route(("GET",), r"/_admin/stats", get_stats, "admin", auth="admin"),
    Route(("POST",), r"/_admin/stats/reset", reset_stats, "admin", auth="admin"),
    Route(("GET",), r"/_admin/config", get_config, "admin", auth="admin"),
    Route(("POST",), r"/_admin/config", set_config, "admin", auth="admin"),
    Route(("POST",), r"/_admin/config/reset", reset_config, "admin", auth="admin"),
    Route(("POST", "DELETE"), r"/_admin/gated-access", gated_access, "admin", auth="admin"),
    Route(("GET",), r"/_admin/repos", repos, "admin", auth="admin"),
]
