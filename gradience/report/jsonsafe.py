"""The one JSON sanitiser: results become strict JSON (RFC 8259) with nothing lost silently.

Non-finite floats become null (JSON has no NaN or Infinity, and a report that other tools
cannot parse is worse than one with a gap), numpy scalars and arrays become Python numbers
and lists, tuples become lists and paths become strings. Telemetry files are the one
exception: they keep 0.11's ``"NaN"`` strings (see ``gradience.monitor.telemetry``).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

__all__ = ["dumps", "finite"]


def finite(x: Any) -> Any:
    """``x`` with every value made strict-JSON-safe (see the module docstring)."""
    if isinstance(x, bool) or x is None or isinstance(x, str | int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    if isinstance(x, PurePath):
        return str(x)
    item = getattr(x, "item", None)  # numpy scalars
    tolist = getattr(x, "tolist", None)  # numpy arrays
    if tolist is not None and getattr(x, "ndim", 0):
        return finite(tolist())
    if item is not None:
        return finite(item())
    return x


def dumps(x: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``x`` (raises if something is still not serialisable)."""
    return json.dumps(finite(x), indent=indent, allow_nan=False, ensure_ascii=False)
