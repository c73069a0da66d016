"""The suite's own guards: no test can reach the internet or the real Hub."""

from __future__ import annotations

import os
import socket

import pytest


def test_outbound_connections_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(RuntimeError, match="reach the network"):
        s.connect(("93.184.216.34", 443))
    s.close()


def test_hub_endpoint_is_local():
    assert os.environ["HF_ENDPOINT"].startswith(("http://127.", "http://localhost"))
    import huggingface_hub.constants as c

    assert os.environ["HF_ENDPOINT"] == c.ENDPOINT
