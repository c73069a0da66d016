"""The monitor's rules: their defaults, their configuration, and the state each one keeps.

The definitions are in ``docs/monitor.md`` (from the project notes). In short: LOSS_PLATEAU and
GRAD_PLATEAU compare the means of the two halves of a W-value window and need P consecutive
values below a threshold; GRAD_SPIKE compares one gradient norm with the mean of the window
before it; EVAL_PLATEAU needs P evals that do not beat the earlier best; UTILIZATION_LOW reads
periodic LoRA audits; CONSIDER_STOPPING fires when two plateau signals are active at once.

Why half-window means instead of 0.11's "relative change between consecutive updates": with
telemetry logged every step, a noisy loss that still falls changes by < 1% per step, so the
consecutive-update test called every such run a plateau.

Each rule is a small state machine with ``update(value)`` that returns the evidence when it
fires and keeps ``active`` for the plateau meta-rule; cooldown and CONSIDER_STOPPING live in
:class:`~gradience.monitor.monitor.TrainingMonitor`, which composes them.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gradience.errors import UsageError

__all__ = [
    "PLATEAU_RULES",
    "RULES",
    "EvalPlateau",
    "GradSpike",
    "HalfWindowPlateau",
    "LowUtilization",
    "MonitorConfig",
    "RuleInfo",
]

#: Denominator floor of the relative change, so a series at exactly zero does not divide by 0.
REL_FLOOR = 1e-12


@dataclass(frozen=True)
class RuleInfo:
    """What a rule is called, how serious it is, what it watches and what to do about it."""

    name: str
    severity: str
    series: str
    summary: str
    action: str


RULES: dict[str, RuleInfo] = {
    r.name: r
    for r in (
        RuleInfo(
            "LOSS_PLATEAU", "info", "train_step.loss",
            "the training loss has stopped changing (half-window means differ by < threshold)",
            "Training loss is flat. If eval loss has stopped improving too, stop or lower the "
            "learning rate; a flat training loss alone is not a problem.",
        ),
        RuleInfo(
            "GRAD_PLATEAU", "info", "train_step.grad_norm",
            "the gradient norm has stopped changing (half-window means differ by < threshold)",
            "Gradient norm is flat. Check the learning-rate schedule; together with a flat loss "
            "it means the optimiser has settled.",
        ),
        RuleInfo(
            "GRAD_SPIKE", "warning", "train_step.grad_norm",
            "one gradient norm exceeds factor × the mean of the window before it",
            "Inspect the batch and learning rate at this step; consider gradient clipping "
            "(max_grad_norm) or a lower peak learning rate.",
        ),
        RuleInfo(
            "EVAL_PLATEAU", "warning", "eval.metrics.<metric>",
            "the last `patience` evals did not beat the best eval before them",
            "Eval has stopped improving: keep the best checkpoint and consider early stopping, "
            "more regularisation (weight decay, dropout) or more data.",
        ),
        RuleInfo(
            "UTILIZATION_LOW", "info", "metrics[kind=lora_audit].utilization_mean",
            "the LoRA adapter uses less than `threshold` of its rank (stable rank / r)",
            "The adapter uses a fraction of its rank: a smaller r would likely do; run "
            "`gradience audit` on the saved adapter for per-layer suggestions.",
        ),
        RuleInfo(
            "CONSIDER_STOPPING", "warning", "LOSS_PLATEAU, GRAD_PLATEAU, EVAL_PLATEAU",
            "at least `min_signals` plateau signals are active at once",
            "Training has likely exhausted what it can learn in this configuration: stop and "
            "keep the best checkpoint, or change the configuration (learning rate, data).",
        ),
    )
}  # fmt: skip

#: The signals CONSIDER_STOPPING counts.
PLATEAU_RULES = ("LOSS_PLATEAU", "GRAD_PLATEAU", "EVAL_PLATEAU")


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MonitorConfig:
    """Every threshold of the monitor; the defaults are 0.11's.

    In a config file the same values are grouped by rule (``[loss_plateau] threshold = 0.01``);
    field names here are ``<rule>_<param>``. See :meth:`from_file`.

    Attributes:
        window: W, values kept per series (loss, gradient norm); plateau halves are W // 2.
        cooldown: an alert of one rule is not emitted again within this many steps.
        loss_plateau_threshold / grad_plateau_threshold: relative change of the half-window means
            below which a value counts towards a plateau.
        loss_plateau_patience / grad_plateau_patience: consecutive such values to fire.
        grad_spike_factor: a gradient norm above factor × the window mean is a spike.
        grad_spike_min_history: values needed in the window before spikes are tested.
        eval_plateau_patience: evals that fail to beat the earlier best before it fires.
        eval_plateau_tolerance: how much an eval must beat the earlier best to count.
        eval_plateau_metric: the ``eval`` metric watched (``loss``; ``eval_loss`` is also read).
        eval_plateau_mode: ``"min"`` (lower is better, losses) or ``"max"`` (accuracy, ...).
        utilization_low_threshold: utilisation (stable rank / r) below which it fires.
        consider_stopping_min_signals: plateau signals that must be active together.
        disabled: rule names that never fire (and never count as active).
    """

    window: int = 50
    cooldown: int = 50
    loss_plateau_threshold: float = 0.01
    loss_plateau_patience: int = 5
    grad_plateau_threshold: float = 0.02
    grad_plateau_patience: int = 5
    grad_spike_factor: float = 5.0
    grad_spike_min_history: int = 5
    eval_plateau_patience: int = 5
    eval_plateau_tolerance: float = 1e-8
    eval_plateau_metric: str = "loss"
    eval_plateau_mode: str = "min"
    utilization_low_threshold: float = 0.25
    consider_stopping_min_signals: int = 2
    disabled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "disabled":
                if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
                    _bad(f.name, "a list of rule names", value)
                unknown = [x for x in value if x not in RULES]
                if unknown:
                    _bad(f.name, f"rule names from {', '.join(RULES)}", unknown[0])
                object.__setattr__(self, "disabled", tuple(value))
            elif f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    _bad(f.name, "an integer", value)
            elif f.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    _bad(f.name, "a finite number", value)
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, str) or not value:
                _bad(f.name, "a non-empty string", value)
        if self.window < 4:
            _bad("window", "an integer ≥ 4", self.window)
        if self.cooldown < 0:
            _bad("cooldown", "an integer ≥ 0", self.cooldown)
        for name in ("loss_plateau_patience", "grad_plateau_patience", "eval_plateau_patience",
                     "grad_spike_min_history"):  # fmt: skip
            if getattr(self, name) < 1:
                _bad(name, "an integer ≥ 1", getattr(self, name))
        if self.eval_plateau_patience >= self.window:
            _bad("eval_plateau_patience", f"less than window ({self.window})", self.eval_plateau_patience)
        if self.grad_spike_min_history > self.window:
            _bad("grad_spike_min_history", f"at most window ({self.window})", self.grad_spike_min_history)
        for name in ("loss_plateau_threshold", "grad_plateau_threshold", "grad_spike_factor",
                     "utilization_low_threshold"):  # fmt: skip
            if getattr(self, name) <= 0:
                _bad(name, "a number > 0", getattr(self, name))
        if self.eval_plateau_tolerance < 0:
            _bad("eval_plateau_tolerance", "a number ≥ 0", self.eval_plateau_tolerance)
        if self.eval_plateau_mode not in ("min", "max"):
            _bad("eval_plateau_mode", "'min' or 'max'", self.eval_plateau_mode)
        if not 1 <= self.consider_stopping_min_signals <= len(PLATEAU_RULES):
            _bad("consider_stopping_min_signals", "1, 2 or 3", self.consider_stopping_min_signals)

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    def to_dict(self) -> dict[str, Any]:
        """The nested form a config file uses (``from_dict(to_dict())`` round-trips)."""
        out: dict[str, Any] = {"window": self.window, "cooldown": self.cooldown}
        for f in fields(self):
            section, _, param = _split(f.name)
            if section:
                out.setdefault(section, {})[param] = getattr(self, f.name)
        out["disabled"] = list(self.disabled)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> MonitorConfig:
        """Build a config from nested (``{"loss_plateau": {"threshold": ...}}``) or flat
        (``{"loss_plateau_threshold": ...}``) keys; unknown keys are errors, not silently ignored.

        A ``monitor`` table, or ``tool.gradience.monitor`` (pyproject.toml), is unwrapped first.

        Raises:
            UsageError: an unknown key or a value out of range (the message names it).
        """
        data = _unwrap(data)
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                for param, v in value.items():
                    name = f"{key}_{param}"
                    if name not in names or name in ("window", "cooldown", "disabled"):
                        raise UsageError(
                            f"monitor config: unknown setting {key}.{param}{_valid()}", path=source
                        )
                    values[name] = v
            elif key in names:
                values[key] = value
            else:
                raise UsageError(f"monitor config: unknown setting {key!r}{_valid()}", path=source)
        if isinstance(values.get("disabled"), list):
            values["disabled"] = tuple(values["disabled"])
        try:
            return cls(**values)
        except UsageError as e:
            raise UsageError(e.message, path=source) from None

    @classmethod
    def from_file(cls, path: str | Path) -> MonitorConfig:
        """Read a ``.json`` or ``.toml`` config file (any other name: tried as JSON, then TOML).

        Example file (TOML)::

            window = 50
            cooldown = 50
            [loss_plateau]
            threshold = 0.01
            patience = 5
            [eval_plateau]
            metric = "loss"

        Raises:
            UsageError: the file is missing, does not parse, or holds an unknown or bad setting.
        """
        p = Path(path)
        if not p.is_file():
            raise UsageError("monitor config file not found", path=p)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the monitor config: {e}", path=p) from e
        data = _parse_config(text, p.suffix.lower(), p)
        if not isinstance(data, Mapping):
            raise UsageError("a monitor config must be an object/table of settings", path=p)
        return cls.from_dict(data, source=str(p))


def resolve_config(config: MonitorConfig | Mapping[str, Any] | str | Path | None) -> MonitorConfig:
    """A config from a :class:`MonitorConfig`, a mapping, a file path, or None (defaults)."""
    if config is None:
        return MonitorConfig()
    if isinstance(config, MonitorConfig):
        return config
    if isinstance(config, Mapping):
        return MonitorConfig.from_dict(config)
    if isinstance(config, str | Path):
        return MonitorConfig.from_file(config)
    raise UsageError(
        f"monitor config must be a MonitorConfig, a dict or a file path, got {type(config).__name__}"
    )


def _parse_config(text: str, suffix: str, path: Path) -> Any:
    errors = []
    parsers = {".json": ("JSON",), ".toml": ("TOML",)}.get(suffix, ("JSON", "TOML"))
    for kind in parsers:
        try:
            return json.loads(text) if kind == "JSON" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            errors.append(f"{kind}: {e}")
    raise UsageError(f"monitor config does not parse ({'; '.join(errors)})", path=path)


def _unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    tool = data.get("tool")
    if isinstance(tool, Mapping) and isinstance(tool.get("gradience"), Mapping):
        data = tool["gradience"]
    monitor = data.get("monitor")
    if isinstance(monitor, Mapping):
        data = monitor
    return data


def _split(name: str) -> tuple[str, str, str]:
    for rule in RULES:
        prefix = rule.lower() + "_"
        if name.startswith(prefix):
            return rule.lower(), "_", name[len(prefix) :]
    return "", "", name


def _valid() -> str:
    keys = ["window", "cooldown", "disabled"]
    keys += [
        ".".join(s for s in _split(f.name)[::2] if s) for f in fields(MonitorConfig) if _split(f.name)[0]
    ]
    return f" (valid: {', '.join(keys)})"


def _bad(name: str, expected: str, got: Any) -> None:
    raise UsageError(f"monitor config: {name} must be {expected}, got {got!r}")


# ----------------------------------------------------------------------------- rule states


def _mean(xs: list[float]) -> float:
    return math.fsum(xs) / len(xs)


class HalfWindowPlateau:
    """LOSS_PLATEAU / GRAD_PLATEAU: a W-value window, half-window means, a patience counter.

    Once the window holds W values, each new value gives
    ``rel = |mean(last W/2) − mean(previous W/2)| / max(|mean(previous W/2)|, 1e-12)``.
    The counter grows while ``rel < threshold`` and resets otherwise; the rule fires when the
    counter reaches ``patience`` and stays active until ``rel ≥ threshold``.
    """

    def __init__(self, *, window: int, threshold: float, patience: int) -> None:
        self.window, self.threshold, self.patience = window, threshold, patience
        self.values: deque[float] = deque(maxlen=window)
        self.counter = 0
        self.active = False
        self.last_rel: float | None = None

    def update(self, value: float) -> dict[str, Any] | None:
        """Add a value; returns the evidence when the rule fires on it, else None."""
        self.values.append(value)
        if len(self.values) < self.window:
            return None
        h = self.window // 2
        vals = list(self.values)
        recent, previous = _mean(vals[-h:]), _mean(vals[-2 * h : -h])
        rel = abs(recent - previous) / max(abs(previous), REL_FLOOR)
        self.last_rel = rel
        if rel < self.threshold:  # NaN compares False: a NaN in the window is never a plateau
            self.counter += 1
            if self.counter == self.patience:
                self.active = True
                return {
                    "rel_change": rel,
                    "mean_recent": recent,
                    "mean_previous": previous,
                    "half_window": h,
                    "threshold": self.threshold,
                    "consecutive": self.counter,
                }
        else:
            self.counter = 0
            self.active = False
        return None


class GradSpike:
    """GRAD_SPIKE: a value above ``factor`` × the mean of the (up to W) values before it,
    tested once at least ``min_history`` previous values are held. Never active."""

    active = False

    def __init__(self, *, window: int, factor: float, min_history: int) -> None:
        self.factor, self.min_history = factor, min_history
        self.previous: deque[float] = deque(maxlen=window)

    def update(self, value: float) -> dict[str, Any] | None:
        evidence = None
        if len(self.previous) >= self.min_history:
            m = _mean(list(self.previous))
            if value > self.factor * m:
                evidence = {
                    "grad_norm": value,
                    "window_mean": m,
                    "ratio": value / m if m > 0 else None,
                    "factor": self.factor,
                    "n_previous": len(self.previous),
                }
        self.previous.append(value)
        return evidence


class EvalPlateau:
    """EVAL_PLATEAU: the eval series keeps its last W values, like every series; with more than
    P of them, it is active when the last P are all ≥ the best of the (windowed) evals before
    them minus ``tolerance``. It fires on becoming active and deactivates when an eval sets a new
    best. ``mode="max"`` watches a metric where higher is better."""

    def __init__(
        self, *, window: int = 50, patience: int, tolerance: float, mode: str = "min", metric: str = "loss"
    ) -> None:
        self.patience, self.tolerance, self.mode, self.metric = patience, tolerance, mode, metric
        self.values: deque[tuple[float, int | None]] = deque(maxlen=window)
        self.active = False

    def update(self, value: float, step: int | None = None) -> dict[str, Any] | None:
        self.values.append((value if self.mode == "min" else -value, step))
        if len(self.values) <= self.patience:
            return None
        vals = list(self.values)
        earlier = [x for x in vals[: -self.patience] if not math.isnan(x[0])]
        recent = [x for x, _ in vals[-self.patience :]]
        best = min(earlier, key=lambda x: x[0]) if earlier else None
        now = best is not None and all(x >= best[0] - self.tolerance for x in recent)  # NaN: False
        fired = now and not self.active
        self.active = now
        if not fired or best is None:
            return None
        sign = 1.0 if self.mode == "min" else -1.0
        return {
            "metric": self.metric,
            "mode": self.mode,
            "best": sign * best[0],
            "best_step": best[1],
            "recent": [sign * x for x in recent],
            "patience": self.patience,
        }


class LowUtilization:
    """UTILIZATION_LOW: fires when utilisation drops below the threshold; active while below."""

    def __init__(self, *, threshold: float) -> None:
        self.threshold = threshold
        self.active = False

    def update(self, value: float) -> dict[str, Any] | None:
        now = value < self.threshold
        fired = now and not self.active
        self.active = now
        return {"utilization_mean": value, "threshold": self.threshold} if fired else None
