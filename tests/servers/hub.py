"""The local Hub: constants, a controller for tests, and the command that runs it by hand.

    python tests/servers/hub.py --port 8765 --data /tmp/hub --seed

then, in another shell, ``HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=<a token below> gradience ...``
(see ``docs/local-hub.md``). The server itself lives in ``localhub/``; this module is the one
place tests import from: the seeded repo ids and tokens, ``start_local_hub`` (a subprocess on a
given port) and ``LocalHub`` (faults, statistics and settings over ``/_admin/``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__:
    from .localhub import accounts, app, cdn, seed
else:  # run as `python tests/servers/hub.py`: this folder is sys.path[0]
    from localhub import accounts, app, cdn, seed  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
HUB_SCRIPT = Path(__file__).resolve()
DEFAULT_EXAMPLES = ROOT / "examples"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"

# -- tokens (fixed values; a server started by hand accepts the same ones) -------------------------
ALICE_TOKEN = (
    accounts.ALICE_TOKEN
)  # alice: member of gradience-examples and gradience-test, owns the private repo
ALICE_READ_TOKEN = accounts.ALICE_READ_TOKEN  # alice with a read-only token: every write is refused
BOB_TOKEN = accounts.BOB_TOKEN  # bob: owns the gated repo and has granted nobody
CAROL_TOKEN = accounts.CAROL_TOKEN  # carol: no access to anything private or gated
ADMIN_TOKEN = accounts.ADMIN_TOKEN  # for /_admin/ only; not a Hub user
ALICE_OAUTH_TOKEN = accounts.ALICE_OAUTH_TOKEN  # OAuth: read-repos + write-discussions, no write-repos
ALICE_FINE_GRAINED_TOKEN = accounts.ALICE_FINE_GRAINED_TOKEN  # write + discussions on FINE_GRAINED_REPOS only
FINE_GRAINED_REPOS = accounts.FINE_GRAINED_REPOS  # repo keys ("model/alice/...") a test creates itself
TOKENS = dict(accounts.TOKENS)  # {"alice": ..., "bob": ..., "carol": ...}

# -- seeded repos -------------------------------------------------------------------------------------
EXAMPLE_REPOS = dict(seed.EXAMPLE_REPOS)  # example name -> "gradience-examples/<name>", adapter at the root
BASE_REPO = seed.BASE_REPO  # config.json + card, no adapter
MERGE_PAIRS_REPO = seed.MERGE_PAIRS_REPO  # adapters only in subfolders
MERGE_PAIRS_SUBFOLDERS = seed.MERGE_PAIRS_SUBFOLDERS
CORPUS_REPOS = dict(seed.CORPUS_REPOS)  # corpus folder -> CorpusRepo(repo_id, subfolder, base_model, ...)
REVISIONS_REPO = seed.REVISIONS_REPO  # tags v1 (untrained) and v2 (trained), branch dev (r=64)
PRIVATE_REPO = seed.PRIVATE_REPO
GATED_REPO = seed.GATED_REPO
PADDED_REPO = seed.PADDED_REPO  # ~61 MB file, 99.8% non-LoRA bytes
PADDED_LM_HEAD = seed.PADDED_LM_HEAD
DATASET_REPO = seed.DATASET_REPO  # a dataset repo with an adapter in DATASET_SUBFOLDER
DATASET_SUBFOLDER = seed.DATASET_SUBFOLDER


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to 0, read it, close).

    Never the port HF_ENDPOINT names: the test session reserves that one before its server runs.
    """
    reserved = urlsplit(os.environ.get("HF_ENDPOINT", "")).port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != reserved:
            return port


class AdminError(RuntimeError):
    """An ``/_admin/`` call failed (bad fault spec, wrong admin token, server gone)."""


