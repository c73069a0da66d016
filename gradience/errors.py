"""Every error Gradience raises on purpose.

Each class is a ``GradienceError`` (the CLI turns it into one line and exit code 2) and
also a builtin, so callers may catch either::

    GradienceError
    ├── AdapterNotFoundError (FileNotFoundError)   missing folder, config or weights
    ├── AdapterFormatError (ValueError)            corrupt / hostile / inconsistent files
    │   └── UnsafePickleError                      a .bin pickle asked for a forbidden global
    ├── UnsupportedAdapterError (ValueError)       LoHa, LoKr, VeRA, IA3, prompt learning, ...
    ├── ConfigError (ValueError)                   an adapter_config.json that makes no sense
    ├── UsageError (ValueError)                    bad arguments: unknown policy, rank < 1, ...
    └── TelemetryError (ValueError)                training telemetry that cannot be analysed
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AdapterFormatError",
    "AdapterNotFoundError",
    "ConfigError",
    "GradienceError",
    "TelemetryError",
    "UnsafePickleError",
    "UnsupportedAdapterError",
    "UsageError",
]


class GradienceError(Exception):
    """A problem with the user's input, explained in one line with a hint to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None

    def __str__(self) -> str:
        if self.path and self.path not in self.message:
            return f"{self.path}: {self.message}"
        return self.message


class AdapterNotFoundError(GradienceError, FileNotFoundError):
    """The adapter folder, its config or its weights file is missing."""


class AdapterFormatError(GradienceError, ValueError):
    """A weights file is corrupt, truncated, hostile or inconsistent with its config."""


class UnsafePickleError(AdapterFormatError):
    """A pickled ``.bin`` file referenced a global outside the tensor-rebuilding allow-list."""


class UnsupportedAdapterError(GradienceError, ValueError):
    """The adapter type is not one whose update is a low-rank product Gradience can audit."""


class ConfigError(GradienceError, ValueError):
    """``adapter_config.json`` is not valid JSON or holds values that make no sense."""


class UsageError(GradienceError, ValueError):
    """An argument is out of range or names something that does not exist."""


class TelemetryError(GradienceError, ValueError):
    """Training telemetry is missing, holds no usable records, or too few runs to analyse."""
