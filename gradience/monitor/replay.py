"""Replay a telemetry file through the monitor: which alerts, when, and would it have stopped.

Why replay exists: the rules are heuristics, and the way to trust (or tune) them is to run them
on telemetry you already have — with the defaults or a config file — and see what they would
have said. The live monitor and the replay share one code path (:class:`TrainingMonitor`), so a
run recorded with the monitor replays to the alerts it raised, given the same config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from gradience.errors import TelemetryError, UsageError
from gradience.monitor.monitor import Alert, TrainingMonitor, metric_value
from gradience.monitor.rules import RULES, MonitorConfig, resolve_config
from gradience.monitor.telemetry import LineIssue, Record, Telemetry, as_number, iter_records, records_from
from gradience.report.jsonsafe import finite

__all__ = ["SCHEMA", "ReplayResult", "Series", "replay", "replay_telemetry"]

SCHEMA = "gradience.monitor_replay/v1"
#: Issues kept in a result (a file of garbage should not give a result of garbage).
MAX_ISSUES = 100


@dataclass(frozen=True)
class Series:
    """The values the plot draws: (step, value) pairs per series."""

    loss: tuple[tuple[int, float], ...] = ()
    grad_norm: tuple[tuple[int, float], ...] = ()
    eval: tuple[tuple[int, float], ...] = ()
    utilization: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class ReplayResult:
    """What the monitor would have said about a run.

    Attributes:
        source: the file replayed (None for in-memory records).
        config: the monitor settings used.
        config_source: where they came from: ``given`` (the ``config`` argument), ``recorded``
            (the ``monitor`` settings in the file's first ``run_start``) or ``defaults``.
        alerts: the alerts, in order.
        steps_processed / evals_processed / audits_processed: ``train_step``, watched ``eval``
            and ``lora_audit`` records fed to the monitor.
        first_step / last_step: the range of training steps seen.
        would_stop / stop_step: whether CONSIDER_STOPPING fired, and the step it first did.
        recorded_alerts: alerts already in the file (written by a live monitor), for comparison.
        suppressed: rule → alerts held back by the cooldown.
        issues: malformed lines (first :data:`MAX_ISSUES`), with line numbers.
        n_issues: how many malformed lines there were in all.
        events: event name → records read (unknown events included).
        warnings: things worth knowing (e.g. no eval record carried the watched metric).
        series: the values, for :func:`~gradience.monitor.plot.plot_replay`.
    """

    source: str | None
    config: MonitorConfig
    alerts: tuple[Alert, ...]
    steps_processed: int
    evals_processed: int
    audits_processed: int
    first_step: int | None
    last_step: int | None
    would_stop: bool
    stop_step: int | None
    recorded_alerts: tuple[Alert, ...] = ()
    suppressed: Mapping[str, int] = field(default_factory=dict)
    issues: tuple[LineIssue, ...] = ()
    n_issues: int = 0
    events: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    series: Series = field(default_factory=Series, repr=False)
    config_source: str = "defaults"

    def alerts_by_rule(self) -> dict[str, int]:
        counts = Counter(a.rule for a in self.alerts)
        return {r: counts[r] for r in RULES if counts[r]}

    def first(self, rule: str) -> Alert | None:
        """The first alert of a rule, or None."""
        return next((a for a in self.alerts if a.rule == rule), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (schema ``gradience.monitor_replay/v1``; no NaN: non-finite → null)."""
        from gradience import __version__

        return finite(
            {
                "schema": SCHEMA,
                "gradience_version": __version__,
                "source": self.source,
                "steps_processed": self.steps_processed,
                "evals_processed": self.evals_processed,
                "audits_processed": self.audits_processed,
                "first_step": self.first_step,
                "last_step": self.last_step,
                "would_stop": self.would_stop,
                "stop_step": self.stop_step,
                "alerts_by_rule": self.alerts_by_rule(),
                "alerts": [a.to_dict() for a in self.alerts],
                "recorded_alerts": [a.to_dict() for a in self.recorded_alerts],
                "suppressed": dict(self.suppressed),
                "events": dict(self.events),
                "issues": [i.to_dict() for i in self.issues],
                "n_issues": self.n_issues,
                "warnings": list(self.warnings),
                "config": self.config.to_dict(),
                "config_source": self.config_source,
            }
        )

    def summary(self) -> str:
        """A few lines for humans: what was read, what fired, whether it would have stopped."""
        steps = f"{self.steps_processed} steps" + (
            f" ({self.first_step}–{self.last_step})" if self.first_step is not None else ""
        )
        lines = [f"replayed {steps}, {self.evals_processed} evals, {self.audits_processed} LoRA audits"]
        by = self.alerts_by_rule()
        noun = "alert" if len(self.alerts) == 1 else "alerts"
        counts = ", ".join(f"{k} ×{v}" for k, v in by.items())
        lines.append(f"{len(self.alerts)} {noun}: {counts}" if by else "no alerts")
        if self.would_stop:
            lines.append(f"would have stopped: yes, CONSIDER_STOPPING at step {self.stop_step}")
        else:
            lines.append("would have stopped: no (CONSIDER_STOPPING never fired)")
        if self.n_issues:
            lines.append(f"{self.n_issues} malformed lines skipped (first: {self.issues[0]})")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def replay(
    source: str | Path | Telemetry | Iterable[Record | Mapping[str, Any]],
    *,
    config: MonitorConfig | Mapping[str, Any] | str | Path | None = None,
    use_recorded: bool = True,
) -> ReplayResult:
    """Run the monitor over recorded telemetry.

    Which settings: ``config`` when given; else the monitor settings recorded in the file's
    first ``run_start`` (``config.monitor``, written by ``TrainingMonitor`` and
    ``GradienceCallback``), so replaying a run reproduces the alerts it raised live; else the
    defaults. ``use_recorded=False`` skips the recorded settings.

    Args:
        source: a ``.jsonl`` file (v1 events, flat per-step records, or both), a
            :class:`Telemetry`, or in-memory records / dicts.
        config: monitor settings (a :class:`MonitorConfig`, dict or config-file path).
        use_recorded: use the settings recorded in the file when ``config`` is None.

    Returns:
        A :class:`ReplayResult`; ``.to_dict()`` is the ``--json`` output.

    Raises:
        TelemetryError: the file is missing or holds no training step or eval record.
        UsageError: the config is invalid.

    Example:
        >>> result = replay("run/telemetry.jsonl")  # doctest: +SKIP
        >>> result.would_stop, result.stop_step, [(a.rule, a.step) for a in result.alerts]  # doctest: +SKIP
        (True, 1240, [('LOSS_PLATEAU', 1180), ('EVAL_PLATEAU', 1200), ('CONSIDER_STOPPING', 1200)])
    """
    issues: list[LineIssue] = []
    n_issues = 0

    def note(issue: LineIssue) -> None:
        nonlocal n_issues
        n_issues += 1
        if len(issues) < MAX_ISSUES:
            issues.append(issue)

    path: str | None = None
    if isinstance(source, str | Path):
        path = str(source)
        records: Iterable[Record] = iter_records(source, on_issue=note)
    elif isinstance(source, Telemetry):
        path = source.path
        for issue in source.issues:
            note(issue)
        records = source.records
    else:
        records = records_from(source)

    warnings: list[str] = []
    stream = iter(records)
    head = next(stream, None)
    cfg, config_source = _choose_config(config, head, use_recorded, warnings)
    monitor = TrainingMonitor(cfg, log_alerts=False)
    events: Counter[str] = Counter()
    recorded: list[Alert] = []
    loss, grad, evals, util = [], [], [], []
    no_metric = 0
    first = last = None
    metric = monitor.config.eval_plateau_metric
    for rec in chain([head] if head is not None else [], stream):
        events[rec.event] += 1
        if rec.event == "train_step":
            raw_loss = rec.get("loss") if "loss" in rec.data else rec.get("train_loss")  # either spelling
            monitor.step(raw_loss, rec.get("grad_norm"), step=rec.step)
            step = monitor.last_step
            first = step if first is None else first
            last = step
            if (v := as_number(raw_loss)) is not None:
                loss.append((step, v))
            if (v := rec.number("grad_norm")) is not None:
                grad.append((step, v))
        elif rec.event == "eval":
            split = rec.get("split") or "eval"
            before = monitor.evals_seen
            monitor.eval(rec.metrics, step=rec.step, split=str(split))
            if monitor.evals_seen > before:
                v = metric_value(rec.metrics, metric)
                if v is None:
                    no_metric += 1
                else:
                    evals.append((monitor.last_step if rec.step is None else rec.step, v))
        elif rec.event == "metrics" and rec.kind == "lora_audit":
            monitor.metrics("lora_audit", rec.metrics, step=rec.step)
            if (v := metric_value(rec.metrics, "utilization_mean")) is not None:
                util.append((monitor.last_step if rec.step is None else rec.step, v))
        elif rec.event == "alert":
            recorded.append(Alert.from_record(rec))

    if monitor.steps_seen == 0 and monitor.evals_seen == 0:
        hint = f"; {n_issues} malformed lines, first {issues[0]}" if issues else ""
        raise TelemetryError(f"no train_step or eval records to replay{hint}", path=path)
    if monitor.evals_seen and no_metric == monitor.evals_seen:
        warnings.append(f"no eval record has the metric {metric!r}; EVAL_PLATEAU was not evaluated")
    elif no_metric:
        warnings.append(f"{no_metric} eval records lack the metric {metric!r}")
    if monitor.steps_seen and not loss:
        warnings.append("no train_step record has a loss; LOSS_PLATEAU was not evaluated")
    if monitor.steps_seen and not grad:
        warnings.append(
            "no train_step record has a grad_norm; GRAD_PLATEAU and GRAD_SPIKE were not evaluated"
        )
    return ReplayResult(
        source=path,
        config=monitor.config,
        alerts=monitor.alerts,
        steps_processed=monitor.steps_seen,
        evals_processed=monitor.evals_seen,
        audits_processed=monitor.audits_seen,
        first_step=first,
        last_step=last,
        would_stop=monitor.would_stop,
        stop_step=monitor.stop_step,
        recorded_alerts=tuple(recorded),
        suppressed=dict(monitor.suppressed),
        issues=tuple(issues),
        n_issues=n_issues,
        events=dict(events),
        warnings=tuple(warnings),
        series=Series(tuple(loss), tuple(grad), tuple(evals), tuple(util)),
        config_source=config_source,
    )


def _choose_config(
    config: MonitorConfig | Mapping[str, Any] | str | Path | None,
    first: Record | None,
    use_recorded: bool,
    warnings: list[str],
) -> tuple[MonitorConfig, str]:
    if config is not None:
        return resolve_config(config), "given"
    if use_recorded and first is not None and first.event == "run_start":
        run_config = first.get("config")
        recorded = run_config.get("monitor") if isinstance(run_config, Mapping) else None
        if isinstance(recorded, Mapping):
            try:
                return MonitorConfig.from_dict(recorded), "recorded"
            except UsageError as e:
                warnings.append(
                    f"the monitor settings recorded in run_start are unusable ({e}); defaults used"
                )
    return MonitorConfig(), "defaults"


#: 0.11's name for :func:`replay` (``gradience.vnext.monitor_replay.replay_telemetry``).
replay_telemetry = replay