@dataclass
class LocalHub:
    """A running local Hub as tests see it: where it is, who can log in, and its admin surface.

    Attributes:
        url: the endpoint, also the value of ``HF_ENDPOINT`` in the test session.
        tokens: user name -> write token (``alice``, ``bob``, ``carol``).
        admin_token: the token for ``/_admin/``.
    """

    url: str
    tokens: dict[str, str] = field(default_factory=lambda: dict(TOKENS))
    admin_token: str = ADMIN_TOKEN
    data_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    # -- admin calls ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: Any = None, *, auth: bool = True) -> Any:
        # http.client, not urllib: no proxy settings can send this anywhere but loopback.
        split = urlsplit(self.url)
        conn = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port or 80, timeout=30)
        try:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.admin_token}"
            body = json.dumps(payload).encode() if payload is not None else None
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise AdminError(f"{method} {path}: {e}") from e
        finally:
            conn.close()
        if resp.status >= 400:
            raise AdminError(f"{method} {path}: HTTP {resp.status}: {raw.decode(errors='replace')}")
        return json.loads(raw) if raw else None

    def fault(
        self,
        path_regex: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        latency: float | None = None,
        truncate: int | None = None,
        times: int | None = None,
        method: str | None = None,
        rate_limit: int | None = None,
        ignore_range: bool = False,
        bad_content_range: bool = False,
        short: int | None = None,
        stall_after: int | None = None,
        stall_seconds: float | None = None,
    ) -> str:
        """Make requests whose path matches ``path_regex`` (``re.search``) misbehave.

        ``status``: answer that status with a Hub-style error (and ``Retry-After`` if given);
        ``latency``: wait that many seconds first; ``truncate``: send that many body bytes of the
        real answer, then drop the connection; ``rate_limit``: answer 429 with only a
        ``RateLimit: "api";r=0;t=<rate_limit>`` header; ``ignore_range``: answer 200 with the whole
        file; ``bad_content_range``: a ``Content-Range`` naming other bytes than those sent;
        ``short``: a complete answer of only that many body bytes, connection kept;
        ``stall_after``: send that many body bytes, then nothing for ``stall_seconds`` (30) or
        until the client hangs up. LFS file bytes come from the CDN origin (paths ``/cdn/...``),
        the redirect from ``/resolve/...``. ``times``: how many matching requests it affects
        (None = until ``clear_faults``). ``method`` restricts it to one HTTP method. Returns its
        id; ``fault_hits(id)`` tells how often it fired.
        """
        spec = {
            "path": path_regex,
            "status": status,
            "retry_after": retry_after,
            "latency": latency,
            "truncate": truncate,
            "times": times,
            "method": method,
            "rate_limit": rate_limit,
            "ignore_range": ignore_range or None,
            "bad_content_range": bad_content_range or None,
            "short": short,
            "stall_after": stall_after,
            "stall_seconds": stall_seconds,
        }
        return str(self._call("POST", "/_admin/faults", spec)["id"])

    def faults(self) -> list[dict[str, Any]]:
        """Active faults with their remaining ``times`` and ``hits`` so far."""
        return list(self._call("GET", "/_admin/faults"))

    def clear_faults(self) -> None:
        self._call("DELETE", "/_admin/faults")

    def stats(self) -> dict[str, Any]:
        """``{"since", "total_bytes", "requests": {kind: {count, bytes, faulted, methods}},
        "files": [{repo_type, repo_id, path, requests, bytes, ranges: [[start, end, sent, status]]}]}``"""
        return dict(self._call("GET", "/_admin/stats"))

    def reset_stats(self) -> None:
        self._call("POST", "/_admin/stats/reset")

    def bytes_served(self, repo_id: str, path: str | None = None, *, repo_type: str = "model") -> int:
        """Body bytes of repo files sent since the last reset (one file, or the whole repo)."""
        return sum(
            f["bytes"]
            for f in self.stats()["files"]
            if f["repo_id"] == repo_id and f["repo_type"] == repo_type and (path is None or f["path"] == path)
        )

    def request_count(self, kind: str, method: str | None = None) -> int:
        """Requests of one kind (``resolve``, ``repo-info``, ``tree``, ``commit``...) since the reset."""
        k = self.stats()["requests"].get(kind, {})
        return int(k.get("methods", {}).get(method, 0) if method else k.get("count", 0))

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change server settings (page sizes, ``upload_mode``...); returns the previous ones."""
        return dict(self._call("POST", "/_admin/config", settings)["previous"])

    @contextlib.contextmanager
    def configured(self, **settings: Any) -> Iterator[None]:
        previous = self.configure(**settings)
        try:
            yield
        finally:
            self.configure(**{k: previous[k] for k in settings})

    def reset_config(self) -> None:
        self._call("POST", "/_admin/config/reset")

    def seed_scale(
        self, count: int, *, namespace: str = "scale", seed: int = 0, edge_cases: bool = True
    ) -> dict[str, Any]:
        """Add ``count`` small synthetic repos (and the edge cases) in one call; returns the manifest
        of planted statuses and utilisations (``localhub/seed_scale.py``)."""
        spec = {"count": count, "namespace": namespace, "seed": seed, "edge_cases": edge_cases}
        return dict(self._call("POST", "/_admin/seed-scale", spec))

    def retrain(self, repo_id: str, k: int, *, subfolder: str = "") -> dict[str, Any]:
        """Commit new weights of planted stable rank ``k`` to a scale-seeded adapter."""
        return dict(
            self._call("POST", "/_admin/retrain", {"repo_id": repo_id, "subfolder": subfolder, "k": k})
        )

    def grant_access(self, repo_id: str, user: str, *, repo_type: str = "model") -> None:
        self._call("POST", "/_admin/gated-access", {"repo_id": repo_id, "repo_type": repo_type, "user": user})

    def revoke_access(self, repo_id: str, user: str, *, repo_type: str = "model") -> None:
        self._call(
            "DELETE", "/_admin/gated-access", {"repo_id": repo_id, "repo_type": repo_type, "user": user}
        )

    def add_trusted_publisher(
        self,
        resource: str,
        repository: str,
        *,
        user: str | None = None,
        claims: dict[str, str] | None = None,
        read_only: bool = False,
    ) -> dict[str, Any]:
        """Let GitHub Actions id tokens of ``repository`` (``owner/name``) be exchanged on ``resource``.

        ``resource`` is a repo (``ns/name``, ``datasets/ns/name``...) or a user name, as
        ``HF_OIDC_RESOURCE`` names it. ``user``: whom a repo token acts for (default the repo's
        namespace when that is a user; required for an organisation's repo). ``claims`` pins
        further claims exactly (``{"ref": "refs/heads/main"}``). Publishers go with
        ``reset_config`` (the ``hub`` fixture does it after every test).
        """
        spec = {"resource": resource, "repository": repository, "user": user, "claims": claims or {},
                "read_only": read_only}  # fmt: skip
        return dict(self._call("POST", "/_admin/trusted-publishers", spec))

    def remove_trusted_publisher(self, resource: str | None = None, repository: str | None = None) -> int:
        """Forget the publishers on ``resource`` and/or of ``repository`` (every one with neither)."""
        spec = {"resource": resource, "repository": repository}
        return int(self._call("DELETE", "/_admin/trusted-publishers", spec)["removed"])

    def trusted_publishers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_admin/trusted-publishers"))

    def oidc_tokens(self) -> list[dict[str, Any]]:
        """Tokens ``/oauth/token`` handed out: ``token``, ``resource``, ``repository``, ``user``,
        ``scopes``, ``repos``, ``expires_at``, ``expired``, ``requests`` (how many requests carried it)."""
        return list(self._call("GET", "/_admin/oidc-tokens"))

    @property
    def cdn_url(self) -> str | None:
        """The CDN origin LFS files redirect to (another loopback port), or None without one."""
        return self._call("GET", "/_admin/health", auth=False).get("cdn")

    def fault_hits(self, fault_id: str) -> int:
        """How many requests a fault has affected so far."""
        return next(int(f["hits"]) for f in self.faults() if f["id"] == fault_id)

    def healthy(self) -> bool:
        try:
            return bool(self._call("GET", "/_admin/health", auth=False)["ok"])
        except AdminError:
            return False

    # -- lifecycle ------------------------------------------------------------------------------

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_local_hub(
    port: int,
    data_dir: Path,
    *,
    seed_repos: bool = True,
    examples_dir: Path = DEFAULT_EXAMPLES,
    corpus_dir: Path | None = DEFAULT_CORPUS,
    settings: dict[str, Any] | None = None,
    timeout: float = 120.0,
) -> LocalHub:
    """Run the server as a subprocess on 127.0.0.1:``port`` and wait until it answers.

    A subprocess, not a thread: the test process patches ``socket.connect`` and imports the client
    under test, and neither should touch the server. Its output goes to ``<data_dir>/server.log``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    cmd = [
        sys.executable,
        str(HUB_SCRIPT),
        "--port",
        str(port),
        "--data",
        str(data_dir / "store"),
        "--examples",
        str(examples_dir),
    ]
    if corpus_dir is not None:
        cmd += ["--corpus", str(corpus_dir)]
    if seed_repos:
        cmd.append("--seed")
    for key, value in (settings or {}).items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    hub = LocalHub(url=f"http://127.0.0.1:{port}", data_dir=data_dir, process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local Hub exited with {process.returncode}:\n{hub.log_tail()}")
        if hub.healthy():
            return hub
        time.sleep(0.05)
    hub.stop()
    raise RuntimeError(f"the local Hub did not answer within {timeout:.0f} s:\n{hub.log_tail()}")


def attach_local_hub(url: str) -> LocalHub:
    """A controller for a local Hub someone else started (``GRADIENCE_TEST_HF_ENDPOINT``)."""
    hub = LocalHub(url=url.rstrip("/"))
    if not hub.healthy():
        raise RuntimeError(f"no local Hub answers at {url} (/_admin/health)")
    return hub


# -- command line -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A local, loopback-only Hugging Face Hub for development and tests."
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument(
        "--data", type=Path, default=None, help="data folder (blobs + index.json); default: a temp dir"
    )
    parser.add_argument(
        "--seed", action="store_true", help="create the example, corpus and fixture repos (once)"
    )
    parser.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--page-size", type=int, default=None, help="items per page of list_models (Hub: 1000)"
    )
    parser.add_argument("--tree-page-size", type=int, default=None, help="entries per tree page (Hub: 1000)")
    parser.add_argument(
        "--discussions-page-size", type=int, default=None, help="discussions per page (Hub: 50)"
    )
    parser.add_argument(
        "--upload-mode",
        choices=("regular", "lfs"),
        default=None,
        help="what /preupload answers (default: lfs if HF_HUB_DISABLE_XET is set, else regular)",
    )
    parser.add_argument(
        "--cdn-port",
        type=int,
        default=0,
        help="port of the CDN origin LFS files redirect to (0 = any free port)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    data = args.data or Path(tempfile.mkdtemp(prefix="localhub-"))
    hub_app = app.HubApp(data, verbose=args.verbose)
    overrides = {
        k: v
        for k, v in {
            "page_size": args.page_size,
            "tree_page_size": args.tree_page_size,
            "discussions_page_size": args.discussions_page_size,
            "upload_mode": args.upload_mode,
        }.items()
        if v is not None
    }
    hub_app.config.update(overrides)
    hub_app.defaults.update(overrides)
    if args.seed:
        corpus = args.corpus if args.corpus.is_dir() else None
        if corpus is None:
            print(f"[localhub] no corpus at {args.corpus}: corpus repos are not seeded", file=sys.stderr)
        created = seed.seed(hub_app.store, hub_app.accounts, examples_dir=args.examples, corpus_dir=corpus)
        print(
            f"[localhub] seeded {len(created)} repos" if created else "[localhub] already seeded",
            file=sys.stderr,
        )

    server = hub_app.serve(args.port)
    cdn_server = cdn.serve_cdn(hub_app, args.cdn_port)
    threading.Thread(target=cdn_server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"[localhub] serving {url}  (data: {data}; LFS files from {hub_app.cdn_url})", file=sys.stderr)
    print(f"[localhub]   export HF_ENDPOINT={url} HF_TOKEN={ALICE_TOKEN}", file=sys.stderr)
    print(f"[localhub]   tokens: alice={ALICE_TOKEN} bob={BOB_TOKEN} carol={CAROL_TOKEN}", file=sys.stderr)
    print(f"[localhub]   admin:  {ADMIN_TOKEN}", file=sys.stderr)
    sys.stderr.flush()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        cdn_server.shutdown()
        cdn_server.server_close()
        hub_app.store.save()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
