"""The bench protocol: train a probe, audit it, then truncate and retrain every candidate
over several seeds and judge each by its worst seed.

A suggestion from the spectrum is not a guarantee; the worst seed is what a user would
ship on a bad day, so the verdict uses it, not the mean. Every unit of work is cached
(see :mod:`gradience.bench.cache`), so this function is also how a finished bench is
re-reported and how a killed one resumes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradience.bench.cache import ResultCache, key
from gradience.bench.candidates import Candidate, from_audit, layer_dims
from gradience.bench.config import BenchConfig
from gradience.bench.tasks import Task

MODES = ("truncated", "retrained")


@dataclass
class BenchStats:
    """What this call did (not part of the report, which must not depend on it)."""

    units: int = 0
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


@dataclass
class BenchResult:
    report: dict[str, Any]
    stats: BenchStats = field(default_factory=BenchStats)


Progress = Callable[[int, int, str], None]


def run_bench(
    config: BenchConfig,
    out: str | Path,
    *,
    task: Task | None = None,
    progress: Progress | None = None,
    on_unit: Callable[[str, dict[str, Any]], None] | None = None,
) -> BenchResult:
    """Run (or resume, or re-report) a bench; results are cached under ``out``.

    Args:
        config: the task, seeds, probe rank, tolerance and training settings.
        out: cache folder; a rerun with the same config computes nothing.
        task: a ready task (default: the one ``config`` names).
        progress: ``progress(done, total, label)`` after every unit of the grid.
        on_unit: called with a unit's label and result after it is computed and stored.

    Returns:
        The report (``gradience.bench/v1``) and what this call computed.
    """
    from gradience.auditor import audit

    started = time.perf_counter()
    task = task or config.make_task()
    if config.lr is None:
        config = replace(config, lr=task.default_lr)
    cache = ResultCache(Path(out))
    stats = BenchStats()
    fp = {"task": task.fingerprint(), "train": config.training()}
    seeds = list(range(config.seeds))
    probe_ranks_key = key(fp, "probe", config.probe_rank)

    def done(label: str, result: dict[str, Any], computed: bool) -> None:
        stats.units += 1
        if computed:
            stats.computed += 1
            if on_unit is not None:
                on_unit(label, result)
        else:
            stats.cached += 1
        if progress is not None:
            progress(stats.units, total, label)

    total = 0  # unknown until the first probe's audit has proposed the candidates

    def probe(seed: int) -> tuple[dict[str, Any], Path]:
        k = key(probe_ranks_key, seed)
        folder = cache.adapter_dir(k)
        hit = cache.get(k)
        if hit is not None and (folder / "adapter_config.json").is_file():
            done(f"probe seed {seed}", hit, False)
            return hit, folder
        model, seconds = _train(task, config.probe_rank, seed, config)
        metric = task.evaluate(model)
        if folder.exists():
            shutil.rmtree(folder)
        model.save_pretrained(str(folder))
        result = {"seed": seed, "metric": metric, "seconds": round(seconds, 2)}
        cache.put(k, result)
        done(f"probe seed {seed}", result, True)
        return result, folder

    probes = {}
    first, first_dir = probe(seeds[0])
    probes[seeds[0]] = (first, first_dir)
    probe_audit = audit(str(first_dir), policy=config.policy)
    candidates = from_audit(probe_audit, config.probe_rank)
    dims = layer_dims(probe_audit)
    distinct = {_ranks_key(c.ranks) for c in candidates}
    total = len(seeds) * (1 + len(config.modes) * len(distinct))

    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    for seed in seeds:
        if seed not in probes:
            probes[seed] = probe(seed)
        for rk in sorted(distinct):
            ranks = next(c.ranks for c in candidates if _ranks_key(c.ranks) == rk)
            for mode in config.modes:
                k = key(fp, mode, rk, seed)
                hit = cache.get(k)
                label = f"{mode} {_short(ranks)} seed {seed}"
                if hit is not None:
                    results[(rk, mode, seed)] = hit
                    done(label, hit, False)
                    continue
                if mode == "retrained":
                    model, seconds = _train(task, ranks, seed, config)
                else:
                    model, seconds = _truncated(task, probes[seed][1], ranks, cache, k, config)
                result = {"seed": seed, "metric": task.evaluate(model), "seconds": round(seconds, 2)}
                cache.put(k, result)
                results[(rk, mode, seed)] = result
                done(label, result, True)

    meta_key = key(fp, "task")
    meta = cache.get(meta_key)
    if meta is None:
        meta = {"chance": task.chance()}
        cache.put(meta_key, meta)
    report = build_report(
        config, task, meta, probe_audit, {s: p[0] for s, p in probes.items()}, candidates, dims, results
    )
    stats.seconds = time.perf_counter() - started
    return BenchResult(report, stats)


def _train(task: Task, ranks: dict[str, int] | int, seed: int, config: BenchConfig) -> tuple[Any, float]:
    from gradience.bench.train import train

    _threads(task, config)
    return train(task, ranks, seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr)


def _truncated(
    task: Task, probe_dir: Path, ranks: dict[str, int], cache: ResultCache, k: str, config: BenchConfig
) -> tuple[Any, float]:
    """The probe's optimal truncation to ``ranks`` (no training), loaded for evaluation."""
    from gradience.bench.train import load
    from gradience.compression import compress

    start = time.perf_counter()
    _threads(task, config)
    out = cache.adapter_dir(k)
    if out.exists():
        shutil.rmtree(out)
    compress(str(probe_dir), str(out), ranks=ranks)
    model = load(task, out)
    seconds = time.perf_counter() - start
    if not os.environ.get("GRADIENCE_BENCH_KEEP_ADAPTERS"):
        shutil.rmtree(out, ignore_errors=True)  # cheap to redo, and only the result is cached
    return model, seconds


