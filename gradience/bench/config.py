"""Bench settings: defaults, a TOML file, then flags, in that order of precedence."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from gradience.errors import UsageError

MODES = ("truncated", "retrained")


@dataclass(frozen=True)
class BenchConfig:
    """What a bench runs. Defaults are the embedded task's (3 seeds on 2 CPU cores).

    Attributes:
        task: ``synthetic`` (embedded) or ``hub`` (``model`` and ``dataset`` on the Hub).
        probe_rank: the rank of the probe adapter whose audit proposes the candidates.
        seeds: how many seeds (0 … seeds−1) each configuration is trained with.
        tolerance: the worst-seed change versus the probe a candidate may show, in points.
        modes: ``truncated`` (the probe's SVD truncation) and/or ``retrained`` (from scratch).
        lr: the learning rate (default: the task's own, 1e-2 for the embedded task, 2e-4 on
            Hub models).
        threads: torch CPU threads (0: torch's default).
    """

    task: str = "synthetic"
    probe_rank: int = 32
    seeds: int = 3
    tolerance: float = -2.5
    steps: int = 300
    batch_size: int = 64
    lr: float | None = None
    policy: str = "energy@0.9"
    modes: tuple[str, ...] = MODES
    threads: int = 1
    model: str | None = None
    dataset: str | None = None
    revision: str | None = None
    dataset_revision: str | None = None
    max_train: int = 2048
    max_eval: int = 512

    def __post_init__(self) -> None:
        for name in ("probe_rank", "seeds", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}", param=name)
        if not isinstance(self.tolerance, int | float) or self.tolerance > 0:
            raise UsageError(
                f"tolerance must be a number ≤ 0 (points), got {self.tolerance!r}", param="tolerance"
            )
        if self.lr is not None and (not isinstance(self.lr, int | float) or self.lr <= 0):
            raise UsageError(f"lr must be a positive number, got {self.lr!r}", param="lr")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise UsageError(
                f"threads must be 0 (torch's choice) or more, got {self.threads!r}", param="threads"
            )
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise UsageError(
                f"modes must be some of {', '.join(MODES)}, got {list(self.modes)!r}", param="modes"
            )
        if (self.model is None) != (self.dataset is None):
            raise UsageError("a Hub task needs both a model and a dataset", param="model")

    @property
    def kind(self) -> str:
        return "hub" if self.model else self.task

    def make_task(self, token: str | None = None) -> Any:
        from gradience.bench.tasks import make_task

        if self.kind == "hub":
            return make_task(
                "hub", model=self.model, dataset=self.dataset, revision=self.revision,
                dataset_revision=self.dataset_revision, max_train=self.max_train,
                max_eval=self.max_eval, token=token,
            )  # fmt: skip
        return make_task(self.task)

    def training(self) -> dict[str, Any]:
        """The settings that change a trained result (part of every cache key)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "policy": self.policy}

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["modes"] = list(self.modes)
        return d

    def with_overrides(self, **values: Any) -> BenchConfig:
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def load_config(path: str | Path | None = None, **overrides: Any) -> BenchConfig:
    """Defaults, then the TOML file (top level or a ``[bench]`` table), then ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"no bench config at {path}", param="config") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{path} is not valid TOML: {e}", param="config") from None
        data = data.get("bench", data)
        known = {f.name for f in fields(BenchConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{path}: unknown setting {unknown[0]!r}", param="config")
        values.update(data)
        if "modes" in values and isinstance(values["modes"], list):
            values["modes"] = tuple(values["modes"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**values)
