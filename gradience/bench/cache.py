"""Results on disk, one small JSON file per (candidate ranks, seed, mode), written atomically.

A killed bench loses at most the unit it was running; a finished one re-reports from here
without training. Keys hash everything that changes a result (task, hyper-parameters,
ranks, seed, mode), so one ``--out`` folder can hold several configurations side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class ResultCache:
    """A folder of ``<key>.json`` results under ``root/results``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.results = self.root / "results"
        self.adapters = self.root / "adapters"

    def get(self, k: str) -> dict[str, Any] | None:
        path = self.results / f"{k}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn or foreign file: recompute it

    def put(self, k: str, value: dict[str, Any]) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.results, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, sort_keys=True)
        os.replace(tmp, self.results / f"{k}.json")

    def adapter_dir(self, k: str) -> Path:
        return self.adapters / k
