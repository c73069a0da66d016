"""Test-wide guards: no internet, a Hub endpoint that can only be local, shared data paths."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

# Before anything imports huggingface_hub: no test may talk to the real Hub.
os.environ["HF_ENDPOINT"] = os.environ.get("GRADIENCE_TEST_HF_ENDPOINT", "http://127.0.0.1:9")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

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
