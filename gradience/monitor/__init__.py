"""Training instruments: telemetry, a live monitor with five rules, replay, and the regime study.

Names load lazily (``import gradience.monitor`` imports none of numpy, torch or matplotlib)::

    from gradience.monitor import TrainingMonitor, replay_telemetry, GradienceCallback

    monitor = TrainingMonitor(telemetry="run.jsonl")      # plain PyTorch loop
    monitor.step(loss=loss, grad_norm=gn, lr=lr)          # → list of new alerts
    result = replay_telemetry("run.jsonl")                # same alerts, after the fact
    trainer = Trainer(..., callbacks=[GradienceCallback("run.jsonl")])

(``replay_telemetry`` is ``gradience.monitor.replay.replay``, under 0.11's name: the package
attribute ``replay`` is the submodule.) See ``docs/monitor.md`` for the telemetry schema, the rules and the config file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Alert": "gradience.monitor.monitor",
    "TrainingMonitor": "gradience.monitor.monitor",
    "MonitorConfig": "gradience.monitor.rules",
    "RULES": "gradience.monitor.rules",
    "replay_telemetry": "gradience.monitor.replay",
    "ReplayResult": "gradience.monitor.replay",
    "GradienceCallback": "gradience.monitor.callback",
    "TelemetryWriter": "gradience.monitor.telemetry",
    "read_telemetry": "gradience.monitor.telemetry",
    "iter_records": "gradience.monitor.telemetry",
    "analyze_regimes": "gradience.monitor.regimes",
    "RegimeReport": "gradience.monitor.regimes",
    "plot_replay": "gradience.monitor.plot",
}

__all__ = [
    "RULES",
    "Alert",
    "GradienceCallback",
    "MonitorConfig",
    "RegimeReport",
    "ReplayResult",
    "TelemetryWriter",
    "TrainingMonitor",
    "analyze_regimes",
    "iter_records",
    "plot_replay",
    "read_telemetry",
    "replay_telemetry",
]

if TYPE_CHECKING:
    from gradience.monitor.callback import GradienceCallback
    from gradience.monitor.monitor import Alert, TrainingMonitor
    from gradience.monitor.plot import plot_replay
    from gradience.monitor.regimes import RegimeReport, analyze_regimes
    from gradience.monitor.replay import ReplayResult, replay_telemetry
    from gradience.monitor.rules import RULES, MonitorConfig
    from gradience.monitor.telemetry import TelemetryWriter, iter_records, read_telemetry


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradience.monitor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
