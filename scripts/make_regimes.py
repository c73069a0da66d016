"""Record the regime-study fixture: 4 hyperparameter regimes × 5 seeds of a small CPU model.

Each run trains a 16→32→4 MLP on fresh batches from a random teacher network (10% label noise;
the teacher changes with the seed) for 200 steps and writes v1 telemetry with a ``train_step``
record every step, a ``geometry`` record (weight norm, gradient norm, spectral complexity of
the two weight matrices) every 2 steps and an ``eval`` record every 20 steps — the input
``gradience regimes`` reads, in the layout ``tests/data/regimes/<regime>/seed<k>.jsonl``.

The regimes differ in optimiser and learning rate (see ``REGIMES``). Run (about 20 s on one CPU
thread; the test suite never runs it):

    .venv/bin/python scripts/make_regimes.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_telemetry import train_teacher_task  # a sibling script

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "regimes"
SEEDS = range(5)
COMMON = {"steps": 200, "batch": 128, "hidden": 32, "eval_every": 20, "geometry_every": 2}
REGIMES: dict[str, dict] = {
    "sgd-lr0.05": {"optimizer": "sgd", "lr": 0.05},
    "sgd-lr0.5-momentum": {"optimizer": "sgd", "lr": 0.5, "momentum": 0.9},
    "adam-lr1e-3": {"optimizer": "adam", "lr": 1e-3},
    "adam-lr1e-2-wd0.1": {"optimizer": "adam", "lr": 1e-2, "weight_decay": 0.1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per regime (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    if args.out.exists():
        shutil.rmtree(args.out)
    for regime, settings in REGIMES.items():
        for seed in range(args.seeds):
            path = args.out / regime / f"seed{seed}.jsonl"
            train_teacher_task(path, run_id=f"{regime}-seed{seed}", seed=seed, **COMMON, **settings)
    size = sum(p.stat().st_size for p in args.out.rglob("*.jsonl"))
    print(f"{args.out}: {len(REGIMES)} regimes × {args.seeds} seeds, {size / 1024:.0f} KiB, "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
