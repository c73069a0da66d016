"""The monitor's rules on hand-built series: each fires exactly where its definition says.

Definitions (docs/monitor.md): half-window plateau tests with patience, spike against the mean
of the window before it, eval plateau against the earlier best, utilisation threshold,
CONSIDER_STOPPING on two active plateau signals, a per-rule cooldown.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradience.errors import UsageError
from gradience.monitor import MonitorConfig, TrainingMonitor
from gradience.monitor.rules import RULES


def feed(monitor: TrainingMonitor, losses=None, grads=None, start: int = 1) -> list[tuple[str, int]]:
    """Feed aligned loss / grad-norm series; returns (rule, step) of the alerts raised."""
    n = len(losses if losses is not None else grads)
    out = []
    for i in range(n):
        alerts = monitor.step(
            loss=None if losses is None else losses[i],
            grad_norm=None if grads is None else grads[i],
            step=start + i,
        )
        out += [(a.rule, a.step) for a in alerts]
    return out


def rules(alerts) -> list[str]:
    return [r for r, _ in alerts]


def small(**sections) -> dict:
    """A 4-value window (halves of 2), for series short enough to check by hand."""
    return {"window": 4, "grad_spike": {"min_history": 2}, "eval_plateau": {"patience": 2}, **sections}


# ------------------------------------------------------------------------------- defaults


def test_defaults_are_the_documented_ones():
    c = MonitorConfig()
    assert (c.window, c.cooldown) == (50, 50)
    assert (c.loss_plateau_threshold, c.loss_plateau_patience) == (0.01, 5)
    assert (c.grad_plateau_threshold, c.grad_plateau_patience) == (0.02, 5)
    assert (c.grad_spike_factor, c.grad_spike_min_history) == (5.0, 5)
    assert (c.eval_plateau_patience, c.eval_plateau_tolerance, c.eval_plateau_metric) == (5, 1e-8, "loss")
    assert c.utilization_low_threshold == 0.25
    assert c.consider_stopping_min_signals == 2
    assert {r.severity for r in RULES.values()} == {"info", "warning"}
    assert RULES["GRAD_SPIKE"].severity == RULES["EVAL_PLATEAU"].severity == "warning"
    assert RULES["LOSS_PLATEAU"].severity == RULES["UTILIZATION_LOW"].severity == "info"


# ------------------------------------------------------------------------------- LOSS_PLATEAU


def test_loss_plateau_fires_at_patience_once_the_window_is_full():
    # default W = 50, P = 5: the first test runs at the 50th value, the 5th passing one fires
    assert feed(TrainingMonitor(), losses=[1.0] * 60) == [("LOSS_PLATEAU", 54)]


def test_loss_plateau_uses_half_window_means_not_consecutive_changes():
    # falls 0.1% per step: every consecutive change is < 1% (0.11's test would fire), but the
    # half-window means (25 values apart) differ by ~2.5% — still learning, so no plateau
    losses = [2.0 * 0.999**i for i in range(400)]
    assert feed(TrainingMonitor(), losses=losses) == []


def test_loss_plateau_relative_change_is_exactly_the_definition():
    m = TrainingMonitor(small(loss_plateau={"patience": 1, "threshold": 0.5}))
    # halves [4, 2] and [1.5, 1.5]: |1.5 − 3| / 3 = 0.5, not < 0.5 → no plateau
    assert feed(m, losses=[4, 2, 1.5, 1.5]) == []
    m = TrainingMonitor(small(loss_plateau={"patience": 1, "threshold": 0.5}))
    feed(m, losses=[4, 2, 1.6, 1.6])  # |1.6 − 3| / 3 = 0.4667
    (alert,) = m.alerts
    assert alert.evidence["rel_change"] == pytest.approx(1.4 / 3)
    assert alert.evidence["mean_previous"] == pytest.approx(3.0)
    assert alert.evidence["mean_recent"] == pytest.approx(1.6)
    assert alert.evidence["half_window"] == 2 and alert.evidence["consecutive"] == 1


def test_loss_plateau_needs_consecutive_values_and_stays_active_until_it_breaks():
    m = TrainingMonitor(small(cooldown=0, loss_plateau={"patience": 3}))
    # 4 flat values: counter 1 at step 4; step 5 flat → 2; a jump resets before patience 3
    assert feed(m, losses=[1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5]) == [("LOSS_PLATEAU", 11)]
    assert "LOSS_PLATEAU" in m.active
    feed(m, losses=[5], start=12)  # still flat: active, no second alert
    assert "LOSS_PLATEAU" in m.active and len(m.alerts) == 1
    feed(m, losses=[50], start=13)  # rel ≥ 1%: inactive and the counter resets
    assert "LOSS_PLATEAU" not in m.active


def test_loss_plateau_of_an_all_zero_series_uses_the_floor():
    assert rules(feed(TrainingMonitor(small()), losses=[0.0] * 10)) == ["LOSS_PLATEAU"]


def test_nan_in_the_window_is_never_a_plateau():
    losses = [1.0] * 30 + [float("nan")] + [1.0] * 40
    m = TrainingMonitor()
    assert feed(m, losses=losses) == []  # the NaN stays in the 50-value window until step 81
    assert feed(m, losses=[1.0] * 15, start=72) == [("LOSS_PLATEAU", 81 + 4)]


# ------------------------------------------------------------------------------- GRAD_PLATEAU


def test_grad_plateau_has_its_own_threshold():
    # half-window means 100 and 101.5: rel 1.5% — a plateau for the gradient norm (2%), not the loss (1%)
    series = [100.0] * 2 + [101.5] * 2
    m = TrainingMonitor(small(loss_plateau={"patience": 1}, grad_plateau={"patience": 1}))
    assert feed(m, losses=series, grads=series) == [("GRAD_PLATEAU", 4)]


def test_grad_plateau_fires_on_a_flat_gradient_norm():
    assert feed(TrainingMonitor(), grads=[0.3] * 60) == [("GRAD_PLATEAU", 54)]


# ------------------------------------------------------------------------------- GRAD_SPIKE


def test_grad_spike_needs_five_previous_values():
    assert feed(TrainingMonitor(), grads=[1, 1, 1, 1, 100]) == []
    m = TrainingMonitor()
    assert feed(m, grads=[1, 1, 1, 1, 1, 100]) == [("GRAD_SPIKE", 6)]
    ev = m.alerts[0].evidence
    assert ev["grad_norm"] == 100 and ev["window_mean"] == 1 and ev["ratio"] == 100 and ev["n_previous"] == 5


def test_grad_spike_is_strictly_greater_than_factor_times_the_mean():
    assert feed(TrainingMonitor(), grads=[1.0] * 5 + [5.0]) == []
    assert feed(TrainingMonitor(), grads=[1.0] * 5 + [5.000001]) == [("GRAD_SPIKE", 6)]


def test_grad_spike_compares_with_the_window_before_it():
    # window 6: the early large values have left the window by the time the small spike comes
    m = TrainingMonitor({"window": 6})
    assert feed(m, grads=[100.0] * 6 + [1.0] * 6 + [6.0]) == [("GRAD_SPIKE", 13)]
    assert "GRAD_SPIKE" not in m.active


def test_a_spike_storm_gives_one_alert_then_the_cooldown_expires():
    grads = [1.0] * 100
    for s in (10, 20, 30, 70):
        grads[s - 1] = 1000.0
    m = TrainingMonitor({"disabled": ["GRAD_PLATEAU"]})
    assert feed(m, grads=grads) == [("GRAD_SPIKE", 10), ("GRAD_SPIKE", 70)]
    assert m.suppressed["GRAD_SPIKE"] == 2


def test_cooldown_boundary_is_exclusive_and_configurable():
    def spikes(at, cooldown):
        grads = [1.0] * 120
        for s in at:
            grads[s - 1] = 1e6
        return [
            s
            for _, s in feed(
                TrainingMonitor({"cooldown": cooldown, "disabled": ["GRAD_PLATEAU"]}), grads=grads
            )
        ]

    assert spikes([10, 59], 50) == [10]
    assert spikes([10, 60], 50) == [10, 60]
    assert spikes([10, 11, 12], 0) == [10, 11, 12]


# ------------------------------------------------------------------------------- EVAL_PLATEAU


def evals(monitor: TrainingMonitor, values, *, every: int = 10, key: str = "loss") -> list[tuple[str, int]]:
    out = []
    for i, v in enumerate(values, start=1):
        out += [(a.rule, a.step) for a in monitor.eval({key: v}, step=i * every)]
    return out


def test_eval_plateau_needs_more_than_patience_evals():
    assert evals(TrainingMonitor(), [5, 6, 7, 8, 9]) == []
    m = TrainingMonitor()
    assert evals(m, [1, 2, 2, 2, 2, 2]) == [("EVAL_PLATEAU", 60)]
    ev = m.alerts[0].evidence
    assert (
        ev["best"] == 1 and ev["best_step"] == 10 and ev["recent"] == [2, 2, 2, 2, 2] and ev["patience"] == 5
    )


def test_eval_plateau_does_not_fire_while_eval_improves():
    assert evals(TrainingMonitor(), [10 - 0.1 * i for i in range(50)]) == []


def test_eval_plateau_tolerance_and_ties():
    # equal to the best counts as "not improved"; better by less than 1e-8 too; by 1e-6 it improves
    assert evals(TrainingMonitor(), [1.0] * 6) == [("EVAL_PLATEAU", 60)]
    assert evals(TrainingMonitor(), [1.0, 1, 1, 1, 1, 1 - 1e-9]) == [("EVAL_PLATEAU", 60)]
    assert evals(TrainingMonitor(), [1.0, 1, 1, 1, 1, 1 - 1e-6]) == []


def test_eval_plateau_deactivates_on_a_new_best_and_can_fire_again():
    m = TrainingMonitor({"cooldown": 0})
    values = [1, 2, 2, 2, 2, 2, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    assert evals(m, values) == [("EVAL_PLATEAU", 60), ("EVAL_PLATEAU", 120)]
    m = TrainingMonitor({"cooldown": 0})
    evals(m, values[:7])
    assert "EVAL_PLATEAU" not in m.active  # the 0.5 set a new best


def test_eval_plateau_metric_mode_and_spellings():
    m = TrainingMonitor({"eval_plateau": {"metric": "accuracy", "mode": "max"}})
    assert evals(m, [0.9, 0.8, 0.85, 0.9, 0.7, 0.88], key="accuracy") == [("EVAL_PLATEAU", 60)]
    assert m.alerts[0].evidence["best"] == 0.9
    # the Trainer's eval_loss spelling is read for metric "loss"
    assert evals(TrainingMonitor(), [1, 2, 2, 2, 2, 2], key="eval_loss") == [("EVAL_PLATEAU", 60)]
    # evals on the training split are recorded, not watched
    m = TrainingMonitor()
    for i, v in enumerate([1, 2, 2, 2, 2, 2], start=1):
        assert m.eval({"loss": v}, step=i, split="train") == []
    assert m.evals_seen == 0


# ------------------------------------------------------------------------------- UTILIZATION_LOW


def test_utilization_low_fires_on_crossing_and_stays_active():
    m = TrainingMonitor({"cooldown": 0})
    fired = []
    for step, u in zip(range(100, 700, 100), [0.5, 0.25, 0.2, 0.1, 0.3, 0.1], strict=True):
        fired += [(a.rule, a.step) for a in m.lora_audit({"utilization_mean": u}, step=step)]
    assert fired == [("UTILIZATION_LOW", 300), ("UTILIZATION_LOW", 600)]
    assert m.alerts[0].evidence == {"utilization_mean": 0.2, "threshold": 0.25}
    assert "UTILIZATION_LOW" in m.active


# ------------------------------------------------------------------------------- CONSIDER_STOPPING


def test_consider_stopping_needs_two_active_plateaus():
    m = TrainingMonitor()
    assert feed(m, losses=[1.0] * 60) == [("LOSS_PLATEAU", 54)]  # one signal is not enough
    m = TrainingMonitor()
    got = feed(m, losses=[1.0] * 60, grads=[0.5] * 60)
    assert got == [("LOSS_PLATEAU", 54), ("GRAD_PLATEAU", 54), ("CONSIDER_STOPPING", 54)]
    cs = m.alerts[-1]
    assert cs.severity == "warning" and cs.evidence["active"] == ["LOSS_PLATEAU", "GRAD_PLATEAU"]
    assert cs.evidence["since"] == {"LOSS_PLATEAU": 54, "GRAD_PLATEAU": 54}
    assert m.would_stop and m.stop_step == 54


def test_consider_stopping_with_eval_and_loss():
    m = TrainingMonitor()
    feed(m, losses=[1.0] * 54)  # LOSS_PLATEAU active from step 54
    got = evals(m, [1, 2, 2, 2, 2, 2], every=1)
    assert got == [("EVAL_PLATEAU", 6), ("CONSIDER_STOPPING", 6)]


def test_consider_stopping_fires_once_while_true_and_rearms_after_false():
    m = TrainingMonitor(small(cooldown=0, loss_plateau={"patience": 1}, grad_plateau={"patience": 1}))
    flat = [1.0] * 4
    assert rules(feed(m, losses=flat, grads=flat)) == ["LOSS_PLATEAU", "GRAD_PLATEAU", "CONSIDER_STOPPING"]
    assert feed(m, losses=[1.0] * 5, grads=[1.0] * 5, start=5) == []  # still true: no second alert
    feed(m, losses=[9.0], grads=[1.0], start=10)  # the loss moves: the condition turns false
    assert "CONSIDER_STOPPING" not in m.active
    again = feed(m, losses=[9.0] * 4, grads=[1.0] * 4, start=11)
    assert again == [("LOSS_PLATEAU", 13), ("CONSIDER_STOPPING", 13)]  # true again → fires again


def test_consider_stopping_rearmed_inside_the_cooldown_is_suppressed():
    m = TrainingMonitor(small(loss_plateau={"patience": 1}, grad_plateau={"patience": 1}))
    feed(m, losses=[1.0] * 4, grads=[1.0] * 4)
    feed(m, losses=[9.0], grads=[1.0], start=5)
    feed(m, losses=[9.0] * 4, grads=[1.0] * 4, start=6)
    assert [a.rule for a in m.alerts].count("CONSIDER_STOPPING") == 1
    assert m.suppressed["CONSIDER_STOPPING"] == 1


def test_consider_stopping_min_signals_and_disabled_rules():
    m = TrainingMonitor({"consider_stopping": {"min_signals": 3}})
    assert "CONSIDER_STOPPING" not in rules(feed(m, losses=[1.0] * 60, grads=[0.5] * 60))
    m = TrainingMonitor({"disabled": ["GRAD_PLATEAU"]})
    assert rules(feed(m, losses=[1.0] * 60, grads=[0.5] * 60)) == ["LOSS_PLATEAU"]


# ------------------------------------------------------------------------------- the monitor API


def test_alerts_carry_everything_and_steps_default_to_a_counter():
    m = TrainingMonitor()
    for _ in range(6):
        m.step(loss=1.0, grad_norm=1.0)
    alerts = m.step(loss=1.0, grad_norm=100.0)
    assert [(a.rule, a.step) for a in alerts] == [("GRAD_SPIKE", 7)]
    d = alerts[0].to_dict()
    assert set(d) == {"rule", "code", "severity", "step", "message", "evidence", "action"}
    assert d["code"] == "GRAD_SPIKE" and d["action"] and "100" in d["message"]


def test_tensors_and_numpy_scalars_are_read_as_numbers():
    np = pytest.importorskip("numpy")
    m = TrainingMonitor()
    m.step(loss=np.float32(1.5), grad_norm=np.float64(2.0), step=1)
    m.step(loss="not a number", grad_norm=None, step=2)
    assert m.steps_seen == 2


def test_alert_callback_and_logging(caplog):
    seen = []
    m = TrainingMonitor(on_alert=seen.append)
    with caplog.at_level("INFO", logger="gradience.monitor"):
        feed(m, grads=[1, 1, 1, 1, 1, 100])
    assert [a.rule for a in seen] == ["GRAD_SPIKE"]
    assert any("GRAD_SPIKE" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.01, 10.0), min_size=1, max_size=300),
    st.integers(0, 30),
)
def test_no_rule_alerts_twice_within_the_cooldown(grads, cooldown):
    m = TrainingMonitor({"window": 8, "cooldown": cooldown, "grad_spike": {"factor": 1.5, "min_history": 2}})
    feed(m, losses=grads, grads=grads)
    last: dict[str, int] = {}
    for a in m.alerts:
        if a.rule in last:
            assert a.step - last[a.rule] >= cooldown
        last[a.rule] = a.step


# ------------------------------------------------------------------------------- configuration


def test_config_from_code_nested_and_flat_keys_round_trip():
    c = MonitorConfig(window=20, loss_plateau_threshold=0.005, disabled=("GRAD_SPIKE",))
    assert MonitorConfig.from_dict(c.to_dict()) == c
    assert (
        MonitorConfig.from_dict({"loss_plateau_threshold": 0.005, "window": 20, "disabled": ["GRAD_SPIKE"]})
        == c
    )
    assert c.to_dict()["loss_plateau"] == {"threshold": 0.005, "patience": 5}


def test_config_files_json_toml_and_pyproject(tmp_path):
    toml = tmp_path / "monitor.toml"
    toml.write_text(
        'window = 20\ncooldown = 10\n[grad_spike]\nfactor = 3.0\n[eval_plateau]\nmetric = "acc"\nmode = "max"\n'
    )
    c = MonitorConfig.from_file(toml)
    assert (c.window, c.cooldown, c.grad_spike_factor, c.eval_plateau_metric, c.eval_plateau_mode) == (
        20, 10, 3.0, "acc", "max"
    )  # fmt: skip
    js = tmp_path / "monitor.json"
    js.write_text(json.dumps({"monitor": {"utilization_low": {"threshold": 0.1}}}))
    assert MonitorConfig.from_file(js).utilization_low_threshold == 0.1
    py = tmp_path / "pyproject.toml"
    py.write_text("[project]\nname = 'x'\n[tool.gradience.monitor]\nwindow = 10\n")
    assert MonitorConfig.from_file(py).window == 10
    assert TrainingMonitor(js).config.utilization_low_threshold == 0.1  # a path works too


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"windw": 10}, "unknown setting 'windw'.*valid: window"),
        ({"loss_plateau": {"treshold": 0.1}}, "unknown setting loss_plateau.treshold"),
        ({"window": 3}, "window must be an integer ≥ 4, got 3"),
        ({"window": 10.5}, "window must be an integer"),
        ({"cooldown": True}, "cooldown must be an integer"),
        ({"grad_spike": {"factor": 0}}, "grad_spike_factor must be a number > 0"),
        ({"eval_plateau": {"mode": "best"}}, "'min' or 'max'"),
        ({"disabled": ["NOPE"]}, "disabled must be rule names"),
        ({"disabled": 3}, "disabled must be a list of rule names"),
        ({"disabled": "GRAD_SPIKE"}, "disabled must be a list of rule names"),
        ({"loss_plateau": {"threshold": float("nan")}}, "finite number"),
        ({"consider_stopping": {"min_signals": 4}}, "1, 2 or 3"),
    ],
)
def test_bad_config_values_are_usage_errors(data, match):
    with pytest.raises(UsageError, match=match):
        MonitorConfig.from_dict(data)


def test_bad_config_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        MonitorConfig.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="does not parse"):
        MonitorConfig.from_file(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(UsageError, match="object/table"):
        MonitorConfig.from_file(arr)


# ------------------------------------------------------------------------------- against an oracle
# The definitions written out once more, as directly as possible, and compared with the monitor
# on random series (cooldown 0, so every firing is visible).


def oracle_plateau(values, window, threshold, patience):
    fires, counter, h = [], 0, window // 2
    for t in range(window - 1, len(values)):
        recent = sum(values[t + 1 - h : t + 1]) / h
        previous = sum(values[t + 1 - 2 * h : t + 1 - h]) / h
        if abs(recent - previous) / max(abs(previous), 1e-12) < threshold:
            counter += 1
            if counter == patience:
                fires.append(t + 1)
        else:
            counter = 0
    return fires


def oracle_spike(values, window, factor=5.0, min_history=5):
    fires = []
    for t, v in enumerate(values):
        prev = values[max(0, t - window) : t]
        if len(prev) >= min_history and v > factor * sum(prev) / len(prev):
            fires.append(t + 1)
    return fires


def oracle_eval(values, patience=5, tol=1e-8, window=50):
    fires, active = [], False
    for n in range(patience + 1, len(values) + 1):
        best = min(values[max(0, n - window) : n - patience])
        now = all(x >= best - tol for x in values[n - patience : n])
        if now and not active:
            fires.append(n)
        active = now
    return fires


plateau_prone = st.lists(st.sampled_from([1.0, 1.0, 1.0, 1.004, 1.03, 1.2, 2.0]), min_size=1, max_size=200)


@settings(max_examples=80, deadline=None)
@given(plateau_prone, st.sampled_from([4, 6, 10]), st.integers(1, 4))
def test_plateau_rules_match_the_oracle(values, window, patience):
    cfg = {"window": window, "cooldown": 0, "grad_spike": {"min_history": 2}, "eval_plateau": {"patience": 2},
           "loss_plateau": {"patience": patience}, "grad_plateau": {"patience": patience}}  # fmt: skip
    got = feed(TrainingMonitor(cfg), losses=values, grads=values)
    assert [s for r, s in got if r == "LOSS_PLATEAU"] == oracle_plateau(values, window, 0.01, patience)
    assert [s for r, s in got if r == "GRAD_PLATEAU"] == oracle_plateau(values, window, 0.02, patience)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 10.0) | st.sampled_from([60.0, 500.0]), min_size=1, max_size=150),
       st.sampled_from([6, 8, 50]))  # fmt: skip
def test_grad_spike_matches_the_oracle(values, window):
    got = feed(TrainingMonitor({"window": window, "cooldown": 0}), grads=values)
    assert [s for r, s in got if r == "GRAD_SPIKE"] == oracle_spike(values, window)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from([1.0, 0.9, 0.8, 0.85, 0.7, 0.95]), min_size=1, max_size=120),
    st.sampled_from([8, 50]),
)
def test_eval_plateau_matches_the_oracle(values, window):
    got = evals(TrainingMonitor({"cooldown": 0, "window": window}), values, every=1)
    assert [s for r, s in got if r == "EVAL_PLATEAU"] == oracle_eval(values, window=window)


def test_eval_series_is_windowed_like_every_series():
    # the best eval (0.1) leaves the 8-value window: the plateau is then judged against the
    # best of the evals still in it
    m = TrainingMonitor({"cooldown": 0, "window": 8, "grad_spike": {"min_history": 2}})
    got = evals(m, [0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.45, 0.45, 0.45, 0.45, 0.45], every=1)
    # eval 6: the last five 0.5 ≥ 0.1 → fires; eval 7 (0.4) is no new best while 0.1 is in
    # the window (still active); eval 9 drops 0.1 out, the best before the last five is 0.5
    # and 0.4 is below it → inactive; eval 12: the last five 0.45 ≥ 0.4 → fires again
    assert got == [("EVAL_PLATEAU", 6), ("EVAL_PLATEAU", 12)]


def test_package_exports_are_the_lazy_table():
    import gradience.monitor as gm

    assert set(gm.__all__) == set(gm._EXPORTS)
    for name in gm.__all__:
        assert getattr(gm, name) is not None
    assert callable(gm.replay_telemetry) and gm.replay_telemetry.__name__ == "replay"
