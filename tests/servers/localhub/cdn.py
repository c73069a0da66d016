"""The CDN origin: a second loopback server that serves LFS file bytes from signed URLs.

On the Hub, ``/resolve`` answers an LFS file with a 302 to a storage CDN; the signed URL is the
credential, so the CDN refuses a request that also carries ``Authorization`` (a client must not
forward the Hub token to another origin), expires its URLs, and fails in XML, not in the Hub's
JSON. File bytes are counted here, where a client really pays for them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from .api_read import file_response
from .web import HubError, HubHTTPServer, Request, Response, Route, Router

if TYPE_CHECKING:
    from .app import HubApp

#: How long a signed URL stays valid (the Hub's are valid for about an hour).
URL_TTL = 3600
_SECRET = secrets.token_bytes(32)


def _signature(repo_type: str, repo_id: str, oid: str, path: str, expires: int) -> str:
    message = f"{repo_type}|{repo_id}|{oid}|{path}|{expires}".encode()
    return hmac.new(_SECRET, message, hashlib.sha256).hexdigest()[:40]


def signed_url(app: HubApp, repo_type: str, repo_id: str, oid: str, path: str, ttl: int = URL_TTL) -> str:
    """Where ``/resolve`` redirects for one LFS file: valid for ``ttl`` seconds, for this file only."""
    expires = int(time.time()) + ttl
    sig = _signature(repo_type, repo_id, oid, path, expires)
    return f"{app.cdn_url}/cdn/{repo_type}s/{repo_id}/{oid}/{quote(path)}?Expires={expires}&Signature={sig}"


def serve(app: HubApp, req: Request, plural: str, repo: str, oid: str, path: str) -> Response:
    if req.headers.get("Authorization") is not None:
        raise HubError(
            400,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature "
            "query string parameter or the Authorization header should be specified",
        )
    repo_type, repo_id, path = plural[:-1], unquote(repo), unquote(path)
    expires_arg, sig = req.arg("Expires") or "", req.arg("Signature") or ""
    if not expires_arg.isdigit() or not hmac.compare_digest(
        sig, _signature(repo_type, repo_id, oid, path, int(expires_arg))
    ):
        raise HubError(403, "Invalid signature for this request")
    if int(expires_arg) < time.time():
        raise HubError(403, "Request has expired")
    with app.store.lock:
        if not app.store.blobs.has(oid):
            raise HubError(404, "The specified key does not exist.")
        size = app.store.blobs.meta(oid).size
        blob_path = app.store.blobs.path(oid)
    return file_response(req, {}, blob_path, size, oid, path, key=(repo_type, repo_id, path))


ROUTES = [
    Route(
        ("GET", "HEAD"),
        r"/cdn/(?P<plural>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})/(?P<path>.+)",
        serve,
        "cdn",
        auth="none",
    )
]


def serve_cdn(app: HubApp, port: int = 0) -> HubHTTPServer:
    """Bind the CDN origin on 127.0.0.1:port and make ``/resolve`` redirect LFS files to it."""
    server = HubHTTPServer(port, app, router=Router(ROUTES), xml_errors=True)
    app.cdn_url = f"http://127.0.0.1:{server.server_address[1]}"
    return server
