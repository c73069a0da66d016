"""The study's tables, computed by DuckDB straight from the dataset's parquet files.

The card, ``gradience ecosystem stats`` and anyone with DuckDB compute the same numbers from the
same files, so each table is one SQL query over the published columns, with the definitions
spelled out here and in ``docs/ecosystem.md``:

- population: ``adapters`` rows with ``status = 'ok'`` and ``untrained = false`` (an untrained
  adapter has no spectrum to speak of);
- distributions use ``quantile_cont`` (linear interpolation, numpy's default) and the sample
  standard deviation (``stddev_samp``);
- layer tables join ``layers`` to the population on (repo_id, subfolder, commit).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gradience.errors import UsageError

POP = "(SELECT * FROM adapters WHERE status = 'ok' AND NOT untrained)"
DIST = (
    "count({x}) AS n, avg({x}) AS mean, quantile_cont({x}, 0.5) AS median, stddev_samp({x}) AS std,"
    " min({x}) AS min, max({x}) AS max, quantile_cont({x}, 0.25) AS p25, quantile_cont({x}, 0.75) AS p75,"
    " quantile_cont({x}, 0.9) AS p90"
)

QUERIES: dict[str, str] = {
    "utilization": f"SELECT {DIST.format(x='utilization_mean')} FROM {POP}",
    "stable_rank": f"SELECT {DIST.format(x='stable_rank_mean')} FROM {POP}",
    "by_rank": (
        "SELECT r, count(*) AS n, avg(utilization_mean) AS mean, quantile_cont(utilization_mean, 0.5) AS median,"
        f" 1.0 / r AS floor FROM {POP} GROUP BY r ORDER BY r"
    ),
    "by_family": (
        "SELECT coalesce(family, 'unknown') AS family, count(*) AS n, avg(utilization_mean) AS mean,"
        f" quantile_cont(utilization_mean, 0.5) AS median FROM {POP} GROUP BY 1 ORDER BY n DESC, family"
    ),
    "by_module_type": (
        "SELECT l.module_type, count(*) AS n_layers, avg(l.utilization) AS mean,"
        " quantile_cont(l.utilization, 0.5) AS median"
        f" FROM layers l JOIN {POP} a USING (repo_id, subfolder, commit)"
        " WHERE l.utilization IS NOT NULL GROUP BY 1 ORDER BY 1"
    ),
    "energy_rank": (
        "SELECT count(*) AS n_layers,"
        " quantile_cont(l.energy_rank_90, 0.5) AS er90_p50, quantile_cont(l.energy_rank_90, 0.9) AS er90_p90,"
        " quantile_cont(l.energy_rank_95, 0.5) AS er95_p50, quantile_cont(l.energy_rank_95, 0.9) AS er95_p90,"
        " quantile_cont(l.energy_rank_99, 0.5) AS er99_p50, quantile_cont(l.energy_rank_99, 0.9) AS er99_p90"
        f" FROM layers l JOIN {POP} a USING (repo_id, subfolder, commit) WHERE l.energy_rank_90 IS NOT NULL"
    ),
    "compression": (
        "SELECT count(*) AS n, avg(recommended_r / r) AS ratio_mean,"
        " quantile_cont(recommended_r / r, 0.5) AS ratio_median,"
        " avg(CASE WHEN recommended_r <= r / 2 THEN 1.0 ELSE 0.0 END) AS share_halvable,"
        " 1 - sum(lora_params * recommended_r / r) / sum(lora_params) AS params_saved"
        f" FROM {POP} WHERE recommended_r IS NOT NULL AND r > 0"
    ),
    "correlation": (
        "SELECT count(*) AS n, corr(r, utilization_mean) AS pearson_r_utilization,"
        " corr(r, (utilization_mean - 1.0 / r) / (1 - 1.0 / r)) AS pearson_r_excess_over_floor"
        f" FROM {POP} WHERE r > 1"
    ),
    "coverage": (
        "SELECT count(*) AS rows, count(*) FILTER (WHERE status = 'ok') AS ok,"
        " count(*) FILTER (WHERE status = 'ok' AND untrained) AS untrained,"
        " count(*) FILTER (WHERE status NOT IN ('not_lora', 'unsupported_type')) AS lora_candidates,"
        " count(*) FILTER (WHERE status = 'ok') / nullif(count(*) FILTER (WHERE status NOT IN"
        " ('not_lora', 'unsupported_type')), 0) AS lora_coverage FROM adapters"
    ),
    "statuses": "SELECT status, count(*) AS n FROM adapters GROUP BY status ORDER BY n DESC, status",
    "wasteful_layers": (
        "SELECT l.repo_id, l.subfolder, l.module, l.r, l.utilization, l.energy_rank_90"
        f" FROM layers l JOIN {POP} a USING (repo_id, subfolder, commit) WHERE l.utilization IS NOT NULL"
        " ORDER BY l.r - l.energy_rank_90 DESC, l.utilization, l.repo_id, l.subfolder, l.module LIMIT 20"
    ),
}
SINGLE_ROW = {"utilization", "stable_rank", "energy_rank", "compression", "correlation", "coverage"}


def connect(folder: Path) -> Any:
    """A DuckDB connection with ``adapters`` and ``layers`` views over a dataset folder."""
    import duckdb

    adapters = sorted((folder / "adapters").glob("*.parquet"))
    layers = sorted((folder / "layers").glob("*.parquet"))
    if not adapters:
        raise UsageError(f"{folder} holds no adapters/*.parquet: not an ecosystem dataset", param="dataset")
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE VIEW adapters AS SELECT * FROM read_parquet({[str(p) for p in adapters]!r})")
    if layers:
        con.execute(f"CREATE VIEW layers AS SELECT * FROM read_parquet({[str(p) for p in layers]!r})")
    else:  # an empty layers table with the published columns
        from gradience.ecosystem.schema import arrow_schema

        empty = arrow_schema("layers").empty_table()  # noqa: F841  (DuckDB reads the local by name)
        con.execute("CREATE VIEW layers AS SELECT * FROM empty")
    return con


def _records(con: Any, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def compute(folder: Path) -> dict[str, Any]:
    """Every table of the study, as plain JSON-ready values (no rounding)."""
    con = connect(folder)
    try:
        out: dict[str, Any] = {}
        for name, sql in QUERIES.items():
            rows = _records(con, sql)
            out[name] = rows[0] if name in SINGLE_ROW else rows
        versions = _records(
            con, "SELECT DISTINCT gradience_version, dataset_version FROM adapters ORDER BY 1, 2"
        )
        out["versions"] = versions
        return out
    finally:
        con.close()


def resolve_dataset(spec: str, *, token: str | bool | None = None, cache_dir: Path | None = None) -> Path:
    """A local folder for ``--dataset``: the folder itself, or a Hub dataset repo downloaded
    (parquet and card only; the download is cached by commit)."""
    local = Path(spec)
    if local.is_dir():
        return local
    if local.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise UsageError(f"{spec!r} is neither a dataset folder nor a Hub dataset repo id", param="dataset")
    from huggingface_hub import snapshot_download

    from gradience.hub.errors import translate

    try:
        path = snapshot_download(
            spec,
            repo_type="dataset",
            allow_patterns=["README.md", "adapters/*.parquet", "layers/*.parquet"],
            token=token,
            cache_dir=cache_dir,
        )
    except Exception as e:
        translated = translate(e, spec, "dataset")
        if translated is not None:
            raise translated from e
        raise
    return Path(path)
