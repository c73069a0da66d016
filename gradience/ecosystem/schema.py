"""The two tables of the dataset, as Arrow schemas, and the rows that fill them.

The schema is the published contract (``datasets``, pandas and DuckDB users select columns by
these names), so it is declared once here; ``gradience/schemas/ecosystem_*.schema.json`` and the table
in ``docs/ecosystem.md`` are generated from it (``json_schema()``), and a test checks that the
written parquet, the JSON Schema files and this module agree.

Measured columns come from the core's ``AdapterAudit.to_row()`` / ``layer_rows()``; the columns
about where an adapter was found (family, task, downloads, passes) are the crawler's.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradience.ecosystem.discovery import family_of
from gradience.ecosystem.statuses import STATUSES

if TYPE_CHECKING:
    import pyarrow as pa

    from gradience.auditor import AdapterAudit

#: Version of the dataset's tables; bump on any column change (the card's changelog says why).
DATASET_VERSION = 1
TOP_K = 4  # singular values kept per layer, as in the 0.11 study

# (name, arrow type, nullable, description); types: string, int64, float64, bool, list<string>,
# list<float64>, timestamp (UTC, milliseconds: parquet has no seconds unit).
ADAPTER_COLUMNS: list[tuple[str, str, bool, str]] = [
    ("repo_id", "string", False, "Hub model repo"),
    ("subfolder", "string", False, "adapter folder inside the repo; empty at the root"),
    ("commit", "string", True, "commit sha the audit read"),
    ("status", "string", False, "one of the fixed statuses (gradience.ecosystem.statuses.STATUSES)"),
    ("status_detail", "string", True, "error code and one line on what failed (null when ok)"),
    ("untrained", "bool", False, "ok but every update is zero (B = 0)"),
    ("base_model", "string", True, "base model id (card, else adapter_config.json)"),
    ("family", "string", True, "base-model family (llama, mistral, qwen, ...)"),
    ("task", "string", True, "pipeline tag, else PEFT task_type"),
    ("peft_type", "string", True, "PEFT type from adapter_config.json"),
    ("r", "int64", True, "nominal rank"),
    ("lora_alpha", "float64", True, "lora_alpha"),
    ("use_rslora", "bool", True, "rank-stabilised scaling"),
    ("target_modules", "list<string>", True, "target modules"),
    ("dtype", "string", True, "tensor dtypes, comma-separated"),
    ("n_layers", "int64", True, "LoRA layers"),
    ("lora_params", "int64", True, "LoRA parameters"),
    ("utilization_mean", "float64", True, "mean over layers of stable rank / r"),
    ("utilization_median", "float64", True, "median over layers of stable rank / r"),
    ("stable_rank_mean", "float64", True, "mean stable rank"),
    ("energy_rank_90_p50", "float64", True, "median over layers of the rank holding 90% of the energy"),
    ("energy_rank_90_p90", "float64", True, "90th percentile over layers of that rank"),
    ("recommended_r", "int64", True, "the audit's one recommended rank (null unless trained)"),
    ("flags", "list<string>", True, "audit flags (untrained, invalid, over_provisioned)"),
    ("downloads", "int64", True, "downloads (last 30 days) when listed"),
    ("last_modified", "timestamp", True, "repo last modified when listed"),
    ("discovered_by", "list<string>", False, "discovery passes that found it"),
    ("audited_at", "timestamp", True, "when this row was audited (UTC)"),
    ("gradience_version", "string", False, "Gradience version that audited it"),
    ("dataset_version", "int64", False, "version of these tables"),
]  # fmt: skip

LAYER_COLUMNS: list[tuple[str, str, bool, str]] = [
    ("repo_id", "string", False, "Hub model repo"),
    ("subfolder", "string", False, "adapter folder"),
    ("commit", "string", True, "commit sha"),
    ("module", "string", False, "PEFT module name"),
    ("module_type", "string", False, "attn | mlp | other"),
    ("r", "int64", False, "the layer's rank"),
    ("stable_rank", "float64", True, "stable rank of the scaled update"),
    ("utilization", "float64", True, "stable rank / r"),
    ("energy_rank_90", "int64", True, "directions holding 90% of the energy"),
    ("energy_rank_95", "int64", True, "directions holding 95% of the energy"),
    ("energy_rank_99", "int64", True, "directions holding 99% of the energy"),
    ("effective_rank", "float64", True, "entropy effective rank"),
    ("sigma_max_scaled", "float64", True, "largest singular value of the scaled update"),
    ("frob_scaled", "float64", True, "Frobenius norm of the scaled update"),
    ("top_singular_values", "list<float64>", True, f"the {TOP_K} largest singular values"),
]


def _arrow_type(name: str) -> pa.DataType:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
        "list<float64>": pa.list_(pa.float64()),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }[name]


def arrow_schema(table: str) -> pa.Schema:
    import pyarrow as pa

    cols = ADAPTER_COLUMNS if table == "adapters" else LAYER_COLUMNS
    return pa.schema([pa.field(n, _arrow_type(t), nullable=null) for n, t, null, _ in cols])


def schema_path(table: str) -> Path:
    """Where the table's JSON Schema ships: ``gradience/schemas/ecosystem_<table>.schema.json``."""
    return Path(__file__).resolve().parents[1] / "schemas" / f"ecosystem_{table}.schema.json"


