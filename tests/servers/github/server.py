"""A local stand-in for GitHub's REST API: the calls pull-request tooling makes (the Action's
client, and PyGithub's, which the stand-in is checked against).

Routes: ``/repos/{o}/{r}``, ``…/pulls/{n}``, ``…/pulls/{n}/files`` (paginated), ``…/issues/{n}``,
``…/issues/{n}/comments`` (list, paginated / create), ``…/issues/comments/{id}`` (get, edit,
delete), ``…/check-runs`` (create, edit), ``…/commits/{sha}``, ``…/statuses/{sha}``, ``/user``,
``/rate_limit``; and, outside the REST API, the Actions runtime's OIDC id-token service
(``ID_TOKEN_PATH``, what ``ACTIONS_ID_TOKEN_REQUEST_URL`` points at).

It is as strict as the real one where clients get things wrong: 401 without a token or with a
wrong one, 404 for a repository the token cannot see, 403 "Resource not accessible by
integration" for writes with a read-only (fork) token, 422 for bodies over GitHub's limits,
``per_page`` capped, ``Link`` headers with absolute URLs on the server's own host and port (which
PyGithub checks), rate-limit headers on every answer, a 403 once the primary limit is spent, a
secondary limit with ``Retry-After`` on demand, and 301 for a renamed repository. The id-token
service answers only a job's own request token (401 without one, 403 for another) and signs with
the key the local Hub trusts (``servers/localhub/oidc.py``, a test stand-in for GitHub's keys).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..localhub import oidc
from .state import Comment, OidcJob, Pull, Repo, State, Token, now

DOCS = "https://docs.github.com/rest"
#: Where ``ACTIONS_ID_TOKEN_REQUEST_URL`` points (GitHub's is another host; any path works).
ID_TOKEN_PATH = "/_actions/idtoken"
MAX_COMMENT = 65536
MAX_ANNOTATIONS = 50


class APIError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class GitHubAPI:
    """The route table and the JSON shapes; one instance per server, sharing ``state``."""

    def __init__(self, state: State, base_url: str) -> None:
        self.state = state
        self.base = base_url.rstrip("/")
        repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        self.routes: list[Route] = [
            ("GET", re.compile(r"/user"), self.get_user),
            ("GET", re.compile(r"/rate_limit"), self.get_rate_limit),
            ("GET", re.compile(repo), self.get_repo),
            ("GET", re.compile(repo + r"/pulls/(?P<n>\d+)"), self.get_pull),
            ("GET", re.compile(repo + r"/pulls/(?P<n>\d+)/files"), self.list_files),
            ("GET", re.compile(repo + r"/issues/(?P<n>\d+)"), self.get_issue),
            ("GET", re.compile(repo + r"/issues/(?P<n>\d+)/comments"), self.list_comments),
            ("POST", re.compile(repo + r"/issues/(?P<n>\d+)/comments"), self.create_comment),
            ("GET", re.compile(repo + r"/issues/comments/(?P<id>\d+)"), self.get_comment),
            ("PATCH", re.compile(repo + r"/issues/comments/(?P<id>\d+)"), self.edit_comment),
            ("DELETE", re.compile(repo + r"/issues/comments/(?P<id>\d+)"), self.delete_comment),
            ("POST", re.compile(repo + r"/check-runs"), self.create_check_run),
            ("PATCH", re.compile(repo + r"/check-runs/(?P<id>\d+)"), self.edit_check_run),
            ("GET", re.compile(repo + r"/commits/(?P<sha>[0-9a-fA-F]+)"), self.get_commit),
            ("POST", re.compile(repo + r"/statuses/(?P<sha>[0-9a-fA-F]+)"), self.create_status),
        ]

    # -- dispatch -------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], token: Token | None, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        for m, pattern, fn in self.routes:
            match = pattern.fullmatch(path)
            if match and m == method:
                if token is None:
                    raise APIError(401, "Requires authentication")
                return fn(token=token, query=query, body=body, **match.groupdict())
        if any(p.fullmatch(path) for _, p, _ in self.routes):
            raise APIError(405, "Method Not Allowed")
        raise APIError(404, "Not Found")

    def id_token(self, method: str, auth: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """The Actions runtime's id-token service: its own credential (the job's request token),
        not a REST API token, and no rate limit."""
        if method != "GET":
            raise APIError(405, "Method Not Allowed")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise APIError(401, "Requires authentication (Authorization: Bearer <request token>)")
        job = self.state.oidc_jobs.get(secret.strip())
        if job is None:
            raise APIError(403, "This request token may not mint id tokens")
        if not query.get("api-version"):
            # the URL the runner hands out carries ?api-version=…; a client that replaces the
            # query instead of adding to it loses it (our reading of the service: it is required)
            raise APIError(
                400, "The api-version query parameter (?api-version=) is required for all requests."
            )
        audience = query.get("audience") or f"https://github.com/{job.repository.split('/')[0]}"
        return 200, {"count": 1, "value": mint(job, audience)}, {}

    # -- helpers --------------------------------------------------------------------------------
    def _repo(self, token: Token, owner: str, name: str) -> Repo:
        repo = self.state.repos.get(f"{owner}/{name}".lower())
        if repo is None or (token.repos is not None and repo.full_name.lower() not in token.repos):
            raise APIError(404, "Not Found")
        return repo

    def _pull(self, repo: Repo, n: str) -> Pull:
        pull = repo.pulls.get(int(n))
        if pull is None:
            raise APIError(404, "Not Found")
        return pull

    @staticmethod
    def _writable(token: Token) -> None:
        if token.permission != "write":
            raise APIError(403, "Resource not accessible by integration")

    def _user(self, login: str, user_type: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": abs(hash(login)) % 10**8,
            "type": user_type,
            "url": f"{self.base}/users/{login}",
            "html_url": f"https://github.com/{login}",
        }

    def repo_json(self, repo: Repo) -> dict[str, Any]:
        owner, name = repo.full_name.split("/")
        return {
            "id": abs(hash(repo.full_name)) % 10**8,
            "name": name,
            "full_name": repo.full_name,
            "private": repo.private,
            "fork": repo.fork,
            "owner": self._user(owner, "Organization"),
            "html_url": f"https://github.com/{repo.full_name}",
            "url": f"{self.base}/repos/{repo.full_name}",
            "default_branch": repo.default_branch,
        }

    def _side(self, repo: Repo, ref: str, sha: str, full_name: str | None) -> dict[str, Any]:
        other = self.state.repos.get((full_name or repo.full_name).lower(), repo)
        owner = other.full_name.split("/")[0]
        return {"label": f"{owner}:{ref}", "ref": ref, "sha": sha, "repo": self.repo_json(other)}

    def pull_json(self, repo: Repo, pull: Pull) -> dict[str, Any]:
        api = f"{self.base}/repos/{repo.full_name}"
        return {
            "url": f"{api}/pulls/{pull.number}",
            "id": pull.number * 7919,
            "number": pull.number,
            "state": pull.state,
            "title": pull.title,
            "draft": False,
            "merged": False,
            "html_url": f"https://github.com/{repo.full_name}/pull/{pull.number}",
            "issue_url": f"{api}/issues/{pull.number}",
            "comments_url": f"{api}/issues/{pull.number}/comments",
            "user": self._user("contributor", "User"),
            "head": self._side(repo, pull.head_ref, pull.head_sha, pull.head_repo),
            "base": self._side(repo, pull.base_ref, pull.base_sha, None),
        }

    def comment_json(self, c: Comment) -> dict[str, Any]:
        api = f"{self.base}/repos/{c.repo}"
        return {
            "id": c.id,
            "node_id": f"IC_{c.id}",
            "url": f"{api}/issues/comments/{c.id}",
            "html_url": f"https://github.com/{c.repo}/pull/{c.issue}#issuecomment-{c.id}",
            "issue_url": f"{api}/issues/{c.issue}",
            "body": c.body,
            "user": self._user(c.login, c.user_type),
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "author_association": "NONE",
        }

    def _paginate(
        self, path: str, query: dict[str, str], items: list[Any]
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            per_page = min(int(query.get("per_page", 30)), self.state.page_size_cap)
            page = int(query.get("page", 1))
        except ValueError as e:
            raise APIError(422, "per_page and page must be integers") from e
        per_page, page = max(per_page, 1), max(page, 1)
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def url(p: int) -> str:
            base = self.state.link_base or self.base
            return f"{base}{path}?{urlencode({**query, 'page': p, 'per_page': per_page})}"

        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{url(1)}>; rel="first"', f'<{url(page - 1)}>; rel="prev"']
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _body_text(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            raise APIError(422, "Invalid request: 'body' is required and must be a string")
        text = body["body"]
        if len(text) > MAX_COMMENT:
            raise APIError(422, f"Body is too long (maximum is {MAX_COMMENT} characters)")
        return text

    # -- routes ---------------------------------------------------------------------------------
    def get_user(self, token: Token, **_: Any):
        if token.app:
            raise APIError(403, "Resource not accessible by integration")
        return 200, self._user(token.login, token.user_type), {}

    def get_rate_limit(self, token: Token, **_: Any):
        core = {"limit": self.state.rate_limit, "remaining": self.state.rate_remaining, "reset": 0, "used": 0}
        return 200, {"resources": {"core": core}, "rate": core}, {}

    def get_repo(self, token: Token, owner: str, name: str, **_: Any):
        return 200, self.repo_json(self._repo(token, owner, name)), {}

    def get_pull(self, token: Token, owner: str, name: str, n: str, **_: Any):
        repo = self._repo(token, owner, name)
        return 200, self.pull_json(repo, self._pull(repo, n)), {}

    def list_files(self, token: Token, owner: str, name: str, n: str, query: dict[str, str], **_: Any):
        repo = self._repo(token, owner, name)
        pull = self._pull(repo, n)
        items = []
        for f in pull.files[:3000]:  # GitHub lists at most 3000 files of a pull request
            item = {
                "sha": f.get("sha", "0" * 40),
                "filename": f["filename"],
                "status": f.get("status", "modified"),
                "additions": f.get("additions", 1),
                "deletions": f.get("deletions", 0),
                "changes": f.get("changes", 1),
                "blob_url": f"https://github.com/{repo.full_name}/blob/{pull.head_sha}/{f['filename']}",
                "raw_url": f"https://github.com/{repo.full_name}/raw/{pull.head_sha}/{f['filename']}",
                "contents_url": f"{self.base}/repos/{repo.full_name}/contents/{f['filename']}",
            }
            if f.get("previous_filename"):
                item["previous_filename"] = f["previous_filename"]
            items.append(item)
        return self._paginate(f"/repos/{repo.full_name}/pulls/{pull.number}/files", query, items)

    def get_issue(self, token: Token, owner: str, name: str, n: str, **_: Any):
        repo = self._repo(token, owner, name)
        pull = self._pull(repo, n)
        api = f"{self.base}/repos/{repo.full_name}"
        return (
            200,
            {
                "url": f"{api}/issues/{pull.number}",
                "id": pull.number * 104729,
                "number": pull.number,
                "title": pull.title,
                "state": pull.state,
                "comments_url": f"{api}/issues/{pull.number}/comments",
                "html_url": f"https://github.com/{repo.full_name}/pull/{pull.number}",
                "user": self._user("contributor", "User"),
                "pull_request": {"url": f"{api}/pulls/{pull.number}"},
            },
            {},
        )

    def list_comments(self, token: Token, owner: str, name: str, n: str, query: dict[str, str], **_: Any):
        repo = self._repo(token, owner, name)
        pull = self._pull(repo, n)
        items = [
            self.comment_json(c)
            for c in sorted(self.state.comments.values(), key=lambda c: c.id)
            if c.repo == repo.full_name and c.issue == pull.number
        ]
        return self._paginate(f"/repos/{repo.full_name}/issues/{pull.number}/comments", query, items)

    def create_comment(self, token: Token, owner: str, name: str, n: str, body: Any, **_: Any):
        repo = self._repo(token, owner, name)
        pull = self._pull(repo, n)
        self._writable(token)
        text = self._body_text(body)
        c = Comment(
            self.state.next_id(),
            repo.full_name,
            pull.number,
            text,
            token.login,
            token.user_type,
            now(),
            now(),
        )
        self.state.comments[c.id] = c
        return 201, self.comment_json(c), {}

    def _comment(self, repo: Repo, cid: str) -> Comment:
        c = self.state.comments.get(int(cid))
        if c is None or c.repo != repo.full_name:
            raise APIError(404, "Not Found")
        return c

    def get_comment(self, token: Token, owner: str, name: str, id: str, **_: Any):
        return 200, self.comment_json(self._comment(self._repo(token, owner, name), id)), {}

    def edit_comment(self, token: Token, owner: str, name: str, id: str, body: Any, **_: Any):
        c = self._comment(self._repo(token, owner, name), id)
        self._writable(token)
        if c.login != token.login:  # an integration may only edit what it wrote
            raise APIError(403, "Resource not accessible by integration")
        c.body = self._body_text(body)
        c.updated_at = now()
        return 200, self.comment_json(c), {}

    def delete_comment(self, token: Token, owner: str, name: str, id: str, **_: Any):
        c = self._comment(self._repo(token, owner, name), id)
        self._writable(token)
        if c.login != token.login:
            raise APIError(403, "Resource not accessible by integration")
        del self.state.comments[c.id]
        return 204, None, {}

    def create_check_run(self, token: Token, owner: str, name: str, body: Any, **_: Any):
        repo = self._repo(token, owner, name)
        self._writable(token)
        if not token.app:
            raise APIError(403, "You must authenticate via a GitHub App.")
        if not isinstance(body, dict) or not body.get("name") or not body.get("head_sha"):
            raise APIError(422, "Invalid request: 'name' and 'head_sha' are required")
        self._check_output(body)
        run = {"id": self.state.next_id(), "repo": repo.full_name, **body}
        self.state.check_runs[run["id"]] = run
        return 201, self._check_json(repo, run), {}

    def edit_check_run(self, token: Token, owner: str, name: str, id: str, body: Any, **_: Any):
        repo = self._repo(token, owner, name)
        self._writable(token)
        run = self.state.check_runs.get(int(id))
        if run is None or run["repo"] != repo.full_name:
            raise APIError(404, "Not Found")
        self._check_output(body if isinstance(body, dict) else {})
        run.update(body or {})
        return 200, self._check_json(repo, run), {}

    @staticmethod
    def _check_output(body: dict[str, Any]) -> None:
        annotations = (body.get("output") or {}).get("annotations") or []
        if len(annotations) > MAX_ANNOTATIONS:
            raise APIError(422, f"Only {MAX_ANNOTATIONS} annotations are allowed per request")
        for a in annotations:
            if a.get("annotation_level") not in ("notice", "warning", "failure"):
                raise APIError(422, "annotation_level must be notice, warning or failure")

    def _check_json(self, repo: Repo, run: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": run["id"],
            "name": run.get("name"),
            "head_sha": run.get("head_sha"),
            "status": run.get("status", "queued"),
            "conclusion": run.get("conclusion"),
            "url": f"{self.base}/repos/{repo.full_name}/check-runs/{run['id']}",
            "html_url": f"https://github.com/{repo.full_name}/runs/{run['id']}",
            "output": run.get("output") or {},
        }

    def _known_sha(self, repo: Repo, sha: str) -> bool:
        shas = set(repo.commits)
        for p in repo.pulls.values():
            shas |= {p.head_sha, p.base_sha}
        return sha in shas

    def get_commit(self, token: Token, owner: str, name: str, sha: str, **_: Any):
        repo = self._repo(token, owner, name)
        if not self._known_sha(repo, sha):
            raise APIError(422, f"No commit found for SHA: {sha}")
        return (
            200,
            {
                "sha": sha,
                "url": f"{self.base}/repos/{repo.full_name}/commits/{sha}",
                "commit": {"message": "commit"},
            },
            {},
        )

    def create_status(self, token: Token, owner: str, name: str, sha: str, body: Any, **_: Any):
        repo = self._repo(token, owner, name)
        self._writable(token)
        if not self._known_sha(repo, sha):
            raise APIError(422, f"No commit found for SHA: {sha}")
        if not isinstance(body, dict) or body.get("state") not in ("error", "failure", "pending", "success"):
            raise APIError(422, "state must be error, failure, pending or success")
        if len(body.get("description") or "") > 140:
            raise APIError(422, "description is too long (maximum is 140 characters)")
        status = {"id": self.state.next_id(), "repo": repo.full_name, "sha": sha, **body}
        self.state.statuses.append(status)
        return 201, {**status, "url": f"{self.base}/repos/{repo.full_name}/statuses/{sha}"}, {}


def mint(job: OidcJob, audience: str, *, expires_in: int | None = None) -> str:
    """An id token with the claims GitHub puts in one (those a verifier matches on)."""
    t = int(time.time())
    if job.event_name.startswith("pull_request"):
        sub = f"repo:{job.repository}:pull_request"
    else:
        sub = f"repo:{job.repository}:ref:{job.ref}"
    claims = {
        "jti": str(uuid.uuid4()),
        "sub": sub,
        "aud": audience,
        "ref": job.ref,
        "sha": job.sha,
        "repository": job.repository,
        "repository_owner": job.repository.split("/")[0],
        "run_id": job.run_id,
        "event_name": job.event_name,
        "workflow": job.workflow,
        "job_workflow_ref": f"{job.repository}/.github/workflows/{job.workflow}.yml@{job.ref}",
        "iss": oidc.ISSUER,
        "nbf": t - 5,
        "iat": t,
        "exp": t + (job.expires_in if expires_in is None else expires_in),
    }
    return oidc.sign(claims, job.signing_key)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the state keeps a request log
        pass

    def _answer(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization") or ""
        scheme, _, secret = auth.partition(" ")
        with state.lock:
            token = state.tokens.get(secret) if scheme.lower() in ("token", "bearer") else None
            entry = {"method": self.command, "path": url.path, "query": query, "login": token and token.login}
            state.requests.append(entry)
            headers: dict[str, str] = {}
            try:
                if url.path == ID_TOKEN_PATH:  # the Actions runtime: its own credential, no rate limit
                    status, data, headers = self.server.api.id_token(self.command, auth, query)
                else:
                    status, data, headers = self._rest(url, query, raw, auth, token, headers)
            except APIError as e:
                status = e.status
                data = {"message": e.message, "documentation_url": DOCS, "status": str(e.status), **e.extra}
            headers = {
                **headers,
                "X-RateLimit-Limit": str(state.rate_limit),
                "X-RateLimit-Remaining": str(max(state.rate_remaining, 0)),
                "X-RateLimit-Used": str(state.rate_limit - max(state.rate_remaining, 0)),
                "X-RateLimit-Reset": "4102444800",
                "X-RateLimit-Resource": "core",
            }
            entry["status"] = status
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _rest(
        self,
        url: Any,
        query: dict[str, str],
        raw: bytes,
        auth: str,
        token: Token | None,
        headers: dict[str, str],
    ) -> tuple[int, Any, dict[str, str]]:
        """A REST API call: faults, the token and its rate limits, renames, then the route.
        Headers set before an error (``Retry-After``, ``Location``) go out with it."""
        state = self.server.state
        if self.command == "GET" and state.fail_gets > 0:
            state.fail_gets -= 1
            raise APIError(502, "Server Error")
        if auth and token is None:
            raise APIError(401, "Bad credentials")
        if token is not None:
            if state.rate_remaining <= 0:
                raise APIError(403, "API rate limit exceeded for installation.")
            state.rate_remaining -= 1
            if state.secondary_limited > 0:
                state.secondary_limited -= 1
                headers["Retry-After"] = str(state.retry_after)
                raise APIError(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before "
                    "you try again.",
                )
        moved = re.match(r"/repos/([^/]+/[^/]+)(/.*)?$", url.path)
        if moved and moved.group(1).lower() in state.renamed:
            base = state.link_base or self.server.api.base
            location = f"{base}/repos/{state.renamed[moved.group(1).lower()]}"
            location += (moved.group(2) or "") + (f"?{url.query}" if url.query else "")
            headers["Location"] = location
            raise APIError(301, "Moved Permanently", url=location)
        try:
            body = json.loads(raw) if raw else None
        except ValueError as e:
            raise APIError(400, "Problems parsing JSON") from e
        status, data, answer_headers = self.server.api.handle(self.command, url.path, query, token, body)
        if self.command != "GET" and state.fail_writes > 0:  # done, but the answer is lost
            state.fail_writes -= 1
            raise APIError(502, "Server Error")
        return status, data, answer_headers

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: State
    api: GitHubAPI


class LocalGitHub:
    """The server for one test session, on a free loopback port, run in a background thread.

    Tests seed it (``add_repo``, ``add_pull``, ``add_token``), point ``GITHUB_API_URL`` at
    ``url`` and read back what clients did (``comments``, ``check_runs``, ``statuses``,
    ``requests``).
    """

    def __init__(self, port: int = 0) -> None:
        self.state = State()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.state = self.state
        self._server.api = GitHubAPI(self.state, self.url)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-github", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        self.state.reset()

    # -- seeding --------------------------------------------------------------------------------
    def add_token(
        self,
        secret: str,
        login: str,
        *,
        permission: str = "write",
        app: bool = True,
        repos: list[str] | None = None,
    ) -> None:
        with self.state.lock:
            scope = None if repos is None else frozenset(r.lower() for r in repos)
            self.state.tokens[secret] = Token(login, permission, app, scope)

    def allow_id_tokens(
        self,
        request_token: str,
        *,
        repository: str,
        ref: str = "refs/heads/main",
        sha: str = "0" * 40,
        event_name: str = "push",
        workflow: str = "gradience",
        run_id: str = "4242",
        expires_in: int = 300,
        signing_key: bytes | None = None,
    ) -> str:
        """Let the job holding ``request_token`` mint id tokens, as ``permissions: id-token: write``
        does, and return the URL for ``ACTIONS_ID_TOKEN_REQUEST_URL``.

        The claims describe that job (``repository``, ``ref``, ``sha``, ``event_name``...).
        ``signing_key`` other than the shared one makes tokens the local Hub must refuse as forged.
        """
        job = OidcJob(repository, ref, sha, event_name, workflow, run_id, expires_in,
                      oidc.SIGNING_KEY if signing_key is None else signing_key)  # fmt: skip
        with self.state.lock:
            self.state.oidc_jobs[request_token] = job
        return self.id_token_url

    @property
    def id_token_url(self) -> str:
        """``ACTIONS_ID_TOKEN_REQUEST_URL``: like GitHub's, it already has a query; clients add
        ``&audience=...``."""
        return f"{self.url}{ID_TOKEN_PATH}?api-version=2.0"

    def mint_id_token(self, request_token: str, audience: str, *, expires_in: int | None = None) -> str:
        """An id token for the job ``allow_id_tokens`` set up, without a request (for
        ``HF_OIDC_ID_TOKEN``); ``expires_in`` < 0 mints one that has already expired."""
        with self.state.lock:
            job = self.state.oidc_jobs[request_token]
        return mint(job, audience, expires_in=expires_in)

    def add_repo(self, full_name: str, *, private: bool = False, fork: bool = False) -> None:
        with self.state.lock:
            self.state.repos[full_name.lower()] = Repo(full_name, private=private, fork=fork)

    def add_pull(
        self,
        repo: str,
        number: int,
        *,
        head_sha: str,
        base_sha: str,
        files: list[dict[str, Any]],
        head_repo: str | None = None,
        title: str = "Update adapters",
    ) -> None:
        with self.state.lock:
            self.state.repos[repo.lower()].pulls[number] = Pull(
                number, title, head_sha, base_sha, head_repo=head_repo, files=list(files)
            )

    def update_pull(self, repo: str, number: int, **changes: Any) -> None:
        with self.state.lock:
            pull = self.state.repos[repo.lower()].pulls[number]
            for k, v in changes.items():
                setattr(pull, k, v)

    def rename_repo(self, old: str, new: str) -> None:
        """``old`` now lives at ``new``: requests to the old address answer 301 with the new one."""
        with self.state.lock:
            repo = self.state.repos.pop(old.lower())
            repo.full_name = new
            self.state.repos[new.lower()] = repo
            self.state.renamed[old.lower()] = new
            for c in self.state.comments.values():
                if c.repo.lower() == old.lower():
                    c.repo = new
            for secret, t in list(self.state.tokens.items()):  # access moves with the repository
                if t.repos is not None and old.lower() in t.repos:
                    self.state.tokens[secret] = dataclasses.replace(t, repos=t.repos | {new.lower()})

    def add_comment(self, repo: str, issue: int, body: str, *, login: str, user_type: str = "User") -> int:
        """A comment written by someone else (a person, another bot)."""
        with self.state.lock:
            c = Comment(self.state.next_id(), repo, issue, body, login, user_type, now(), now())
            self.state.comments[c.id] = c
            return c.id

    def configure(
        self,
        *,
        page_size_cap: int | None = None,
        rate_remaining: int | None = None,
        fail_gets: int | None = None,
        secondary_limited: int | None = None,
        retry_after: int | None = None,
        fail_writes: int | None = None,
        link_base: str | None = None,
    ) -> None:
        """Faults and limits: ``fail_gets`` next GETs answer 502; ``fail_writes`` next writes are
        done but answer 502 (the answer lost on the way); ``secondary_limited`` next requests hit a
        secondary rate limit (403, ``Retry-After: retry_after``); ``link_base`` puts another
        origin in ``Link`` and ``Location`` headers (what a client must not send its token to)."""
        with self.state.lock:
            if fail_writes is not None:
                self.state.fail_writes = fail_writes
            if link_base is not None:
                self.state.link_base = link_base or None
            if secondary_limited is not None:
                self.state.secondary_limited = secondary_limited
            if retry_after is not None:
                self.state.retry_after = retry_after
            if fail_gets is not None:
                self.state.fail_gets = fail_gets
            if page_size_cap is not None:
                self.state.page_size_cap = page_size_cap
            if rate_remaining is not None:
                self.state.rate_remaining = rate_remaining

    # -- reading back ---------------------------------------------------------------------------
    def comments(self, repo: str, issue: int) -> list[Comment]:
        with self.state.lock:
            found = [c for c in self.state.comments.values() if c.repo == repo and c.issue == issue]
            return sorted(found, key=lambda c: c.id)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def check_runs(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.check_runs.values())

    @property
    def statuses(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.statuses)
