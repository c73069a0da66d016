"""The dataset folder, exactly as it is published: ``README.md``, ``adapters/``, ``layers/``.

Rebuilt in full from the crawl state on every run (rows sorted by repo and subfolder), so the
folder is a pure function of the state: a resumed crawl and a clean one write the same rows.
Files are written to a staging folder first and moved into place one by one (the card last),
so a reader never sees a half-written parquet file.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from gradience.ecosystem.schema import adapter_row, arrow_schema, layer_rows
from gradience.ecosystem.state import CrawlState

ADAPTERS_FILE = "adapters/train-00000-of-00001.parquet"
LAYERS_FILE = "layers/train-00000-of-00001.parquet"


def _timestamps(rows: list[dict[str, Any]], *cols: str) -> None:
    for row in rows:
        for col in cols:
            value = row.get(col)
            if isinstance(value, str):
                row[col] = datetime.fromisoformat(value.replace("Z", "+00:00"))


def write_tables(
    adapters: list[dict[str, Any]], layers: list[dict[str, Any]], folder: Path, *, suffix: str = ""
) -> list[Path]:
    """Write the two parquet tables under ``folder`` (``suffix`` names a shard's files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _timestamps(adapters, "last_modified", "audited_at")
    out = []
    for rel, rows, table in ((ADAPTERS_FILE, adapters, "adapters"), (LAYERS_FILE, layers, "layers")):
        if suffix:
            rel = rel.replace("train-00000-of-00001", f"train-{suffix}")
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = arrow_schema(table)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")
        out.append(path)
    return out


def write_dataset(state: CrawlState, out: Path, *, repo_id: str | None = None) -> Path:
    """Write ``out/README.md`` and the two tables from the state; returns ``out``.

    ``repo_id`` (where it will be published) goes into the card's example queries."""
    from gradience.ecosystem.card import render_card

    adapters: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for rec in state.rows():
        adapters.append(adapter_row(rec))
        layers.extend(layer_rows(rec))
    staging = out / ".crawl" / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    write_tables(adapters, layers, staging)
    (staging / "README.md").write_text(
        render_card(staging, runs=state.runs(20), repo_id=repo_id or "<user>/<dataset>"), encoding="utf-8"
    )
    publish_folder(staging, out)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def publish_folder(staging: Path, out: Path) -> None:
    """Move staged files into ``out`` (each an atomic rename), drop stale parquet, card last."""
    staged = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    for sub in ("adapters", "layers"):
        for old in (out / sub).glob("*.parquet") if (out / sub).is_dir() else []:
            if old.relative_to(out) not in staged:
                old.unlink()
    for rel in sorted(staged, key=lambda p: p.name == "README.md"):
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)


def read_table(folder: Path, table: str) -> list[dict[str, Any]]:
    """All rows of one table of a dataset folder (for tests and small tools)."""
    import pyarrow.parquet as pq

    files = sorted((folder / table).glob("*.parquet"))
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows
