"""Test-wide guards: no internet, a Hub endpoint that can only be local, shared data paths,
and the local Hub (``hub``) and local GitHub (``github``) servers the tests run against."""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest  # pytest never imports huggingface_hub, so HF_ENDPOINT can still be set below

# One BLAS thread per process, as the CLI does (gradience/cli/main.py), set before any test
# module imports numpy: on a shared 2-core runner, OpenBLAS threads made dense oracle SVDs
# 5-10x slower (a 768×768 SVD took seconds).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if TYPE_CHECKING:
    from servers.github import LocalGitHub
    from servers.hub import LocalHub


def _reserve_loopback_port() -> int:
    """The local Hub's port must be in HF_ENDPOINT before huggingface_hub is imported, but the
    server only starts later (in the ``hub`` fixture): take a free port now, bind it then."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Before anything imports huggingface_hub: no test may talk to the real Hub. GRADIENCE_TEST_HF_ENDPOINT
# points the suite at a local Hub started by hand (python tests/servers/hub.py --seed ...).
_EXTERNAL_HUB = os.environ.get("GRADIENCE_TEST_HF_ENDPOINT")
HUB_PORT = 0 if _EXTERNAL_HUB else _reserve_loopback_port()
os.environ["HF_ENDPOINT"] = _EXTERNAL_HUB or f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Loopback never goes through a proxy (httpx2 honours HTTP(S)_PROXY).
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
# The developer's own Hub token, cache and offline switch stay out of the tests: a stray token
# would be "invalid credentials" to the local Hub, and a shared cache could hide real requests.
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_var, None)
_HF_HOME = tempfile.mkdtemp(prefix="gradience-test-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLES = ROOT / "examples"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object):
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach the network: {address!r} (only loopback is allowed)")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object):
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach the network: {address!r} (only loopback is allowed)")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing; CI must run beside the shared data")
        pytest.skip(f"{path} is not here (a clone without ../shared/); these tests need it")
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Real adapters from public repositories, read in place from ../shared/corpus/."""
    return _shared("corpus")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def github() -> Iterator[LocalGitHub]:
    """The local GitHub, one server for the session; each module's ``gh`` fixture resets it and
    adds the repositories, tokens and pull requests its tests need."""
    from servers.github import LocalGitHub

    server = LocalGitHub()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hub() -> Iterator[LocalHub]:
    """The local Hub, seeded, on the port HF_ENDPOINT names; one server for the whole session.

    Small page sizes (5 models, 4 tree entries per page) make every client follow Link
    pagination, as it must on the real Hub for big listings.
    """
    from servers.hub import attach_local_hub, start_local_hub

    if _EXTERNAL_HUB:
        yield attach_local_hub(_EXTERNAL_HUB)
        return
    data = Path(tempfile.mkdtemp(prefix="gradience-localhub-"))
    corpus = SHARED / "corpus"
    local = start_local_hub(
        HUB_PORT,
        data,
        corpus_dir=corpus if corpus.is_dir() else None,
        examples_dir=EXAMPLES,
        settings={"upload_mode": "regular", "page_size": 5, "tree_page_size": 4},
    )
    try:
        yield local
    finally:
        local.stop()
        if not os.environ.get("GRADIENCE_KEEP_HUB_DATA"):
            shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(autouse=True)
def _hub_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that use the local Hub start with fresh statistics and leave no faults or settings."""
    if "hub" not in request.fixturenames:
        yield
        return
    local: LocalHub = request.getfixturevalue("hub")
    local.reset_stats()
    yield
    local.clear_faults()
    local.reset_config()


# With CI=true a skipped test is a failed one: every skip path (torch, gradio, hadolint, the
# shared corpus, a missing browser) means the CI machine lacks something it must have.
_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if _CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (CI must have everything the tests need): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if _CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true (CI must have everything the tests need): {reason}"
