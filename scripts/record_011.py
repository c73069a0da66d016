"""Record gradience 0.11.0's audit numbers once, for side-by-side tests.

The test suite never installs 0.11 (it needs torch and ~1.2 GB); this script runs it from a
separate virtualenv and keeps only the numbers the tests compare, in
``tests/data/gradience011/<name>.json``.

    python3 -m venv /tmp/v011 && /tmp/v011/bin/pip install torch==2.13.0 && \\
        /tmp/v011/bin/pip install gradience==0.11.0
    python scripts/record_011.py --v011 /tmp/v011
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = [
    "total_lora_params", "n_layers", "stable_rank_mean", "stable_rank_median",
    "stable_rank_weighted_mean", "effective_rank_mean", "utilization_mean", "energy_rank_90_p50",
    "energy_rank_90_p90", "suggested_r_global_median", "suggested_r_global_90", "by_type",
]  # fmt: skip
ROW = [
    "name", "r", "alpha", "stable_rank", "effective_rank", "utilization", "sigma_max", "frob_sq",
    "energy_rank_90", "energy_rank_95", "energy_rank_99",
]  # fmt: skip


def targets() -> dict[str, Path]:
    found = {}
    corpus = ROOT.parent / "shared" / "corpus"
    for d in sorted(corpus.iterdir()) if corpus.is_dir() else []:
        if (d / "adapter_config.json").exists():
            found[f"corpus-{d.name}"] = d
    for d in sorted((ROOT / "examples").iterdir()):
        if (d / "adapter_config.json").exists():
            found[f"examples-{d.name}"] = d
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v011", type=Path, required=True, help="virtualenv with gradience==0.11.0")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gradience011")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    exe = args.v011 / "bin" / "gradience"
    for name, folder in targets().items():
        p = subprocess.run(
            [str(exe), "audit", "--peft-dir", str(folder), "--json", "--layers"],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            print(f"{name}: 0.11 failed ({p.stderr.strip().splitlines()[-1:]}); skipped")
            continue
        # 0.11 may print progress lines before the JSON object (a known defect)
        data = json.loads(p.stdout[p.stdout.index("{") :])
        kept = {k: data.get(k) for k in SUMMARY}
        kept["layer_rows"] = [{k: row.get(k) for k in ROW} for row in data["layer_data"]["layer_rows"]]
        kept["recorded_from"] = {"gradience": "0.11.0", "path": str(folder.relative_to(folder.parents[1]))}
        (args.out / f"{name}.json").write_text(json.dumps(kept, indent=1) + "\n")
        print(f"{name}: {kept['n_layers']} layers recorded")
    record_merge_audits(exe, args.out)


MERGE_PAIRS = ("merge-duplicate", "merge-related", "merge-conflict")


def record_merge_audits(exe: Path, out: Path) -> None:
    """0.11's merge-audit on the bundled example pairs: per-layer overlap, agreement, ratios."""
    for pair in MERGE_PAIRS:
        a, b = ROOT / "examples" / f"{pair}-a", ROOT / "examples" / f"{pair}-b"
        if not (a.is_dir() and b.is_dir()):
            continue
        p = subprocess.run(
            [str(exe), "merge-audit", "--adapter-a", str(a), "--adapter-b", str(b), "--json"],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            print(f"{pair}: 0.11 merge-audit failed; skipped")
            continue
        data = json.loads(p.stdout[p.stdout.index("{") :])
        kept = {
            "aggregate": {
                k: data["aggregate"][k] for k in ("overall_verdict", "mean_overlap", "mean_agreement")
            },
            "per_layer": [
                {
                    "layer": row["layer_name"],
                    "verdict": row["verdict"],
                    **{
                        k: row["metrics"].get(k)
                        for k in (
                            "mean_overlap",
                            "directional_agreement",
                            "magnitude_ratio",
                            "frobenius_ratio",
                        )
                    },
                }
                for row in data["per_layer"]
            ],
            "recorded_from": {"gradience": "0.11.0", "pair": pair},
        }
        (out / f"merge-{pair}.json").write_text(json.dumps(kept, indent=1) + "\n")
        print(f"merge {pair}: {len(kept['per_layer'])} layers recorded")


if __name__ == "__main__":
    main()
