"""``gradience bench`` on the embedded task: a tiny grid (few steps, small data) through the
public API and the CLI — schema, verdicts against the tolerance, the cache and resuming."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("peft", reason="the bench needs the bench extra (torch, peft, transformers)")

import gradience
from gradience.bench import BenchConfig, load_config, run_bench
from gradience.bench.tasks import make_task
from gradience.errors import UsageError

pytestmark = pytest.mark.peft

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "bench.schema.json").read_text())
TINY = {"seeds": 2, "steps": 12, "probe_rank": 8, "batch_size": 32, "lr": 1e-2}


def _task():
    return make_task("synthetic", n_train=256, n_eval=128)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A grid killed after three units, then resumed to the end (the resumed result)."""
    out = tmp_path_factory.mktemp("bench")
    seen = []

    def kill_after_three(label, result):
        seen.append(label)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(BenchConfig(**TINY), out, task=_task(), on_unit=kill_after_three)
    return out, run_bench(BenchConfig(**TINY), out, task=_task())


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


def test_report_follows_the_schema_and_verdicts_follow_the_tolerance(finished):
    _, result = finished
    report = result.report
    jsonschema.validate(report, SCHEMA)
    probe = {r["seed"]: r["metric"] for r in report["probe"]["per_seed"]}
    assert sorted(probe) == [0, 1]
    for c in report["candidates"]:
        assert c["param_ratio"] == pytest.approx(c["lora_params"] / report["probe"]["lora_params"])
        for mode in ("truncated", "retrained"):
            m = c["modes"][mode]
            deltas = [r["metric"] - probe[r["seed"]] for r in m["per_seed"]]
            assert [r["delta"] for r in m["per_seed"]] == pytest.approx(deltas)
            assert m["worst_delta"] == pytest.approx(min(deltas))
            assert m["verdict"] == ("pass" if min(deltas) >= report["tolerance"] else "fail")
        assert c["verdict"] == c["modes"]["retrained"]["verdict"]
    passing = [c for c in report["candidates"] if c["verdict"] == "pass" and not c["control"]]
    passing = [c for c in passing if c["lora_params"] < report["probe"]["lora_params"]]
    if passing:
        assert report["best"]["lora_params"] == min(c["lora_params"] for c in passing)
        assert f"r={report['best']['r']}," in report["best"]["lora_config"]
    else:
        assert report["best"] is None


def test_candidates_come_from_the_probe_audit(finished):
    out, result = finished
    report = result.report
    adapters = [p for p in (out / "adapters").iterdir() if (p / "adapter_config.json").is_file()]
    audits = [gradience.audit(p) for p in adapters]
    rec = report["probe"]["audit"]["recommendation"]
    assert rec in [a.recommendation.to_dict() for a in audits]
    by_name = {c["name"]: c for c in report["candidates"]}
    assert set(by_name) == {"uniform-p50", "uniform-p90", "recommended", "per-layer", "control"}
    p50 = math.ceil(report["probe"]["audit"]["energy_rank_90_p50"] - 1e-9)
    assert set(by_name["uniform-p50"]["ranks"].values()) == {p50}
    assert set(by_name["recommended"]["ranks"].values()) == {rec["rank"]}
    assert by_name["per-layer"]["ranks"] == rec["per_layer"]
    control, per_layer = by_name["control"], by_name["per-layer"]
    assert control["control"] and control["ranks"].keys() == per_layer["ranks"].keys()
    assert abs(control["lora_params"] - per_layer["lora_params"]) <= 256  # one rank step of the widest layer


def test_a_rerun_reports_the_same_from_the_cache(finished):
    out, result = finished
    again = run_bench(BenchConfig(**TINY), out, task=_task())
    assert again.stats.computed == 0 and again.stats.cached == result.stats.units
    assert again.report == result.report


def test_a_killed_run_resumes_where_it_stopped(finished):
    out, resumed = finished
    assert resumed.stats.cached == 3 and resumed.stats.computed == resumed.stats.units - 3
    # A lost result is recomputed alone, and identically: CPU training is deterministic per seed.
    victim = sorted((out / "results").glob("*.json"))[-1]
    victim.unlink()
    again = run_bench(BenchConfig(**TINY), out, task=_task())
    assert again.stats.computed == 1 and victim.is_file()
    assert _without_timings(again.report) == _without_timings(resumed.report)


def test_other_settings_do_not_reuse_results(finished):
    out, _ = finished
    other = run_bench(
        BenchConfig(**{**TINY, "seeds": 1, "modes": ("truncated",), "lr": 2e-2}), out, task=_task()
    )
    assert other.stats.cached == 0 and other.stats.computed == other.stats.units
    assert all(set(c["modes"]) == {"truncated"} for c in other.report["candidates"])
    jsonschema.validate(other.report, SCHEMA)


def test_settings_from_toml_and_overrides(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text('[bench]\nseeds = 2\nsteps = 40\nmodes = ["retrained"]\ntolerance = -1.0\n')
    config = load_config(path, steps=10)
    assert (config.seeds, config.steps, config.modes, config.tolerance) == (2, 10, ("retrained",), -1.0)
    path.write_text("seeds = 2\nsped = 3\n")
    with pytest.raises(UsageError, match="unknown setting 'sped'"):
        load_config(path)
    with pytest.raises(UsageError, match="tolerance"):
        load_config(tolerance=2.5)
    with pytest.raises(UsageError, match="both a model and a dataset"):
        load_config(model="alice/tiny")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "gradience", "bench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _counts(stderr: str) -> tuple[int, int]:
    m = re.search(r"bench: \d+ units, (\d+) computed, (\d+) from the cache", stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def test_cli_killed_resumed_then_instant_with_json_table_and_plot(tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text("seeds = 1\nsteps = 5\nprobe_rank = 4\nbatch_size = 16\n")
    out, plot = tmp_path / "out", tmp_path / "bench.png"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    killed = subprocess.Popen([sys.executable, "-m", "gradience", "bench", "--config", str(config), "--out", str(out)],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    try:
        for line in killed.stderr:
            if line.startswith("bench: [3/"):
                killed.kill()  # SIGKILL: no cleanup, no chance to finish the unit in progress
                break
    finally:
        killed.kill()
        killed.wait(60)
        killed.stderr.close()
    first = _cli("--config", str(config), "--out", str(out), "--json", "--plot", str(plot))
    assert first.returncode == 0, first.stderr
    computed, cached = _counts(first.stderr)
    assert cached >= 3 and computed >= 1  # resumed: the killed run's units were kept
    report = json.loads(first.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["config"]["steps"] == 5 and report["task"]["name"] == "synthetic"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = _cli("--config", str(config), "--out", str(out), "--tolerance", "-100")
    assert again.returncode == 0, again.stderr
    assert _counts(again.stderr) == (0, computed + cached)
    for c in report["candidates"]:
        assert c["name"] in again.stdout
    assert "PASS" in again.stdout and "FAIL" not in again.stdout  # −100 points: everything passes
    assert "smallest passing" in again.stdout and "LoraConfig(" in again.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seeds", "0"], "positive integer"),
        (["--modes", "sideways"], "truncated, retrained"),
        (["--model", "alice/tiny"], "both a model and a dataset"),
        (["--tolerance", "3"], "tolerance"),
        (["--threads", "-1"], "threads"),
        (["--config", "/nonexistent/bench.toml"], "no bench config"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    p = _cli("--out", str(tmp_path / "out"), *args)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
