"""Every error Gradience raises on purpose: one hierarchy, typed fields, a stable ``code``.

Surfaces never read messages to decide anything: the CLI maps a class to one line, a hint
and an exit code; the Space to a titled notice; the bot and crawler to a status category
(``code``). Messages describe what is wrong and name no command-line flag, because the same
error reaches users who never saw the CLI. Each class is also a builtin, so callers may
catch either::

    GradienceError                                   code
    ├── AdapterNotFoundError (FileNotFoundError)     not_found      missing folder, config, weights, repo
    │   ├── NotLoraError                             not_lora       no adapter_config.json where one should be
    │   ├── NoWeightsError                           no_weights     a config without adapter weights
    │   └── RevisionNotFoundError                    not_found      a branch, tag or commit that does not exist
    ├── AdapterFormatError (ValueError)              corrupt        corrupt / hostile / inconsistent files
    │   ├── UnsafePickleError                        unsafe_pickle  a .bin pickle asked for a forbidden global
    │   └── LfsPointerError                          lfs_pointer    a Git LFS pointer instead of the weights
    ├── UnsupportedAdapterError (ValueError)         unsupported_type  LoHa, LoKr, VeRA, IA3, prompt learning
    ├── ConfigError (ValueError)                     config         an adapter_config.json that makes no sense
    ├── UsageError (ValueError)                      usage          bad arguments (``param`` names which)
    │   ├── IncompatibleAdaptersError                incompatible   adapters of different base models / no shared layers
    │   └── UntrainedAdapterError                    untrained      an operation that needs a trained adapter
    ├── TelemetryError (ValueError)                  telemetry      training telemetry that cannot be analysed
    ├── HubError (OSError)                           hub            talking to the Hub failed
    │   ├── HubAccessError (PermissionError)         access_denied  the token may not read / write this repo
    │   │   ├── GatedRepoError                       gated          gated repo, conditions not accepted
    │   │   ├── PrivateRepoError                     private        private repo (the Hub answers 404)
    │   │   └── HubOIDCError                         oidc           keyless login (HF_OIDC_RESOURCE) failed
    │   ├── TooLargeError                            too_large      a download over its byte cap (``needed``/``limit``)
    │   └── HubTransferError                         transient_error  the Hub kept failing after bounded retries
    │       ├── RateLimitedError                     rate_limited   429s past the bounded wait (``retry_after``)
    │       └── HubTimeoutError                      timeout        a stalled connection or a spent deadline
    └── GitHubError                                  github         GitHub refused or failed a call (the Action)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "AdapterFormatError",
    "AdapterNotFoundError",
    "ConfigError",
    "GatedRepoError",
    "GitHubError",
    "GradienceError",
    "HubAccessError",
    "HubError",
    "HubOIDCError",
    "HubTimeoutError",
    "HubTransferError",
    "IncompatibleAdaptersError",
    "LfsPointerError",
    "NoWeightsError",
    "NotLoraError",
    "PrivateRepoError",
    "RateLimitedError",
    "RevisionNotFoundError",
    "TelemetryError",
    "TooLargeError",
    "UnsafePickleError",
    "UnsupportedAdapterError",
    "UntrainedAdapterError",
    "UsageError",
    "error_codes",
]


class GradienceError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Attributes:
        code: a stable, machine-readable category (never changes between releases).
        message: what is wrong, in one line, naming no command-line flag.
        path: the local file or folder concerned, if any.
        repo_id / revision: the Hub repo and revision concerned, if any.
        param: the argument that is wrong (for usage errors), if any.
        needed / limit: sizes for cap errors, in bytes.
    """

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        repo_id: str | None = None,
        revision: str | None = None,
        param: str | None = None,
        needed: int | None = None,
        limit: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.repo_id = repo_id
        self.revision = revision
        self.param = param
        self.needed = needed
        self.limit = limit
        self.extra = extra

    def __str__(self) -> str:
        if self.path and self.path not in self.message:
            return f"{self.path}: {self.message}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as data (for JSON reports, the bot's state and the crawler's rows)."""
        d: dict[str, Any] = {"code": self.code, "type": type(self).__name__, "message": str(self)}
        for k in ("path", "repo_id", "revision", "param", "needed", "limit"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update({k: v for k, v in self.extra.items() if v is not None})
        return d


class AdapterNotFoundError(GradienceError, FileNotFoundError):
    """The adapter folder, its config, its weights, the repo or the revision is missing."""

    code = "not_found"


class NotLoraError(AdapterNotFoundError):
    """The place named holds no ``adapter_config.json``: not a PEFT adapter."""

    code = "not_lora"


class NoWeightsError(AdapterNotFoundError):
    """``adapter_config.json`` is there but no adapter weights file is."""

    code = "no_weights"


class RevisionNotFoundError(AdapterNotFoundError):
    """The branch, tag or commit does not exist in the repo."""


class AdapterFormatError(GradienceError, ValueError):
    """A weights file is corrupt, truncated, hostile or inconsistent with its config."""

    code = "corrupt"


class UnsafePickleError(AdapterFormatError):
    """A pickled ``.bin`` file referenced a global outside the tensor-rebuilding allow-list."""

    code = "unsafe_pickle"


class LfsPointerError(AdapterFormatError):
    """The weights file is a Git LFS pointer (the real file was never fetched)."""

    code = "lfs_pointer"


class UnsupportedAdapterError(GradienceError, ValueError):
    """The adapter type is not one whose update is a low-rank product Gradience can audit."""

    code = "unsupported_type"


class ConfigError(GradienceError, ValueError):
    """``adapter_config.json`` is not valid JSON or holds values that make no sense."""

    code = "config"


class UsageError(GradienceError, ValueError):
    """An argument is out of range or names something that does not exist (``param``)."""

    code = "usage"


class IncompatibleAdaptersError(UsageError):
    """Adapters that cannot be merged: different base models, or no layer in common."""

    code = "incompatible"


class UntrainedAdapterError(UsageError):
    """The operation needs a trained adapter, and every layer's update is zero."""

    code = "untrained"


class TelemetryError(GradienceError, ValueError):
    """Training telemetry is missing, holds no usable records, or too few runs to analyse."""

    code = "telemetry"


class HubError(GradienceError, OSError):
    """Talking to the Hub failed."""

    code = "hub"


class HubAccessError(HubError, PermissionError):
    """The token may not read (or write) this repo."""

    code = "access_denied"


class GatedRepoError(HubAccessError):
    """A gated repo whose conditions this token's user has not accepted."""

    code = "gated"


class PrivateRepoError(HubAccessError):
    """A private repo this token cannot see (the Hub answers as if it did not exist)."""

    code = "private"


class HubOIDCError(HubAccessError):
    """Keyless login (``HF_OIDC_RESOURCE``: a CI job's OIDC id token exchanged for a Hub token)
    failed. A configuration problem of the job or of the Hub's trusted publishers, not of one
    repo, so callers that record per-adapter failures let it through."""

    code = "oidc"


class TooLargeError(HubError):
    """A download would exceed its byte cap (``needed`` and ``limit`` in bytes)."""

    code = "too_large"


class HubTransferError(HubError):
    """The Hub kept failing, or cut a download short, after all retries."""

    code = "transient_error"


class RateLimitedError(HubTransferError):
    """The Hub kept answering 429 past the bounded wait (``retry_after`` seconds)."""

    code = "rate_limited"

    @property
    def retry_after(self) -> float | None:
        return self.extra.get("retry_after")


class HubTimeoutError(HubTransferError):
    """A connection stalled past its timeout, or an operation past its deadline."""

    code = "timeout"


class GitHubError(GradienceError):
    """GitHub refused or failed a call the Action needs (bad token, unknown repository, ...)."""

    code = "github"


def error_codes() -> dict[str, type[GradienceError]]:
    """Every ``code`` → its most general class (for docs and surfaces' status tables)."""
    out: dict[str, type[GradienceError]] = {}
    stack: list[type[GradienceError]] = [GradienceError]
    while stack:
        cls = stack.pop(0)
        out.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return out