def write_json_schemas() -> list[Path]:
    """Regenerate the shipped JSON Schema files from the columns above (run after a change)."""
    out = []
    for table in ("adapters", "layers"):
        path = schema_path(table)
        path.write_text(json.dumps(json_schema(table), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(path)
    return out


def json_schema(table: str) -> dict[str, Any]:
    """A JSON Schema for one row of the table (timestamps as ISO strings)."""
    cols = ADAPTER_COLUMNS if table == "adapters" else LAYER_COLUMNS
    kinds = {
        "string": {"type": "string"},
        "int64": {"type": "integer"},
        "float64": {"type": "number"},
        "bool": {"type": "boolean"},
        "list<string>": {"type": "array", "items": {"type": "string"}},
        "list<float64>": {"type": "array", "items": {"type": "number"}},
        "timestamp": {"type": "string", "format": "date-time"},
    }
    props = {}
    for name, kind, nullable, desc in cols:
        spec = dict(kinds[kind])
        if nullable:
            spec["type"] = [spec["type"], "null"]
        props[name] = {**spec, "description": desc}
    if table == "adapters":
        props["status"]["enum"] = list(STATUSES)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://gradience.dev/schemas/ecosystem/{table}/v{DATASET_VERSION}.json",
        "title": f"gradience ecosystem dataset: {table} (version {DATASET_VERSION})",
        "type": "object",
        "properties": props,
        "required": [n for n, *_ in cols],
        "additionalProperties": False,
    }


# -- rows -----------------------------------------------------------------------------------------------


def audit_rows(audit: AdapterAudit) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The measured part of an adapter row and its layer rows (what the state stores)."""
    row = audit.to_row()
    measured = {
        k: row.get(k)
        for k in (
            "commit", "base_model", "peft_type", "task_type", "r", "lora_alpha", "use_rslora", "target_modules",
            "dtype", "n_layers", "lora_params", "utilization_mean", "utilization_median", "stable_rank_mean",
            "energy_rank_90_p50", "energy_rank_90_p90", "recommended_r", "flags", "gradience_version",
        )
    }  # fmt: skip
    layer_keys = [n for n, *_ in LAYER_COLUMNS if n not in ("repo_id", "subfolder", "commit")]
    layers = [{k: lr.get(k) for k in layer_keys} for lr in audit.layer_rows(top_k=TOP_K)]
    return measured, layers


def adapter_row(rec: sqlite3.Row) -> dict[str, Any]:
    """The published row of one state record: listing metadata + status + measurements."""
    from gradience import __version__

    m: dict[str, Any] = json.loads(rec["row"]) if rec["row"] else {}
    listed = bool(rec["listed"])
    status = rec["status"] if listed else "not_found"
    detail = rec["status_detail"] if listed else "not_found: no longer listed by the Hub"
    base = rec["base_model"] or m.get("base_model")
    flags = m.get("flags")
    return {
        "repo_id": rec["repo_id"],
        "subfolder": rec["subfolder"],
        "commit": m.get("commit") or rec["audited_sha"],
        "status": status,
        "status_detail": detail,
        "untrained": bool(flags and "untrained" in flags),
        "base_model": base,
        "family": family_of(base),
        "task": rec["task"] or m.get("task_type"),
        "peft_type": m.get("peft_type"),
        "r": m.get("r"),
        "lora_alpha": float(m["lora_alpha"]) if m.get("lora_alpha") is not None else None,
        "use_rslora": m.get("use_rslora"),
        "target_modules": m.get("target_modules"),
        "dtype": m.get("dtype"),
        "n_layers": m.get("n_layers"),
        "lora_params": m.get("lora_params"),
        "utilization_mean": m.get("utilization_mean"),
        "utilization_median": m.get("utilization_median"),
        "stable_rank_mean": m.get("stable_rank_mean"),
        "energy_rank_90_p50": m.get("energy_rank_90_p50"),
        "energy_rank_90_p90": m.get("energy_rank_90_p90"),
        "recommended_r": m.get("recommended_r"),
        "flags": flags,
        "downloads": rec["downloads"],
        "last_modified": rec["last_modified"],
        "discovered_by": json.loads(rec["discovered_by"]),
        "audited_at": rec["audited_at"],
        "gradience_version": m.get("gradience_version") or __version__,
        "dataset_version": DATASET_VERSION,
    }


def layer_rows(rec: sqlite3.Row) -> list[dict[str, Any]]:
    if not rec["layers"] or not rec["listed"] or rec["status"] != "ok":
        return []
    m = json.loads(rec["row"]) if rec["row"] else {}
    common = {
        "repo_id": rec["repo_id"],
        "subfolder": rec["subfolder"],
        "commit": m.get("commit") or rec["audited_sha"],
    }
    return [{**common, **lr} for lr in json.loads(rec["layers"])]
