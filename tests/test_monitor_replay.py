"""Replay on real recorded runs (tests/data/telemetry, made by scripts/make_telemetry.py): the
article's narrative holds, and the command line prints valid JSON, a timeline and a plot.

"Early" means within the first 15% of the run's steps. "Near convergence" means within the 15%
of the run that follows the point where the smoothed training loss stops improving by more than
1% per window. Two readings of that point are checked (W = 50, the monitor's window):

* half-window: the first step where the means of the last W/2 losses and the W/2 before them
  differ by < 1% (the smoothing the plateau rule itself uses);
* full-window: the first step where the mean of the last W losses is within 1% of the mean of
  the W before them (a stricter reading: it comes later).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from gradience.monitor import MonitorConfig
from gradience.monitor.replay import replay
from gradience.monitor.telemetry import read_telemetry

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "telemetry"
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "monitor_replay.schema.json").read_text())
W = 50
PLATEAUS = ("LOSS_PLATEAU", "GRAD_PLATEAU", "EVAL_PLATEAU")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradience", *args], capture_output=True, text=True, timeout=120
    )


def steps_of(result, rule: str) -> list[int]:
    return [a.step for a in result.alerts if a.rule == rule]


def convergence(steps: list[int], losses: list[float]) -> dict[str, int]:
    x = np.asarray(losses)
    h = W // 2
    half = next(
        steps[t] for t in range(2 * h - 1, len(x))
        if abs(x[t + 1 - h : t + 1].mean() - x[t + 1 - 2 * h : t + 1 - h].mean())
        < 0.01 * abs(x[t + 1 - 2 * h : t + 1 - h].mean())
    )  # fmt: skip
    full = next(
        steps[t] for t in range(2 * W - 1, len(x))
        if x[t + 1 - 2 * W : t + 1 - W].mean() - x[t + 1 - W : t + 1].mean()
        <= 0.01 * abs(x[t + 1 - 2 * W : t + 1 - W].mean())
    )  # fmt: skip
    return {"half": half, "full": full}


@pytest.fixture(scope="module", params=["memorise", "healthy", "lr-spike"])
def recorded(request):
    return request.param, replay(DATA / f"{request.param}.jsonl")


def test_replay_reproduces_the_live_monitor(recorded):
    """Each fixture holds the alerts the monitor raised while the run trained."""
    _, result = recorded
    assert result.recorded_alerts, "the generator records the live alerts"
    assert [a.to_dict() for a in result.alerts] == [a.to_dict() for a in result.recorded_alerts]
    assert result.n_issues == 0 and result.steps_processed == 1200 and result.evals_processed == 120


def test_memorising_run_eval_plateau_early_no_loss_plateau_no_stop():
    result = replay(DATA / "memorise.jsonl")
    steps = [s for s, _ in result.series.loss]
    losses = np.array([v for _, v in result.series.loss])
    n = steps[-1] - steps[0] + 1
    # the ground truth, from the data: held-out loss never beats its first values ...
    ev = [v for _, v in result.series.eval]
    assert min(ev) == min(ev[:5]) and ev[-1] > 3 * ev[0]
    # ... while the training loss keeps falling: each half-window mean > 1% below the one before
    h = W // 2
    for t in range(2 * h, len(losses) + 1):
        assert losses[t - h : t].mean() < 0.99 * losses[t - 2 * h : t - h].mean()
    first_eval_plateau = steps_of(result, "EVAL_PLATEAU")
    assert first_eval_plateau and first_eval_plateau[0] <= steps[0] + 0.15 * n  # early
    assert steps_of(result, "LOSS_PLATEAU") == []
    assert not result.would_stop and steps_of(result, "CONSIDER_STOPPING") == []


def test_healthy_run_stops_near_convergence_and_no_plateau_before_it():
    result = replay(DATA / "healthy.jsonl")
    steps = [s for s, _ in result.series.loss]
    c = convergence(steps, [v for _, v in result.series.loss])
    n = steps[-1] - steps[0] + 1
    assert result.would_stop
    stop = result.stop_step
    for point in c.values():
        assert point <= stop <= point + 0.15 * n
    early = [a for a in result.alerts if a.step < c["half"] and a.rule in (*PLATEAUS, "CONSIDER_STOPPING")]
    assert early == []
    assert all(a.step >= c["full"] for a in result.alerts if a.rule == "CONSIDER_STOPPING")


def test_raised_learning_rate_gives_a_spike_there_and_only_there():
    path = DATA / "lr-spike.jsonl"
    t = read_telemetry(path)
    start = t.events("run_start")[0].get("config")
    first, n_steps, factor = start["lr_boost"]
    lrs = {r.step: r.number("lr") for r in t.events("train_step")}
    base = start["lr"]
    boosted = [s for s, lr in lrs.items() if lr > base]
    assert boosted == list(range(first, first + n_steps)) and lrs[first] == pytest.approx(base * factor)
    result = replay(path)
    spikes = [a for a in result.alerts if a.rule == "GRAD_SPIKE"]
    assert len(spikes) == 1
    (spike,) = spikes
    assert first <= spike.step <= first + n_steps + 2  # the update at `first` shows in the next gradients
    assert spike.evidence["grad_norm"] > 5 * spike.evidence["window_mean"]
    assert spike.evidence["n_previous"] == W


def test_config_changes_the_replay(tmp_path):
    cfg = tmp_path / "monitor.toml"
    cfg.write_text('disabled = ["EVAL_PLATEAU"]\n[grad_spike]\nfactor = 2.0\n')
    result = replay(DATA / "memorise.jsonl", config=cfg)
    assert "EVAL_PLATEAU" not in result.alerts_by_rule()
    assert result.config == MonitorConfig.from_file(cfg) and result.config_source == "given"
    assert replay(DATA / "memorise.jsonl").config_source == "recorded"  # the generator's (default) settings


def test_recorded_settings_are_used_unless_told_otherwise(tmp_path):
    from gradience.monitor import TrainingMonitor

    path = tmp_path / "run.jsonl"
    with TrainingMonitor({"cooldown": 0, "window": 10}, telemetry=path, run_config={"lr": 0.1}) as m:
        for s in range(1, 31):
            m.step(loss=1.0, grad_norm=1.0, step=s)
    live = [(a.rule, a.step) for a in m.alerts]
    assert live and [(a.rule, a.step) for a in replay(path).alerts] == live
    assert replay(path, use_recorded=False).alerts == ()  # the default window (50) never fills
    p = cli("monitor", "replay", str(path), "--defaults", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["config_source"] == "defaults"
    p = cli("monitor", "replay", str(path), "--defaults", "--config", "x.toml")
    assert p.returncode == 2 and "not allowed with" in p.stderr


# ------------------------------------------------------------------------------- command line


def test_cli_json_is_valid_and_is_the_api_result():
    p = cli("monitor", "replay", str(DATA / "lr-spike.jsonl"), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["alerts"] and all({"rule", "step"} <= set(a) for a in data["alerts"])
    assert data == replay(DATA / "lr-spike.jsonl").to_dict()
    assert ("GRAD_SPIKE", 602) in [(a["rule"], a["step"]) for a in data["alerts"]]
    assert data["would_stop"] is True and isinstance(data["stop_step"], int)


def test_cli_human_output_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plots" / "memorise.png"
    p = cli("monitor", "replay", str(DATA / "memorise.jsonl"), "--plot", str(png))
    assert p.returncode == 0, p.stderr
    assert "EVAL_PLATEAU" in p.stdout and "would have stopped: no" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    json_png = tmp_path / "j.png"
    p = cli("monitor", "replay", str(DATA / "healthy.jsonl"), "--json", "--plot", str(json_png))
    assert p.returncode == 0 and json.loads(p.stdout)["would_stop"] and json_png.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["monitor", "replay", "missing.jsonl"], "no such telemetry file"),
        (["monitor", "replay", "{data}/memorise.jsonl", "--config", "missing.toml"], "config file not found"),
        (["monitor", "replay", "{junk}"], "no train_step or eval records"),
        (["monitor"], "choose an action"),
        (["monitor", "replay"], "the following arguments are required"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x00\x01 not telemetry\n")
    p = cli(*[a.format(data=DATA, junk=junk) for a in args])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_replay_and_regimes_import_no_torch_or_matplotlib():
    code = (
        "import sys\n"
        "from gradience.cli.main import main\n"
        f"main(['monitor', 'replay', {str(DATA / 'healthy.jsonl')!r}, '--json'])\n"
        f"main(['regimes', {str(ROOT / 'tests' / 'data' / 'regimes')!r}, '--json'])\n"
        "import gradience.monitor as gm; gm.GradienceCallback; gm.TrainingMonitor\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'transformers', 'peft', 'scipy', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-500:]
