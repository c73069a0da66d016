"""One way to open any adapter: a local folder or a Hub reference, with one options object.

Every operation (audit, compress, merge-audit, merge, diff) opens its inputs here, so Hub
options — token, revision, byte caps, timeouts, cache — reach all of them the same way,
from Python and from every surface::

    from gradience.open import OpenOptions, open_adapter

    opts = OpenOptions(token="hf_...", revision="v2", max_bytes=200_000_000)
    with open_adapter("user/adapter", opts) as adapter:
        ...

This module sits above both the local reader (``adapters/``) and the Hub reader (``hub/``),
which therefore never import each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradience.adapters.load import Adapter

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_BIN_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "OpenOptions",
    "is_hub_ref",
    "open_adapter",
    "resolve_options",
    "source_label",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_BIN_BYTES = 512 * 1024**2
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
#: Total seconds one open (resolve + header + LoRA tensors) may take before it is abandoned.
DEFAULT_DEADLINE = 900.0


@dataclass(frozen=True)
class OpenOptions:
    """How to open an adapter. Local folders ignore the Hub fields.

    Attributes:
        token: Hub token; None uses ``HF_TOKEN`` or the saved login, False sends none.
        revision: branch, tag or commit (overrides one written in the reference).
        subfolder: the adapter's folder inside a repo (or a local folder).
        repo_type: ``model`` (default) or ``dataset``.
        max_bytes: cap on LoRA tensor bytes fetched from the Hub.
        max_bin_bytes: cap on a ``.bin`` file, which must be downloaded whole.
        connect_timeout / read_timeout: per-request timeouts in seconds.
        deadline: total seconds for one open; None waits as long as retries allow.
        cache_dir: where Hub ranges are cached (default ``$GRADIENCE_CACHE``).
        progress: ``progress(bytes_done, bytes_total)`` for Hub downloads.
    """

    token: str | bool | None = None
    revision: str | None = None
    subfolder: str | None = None
    repo_type: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_bin_bytes: int = DEFAULT_MAX_BIN_BYTES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    deadline: float | None = DEFAULT_DEADLINE
    cache_dir: Path | None = None
    progress: Callable[[int, int], None] | None = None

    def replace(self, **changes: Any) -> OpenOptions:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_FIELDS = {f.name for f in dataclasses.fields(OpenOptions)}


def resolve_options(options: OpenOptions | None = None, **legacy: Any) -> OpenOptions:
    """``options`` with keyword overrides applied (the older keyword style still works).

    ``download_progress`` is accepted as a synonym of ``progress``.
    """
    from gradience.errors import UsageError

    if "download_progress" in legacy:
        legacy["progress"] = legacy.pop("download_progress")
    unknown = sorted(set(legacy) - _FIELDS)
    if unknown:
        raise UsageError(f"unknown open option {unknown[0]!r}; choose from {', '.join(sorted(_FIELDS))}")
    return (options or OpenOptions()).replace(**legacy)


def is_hub_ref(source: str | Path) -> bool:
    """True when ``source`` names a Hub repo rather than an existing local path."""
    local = Path(source)
    if local.exists():
        return False
    from gradience.hub.refs import looks_like_hub_ref

    return looks_like_hub_ref(str(source))


def open_adapter(source: str | Path, options: OpenOptions | None = None, **overrides: Any) -> Adapter:
    """Open a PEFT adapter without reading tensor bytes yet.

    Args:
        source: a folder holding ``adapter_config.json`` and ``adapter_model.safetensors``
            (or ``.bin``), the path of either file, or a Hub reference (``user/repo``,
            ``user/repo@revision``, ``hf://user/repo/sub``, a Hub web URL).
        options: see :class:`OpenOptions`; keyword ``overrides`` change single fields.

    Raises:
        AdapterNotFoundError, NotLoraError, NoWeightsError: nothing to open there.
        ConfigError, UnsupportedAdapterError, AdapterFormatError: unreadable adapter.
        HubError and its kinds: the Hub refused, failed or exceeded a cap.
    """
    opts = resolve_options(options, **overrides)
    local = Path(source)
    if opts.subfolder and local.is_dir():
        local = local / opts.subfolder
    if is_hub_ref(source) and not local.exists():
        from gradience.hub.refs import parse_hub_ref
        from gradience.hub.remote import open_remote_adapter

        ref = parse_hub_ref(
            str(source), repo_type=opts.repo_type, revision=opts.revision, subfolder=opts.subfolder
        )
        return open_remote_adapter(ref, options=opts)
    from gradience.adapters.load import load_local

    return load_local(local, source)


def source_label(source: dict[str, Any], default: str = "adapter") -> str:
    """How reports name where an adapter came from: its folder, or ``repo@revision/sub``."""
    if source.get("repo"):
        rev = source.get("revision") or "main"
        sub = f"/{source['subfolder']}" if source.get("subfolder") else ""
        return f"{source['repo']}@{rev}{sub}"
    return str(source.get("path") or default)
