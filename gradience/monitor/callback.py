"""GradienceCallback: telemetry and the live monitor inside a transformers ``Trainer``.

    from gradience.monitor import GradienceCallback
    trainer = Trainer(..., callbacks=[GradienceCallback("out/telemetry.jsonl", audit_every=100)])

It records run start/end, every logged training step (loss, learning rate, gradient norm),
every evaluation, a ``geometry`` metrics record (weight norm, gradient norm, spectral
complexity) at each logging step, and every ``audit_every`` steps a spectral audit of the live
LoRA weights (a ``lora_audit`` record). The monitor sees the same values in the same order,
and its alerts are written into the telemetry and logged (logger ``gradience.monitor``) as they
happen — so ``gradience monitor replay`` on the file gives back the alerts the run raised.

Why this class does not subclass ``transformers.TrainerCallback``: importing transformers takes
seconds and pulls in torch, and the Trainer only needs the ``on_*`` methods (it calls them by
name). Events this class does not handle resolve to a no-op, so new Trainer events are safe.
Set ``logging_steps=1`` for per-step telemetry; the monitor then sees one value per step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gradience.monitor.monitor import Alert, TrainingMonitor
from gradience.monitor.rules import MonitorConfig
from gradience.monitor.telemetry import TelemetryWriter

__all__ = ["GradienceCallback"]

DEFAULT_NAME = "gradience_telemetry.jsonl"
_TRAINING_ARGS = (
    "learning_rate", "weight_decay", "max_grad_norm", "max_steps", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type",
    "logging_steps", "eval_steps", "seed", "optim",
)  # fmt: skip
_LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora", "bias")


class GradienceCallback:
    """A transformers Trainer callback that writes telemetry and runs the training monitor.

    Args:
        telemetry: the ``.jsonl`` file to write; default ``<output_dir>/gradience_telemetry.jsonl``.
        config: monitor settings (a :class:`MonitorConfig`, dict or config-file path).
        audit_every: audit the live LoRA weights every N optimizer steps (None or 0: never).
        geometry_every: write a ``geometry`` record at logging steps divisible by N (0: never).
        stop_on_consider_stopping: end training when CONSIDER_STOPPING fires (default: only
            alert — the article's monitor advises, it does not decide).
        on_alert: called with each :class:`Alert` as it is raised.
        run_id: the telemetry run id (random by default).

    Attributes:
        monitor: the :class:`TrainingMonitor` (after training starts).
    """

    def __init__(
        self,
        telemetry: str | Path | None = None,
        *,
        config: MonitorConfig | Mapping[str, Any] | str | Path | None = None,
        audit_every: int | None = 100,
        geometry_every: int = 1,
        stop_on_consider_stopping: bool = False,
        on_alert: Callable[[Alert], None] | None = None,
        run_id: str | None = None,
    ) -> None:
        from gradience.monitor.rules import resolve_config

        self.telemetry = telemetry
        self.config = resolve_config(config)
        self.audit_every = audit_every or 0
        self.geometry_every = geometry_every or 0
        self.stop_on_consider_stopping = stop_on_consider_stopping
        self.on_alert = on_alert
        self.run_id = run_id
        self.monitor: TrainingMonitor | None = None
        self.path: Path | None = None
        self._has_lora = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return _noop
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return self.monitor.alerts if self.monitor else ()

    # ------------------------------------------------------------------------------ events

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return  # one writer per run: the main process
        self.path = Path(self.telemetry) if self.telemetry else Path(args.output_dir) / DEFAULT_NAME
        # A run resumed from a checkpoint starts past step 0: append to its telemetry rather than
        # replace it (the monitor's windows start empty again).
        resumed = int(getattr(state, "global_step", 0) or 0) > 0
        writer = TelemetryWriter(
            self.path, append=resumed, **({"run_id": self.run_id} if self.run_id else {})
        )
        self.monitor = TrainingMonitor(self.config, telemetry=writer, on_alert=self.on_alert)
        self._has_lora = model is not None and _has_lora(model)
        writer.run_start(config=self._run_config(args, model), meta=_versions())

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        step = int(state.global_step)
        if self.monitor is None or not self._has_lora or not self.audit_every or step % self.audit_every:
            return None
        alerts = self.monitor.lora_audit(model=model, step=step)
        return self._maybe_stop(alerts, control)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, model: Any = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        if self.monitor is None or not logs or "loss" not in logs:
            return None  # eval and end-of-training summaries are logged too; they carry no "loss"
        step = int(state.global_step)
        extras = {k: v for k, v in logs.items() if k not in ("loss", "grad_norm", "learning_rate", "epoch")}
        alerts = self.monitor.step(logs.get("loss"), logs.get("grad_norm"), logs.get("learning_rate"),
                                   step=step, epoch=logs.get("epoch"), **extras)  # fmt: skip
        if model is not None and self.geometry_every and step % self.geometry_every == 0:
            from gradience.monitor.probes import geometry

            alerts += self.monitor.metrics("geometry", geometry(model, grad_norm_value=logs.get("grad_norm")),
                                           step=step)  # fmt: skip
        return self._maybe_stop(alerts, control)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if self.monitor is None or not metrics:
            return None
        clean = {(k[5:] if k.startswith("eval_") else k): v for k, v in metrics.items()}
        alerts = self.monitor.eval(clean, step=int(state.global_step))
        return self._maybe_stop(alerts, control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close("ok")

    # ------------------------------------------------------------------------------ helpers

    def _maybe_stop(self, alerts: list[Alert], control: Any) -> Any:
        if self.stop_on_consider_stopping and any(a.rule == "CONSIDER_STOPPING" for a in alerts):
            control.should_training_stop = True
            return control
        return None

    def _run_config(self, args: Any, model: Any) -> dict[str, Any]:
        training = {k: getattr(args, k) for k in _TRAINING_ARGS if hasattr(args, k)}
        training = {k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
                    for k, v in training.items()}  # fmt: skip
        cfg: dict[str, Any] = {"training": training, "monitor": self.config.to_dict()}
        peft_config = getattr(model, "peft_config", None)
        if isinstance(peft_config, Mapping) and peft_config:
            first = next(iter(peft_config.values()))
            lora = {k: getattr(first, k) for k in _LORA_FIELDS if hasattr(first, k)}
            cfg["lora"] = {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora.items()}
        cfg["gradience"] = {"audit_every": self.audit_every, "geometry_every": self.geometry_every}
        return cfg


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _has_lora(model: Any) -> bool:
    from gradience.monitor.probes import lora_factors

    return next(lora_factors(model), None) is not None


def _versions() -> dict[str, Any]:
    import sys
    from contextlib import suppress
    from importlib import metadata

    from gradience import __version__

    meta: dict[str, Any] = {
        "gradience": __version__,
        "python": sys.version.split()[0],
        "writer": "GradienceCallback",
    }
    for pkg in ("torch", "transformers", "peft"):
        with suppress(metadata.PackageNotFoundError):
            meta[pkg] = metadata.version(pkg)
    return meta
