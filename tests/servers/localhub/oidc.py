"""The trust between two stand-ins: the local GitHub signs Actions id tokens, the local Hub checks them.

GitHub signs its OIDC id tokens with RS256 keys published at the issuer's JWKS URL, and the Hub
fetches those keys. Neither server can reach the other's keys offline, so both use HS256 with one
fixed key they share, defined here. This is a **test stand-in**: a shared HMAC key proves nothing
about who signed a token outside this suite, and no real verifier should work this way. The
checks around the signature (issuer, audience, expiry, claims) are the ones that matter and are
done as a real verifier does them.

This module imports nothing from the rest of ``localhub``, so ``tests/servers/github`` can use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

#: GitHub Actions' issuer, the ``iss`` every id token carries and the Hub trusts.
ISSUER = "https://token.actions.githubusercontent.com"
#: The key both stand-ins share (see the module docstring: never a pattern for real code).
SIGNING_KEY = b"localhub-test-only-oidc-signing-key-0001"
_HEADER = {"alg": "HS256", "typ": "JWT", "kid": "localhub-test"}
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict[str, Any], key: bytes = SIGNING_KEY) -> str:
    """A compact JWT (``header.payload.signature``) carrying ``claims``."""
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def verify(token: str, key: bytes = SIGNING_KEY) -> dict[str, Any]:
    """The claims of a token this key signed; ``ValueError`` saying why otherwise.

    Only the signature and the shape are checked here: the caller decides which issuer,
    audience and lifetime it accepts. The algorithm must be HS256 exactly, so a token that
    names ``none`` (or anything else) is refused rather than trusted unsigned.
    """
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("not a compact JWT (header.payload.signature)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except ValueError as e:
        raise ValueError("not a compact JWT (undecodable part)") from e
    alg = header.get("alg") if isinstance(header, dict) else None
    if alg != "HS256":
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        signature = _unb64(parts[2])
    except ValueError:
        signature = b""
    if not hmac.compare_digest(signature, expected):
        raise ValueError("bad signature (not signed by the trusted issuer)")
    if not isinstance(claims, dict):
        raise ValueError("the payload is not a JSON object")
    return claims
