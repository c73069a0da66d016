"""``action.yml`` and every workflow are schema-valid (check-jsonschema's vendored GitHub
schemas) and zizmor-clean, both offline; and the action hands each input to the runtime through
``env``, never through ``${{ }}`` inside a script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ACTION = ROOT / "action.yml"
WORKFLOWS = sorted(
    [*(ROOT / ".github" / "workflows").glob("*.yml"), *(ROOT / "examples" / "workflows").glob("*.yml")]
)


def _tool(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_there_are_workflows_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in WORKFLOWS}
    assert {".github/workflows/ci.yml", "examples/workflows/gradience.yml"} <= names


def test_action_and_workflows_match_the_vendored_schemas():
    p = _tool("check-jsonschema", "--builtin-schema", "vendor.github-actions", ACTION)
    assert p.returncode == 0, p.stdout + p.stderr
    p = _tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)
    assert p.returncode == 0, p.stdout + p.stderr


def test_zizmor_finds_nothing_offline():
    p = _tool("zizmor", "--offline", "--no-progress", ACTION, *WORKFLOWS)
    assert p.returncode == 0, p.stdout + p.stderr


def test_inputs_reach_the_runtime_through_env_only():
    action = yaml.safe_load(ACTION.read_text())
    steps = action["runs"]["steps"]
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"], f"expression inside a script: {step.get('name')}"
    (audit,) = [s for s in steps if s.get("id") == "audit"]
    env = audit["env"]
    for name in action["inputs"]:
        if name in ("python-version", "upload-artifact"):
            continue  # used by the composite's own steps, not by the runtime
        var = "HF_TOKEN" if name == "hf-token" else "INPUT_" + name.upper().replace("-", "_")
        assert env.get(var) == f"${{{{ inputs.{name} }}}}", name
    # every INPUT_* the action sets is one the runtime reads
    help_text = subprocess.run([sys.executable, "-m", "gradience", "action", "run", "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    for var in env:
        if var.startswith("INPUT_") and var != "INPUT_GITHUB_TOKEN":
            flag = "--" + var.removeprefix("INPUT_").lower().replace("_", "-")
            assert re.search(rf"{flag}\b", help_text), flag
    # outputs point at ones the runtime writes
    for name, out in action["outputs"].items():
        assert out["value"] == f"${{{{ steps.audit.outputs.{name} }}}}"
