"""Where one adapter stands among the public ones: all, the same nominal rank, the same family.

"Higher utilisation than 73% of public r=16 adapters" is the context a single audit lacks; the
population is the dataset's (trained ``ok`` adapters), and the adapter itself is left out when
it is one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradience.ecosystem.discovery import family_of
from gradience.ecosystem.stats import POP, connect
from gradience.errors import UntrainedAdapterError


def place(folder: Path, *, utilization: float, r: int | None, family: str | None,
          exclude: tuple[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Share of the population strictly below ``utilization``: overall, same r, same family."""
    con = connect(folder)
    try:
        groups: dict[str, tuple[str, list[Any]]] = {"all": ("TRUE", [])}
        if r is not None:
            groups["same_r"] = ("r = ?", [r])
        if family is not None:
            groups["same_family"] = ("family = ?", [family])
        skip, skip_args = ("NOT (repo_id = ? AND subfolder = ?)", list(exclude)) if exclude else ("TRUE", [])
        out: dict[str, Any] = {}
        for name, (where, args) in groups.items():
            n, below = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE utilization_mean < ?) FROM {POP}"
                f" WHERE {where} AND {skip} AND utilization_mean IS NOT NULL",
                [utilization, *args, *skip_args],
            ).fetchone()
            out[name] = {"n": int(n), "below": int(below), "percentile": 100.0 * below / n if n else None}
        return out
    finally:
        con.close()


def percentile(adapter: str | Path, folder: Path, *, options: Any = None) -> dict[str, Any]:
    """Audit ``adapter`` (folder or Hub reference) and place it in the dataset at ``folder``."""
    import gradience

    audit = gradience.audit(adapter, options=options)
    row = audit.to_row()
    if "untrained" in (row.get("flags") or []) or row.get("utilization_mean") is None:
        raise UntrainedAdapterError("the adapter is untrained (B = 0): it has no utilisation to compare")
    family = family_of(row.get("base_model"))
    exclude = (row["repo_id"], row.get("subfolder") or "") if row.get("repo_id") else None
    return {
        "adapter": str(adapter),
        "utilization_mean": row["utilization_mean"],
        "r": row.get("r"),
        "family": family,
        "among": place(
            folder, utilization=row["utilization_mean"], r=row.get("r"), family=family, exclude=exclude
        ),
    }


def format_percentile(result: dict[str, Any]) -> str:
    u = result["utilization_mean"]
    labels = {
        "all": "public adapters",
        "same_r": f"public r={result['r']} adapters",
        "same_family": f"public {result['family']} adapters",
    }
    lines = [f"{result['adapter']}: utilisation {u:.3f}"]
    for name, g in result["among"].items():
        if g["n"]:
            lines.append(f"  higher than {g['percentile']:.0f}% of {g['n']} {labels[name]}")
        else:
            lines.append(f"  no {labels[name]} in the dataset to compare with")
    return "\n".join(lines)
