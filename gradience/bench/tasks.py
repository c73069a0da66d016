"""What a bench task must provide, and the registry that maps names to tasks.

A task owns its data, its frozen base model and its metric; the protocol never looks
inside. Metrics are in points (0–100) so that a tolerance such as −2.5 means the same
thing for accuracy and exact match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gradience.errors import UsageError

_REGISTRY: dict[str, Callable[..., Task]] = {}


class Task:
    """Base class of bench tasks (subclasses are dataclasses).

    Attributes:
        name: registry name, shown in reports.
        metric: ``accuracy`` or ``exact_match`` (points, higher is better).
        target_modules: module-name suffixes LoRA adapts.
        modules_to_save: trainable non-LoRA modules (a fresh classification head).
    """

    name: str = "task"
    metric: str = "accuracy"
    target_modules: tuple[str, ...] = ()
    modules_to_save: tuple[str, ...] = ()
    device: str = "cpu"
    default_lr: float = 2e-4

    @property
    def description(self) -> str:
        return self.name

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes results: part of every cache key."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Where the task comes from, for the report (no secrets)."""
        return {}

    def base_model(self) -> Any:
        """A fresh, frozen base model (PEFT adapts it in place, so never share one)."""
        raise NotImplementedError

    def chance(self) -> float:
        """The score of always answering the most common answer, in points."""
        raise NotImplementedError

    def batches(self, seed: int, steps: int, batch_size: int) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, model: Any, batch: Any) -> Any:
        raise NotImplementedError

    def evaluate(self, model: Any) -> float:
        """The metric on the held-out split, in points."""
        raise NotImplementedError


def register(name: str, factory: Callable[..., Task]) -> None:
    _REGISTRY[name] = factory


def available_tasks() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_task(name: str, **kwargs: Any) -> Task:
    """The task called ``name`` (``synthetic``, or ``hub`` with a model and a dataset)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown bench task {name!r}; choose from {', '.join(sorted(_REGISTRY))}", param="task"
        )
    return _REGISTRY[name](**kwargs)


def _load_builtin() -> None:
    import gradience.bench.hub_task
    import gradience.bench.synthetic  # noqa: F401  (registers itself)
