"""The dataset card: YAML ``configs`` naming both tables, and the study's tables from the data.

Every number in the card comes from :func:`gradience.ecosystem.stats.compute` over the very
parquet files published beside it, so ``gradience ecosystem stats`` and a reader's own DuckDB
query print the same values (rounded here for reading, exact in ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gradience.ecosystem.schema import DATASET_VERSION
from gradience.ecosystem.statuses import STATUSES

#: dataset version → what changed (newest first).
CHANGELOG: list[tuple[int, str]] = [
    (1, "first release: `adapters` and `layers` tables, statuses from the core's error types"),
]


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def front_matter() -> dict[str, Any]:
    return {
        "license": "apache-2.0",
        "pretty_name": "LoRA adapter spectral audits (Gradience ecosystem dataset)",
        "tags": ["lora", "peft", "gradience", "lora-audit"],
        "configs": [
            {
                "config_name": "adapters",
                "default": True,
                "data_files": [{"split": "train", "path": "adapters/*.parquet"}],
            },
            {"config_name": "layers", "data_files": [{"split": "train", "path": "layers/*.parquet"}]},
        ],
    }


def render_card(
    folder: Path, *, runs: list[dict[str, Any]] | None = None, repo_id: str = "<user>/<dataset>"
) -> str:
    """The README.md of a dataset folder whose parquet files are already written."""
    from gradience.ecosystem.stats import compute

    meta = yaml.safe_dump(front_matter(), sort_keys=False, allow_unicode=True).strip()
    return f"---\n{meta}\n---\n\n" + render_body(compute(folder), runs=runs, repo_id=repo_id)


def render_body(
    s: dict[str, Any], *, runs: list[dict[str, Any]] | None = None, repo_id: str = "<user>/<dataset>"
) -> str:
    """The card's Markdown body from :func:`~gradience.ecosystem.stats.compute`'s tables
    (``gradience ecosystem stats`` prints the same text)."""
    u, cov = s["utilization"], s["coverage"]
    dist_cols = ["n", "mean", "median", "std", "min", "max", "p25", "p75", "p90"]
    parts = [
        "# LoRA adapter spectral audits",
        "",
        "Every public PEFT LoRA adapter the crawler could find on the Hub, audited from its weights "
        "alone by [Gradience](https://github.com/) (singular-value spectra of each layer's update): one row "
        "per adapter folder in `adapters`, one row per LoRA layer in `layers`. Utilisation is stable rank "
        "divided by the nominal rank r: how much of the rank an adapter actually uses.",
        "",
        "## Coverage",
        "",
        f"{cov['rows']} adapter folders listed; {cov['ok']} audited (`ok`), of which {cov['untrained']} untrained. "
        f"Coverage of LoRA candidates (all rows but `not_lora` and `unsupported_type`): {_fmt(cov['lora_coverage'])}.",
        "",
        _table(
            ["status", "rows", "meaning"],
            [[r["status"], r["n"], STATUSES.get(r["status"], "")] for r in s["statuses"]],
        ),
        "",
        "## Utilisation",
        "",
        "Over trained `ok` adapters (`status = 'ok' AND NOT untrained`), per-adapter mean utilisation:",
        "",
        _table(dist_cols, [[u[c] for c in dist_cols]]),
        "",
        "Stable rank (per-adapter mean):",
        "",
        _table(dist_cols, [[s["stable_rank"][c] for c in dist_cols]]),
        "",
        "### By nominal rank",
        "",
        "The floor is 1/r: a stable rank is at least 1, so utilisation can never fall below it.",
        "",
        _table(
            ["r", "n", "mean", "median", "floor 1/r"],
            [[r["r"], r["n"], r["mean"], r["median"], r["floor"]] for r in s["by_rank"]],
        ),
        "",
        "### By module type (layers)",
        "",
        _table(
            ["module type", "layers", "mean", "median"],
            [[r["module_type"], r["n_layers"], r["mean"], r["median"]] for r in s["by_module_type"]],
        ),
        "",
        "### By base-model family",
        "",
        _table(
            ["family", "n", "mean", "median"],
            [[r["family"], r["n"], r["mean"], r["median"]] for r in s["by_family"]],
        ),
        "",
        "## Energy ranks (layers)",
        "",
        "Directions needed to hold 90 / 95 / 99% of each layer's energy:",
        "",
        _table(
            ["layers", "90% p50", "90% p90", "95% p50", "95% p90", "99% p50", "99% p90"],
            [
                [
                    s["energy_rank"][k]
                    for k in (
                        "n_layers",
                        "er90_p50",
                        "er90_p90",
                        "er95_p50",
                        "er95_p90",
                        "er99_p50",
                        "er99_p90",
                    )
                ]
            ],
        ),
        "",
        "## Compression potential",
        "",
        "From each adapter's recommended rank (`recommended_r`, the audit's one recommendation):",
        "",
        _table(
            ["adapters", "mean r_rec / r", "median r_rec / r", "share with r_rec ≤ r/2", "LoRA params saved"],
            [
                [
                    s["compression"][k]
                    for k in ("n", "ratio_mean", "ratio_median", "share_halvable", "params_saved")
                ]
            ],
        ),
        "",
        "## Rank and utilisation",
        "",
        f"Pearson correlation of r with utilisation: {_fmt(s['correlation']['pearson_r_utilization'])} "
        f"(n = {s['correlation']['n']}). Caveat: utilisation has a floor of 1/r, so part of any negative "
        "correlation is mechanical; with utilisation measured above that floor, `(u - 1/r) / (1 - 1/r)`, "
        f"the correlation is {_fmt(s['correlation']['pearson_r_excess_over_floor'])}.",
        "",
        "## Most over-provisioned layers",
        "",
        _table(
            ["repo", "subfolder", "module", "r", "utilisation", "energy rank 90%"],
            [
                [
                    r["repo_id"],
                    r["subfolder"] or "·",
                    r["module"],
                    r["r"],
                    r["utilization"],
                    r["energy_rank_90"],
                ]
                for r in s["wasteful_layers"][:20]
            ],
        ),
        "",
        "## Querying",
        "",
        "```python",
        "from datasets import load_dataset",
        f'adapters = load_dataset("{repo_id}", "adapters", split="train")',
        "",
        "import pandas as pd",
        f'df = pd.read_parquet("hf://datasets/{repo_id}/adapters/")',
        "```",
        "",
        "```sql",
        "-- DuckDB",
        "SELECT r, median(utilization_mean) FROM",
        f"  'hf://datasets/{repo_id}/adapters/*.parquet'",
        "WHERE status = 'ok' AND NOT untrained GROUP BY r ORDER BY r;",
        "",
        "-- or over the files' URLs (httpfs), e.g. the layers table by module type",
        "SELECT module_type, avg(utilization) FROM read_parquet(",
        f"  'https://huggingface.co/datasets/{repo_id}/resolve/main/layers/train-00000-of-00001.parquet')",
        "GROUP BY module_type;",
        "```",
        "",
        "## Audit version and changelog",
        "",
        "Audited by: "
        + ", ".join(
            f"gradience {v['gradience_version']} (tables v{v['dataset_version']})" for v in s["versions"]
        )
        + ".",
        "",
        *[f"- v{v}: {text}" + (" (this version)" if v == DATASET_VERSION else "") for v, text in CHANGELOG],
    ]
    if runs:
        last = runs[0]
        parts += [
            "",
            f"Last crawl: run {last['id']} started {last['started_at']} (passes: {last['passes']}).",
        ]
    return "\n".join(parts).rstrip() + "\n"
