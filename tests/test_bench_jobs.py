"""``gradience bench --on hf-jobs`` against the local Hub's Jobs API (jobs really run, as
subprocesses in the project's environment): submit, stream, collect, supersede, fail and
time out — and the token never shows up anywhere but the job's secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("peft", reason="the bench needs the bench extra (torch, peft, transformers)")

from huggingface_hub import HfApi

from gradience.bench import BenchConfig
from gradience.bench.jobs import KEY_LABEL, BenchJobError, job_labels, run_on_jobs

pytestmark = pytest.mark.peft

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "bench.schema.json").read_text())
TINY = "seeds = 1\nsteps = 3\nprobe_rank = 4\nbatch_size = 16\nmodes = ['truncated']\n"


@pytest.fixture()
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.tokens["alice"])


def test_a_job_is_submitted_streamed_and_its_report_collected(hub, api, tmp_path):
    token = hub.tokens["alice"]
    config_file = tmp_path / "bench.toml"
    config_file.write_text(TINY)
    config = BenchConfig(seeds=1, steps=3, probe_rank=4, batch_size=16, modes=("truncated",))
    key = job_labels(config, "alice/proj", "7", None)[KEY_LABEL]
    old = api.run_job(
        image="python:3.12", command=["python", "-c", "import time; time.sleep(600)"],
        labels={KEY_LABEL: key}, namespace="alice",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "GITHUB_SHA")}
    env.update(HF_TOKEN=token, GITHUB_REPOSITORY="alice/proj", GRADIENCE_PR="7", GITHUB_SHA="0123abc")
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "bench", "--on", "hf-jobs", "--config", str(config_file),
         "--namespace", "alice", "--timeout", "5m", "--json"],
        capture_output=True, text=True, env=env, timeout=400,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["config"]["steps"] == 3 and report["task"]["name"] == "synthetic"
    assert f"cancelled superseded job {old.id}" in p.stderr
    assert "bench: [1/" in p.stderr  # progress lines streamed from the job's logs
    assert api.inspect_job(job_id=old.id, namespace="alice").status.stage == "CANCELED"
    jobs = [j for j in api.list_jobs(labels={KEY_LABEL: key}, namespace="alice") if j.id != old.id]
    assert len(jobs) == 1
    job = jobs[0]
    assert job.status.stage == "COMPLETED"
    wanted = {KEY_LABEL: key, "repo": "alice-proj", "pr": "7", "commit": "0123abc"}
    assert {k: job.labels.get(k) for k in wanted} == wanted
    assert token not in p.stdout + p.stderr
    assert token not in json.dumps(job.environment or {}) and token not in " ".join(job.command or [])
    assert "".join(api.fetch_job_logs(job_id=job.id, namespace="alice")).count(token) == 0


def test_a_failed_job_is_reported_with_its_last_log_lines(hub):
    config = BenchConfig(
        seeds=1, steps=3, probe_rank=4, model="alice/no-such-model", dataset="alice/no-such-data"
    )
    with pytest.raises(BenchJobError) as err:
        run_on_jobs(config, token=hub.tokens["alice"], namespace="alice", timeout="5m", quiet=True)
    message = str(err.value)
    assert "failed" in message and "last log lines" in message
    assert "gradience bench: error:" in message  # the job's own one-line error, from its logs
    assert err.value.extra["stage"] == "ERROR" and hub.tokens["alice"] not in message


def test_a_job_that_times_out_is_reported_as_such(hub):
    config = BenchConfig(seeds=3, steps=100_000)
    with pytest.raises(BenchJobError) as err:
        run_on_jobs(config, token=hub.tokens["alice"], namespace="alice", timeout="2s", quiet=True)
    assert "timed out" in str(err.value) and err.value.extra["stage"] == "ERROR"


def test_jobs_need_a_token_and_a_sane_timeout(hub, monkeypatch):
    from gradience.errors import HubAccessError, UsageError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubAccessError):
        run_on_jobs(BenchConfig(), token=None, quiet=True)
    with pytest.raises(UsageError, match="timeout"):
        run_on_jobs(BenchConfig(), token=hub.tokens["alice"], timeout="soon", quiet=True)


def test_ctrl_c_cancels_the_remote_job(hub, api, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["HF_TOKEN"] = hub.tokens["alice"]
    p = subprocess.Popen(
        [sys.executable, "-m", "gradience", "bench", "--on", "hf-jobs", "--namespace", "alice",
         "--timeout", "10m", "--steps", "100000", "--out", str(tmp_path / "out")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = ""
        while not line.startswith("bench: job "):  # (an earlier run may be cancelled first)
            line = p.stderr.readline()
            assert line, "the command ended before submitting a job"
        job_id = line.split()[2]
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130 and f"cancelled job {job_id}" in err
    assert api.inspect_job(job_id=job_id, namespace="alice").status.stage == "CANCELED"


def test_a_job_cancelled_elsewhere_is_reported_as_cancelled(hub, api):
    import threading

    config = BenchConfig(seeds=3, steps=100_000)
    caught: list[BaseException] = []
    started = threading.Event()

    def log(line: str) -> None:
        if line.startswith("bench: job "):
            started.job_id = line.split()[2]  # type: ignore[attr-defined]
            started.set()

    def submit() -> None:
        try:
            run_on_jobs(config, token=hub.tokens["alice"], namespace="alice", timeout="10m", log=log)
        except BaseException as e:
            caught.append(e)

    watcher = threading.Thread(target=submit)
    watcher.start()
    assert started.wait(120)
    api.cancel_job(job_id=started.job_id, namespace="alice")  # type: ignore[attr-defined]
    watcher.join(120)
    assert not watcher.is_alive() and len(caught) == 1 and isinstance(caught[0], BenchJobError)
    assert "was cancelled" in str(caught[0]) and caught[0].extra["stage"] == "CANCELED"
