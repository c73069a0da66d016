"""Pieces every command shares: JSON on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gradience.hub.refs import REPO_TYPES
from gradience.report.jsonsafe import dumps, finite

__all__ = ["add_hub_options", "finite", "open_options", "print_json", "progress"]

if TYPE_CHECKING:
    from gradience.open import OpenOptions

#: Show a progress bar only for work at least this long (in layers, or bytes).
PROGRESS_MIN_STEPS = 50
PROGRESS_MIN_BYTES = 32 * 1024 * 1024


def print_json(data: Any) -> None:
    """Valid JSON on stdout, always: non-finite floats become null."""
    sys.stdout.write(dumps(data) + "\n")


@contextmanager
def progress(
    label: str, *, enabled: bool = True, unit: str = "layers"
) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a bar on stderr when it is a terminal.

    Layer counts below :data:`PROGRESS_MIN_STEPS` and downloads below
    :data:`PROGRESS_MIN_BYTES` draw nothing: a bar that flashes by is noise.
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[bold]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if total < (PROGRESS_MIN_BYTES if unit == "bytes" else PROGRESS_MIN_STEPS):
                return
            if task is None:
                task = bar.add_task(label, total=total)
            bar.update(task, completed=done)

        yield update


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_hub_options(p: argparse.ArgumentParser) -> None:
    """Options that pick an adapter inside a Hub repo and bound what may be downloaded."""
    g = p.add_argument_group("Hub repos (PATH may be user/repo[@revision], hf://..., or a Hub URL)")
    g.add_argument("--subfolder", help="the adapter's folder inside the repo")
    g.add_argument("--repo-type", dest="repo_type", choices=REPO_TYPES, help="default: model")
    g.add_argument("--revision", help="branch, tag or commit (default: main)")
    g.add_argument("--token", help="Hub token (default: HF_TOKEN or your saved login)")
    g.add_argument(
        "--max-bytes", dest="max_bytes", type=_size, help="cap on LoRA bytes to fetch (default 2GB)"
    )
    g.add_argument("--max-bin-bytes", dest="max_bin_bytes", type=_size,
                   help="cap on a .bin, which must be downloaded whole (default 512MB)")  # fmt: skip
    g.add_argument(
        "--timeout", type=float, help="seconds a Hub request may stall before it is retried (default 30)"
    )


#: The Hub flags of add_hub_options → the OpenOptions field each sets.
_OPEN_FIELDS = {
    "subfolder": "subfolder",
    "repo_type": "repo_type",
    "revision": "revision",
    "token": "token",
    "max_bytes": "max_bytes",
    "max_bin_bytes": "max_bin_bytes",
    "timeout": "read_timeout",
}


def open_options(args: argparse.Namespace, **changes: Any) -> OpenOptions:
    """The :class:`~gradience.open.OpenOptions` the Hub flags describe (every command has them)."""
    from gradience.open import OpenOptions

    given = {field: getattr(args, flag, None) for flag, field in _OPEN_FIELDS.items()}
    return OpenOptions().replace(**given, **changes)


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    try:
        value = float(num) * units[t[len(num) :]]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"expected a size like 500MB or 2GB, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)
