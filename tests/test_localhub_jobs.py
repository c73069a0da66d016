"""The local Hub's Jobs API, driven through the unmodified huggingface_hub client.

Jobs really run (tiny Python commands), so these tests check what a job did, not only what the
server says: its output, its environment, its exit status, a timeout or a cancel that really
stopped it. Nothing here waits on a clock: ordering is forced with files the test and the job
exchange, and the client's own ``wait_for_job`` polls the stages.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, JobStage
from huggingface_hub.errors import HfHubHTTPError
from servers import hub as H

WAIT = {"timeout": 60, "poll_interval": 0.1}
SECRET = "sk-local-0123456789"
SECRET_SHA = hashlib.sha256(SECRET.encode()).hexdigest()  # the job checks its secret without naming it


@pytest.fixture()
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.tokens["alice"])


def _py(code: str) -> list[str]:
    return ["python", "-c", code]


def _run(api: HfApi, code: str, **kwargs) -> str:
    return api.run_job(image="python:3.12", command=_py(code), namespace="alice", **kwargs).id


def _wait(api: HfApi, job_id: str, **kwargs):
    return api.wait_for_job(job_id, namespace="alice", **WAIT, **kwargs)


def test_a_job_runs_its_command_with_env_and_secrets_in_the_project_environment(api, hub):
    code = (
        "import os, sys\n"
        "from hashlib import sha256\n"
        "print('python', sys.prefix)\n"
        "print('env', os.environ['GREETING'])\n"
        f"print('secret matches', sha256(os.environ['API_KEY'].encode()).hexdigest() == {SECRET_SHA!r})\n"
        "print('leaked', os.environ['API_KEY'])\n"
        "print('hub', os.environ['HF_ENDPOINT'])\n"
    )
    job = api.run_job(
        image="python:3.12-slim",
        command=_py(code),
        env={"GREETING": "hello"},
        secrets={"API_KEY": SECRET},
        labels={"suite": "jobs-basic"},
        namespace="alice",
    )
    assert job.status.stage in (JobStage.SCHEDULING, JobStage.RUNNING)
    done = _wait(api, job.id)
    assert done.status.stage == JobStage.COMPLETED and done.status.message is None
    assert done.docker_image == "python:3.12-slim" and done.flavor == "cpu-basic"
    assert done.environment == {"GREETING": "hello"}
    assert done.secrets == {"API_KEY": None}  # the name only
    assert done.owner.name == "alice" and done.initiator.type == "user"
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.labels["suite"] == "jobs-basic" and done.labels["name"]  # run_job names every job

    logs = list(api.fetch_job_logs(job_id=job.id, namespace="alice"))
    assert logs == [
        f"python {sys.prefix}",
        "env hello",
        "secret matches True",
        "leaked ***",
        f"hub {hub.url}",
    ]
    # The secret is in no answer and in no line the server wrote.
    assert SECRET not in repr(api.inspect_job(job_id=job.id, namespace="alice"))
    if hub.log_path is not None:
        assert SECRET not in hub.log_path.read_text(errors="replace")


def test_logs_stream_while_the_job_runs(api, tmp_path):
    """The job prints, then waits for a file the test writes only once it has read that line."""
    flag = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('waiting', flush=True)\n"
        "for _ in range(600):\n"
        f"    if os.path.exists({str(flag)!r}): break\n"
        "    time.sleep(0.05)\n"
        "else: raise SystemExit('never released')\n"
        "print('released')\n"
    )
    job_id = _run(api, code)
    seen = []
    for line in api.fetch_job_logs(job_id=job_id, namespace="alice", follow=True):
        seen.append(line)
        if line == "waiting":
            flag.write_text("go")
    assert seen == ["waiting", "released"]
    assert _wait(api, job_id).status.stage == JobStage.COMPLETED


def test_a_failing_command_ends_in_error_with_its_exit_code(api):
    job = _wait(api, _run(api, "import sys; print('bad'); sys.exit(3)"))
    assert job.status.stage == JobStage.ERROR
    assert "exit code 3" in job.status.message


def test_a_missing_program_ends_in_error(api):
    job_id = api.run_job(image="alpine", command=["no-such-program-xyz"], namespace="alice").id
    job = _wait(api, job_id)
    assert job.status.stage == JobStage.ERROR and "no-such-program-xyz" in job.status.message


def test_timeout_stops_the_job_and_says_so(api, tmp_path):
    pid_file = tmp_path / "job.pid"
    script = f"echo $$ > {pid_file}; echo start; exec sleep 30"  # a shell starts in milliseconds
    job_id = api.run_job(image="alpine", command=["sh", "-c", script], timeout=1, namespace="alice").id
    job = _wait(api, job_id)
    assert job.status.stage == JobStage.ERROR
    assert "timed out" in job.status.message and "1 seconds" in job.status.message
    assert list(api.fetch_job_logs(job_id=job.id, namespace="alice")) == ["start"]
    assert _gone(int(pid_file.read_text()))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _gone(pid: int) -> bool:
    """Whether ``pid`` has died, allowing the kernel a moment to reap an orphaned child."""
    for _ in range(100):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_cancel_stops_the_job_and_its_children(api, tmp_path):
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    job_id = _run(api, code)
    for line in api.fetch_job_logs(job_id=job_id, namespace="alice", follow=True):
        if line == "ready":
            break
    assert api.inspect_job(job_id=job_id, namespace="alice").status.stage == JobStage.RUNNING
    api.cancel_job(job_id=job_id, namespace="alice")
    job = _wait(api, job_id)
    assert job.status.stage == JobStage.CANCELED
    assert _gone(int(pid_file.read_text()))  # the whole process group got the signal


def test_metrics_of_a_running_job(api, tmp_path):
    flag = tmp_path / "stop"
    code = (
        "import os, time\n"
        "print('up', flush=True)\n"
        "while not os.path.exists(" + repr(str(flag)) + "): time.sleep(0.05)\n"
    )
    job_id = _run(api, code)
    api.wait_for_job(job_id, namespace="alice", stages=[JobStage.RUNNING], **WAIT)
    sample = next(iter(api.fetch_job_metrics(job_id=job_id, namespace="alice")))
    assert sample["memory_used_bytes"] > 0 and sample["memory_total_bytes"] >= sample["memory_used_bytes"]
    assert {"cpu_usage_pct", "rx_bps", "tx_bps", "gpus"} <= set(sample)
    flag.write_text("x")
    assert _wait(api, job_id).status.stage == JobStage.COMPLETED
    assert list(api.fetch_job_metrics(job_id=job_id, namespace="alice")) == []  # not running: none


def test_list_jobs_by_stage_and_label_across_pages(api, hub):
    suite = uuid.uuid4().hex[:8]
    ok = [_run(api, "print('ok')", labels={"suite": suite, "kind": "ok"}) for _ in range(3)]
    bad = _run(api, "raise SystemExit(1)", labels={"suite": suite, "kind": "bad"})
    for job_id in [*ok, bad]:
        _wait(api, job_id)
    with hub.configured(jobs_page_size=2):
        hub.reset_stats()
        mine = list(api.list_jobs(labels={"suite": suite}, namespace="alice"))
        assert hub.request_count("jobs", "GET") == 2  # two pages, followed through the Link header
    assert [j.id for j in mine] == [bad, *reversed(ok)]  # newest first
    completed = list(api.list_jobs(labels={"suite": suite}, status="COMPLETED", namespace="alice"))
    assert sorted(j.id for j in completed) == sorted(ok)
    errors = list(api.list_jobs(labels={"suite": suite}, status=[JobStage.ERROR], namespace="alice"))
    assert [j.id for j in errors] == [bad]
    assert [j.id for j in api.list_jobs(labels={"suite": suite, "kind": "bad"}, namespace="alice")] == [bad]

    relabelled = api.update_job_labels(
        job_id=bad, labels={"suite": suite, "kind": "retried"}, namespace="alice"
    )
    assert relabelled.labels == {"suite": suite, "kind": "retried"}
    assert list(api.list_jobs(labels={"suite": suite, "kind": "bad"}, namespace="alice")) == []


@pytest.mark.filterwarnings("ignore:'HfApi.run_uv_job' is experimental:UserWarning")
def test_tail_rerun_and_uv_jobs(api, hub):
    job_id = _run(api, "print('one'); print('two'); print('three')")
    _wait(api, job_id)
    assert list(api.fetch_job_logs(job_id=job_id, namespace="alice", tail=1)) == ["three"]
    again = api.rerun_job(job_id=job_id, namespace="alice")
    assert again.id != job_id and again.initiator.type == "duplicated-job"
    assert _wait(api, again.id).status.stage == JobStage.COMPLETED
    assert list(api.fetch_job_logs(job_id=again.id, namespace="alice")) == ["one", "two", "three"]

    # run_uv_job: a script from a repo on this Hub, run with the project's Python.
    repo = f"alice/uv-script-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo)
    api.upload_file(
        path_or_fileobj=b"import sys\nprint('uv says', sys.argv[1:])\n", path_in_repo="hello.py", repo_id=repo
    )
    uv = api.run_uv_job(f"{hub.url}/{repo}/resolve/main/hello.py", script_args=["a", "b"], namespace="alice")
    assert uv.command[:2] == ["uv", "run"] and uv.docker_image.startswith("ghcr.io/astral-sh/uv")
    assert _wait(api, uv.id).status.stage == JobStage.COMPLETED
    assert list(api.fetch_job_logs(job_id=uv.id, namespace="alice")) == ["uv says ['a', 'b']"]


def test_hardware_and_bad_specs(api):
    names = [h.name for h in api.list_jobs_hardware()]
    assert names[0] == "cpu-basic" and {"a10g-small", "h200"} <= set(names)
    gpu = next(h for h in api.list_jobs_hardware() if h.name == "a10g-small")
    assert gpu.accelerator is not None and gpu.accelerator.model == "A10G"
    with pytest.raises(HfHubHTTPError) as e:
        api.run_job(image="python:3.12", command=_py("1"), flavor="tpu-v9", namespace="alice")
    assert e.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as e:
        api.run_job(image="python:3.12", command=_py("1"), labels={"bad key": "x"}, namespace="alice")
    assert e.value.response.status_code == 400


def test_access_follows_the_namespace_and_the_token(api, hub):
    job_id = _run(api, "print('mine')")
    carol = HfApi(endpoint=hub.url, token=hub.tokens["carol"])
    with pytest.raises(HfHubHTTPError) as e:
        carol.inspect_job(job_id=job_id, namespace="alice")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        carol.inspect_job(job_id=job_id, namespace="carol")
    assert e.value.response.status_code == 404
    reader = HfApi(endpoint=hub.url, token=H.ALICE_READ_TOKEN)
    assert reader.inspect_job(job_id=job_id, namespace="alice").id == job_id
    with pytest.raises(HfHubHTTPError) as e:
        reader.run_job(image="python:3.12", command=_py("1"), namespace="alice")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=hub.url, token=False).inspect_job(job_id=job_id, namespace="alice")
    assert e.value.response.status_code == 401
    # An organisation's member runs jobs in its namespace.
    org_job = api.run_job(image="python:3.12", command=_py("print(1)"), namespace="gradience-test")
    assert org_job.owner.name == "gradience-test" and org_job.owner.type == "org"
    finished = api.wait_for_job(org_job.id, namespace="gradience-test", **WAIT)
    assert finished.status.stage == JobStage.COMPLETED
    _wait(api, job_id)


def test_scheduled_jobs_lifecycle(api, hub):
    sched = api.create_scheduled_job(
        image="python:3.12",
        command=_py("import os; print('scheduled', os.environ['WHO'])"),
        env={"WHO": "alice"},
        secrets={"TOKEN": "never-shown-9876"},
        schedule="@hourly",
        labels={"suite": "sched"},
        namespace="alice",
    )
    assert sched.schedule == "@hourly" and sched.suspend is False
    assert sched.status.next_job_run_at is not None and sched.status.next_job_run_at.minute == 0
    assert sched.job_spec.secrets == {"TOKEN": None}
    assert sched.id in [s.id for s in api.list_scheduled_jobs(namespace="alice")]
    assert [s.id for s in api.list_scheduled_jobs(labels={"suite": "sched"}, namespace="alice")] == [sched.id]

    api.suspend_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    paused = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    assert paused.suspend is True and paused.status.next_job_run_at is None
    api.resume_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    assert api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace="alice").suspend is False

    run = api.trigger_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    assert run.initiator.type == "scheduled-job" and run.initiator.id == sched.id
    assert _wait(api, run.id).status.stage == JobStage.COMPLETED
    assert list(api.fetch_job_logs(job_id=run.id, namespace="alice")) == ["scheduled alice"]
    assert (
        api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace="alice").status.last_job.id == run.id
    )

    # The scheduler thread fires a due schedule by itself (the admin call only moves the clock).
    fired = hub._call("POST", f"/_admin/scheduled-jobs/{sched.id}/due")["job_id"]
    by_schedule = _wait(api, fired)
    assert by_schedule.initiator.type == "scheduled-job" and by_schedule.status.stage == JobStage.COMPLETED
    after = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace="alice").status
    assert after.last_job.id == fired and after.next_job_run_at > by_schedule.created_at

    daily = api.update_scheduled_job_schedule(
        scheduled_job_id=sched.id, schedule="30 4 * * *", namespace="alice"
    )
    assert daily.schedule == "30 4 * * *"
    assert (daily.status.next_job_run_at.hour, daily.status.next_job_run_at.minute) == (4, 30)
    with pytest.raises(HfHubHTTPError) as e:
        api.update_scheduled_job_schedule(
            scheduled_job_id=sched.id, schedule="every tuesday", namespace="alice"
        )
    assert e.value.response.status_code == 400

    api.delete_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    with pytest.raises(HfHubHTTPError) as e:
        api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace="alice")
    assert e.value.response.status_code == 404


def test_a_job_cancelled_while_scheduling_never_runs(api, hub, tmp_path):
    marker = tmp_path / "ran"
    with hub.configured(jobs_scheduling_delay_ms=30_000):
        job = api.run_job(
            image="python:3.12", command=_py(f"open({str(marker)!r}, 'w').write('x')"), namespace="alice"
        )
        assert api.inspect_job(job_id=job.id, namespace="alice").status.stage == JobStage.SCHEDULING
        api.cancel_job(job_id=job.id, namespace="alice")
        done = _wait(api, job.id)
    assert done.status.stage == JobStage.CANCELED and done.started_at is None
    assert list(api.fetch_job_logs(job_id=job.id, namespace="alice")) == []
    assert not marker.exists()


def test_tokens_without_the_jobs_scope_cannot_run_jobs(hub):
    oauth = HfApi(endpoint=hub.url, token=H.ALICE_OAUTH_TOKEN)
    with pytest.raises(HfHubHTTPError) as e:
        oauth.run_job(image="python:3.12", command=_py("1"), namespace="alice")
    assert e.value.response.status_code == 403 and "jobs" in str(e.value)