def _threads(task: Task, config: BenchConfig) -> None:
    """Few threads on a shared CPU: tiny matrices gain nothing from more, and oversubscribed
    OpenMP threads spin (a 300-step run went from 10 s to minutes on a loaded 2-core box)."""
    import torch

    if config.threads and task.device == "cpu" and torch.get_num_threads() != config.threads:
        torch.set_num_threads(config.threads)


def _ranks_key(ranks: dict[str, int]) -> str:
    return key(sorted(ranks.items()))


def _short(ranks: dict[str, int]) -> str:
    values = sorted(set(ranks.values()))
    return f"r={values[0]}" if len(values) == 1 else f"r={values[0]}–{values[-1]}"


def _mode_summary(
    per_seed: list[dict[str, Any]], probe: dict[int, dict[str, Any]], tolerance: float
) -> dict[str, Any]:
    rows = [{**r, "delta": r["metric"] - probe[r["seed"]]["metric"]} for r in per_seed]
    deltas = [r["delta"] for r in rows]
    worst = min(deltas)
    return {
        "per_seed": rows,
        "mean": sum(r["metric"] for r in rows) / len(rows),
        "mean_delta": sum(deltas) / len(deltas),
        "worst_delta": worst,
        "verdict": "pass" if worst >= tolerance else "fail",
    }


def build_report(
    config: BenchConfig,
    task: Task,
    meta: dict[str, Any],
    probe_audit: Any,
    probes: dict[int, dict[str, Any]],
    candidates: list[Candidate],
    dims: dict[str, int],
    results: dict[tuple[str, str, int], dict[str, Any]],
) -> dict[str, Any]:
    """The ``gradience.bench/v1`` report: a pure function of cached results."""
    from gradience import __version__
    from gradience.auditor import Recommendation

    seeds = sorted(probes)
    probe_params = sum(config.probe_rank * d for d in dims.values())
    probe_rows = [probes[s] for s in seeds]
    rows = []
    for c in candidates:
        rk = _ranks_key(c.ranks)
        params = c.params(dims)
        modes = {
            mode: _mode_summary([results[(rk, mode, s)] for s in seeds], probes, config.tolerance)
            for mode in config.modes
        }
        decisive = "retrained" if "retrained" in modes else config.modes[0]
        rows.append(
            {
                "name": c.name,
                "description": c.description,
                "control": c.control,
                "r": c.r,
                "rank_pattern": c.rank_pattern,
                "ranks": dict(c.ranks),
                "lora_params": params,
                "param_ratio": params / probe_params,
                "param_reduction": 1 - params / probe_params,
                "modes": modes,
                "verdict": modes[decisive]["verdict"],
            }
        )
    passing = [
        r for r in rows if r["verdict"] == "pass" and not r["control"] and r["lora_params"] < probe_params
    ]
    best = None
    if passing:
        b = min(
            passing,
            key=lambda r: (
                r["lora_params"],
                -r["modes"]["retrained" if "retrained" in r["modes"] else config.modes[0]]["mean"],
            ),
        )
        rec = Recommendation(
            "ok", probe_audit.policy, b["r"], config.probe_rank, b["ranks"], b["rank_pattern"], ""
        )
        best = {
            "candidate": b["name"],
            "r": b["r"],
            "rank_pattern": b["rank_pattern"],
            "lora_params": b["lora_params"],
            "param_reduction": b["param_reduction"],
            "lora_config": rec.lora_config(),
        }
    summary = probe_audit.summary()
    return {
        "schema": "gradience.bench/v1",
        "gradience_version": __version__,
        "task": {
            "name": task.name,
            "description": task.description,
            "metric": task.metric,
            "chance": meta["chance"],
            **task.info(),
        },
        "tolerance": config.tolerance,
        "config": config.public(),
        "probe": {
            "r": config.probe_rank,
            "lora_params": probe_params,
            "per_seed": probe_rows,
            "mean": sum(r["metric"] for r in probe_rows) / len(probe_rows),
            "worst": min(r["metric"] for r in probe_rows),
            "audit": {
                "policy": probe_audit.policy,
                "energy_rank_90_p50": summary["energy_rank_90_p50"],
                "energy_rank_90_p90": summary["energy_rank_90_p90"],
                "recommendation": probe_audit.recommendation.to_dict(),
            },
        },
        "candidates": rows,
        "best": best,
    }


__all__ = ["BenchResult", "BenchStats", "run_bench"]
