"""What the GitHub Action costs on a runner: the install and the time to a comment.

1. **Footprint.** ``pip install <repo>[action]`` into a fresh virtual environment — the real
   install the action's ``Install`` step does (``--no-compile``: a throw-away environment
   byte-compiles only what it imports), dependencies included, from the package registry — and
   the disk it adds over the empty environment. Target: under 100 MB, and no torch. The ten
   largest packages are listed, since the floor is set by the core's own dependencies.
2. **Time to comment.** ``gradience action run`` from that environment on a pull request that
   adds three small adapters (the bundled ``healthy-r8``, ``untrained-r8`` and
   ``overprovisioned-r64``), against the local GitHub of ``tests/servers/github``: wall time from
   process start to the comment existing (first run: created; later runs: edited). The runner's
   own setup (checkout, setup-python, the install above) comes on top.

Usage: ``python benchmarks/bench_action.py [--runs 3] [--keep VENV]``. Needs the package
registry (pip). Results go to ``benchmarks/results/action.json`` and ``action.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_audit import write_results  # noqa: E402
from servers.github import LocalGitHub  # noqa: E402

LIMIT_MB = 100.0
REPO = "acme/adapters"
TOKEN = "ghs_bench_token_0000000000000000000000"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install(venv: Path) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    empty = tree_bytes(venv)
    site = next((venv / "lib").glob("python3*/site-packages"))
    before = {p.name for p in site.iterdir()}
    t0 = time.perf_counter()
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-compile", f"{ROOT}[action]"],
                   check=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    full = tree_bytes(venv)
    freeze = subprocess.run(
        [str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    packages = sorted(line.split("==")[0].lower() for line in freeze.splitlines() if "==" in line)
    sizes = {
        p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size
        for p in site.iterdir()
        if p.name not in before
    }
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:10]
    return {
        "largest_mb": {k: round(v / 1e6, 1) for k, v in largest},
        "install_s": round(seconds, 1),
        "empty_venv_mb": round(empty / 1e6, 1),
        "added_mb": round((full - empty) / 1e6, 1),
        "packages": packages,
        "torch_installed": "torch" in packages,
    }


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()  # fmt: skip


def time_to_comment(venv: Path, runs: int) -> dict:
    server = LocalGitHub()
    server.add_repo(REPO)
    server.add_token(TOKEN, "github-actions[bot]")
    tmp = Path(tempfile.mkdtemp(prefix="bench-action-"))
    try:
        repo = tmp / "work"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("adapters\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "base")
        base = git(repo, "rev-parse", "HEAD")
        for name in ("healthy-r8", "untrained-r8", "overprovisioned-r64"):
            shutil.copytree(ROOT / "examples" / name, repo / "adapters" / name)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "three adapters")
        head = git(repo, "rev-parse", "HEAD")
        files = [
            {"filename": f, "status": "added"} for f in git(repo, "diff", "--name-only", base, head).split()
        ]
        server.add_pull(REPO, 1, head_sha=head, base_sha=base, files=files)
        event = tmp / "event.json"
        event.write_text(json.dumps({"action": "opened", "number": 1, "pull_request": {
            "number": 1, "head": {"sha": head, "repo": {"full_name": REPO}},
            "base": {"sha": base, "repo": {"full_name": REPO}}}}))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
        env.update(GITHUB_EVENT_PATH=str(event), GITHUB_EVENT_NAME="pull_request", GITHUB_REPOSITORY=REPO,
                   GITHUB_API_URL=server.url, GITHUB_WORKSPACE=str(repo), RUNNER_TEMP=str(tmp),
                   INPUT_GITHUB_TOKEN=TOKEN, NO_PROXY="127.0.0.1")  # fmt: skip
        times, modes = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            p = subprocess.run([str(venv / "bin" / "gradience"), "action", "run"], capture_output=True, text=True,
                               env=env, cwd=repo)  # fmt: skip
            times.append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise SystemExit(f"action run failed ({p.returncode}): {p.stderr.strip()}")
            modes.append(
                json.loads((tmp / "gradience-action-default" / "report.json").read_text())["comment"]["mode"]
            )
        assert len(server.comments(REPO, 1)) == 1
        return {"runs_s": [round(t, 2) for t in times], "median_s": round(statistics.median(times), 2),
                "first_s": round(times[0], 2), "modes": modes}  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="build the virtual environment here and keep it")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    venv = args.keep or Path(tempfile.mkdtemp(prefix="gradience-action-venv-"))
    try:
        fp = install(venv)
        ttc = time_to_comment(venv, args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(venv, ignore_errors=True)
    targets = [
        {"target": f"pip install .[action] adds < {LIMIT_MB:.0f} MB", "value": fp["added_mb"],
         "result": "PASS" if fp["added_mb"] < LIMIT_MB else "FAIL"},
        {"target": "no torch in the action's install", "value": fp["torch_installed"],
         "result": "FAIL" if fp["torch_installed"] else "PASS"},
    ]  # fmt: skip
    results = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "footprint": fp,
        "time_to_comment": ttc,
        "targets": targets,
    }
    md = "\n".join([
        "| measure | value |", "|---|---|",
        f"| `pip install .[action]` into a fresh venv | {fp['added_mb']} MB added "
        f"(empty venv {fp['empty_venv_mb']} MB), {fp['install_s']} s, {len(fp['packages'])} packages, "
        f"torch: {'yes' if fp['torch_installed'] else 'no'} |",
        f"| `gradience action run`, PR adding 3 small adapters | first run (comment created) "
        f"{ttc['first_s']} s; median of {len(ttc['runs_s'])} {ttc['median_s']} s ({', '.join(ttc['modes'])}) |",
        "", *(f"- {t['target']}: **{t['result']}** ({t['value']})" for t in targets), "",
        "Largest installed packages (MB): " + ", ".join(f"{k} {v}" for k, v in fp["largest_mb"].items()), "",
    ])  # fmt: skip
    return write_results(args.results, "action", results, md)


if __name__ == "__main__":
    sys.exit(main())
