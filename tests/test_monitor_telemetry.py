"""Telemetry files: the writer and reader round-trip, bad lines are reported (never raised), the
flat per-step format reads as the same events, and what 0.11's own writer produced still reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gradience.errors import TelemetryError
from gradience.monitor.replay import replay
from gradience.monitor.telemetry import SCHEMA, TelemetryWriter, as_number, read_telemetry, records_from

DATA = Path(__file__).resolve().parent / "data" / "telemetry"


def _strict_json(line: str):
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=no_constants)


def test_writer_round_trip_keeps_every_field_and_writes_strict_json(tmp_path):
    path = tmp_path / "run" / "t.jsonl"
    with TelemetryWriter(path, run_id="r1") as w:
        w.run_start(config={"lr": 1e-3}, meta={"host": "x"})
        w.train_step(1, loss=2.5, lr=1e-3, grad_norm=1.5, epoch=0.1, tokens=512)
        w.train_step(2, loss=float("nan"), grad_norm=float("inf"))
        w.eval(2, {"loss": 2.7, "accuracy": 0.4})
        w.metrics(2, "geometry", {"weight_norm": 3.0, "grad_norm": 1.5, "spectral_complexity": 0.7})
        w.alert(step=2, severity="warning", code="GRAD_SPIKE", message="m", context={"ratio": 9.0})
        w.log("my_event", step=2, anything=[1, 2])
        w.run_end()
    lines = path.read_text().splitlines()
    assert all(_strict_json(line)["schema"] == SCHEMA for line in lines)
    t = read_telemetry(path)
    assert t.issues == ()
    assert [r.event for r in t.records] == [
        "run_start", "train_step", "train_step", "eval", "metrics", "alert", "my_event", "run_end",
    ]  # fmt: skip
    first = t.records[1]
    assert first.step == 1 and first.number("loss") == 2.5 and first.get("tokens") == 512
    assert first.get("run_id") == "r1" and first.line == 2
    second = t.records[2]
    assert math.isnan(second.number("loss")) and second.number("grad_norm") == math.inf
    assert t.records[3].metrics == {"loss": 2.7, "accuracy": 0.4}
    assert t.records[4].kind == "geometry"
    assert t.records[6].get("anything") == [1, 2]  # unknown event, fields kept


def test_writer_context_manager_records_errors_and_refuses_after_close(tmp_path):
    path = tmp_path / "t.jsonl"
    with pytest.raises(RuntimeError), TelemetryWriter(path) as w:
        w.train_step(1, loss=1.0)
        raise RuntimeError("boom")
    end = read_telemetry(path).records[-1]
    assert end.event == "run_end" and end.get("status") == "error" and "boom" in end.get("reason")
    with pytest.raises(TelemetryError, match="closed"):
        w.train_step(2, loss=1.0)
    with TelemetryWriter(path, append=True) as w2:
        w2.train_step(3, loss=1.0)
    assert read_telemetry(path).count("train_step") == 2


def test_malformed_lines_are_reported_with_their_numbers(tmp_path):
    good = {"schema": SCHEMA, "event": "train_step", "step": 1, "loss": 1.0}
    lines = [
        json.dumps(good),  # 1
        "",  # 2: blank, ignored
        "{not json",  # 3
        "[1, 2, 3]",  # 4
        json.dumps({"foo": 1}),  # 5: neither v1 nor flat
        json.dumps({**good, "step": "seven"}),  # 6
        json.dumps({**good, "event": "eval", "metrics": [1]}),  # 7
        json.dumps({**good, "step": 2, "loss": "high"}),  # 8: kept, loss ignored
        json.dumps({**good, "schema": "other/v9", "step": 3}),  # 9: kept, flagged
        json.dumps({**good, "step": 4.0}),  # 10: integral float step is fine
        '{"schema": "gradience.vnext.telemetry/v1", "event": "train_st',  # 11: torn last line
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines[:10]) + "\n").encode() + b"\xff\xfe garbage\n" + lines[10].encode())
    t = read_telemetry(path)
    assert [(r.line, r.step) for r in t.records] == [(1, 1), (8, 2), (9, 3), (10, 4)]
    assert t.records[1].number("loss") is None
    by_line = {i.line: i.message for i in t.issues}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert "not valid JSON" in by_line[3] and "got list" in by_line[4]
    assert "neither a v1 event" in by_line[5] and "'step' must be an integer" in by_line[6]
    assert "'metrics' must be an object" in by_line[7] and "'loss' is not a number" in by_line[8]
    assert "unknown schema 'other/v9'" in by_line[9] and "not UTF-8" in by_line[11]
    assert "not valid JSON" in by_line[12]
    with pytest.raises(TelemetryError, match="line 3: not valid JSON"):
        read_telemetry(path, strict=True)
    # the replay reports them too, and goes on
    result = replay(path)
    assert result.steps_processed == 4 and result.n_issues == 9 and result.issues[0].line == 3


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TelemetryError, match="no such telemetry file"):
        read_telemetry(tmp_path / "nope.jsonl")
    with pytest.raises(TelemetryError, match="got a folder"):
        read_telemetry(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TelemetryError, match="no train_step or eval records"):
        replay(empty)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\nworld\n")
    with pytest.raises(TelemetryError, match="2 malformed lines, first line 1: not valid JSON"):
        replay(junk)


def test_flat_format_reads_as_steps_and_evals(tmp_path):
    rows = [
        {"step": 1, "train_loss": 2.0, "grad_norm": 1.0, "lr": 0.1, "val_loss": 2.5, "gpu_mem": 3},
        {"step": 2, "loss": 1.9, "learning_rate": 0.1},
        {"step": 3, "eval_loss": 2.4},
        {"step": 4, "train_loss": None, "grad_norm": 0.9},
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    t = read_telemetry(path)
    assert t.issues == () and t.formats == {"flat"}
    assert [(r.event, r.step, r.line) for r in t.records] == [
        ("train_step", 1, 1), ("eval", 1, 1), ("train_step", 2, 2), ("eval", 3, 3), ("train_step", 4, 4),
    ]  # fmt: skip
    s1, e1, s2 = t.records[:3]
    assert s1.number("loss") == 2.0 and s1.number("grad_norm") == 1.0 and s1.get("gpu_mem") == 3
    assert e1.metrics == {"loss": 2.5} and s2.number("loss") == 1.9 and s2.number("lr") == 0.1
    bad = tmp_path / "flat-bad.jsonl"
    bad.write_text(json.dumps({"train_loss": 1.0}) + "\n" + json.dumps({"step": 1.5, "loss": 1.0}) + "\n")
    assert [i.line for i in read_telemetry(bad).issues] == [1, 2]


def test_flat_and_v1_replay_to_the_same_alerts(tmp_path):
    losses = [1.0 + 0.01 * math.sin(i) for i in range(120)]
    grads = [1.0] * 120
    grads[80] = 50.0
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join(
        json.dumps({"step": i + 1, "train_loss": losses[i], "grad_norm": grads[i],
                    **({"val_loss": 2.0 + (i > 30)} if i % 10 == 0 else {})})
        for i in range(120)
    ))  # fmt: skip
    v1 = tmp_path / "v1.jsonl"
    with TelemetryWriter(v1) as w:
        for i in range(120):
            w.train_step(i + 1, loss=losses[i], grad_norm=grads[i])
            if i % 10 == 0:
                w.eval(i + 1, {"loss": 2.0 + (i > 30)})
    a, b = replay(flat), replay(v1)
    assert [(x.rule, x.step) for x in a.alerts] == [(x.rule, x.step) for x in b.alerts]
    assert {x.rule for x in a.alerts} >= {"GRAD_SPIKE", "EVAL_PLATEAU", "LOSS_PLATEAU"}
    dicts = [{"step": i + 1, "loss": losses[i], "grad_norm": grads[i]} for i in range(120)]
    assert replay(dicts).steps_processed == 120
    # a v1 train_step that spells the loss train_loss, and evals that spell it val_loss
    v1_spelling = [
        {"event": "train_step", "step": i + 1, "train_loss": losses[i], "grad_norm": grads[i]}
        for i in range(120)
    ] + [{"event": "eval", "step": i + 1, "metrics": {"val_loss": 2.0 + (i > 30)}} for i in range(0, 120, 10)]
    c = replay(sorted(v1_spelling, key=lambda r: r["step"]))
    assert [(x.rule, x.step) for x in c.alerts] == [(x.rule, x.step) for x in a.alerts]


def test_in_memory_records_must_be_records():
    with pytest.raises(TelemetryError, match="record 1"):
        list(records_from([{"nothing": 1}]))


def test_as_number():
    assert as_number(3) == 3.0 and as_number("Infinity") == math.inf and as_number("-inf") == -math.inf
    assert math.isnan(as_number("NaN")) and math.isnan(as_number(float("nan")))
    assert (
        as_number(True) is None
        and as_number("3") is None
        and as_number([1]) is None
        and as_number(None) is None
    )


# ------------------------------------------------------------------------------- 0.11 files


def test_a_file_written_by_0_11_reads_cleanly_and_replays():
    """Written by gradience 0.11.0's TelemetryWriter (scripts/record_011_telemetry.py): bare
    float timestamps, ConfigSnapshot config, extras on train_step, a 0.11 alert code."""
    path = DATA / "v011-writer.jsonl"
    t = read_telemetry(path)
    assert t.issues == () and t.formats == {"v1"}
    counts = {e: t.count(e) for e in ("run_start", "train_step", "eval", "metrics", "alert", "run_end")}
    assert counts == {"run_start": 1, "train_step": 300, "eval": 15, "metrics": 6, "alert": 1, "run_end": 1}
    result = replay(path)
    got = [(a.rule, a.step) for a in result.alerts]
    # eval loss is lowest at step 100 and never beaten: the 5th eval after it (step 200) fires;
    # utilisation goes 0.45 → 0.20 in steps of 0.05, first below 0.25 at step 300
    assert ("EVAL_PLATEAU", 200) in got and ("UTILIZATION_LOW", 300) in got
    assert got == [("GRAD_PLATEAU", 167), ("EVAL_PLATEAU", 200), ("CONSIDER_STOPPING", 200),
                   ("LOSS_PLATEAU", 250), ("UTILIZATION_LOW", 300)]  # fmt: skip
    (recorded,) = result.recorded_alerts
    assert (recorded.rule, recorded.severity, recorded.step, recorded.evidence) == (
        "memorization_gap", "warning", 300, {"gap": 1.7}
    )  # fmt: skip
