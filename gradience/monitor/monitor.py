"""TrainingMonitor: the rules applied to a stream of training values, in any framework.

Feed it what a training loop already has — ``monitor.step(loss=..., grad_norm=...)`` every
step (or every logging step), ``monitor.eval(loss=...)`` after each evaluation, and optionally
``monitor.lora_audit(model=...)`` now and then — and it returns the alerts each call raised.
Given a telemetry path it also writes every value and alert as v1 telemetry, so a run can be
replayed later and give the same alerts (``gradience monitor replay``).

No torch here: values may be floats or 0-d tensors (read with ``.item()``), and the live LoRA
audit imports torch only when a model is passed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience.monitor.rules import (
    PLATEAU_RULES,
    RULES,
    EvalPlateau,
    GradSpike,
    HalfWindowPlateau,
    LowUtilization,
    MonitorConfig,
    resolve_config,
)
from gradience.monitor.telemetry import Record, TelemetryWriter, as_number

__all__ = ["Alert", "TrainingMonitor", "metric_value"]

log = logging.getLogger("gradience.monitor")


@dataclass(frozen=True)
class Alert:
    """One alert: which rule, how serious, at which step, why, and what to do.

    Attributes:
        rule: the rule name (``LOSS_PLATEAU``, ``GRAD_SPIKE``, ...); 0.11 called it ``code``.
        severity: ``info`` or ``warning``.
        step: the training step of the value that triggered it.
        message: one line for humans.
        evidence: the values that triggered it (half-window means, spike and window mean, ...).
        action: the suggested action.
    """

    rule: str
    severity: str
    step: int | None
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    action: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "code": self.rule,
            "severity": self.severity,
            "step": self.step,
            "message": self.message,
            "evidence": dict(self.evidence),
            "action": self.action,
        }

    @classmethod
    def from_record(cls, record: Record) -> Alert:
        """An alert as written to telemetry (0.11 alerts have ``code`` and ``context`` only)."""
        rule = record.get("rule") or record.get("code") or "UNKNOWN"
        ctx = record.get("context")
        return cls(
            rule=str(rule),
            severity=str(record.get("severity") or "info"),
            step=record.step,
            message=str(record.get("message") or ""),
            evidence=dict(ctx) if isinstance(ctx, Mapping) else {},
            action=str(record.get("action") or ""),
        )

    def __str__(self) -> str:
        return f"step {self.step}: {self.rule} ({self.severity}) {self.message}"


class TrainingMonitor:
    """Watches training values and raises alerts by the five rules and CONSIDER_STOPPING.

    Args:
        config: a :class:`MonitorConfig`, a dict of settings, a ``.json``/``.toml`` path, or
            None for the defaults.
        telemetry: a path or :class:`TelemetryWriter`: every value and alert is also written
            there as v1 telemetry (None: nothing is written). With a path, the monitor opens the
            file and writes ``run_start`` itself, recording its settings under
            ``config.monitor`` so a replay of the file reproduces its alerts.
        run_id: the run id written to telemetry (with a path).
        run_config: more ``run_start`` config to record (hyperparameters; with a path).
        meta: ``run_start`` meta to record (with a path).
        on_alert: called with each alert as it is raised.
        logger: where alerts are logged (``gradience.monitor`` by default; warnings at WARNING,
            info alerts at INFO).
        log_alerts: log each alert (replay turns this off: it reports alerts itself).

    Example:
        >>> monitor = TrainingMonitor(telemetry="run/telemetry.jsonl")  # doctest: +SKIP
        >>> for step, batch in enumerate(loader, start=1):  # doctest: +SKIP
        ...     loss = train_step(batch)
        ...     for alert in monitor.step(loss=loss, grad_norm=gn, lr=lr, step=step):
        ...         print(alert)
        ...     if step % 100 == 0:
        ...         monitor.eval(loss=evaluate(), step=step)
        >>> monitor.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: MonitorConfig | Mapping[str, Any] | str | Path | None = None,
        *,
        telemetry: str | Path | TelemetryWriter | None = None,
        run_id: str | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        logger: logging.Logger | None = None,
        log_alerts: bool = True,
        run_config: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        c = self.config = resolve_config(config)
        self._loss = HalfWindowPlateau(window=c.window, threshold=c.loss_plateau_threshold,
                                       patience=c.loss_plateau_patience)  # fmt: skip
        self._grad = HalfWindowPlateau(window=c.window, threshold=c.grad_plateau_threshold,
                                       patience=c.grad_plateau_patience)  # fmt: skip
        self._spike = GradSpike(
            window=c.window, factor=c.grad_spike_factor, min_history=c.grad_spike_min_history
        )
        self._eval = EvalPlateau(window=c.window, patience=c.eval_plateau_patience,
                                 tolerance=c.eval_plateau_tolerance, mode=c.eval_plateau_mode,
                                 metric=c.eval_plateau_metric)  # fmt: skip
        self._util = LowUtilization(threshold=c.utilization_low_threshold)
        self._stopping = False
        self._since: dict[str, int | None] = {}
        self._last_emitted: dict[str, int] = {}
        self._alerts: list[Alert] = []
        self.suppressed: Counter[str] = Counter()
        self.steps_seen = 0
        self.evals_seen = 0
        self.audits_seen = 0
        self.last_step: int | None = None
        self.on_alert = on_alert
        self.logger = logger or log
        self.log_alerts = log_alerts
        if isinstance(telemetry, TelemetryWriter):
            self.writer: TelemetryWriter | None = telemetry
        elif telemetry is not None:
            from gradience import __version__

            self.writer = TelemetryWriter(telemetry, **({"run_id": run_id} if run_id else {}))
            self.writer.run_start(
                config={**dict(run_config or {}), "monitor": c.to_dict()},
                meta={"gradience": __version__, "writer": "TrainingMonitor", **dict(meta or {})},
            )
        else:
            self.writer = None

    # -------------------------------------------------------------------------------- inputs

    def step(
        self,
        loss: Any = None,
        grad_norm: Any = None,
        lr: Any = None,
        *,
        step: int | None = None,
        epoch: Any = None,
        **extras: Any,
    ) -> list[Alert]:
        """Record one training step (or logging step). Returns the alerts it raised.

        Args:
            loss: the training loss (float or 0-d tensor); None when not measured.
            grad_norm: the global gradient norm (before clipping); None when not measured.
            lr: the learning rate (only recorded).
            step: the step number; default: one more than the last step seen.
            epoch: recorded only.
            extras: further fields written to telemetry as they are.
        """
        step = self._next_step(step)
        self.steps_seen += 1
        loss_v, grad_v = as_number(loss), as_number(grad_norm)
        if self.writer is not None:
            self.writer.train_step(step, loss=loss_v, lr=_lr(lr), grad_norm=grad_v, epoch=epoch, **extras)
        raised: list[Alert] = []
        c = self.config
        if loss_v is not None and c.enabled("LOSS_PLATEAU"):
            ev = self._loss.update(loss_v)
            self._track("LOSS_PLATEAU", self._loss.active, step)
            if ev:
                self._raise(raised, "LOSS_PLATEAU", step, _plateau_msg("training loss", ev), ev)
        if grad_v is not None:
            if c.enabled("GRAD_SPIKE"):
                ev = self._spike.update(grad_v)
                if ev:
                    msg = (f"gradient norm {grad_v:.4g} is {grad_v / ev['window_mean']:.1f}× the mean of the "
                           f"previous {ev['n_previous']} values ({ev['window_mean']:.4g})"
                           if ev["window_mean"] > 0 else f"gradient norm {grad_v:.4g} after a zero window")  # fmt: skip
                    self._raise(raised, "GRAD_SPIKE", step, msg, ev)
            if c.enabled("GRAD_PLATEAU"):
                ev = self._grad.update(grad_v)
                self._track("GRAD_PLATEAU", self._grad.active, step)
                if ev:
                    self._raise(raised, "GRAD_PLATEAU", step, _plateau_msg("gradient norm", ev), ev)
        self._check_stopping(raised, step)
        return raised

    def eval(
        self,
        metrics: Mapping[str, Any] | None = None,
        *,
        step: int | None = None,
        split: str = "eval",
        **named: Any,
    ) -> list[Alert]:
        """Record one evaluation: ``eval({"loss": 0.8, "accuracy": 0.7})`` or ``eval(loss=0.8)``.

        The watched metric is ``config.eval_plateau_metric`` (``loss``; ``eval_loss`` is read
        too). Evals on the ``train`` split are recorded but not watched. Returns the alerts.
        """
        values = {**dict(metrics or {}), **named}
        step = self.last_step if step is None else int(step)
        if self.writer is not None:
            self.writer.eval(step, values, split=split)
        raised: list[Alert] = []
        if split == "train":
            return raised
        self.evals_seen += 1
        value = metric_value(values, self.config.eval_plateau_metric)
        if value is not None and self.config.enabled("EVAL_PLATEAU"):
            ev = self._eval.update(value, step)
            self._track("EVAL_PLATEAU", self._eval.active, step)
            if ev:
                msg = (f"eval {ev['metric']} has not improved on {ev['best']:.4g} (step {ev['best_step']}) "
                       f"for {ev['patience']} evaluations")  # fmt: skip
                self._raise(raised, "EVAL_PLATEAU", step, msg, ev)
        self._check_stopping(raised, step)
        return raised

    def lora_audit(
        self,
        metrics: Mapping[str, Any] | None = None,
        *,
        step: int | None = None,
        model: Any = None,
    ) -> list[Alert]:
        """Record a LoRA audit: pass its ``metrics`` (with ``utilization_mean``), or a ``model``
        (a PEFT model) to audit its live LoRA weights now. Returns the alerts."""
        if model is not None:
            from gradience.monitor.probes import lora_audit_metrics

            metrics = {**lora_audit_metrics(model), **dict(metrics or {})}
        values = dict(metrics or {})
        step = self.last_step if step is None else int(step)
        if self.writer is not None:
            self.writer.metrics(step, "lora_audit", values)
        return self._audit(values, step)

    def metrics(self, kind: str, metrics: Mapping[str, Any], *, step: int | None = None) -> list[Alert]:
        """Record a ``metrics`` event (e.g. ``kind="geometry"``); ``lora_audit`` ones are watched."""
        step = self.last_step if step is None else int(step)
        if self.writer is not None:
            self.writer.metrics(step, kind, metrics)
        return self._audit(dict(metrics), step) if kind == "lora_audit" else []

    def _audit(self, values: Mapping[str, Any], step: int | None) -> list[Alert]:
        self.audits_seen += 1
        raised: list[Alert] = []
        u = as_number(values.get("utilization_mean"))
        if u is not None and self.config.enabled("UTILIZATION_LOW"):
            ev = self._util.update(u)
            if ev:
                msg = f"LoRA utilisation {u:.3f} is below {ev['threshold']:.3g} (stable rank / r)"
                self._raise(raised, "UTILIZATION_LOW", step, msg, ev)
        self._check_stopping(raised, step)
        return raised

    # -------------------------------------------------------------------------------- state

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Every alert raised so far, in order."""
        return tuple(self._alerts)

    @property
    def active(self) -> frozenset[str]:
        """The signals active now (plateaus, UTILIZATION_LOW, CONSIDER_STOPPING's condition)."""
        states = {
            "LOSS_PLATEAU": self._loss.active,
            "GRAD_PLATEAU": self._grad.active,
            "EVAL_PLATEAU": self._eval.active,
            "UTILIZATION_LOW": self._util.active,
            "CONSIDER_STOPPING": self._stopping,
        }
        return frozenset(k for k, v in states.items() if v and self.config.enabled(k))

    @property
    def stop_step(self) -> int | None:
        """The step of the first CONSIDER_STOPPING alert, or None."""
        return next((a.step for a in self._alerts if a.rule == "CONSIDER_STOPPING"), None)

    @property
    def would_stop(self) -> bool:
        return any(a.rule == "CONSIDER_STOPPING" for a in self._alerts)

    def close(self, status: str = "ok") -> None:
        """Write ``run_end`` and close the telemetry file (if this monitor opened one)."""
        if self.writer is not None and not self.writer.closed:
            self.writer.run_end(status)
            self.writer.close()

    def __enter__(self) -> TrainingMonitor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("ok" if exc is None else "error")

    # -------------------------------------------------------------------------------- internals

    def _next_step(self, step: int | None) -> int:
        if step is None:
            step = 1 if self.last_step is None else self.last_step + 1
        self.last_step = int(step)
        return self.last_step

    def _track(self, rule: str, active: bool, step: int | None) -> None:
        if active and self._since.get(rule) is None:
            self._since[rule] = step
        elif not active:
            self._since[rule] = None

    def _check_stopping(self, raised: list[Alert], step: int | None) -> None:
        if not self.config.enabled("CONSIDER_STOPPING"):
            return
        on = [r for r in PLATEAU_RULES if r in self.active]
        now = len(on) >= self.config.consider_stopping_min_signals
        if now and not self._stopping:
            ev = {"active": on, "since": {r: self._since.get(r) for r in on}}
            self._raise(raised, "CONSIDER_STOPPING", step, f"{' and '.join(on)} are active together", ev)
        self._stopping = now

    def _raise(
        self, raised: list[Alert], rule: str, step: int | None, message: str, evidence: Mapping[str, Any]
    ) -> None:
        last = self._last_emitted.get(rule)
        if last is not None and step is not None and 0 <= step - last < self.config.cooldown:
            self.suppressed[rule] += 1
            return
        info = RULES[rule]
        alert = Alert(rule, info.severity, step, message, dict(evidence), info.action)
        if step is not None:
            self._last_emitted[rule] = step
        self._alerts.append(alert)
        raised.append(alert)
        level = logging.WARNING if info.severity == "warning" else logging.INFO
        if self.log_alerts:
            self.logger.log(level, "gradience monitor: %s", alert)
        if self.writer is not None:
            self.writer.alert(step=step, severity=alert.severity, code=rule, message=message,
                              context=alert.evidence, rule=rule, action=alert.action)  # fmt: skip
        if self.on_alert is not None:
            self.on_alert(alert)


def _plateau_msg(what: str, ev: Mapping[str, Any]) -> str:
    return (f"{what} half-window means ({ev['half_window']} values each) differ by "
            f"{100 * ev['rel_change']:.2f}% < {100 * ev['threshold']:.3g}% for {ev['consecutive']} "
            f"consecutive values")  # fmt: skip


def metric_value(values: Mapping[str, Any], name: str) -> float | None:
    """``values[name]`` as a number, else the ``eval_`` (Trainer) or ``val_`` spelling of it."""
    for key in (name, f"eval_{name}", f"val_{name}"):
        v = as_number(values.get(key))
        if v is not None:
            return v
    return None


def _lr(lr: Any) -> Any:
    if isinstance(lr, list | tuple):
        return [as_number(x) for x in lr]
    return as_number(lr) if lr is not None else None
