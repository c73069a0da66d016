"""Whole-process benchmark of ``gradience merge-audit`` and ``gradience merge`` on two
Llama-2-7B-shaped LoRA adapters.

Method
------
It shares its adapter generator and its measurement code with ``bench_audit.py`` (imported
from it, see that file's docstring for the details).

1. *Adapters.* Two r=16 float32 PEFT adapters with the tensor layout of a Llama-2-7B adapter
   (the ``r16-fp32`` variant of ``bench_audit.py``: 32 layers × 7 modules, 224 LoRA pairs,
   ~160 MB each), generated with two different seeds (``SEED + 1`` for A, ``SEED + 2`` for
   B), so the two adapters are unrelated (nearly orthogonal subspaces: every layer SAFE).
   For the memory-vs-layers check, ``-8l`` variants hold the first 8 of the 32 decoder
   layers (56 pairs, ~40 MB), byte for byte the same tensors as in the full adapters. All
   four are cached in the work dir (default ``benchmarks/.work/``, git-ignored).

2. *merge-audit*, each contender a separate process, run in the work dir with stdout
   captured to a temporary file:

   * ``gradience``: ``gradience merge-audit A B --json`` from this project's venv;
   * ``gradience-0.11``: ``gradience merge-audit --adapter-a A --adapter-b B --json`` from the
     0.11.0 venv (``--v011``; ``--skip-011`` skips it). Without ``--output-dir`` 0.11 writes
     no files, so both do the same work: read both adapters, compare, print JSON.

   One untimed warm-up run each (page cache, ``.pyc`` files, and a check of the output:
   valid JSON with one ``per_layer`` entry per LoRA pair, and both versions' mean subspace
   overlap agreeing), then ``--repeat`` rounds in an order that rotates from round to round.
   We report the median wall time and the maximum peak RSS. Target: 0.11's median wall
   time ≥ 4.5 × ours.

3. *merge*, one run each (minutes for the dense strategies; ``--repeat`` does not apply),
   ``--skip-dense`` leaves out TIES and DARE:

   * ``gradience merge A B --out OUT --strategy linear --energy 0.99``, target < 30 s;
   * ``--strategy ties --density 0.5 --max-rank 32`` and ``--strategy dare_ties --density
     0.5 --max-rank 32``, target < 10 min each;
   * linear and ties again on the 8-layer adapters: peak RSS should not grow with the
     number of layers (the merge works one layer at a time). Target: peak RSS with 32
     layers ≤ 1.25 × peak RSS with 8 layers; we also report the slope in MiB per layer.

   ``--json`` is added to every merge command to check its report (one entry per layer,
   the output rank, the worst re-factoring residual); the output folder is checked
   (``adapter_config.json`` and the safetensors file exist), sized, and deleted afterwards.
   The merges run after the merge-audit rounds, 8 layers before 32 for each strategy; the
   inputs are in the page cache by then (hot cache, as for the audits).

Measurement (``bench_audit.run_once``): wall time with ``time.perf_counter`` from just before
``Popen`` to the return of ``os.wait4`` on that child; peak RSS and user+system CPU time from
the child's own ``rusage`` (``os.wait4``). BLAS/OpenMP pools are pinned to one thread in every
child by default (``--blas-threads``), as in ``bench_audit.py``.

Results go to ``benchmarks/results/merge.json`` and ``benchmarks/results/merge.md`` (machine,
versions, date, load average) and the tables are printed.

Usage::

    python benchmarks/bench_merge.py [--repeat 3] [--skip-011] [--skip-dense] [--v011 PATH]
        [--workdir DIR] [--blas-threads N] [--gradience EXE] [--results DIR]

Exit status 0 when no target FAILs (SKIP is fine), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit import (  # benchmarks/ is not a package: found via sys.path
    MODULES,
    SEED,
    SYSTEM_V011,
    THREAD_VARS,
    VARIANTS,
    Cell,
    Run,
    add_common_arguments,
    check_common_arguments,
    ensure_adapter,
    ensure_v011,
    machine_info,
    package_versions,
    run_once,
    write_results,
)

VARIANT = VARIANTS["r16"]
SEEDS = {"a": SEED + 1, "b": SEED + 2}
FULL_LAYERS = 32
FEW_LAYERS = 8

# Targets.
MIN_SPEEDUP_VS_011 = 4.5
MAX_LINEAR_S = 30.0
MAX_DENSE_S = 600.0
MAX_RSS_GROWTH = 1.25  # peak RSS at 32 layers / at 8 layers

#: strategy -> extra ``gradience merge`` flags (the ones the targets name).
MERGE_FLAGS: dict[str, tuple[str, ...]] = {
    "linear": ("--energy", "0.99"),
    "ties": ("--density", "0.5", "--max-rank", "32"),
    "dare_ties": ("--density", "0.5", "--max-rank", "32"),
}


def adapter_pair(workdir: Path, layers: int) -> tuple[Path, Path]:
    """The (A, B) adapter folders with ``layers`` decoder layers, generated if not cached."""
    suffix = "" if layers == FULL_LAYERS else f"-{layers}l"
    a, b = (
        ensure_adapter(
            workdir, VARIANT, seed=SEEDS[ab], layers=layers, name=f"merge-{ab}-{VARIANT.name}{suffix}"
        )
        for ab in "ab"
    )
    return a, b


# --------------------------------------------------------------------------- merge-audit


def parse_json_stdout(stdout: bytes) -> dict[str, Any]:
    """The JSON object a CLI printed (skipping any progress lines before it)."""
    text = stdout.decode()
    if not text.lstrip().startswith("{"):
        text = text[text.index("\n{") + 1 :]
    data = json.loads(text)
    if not isinstance(data, dict):
        raise SystemExit(f"expected a JSON object, got {type(data).__name__}")
    return data


def check_audit(contender: str, stdout: bytes, n_pairs: int) -> dict[str, Any]:
    """Sanity-check a merge-audit warm-up output; return its aggregate numbers."""
    data = parse_json_stdout(stdout)
    n = len(data.get("per_layer", []))
    if n != n_pairs:
        raise SystemExit(f"{contender} merge-audit compared {n} layers, expected {n_pairs}")
    agg = data["aggregate"]
    return {
        "layers": n,
        "overall_verdict": str(agg["overall_verdict"]).upper(),
        "mean_overlap": float(agg["mean_overlap"]),
        "mean_agreement": float(agg["mean_agreement"]),
    }


# --------------------------------------------------------------------------- merge


@dataclass
class MergeJob:
    strategy: str
    layers: int
    argv: list[str]
    out_dir: Path
    run: Run | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.strategy}/{self.layers}"


def merge_job(gradience: str, workdir: Path, strategy: str, layers: int) -> MergeJob:
    a, b = adapter_pair(workdir, layers)
    out = workdir / "merged" / f"{strategy}-{layers}l"
    argv = [gradience, "merge", str(a), str(b), "--out", str(out), "--strategy", strategy]
    return MergeJob(strategy, layers, [*argv, *MERGE_FLAGS[strategy], "--json"], out)


def run_merge(job: MergeJob, env: dict[str, str], cwd: Path) -> None:
    """Run one merge into a fresh output folder, check and size the result, delete it."""
    shutil.rmtree(job.out_dir, ignore_errors=True)
    job.run, out = run_once(job.argv, env, cwd, capture_stdout=True)
    data = parse_json_stdout(out)
    n_pairs = job.layers * len(MODULES)
    layers = data.get("layers", [])
    weights = job.out_dir / "adapter_model.safetensors"
    if len(layers) != n_pairs or not weights.exists() or not (job.out_dir / "adapter_config.json").exists():
        raise SystemExit(
            f"merge {job.key}: expected {n_pairs} merged layers and a PEFT adapter in {job.out_dir}"
        )
    ranks = [int(x["rank"]) for x in layers]
    job.report = {
        "layers": len(layers),
        "r": data["r"],
        "rank_min": min(ranks),
        "rank_max": max(ranks),
        "residual_max": max(float(x["residual"]) for x in layers),
        "out_bytes": weights.stat().st_size,
    }
    shutil.rmtree(job.out_dir, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def evaluate(
    cells: dict[str, Cell], jobs: dict[str, MergeJob]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Ratios and the PASS/FAIL/SKIP verdict of each target."""
    ratios: dict[str, float] = {}
    if "gradience" in cells and "gradience-0.11" in cells:
        ratios["v011_over_gradience"] = cells["gradience-0.11"].median_s / cells["gradience"].median_s
    for strategy in ("linear", "ties"):
        few, full = jobs.get(f"{strategy}/{FEW_LAYERS}"), jobs.get(f"{strategy}/{FULL_LAYERS}")
        if few and full and few.run and full.run:
            ratios[f"{strategy}_rss_{FULL_LAYERS}_over_{FEW_LAYERS}"] = (
                full.run.maxrss_kib / few.run.maxrss_kib
            )
            ratios[f"{strategy}_rss_mib_per_layer"] = (
                (full.run.maxrss_kib - few.run.maxrss_kib) / 1024 / (FULL_LAYERS - FEW_LAYERS)
            )

    targets: list[dict[str, Any]] = []

    def add(what: str, value: float | None, ok: bool | None) -> None:
        targets.append({"what": what, "value": value, "result": verdict(None if value is None else ok)})

    val = ratios.get("v011_over_gradience")
    add(f"merge-audit: gradience ≥ {MIN_SPEEDUP_VS_011}× faster than 0.11", val,
        val is not None and val >= MIN_SPEEDUP_VS_011)  # fmt: skip
    for strategy, limit in (("linear", MAX_LINEAR_S), ("ties", MAX_DENSE_S), ("dare_ties", MAX_DENSE_S)):
        job = jobs.get(f"{strategy}/{FULL_LAYERS}")
        val = job.run.wall_s if job and job.run else None
        add(
            f"merge {strategy} ({FULL_LAYERS} layers): wall < {limit:.0f} s",
            val,
            val is not None and val < limit,
        )
    for strategy in ("linear", "ties"):
        val = ratios.get(f"{strategy}_rss_{FULL_LAYERS}_over_{FEW_LAYERS}")
        add(f"merge {strategy}: peak RSS {FULL_LAYERS} layers ≤ {MAX_RSS_GROWTH} × {FEW_LAYERS} layers", val,
            val is not None and val <= MAX_RSS_GROWTH)  # fmt: skip
    return ratios, targets


def render_markdown(
    cells: dict[str, Cell],
    jobs: dict[str, MergeJob],
    ratios: dict[str, float],
    targets: list[dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    lines = [
        f"merge-audit, two {VARIANT.name} adapters ({FULL_LAYERS} layers, {FULL_LAYERS * len(MODULES)} pairs):",
        "",
        "| contender | median wall s | runs (s) | median CPU s | peak RSS MiB | 0.11 / gradience |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for cell in cells.values():
        vs = ratios.get("v011_over_gradience")
        vs_text = f"{vs:.2f}×" if vs is not None and cell.contender == "gradience" else ""
        runs = ", ".join(f"{x.wall_s:.2f}" for x in cell.runs)
        lines.append(
            f"| {cell.contender} | {cell.median_s:.3f} | {runs} | {cell.median_cpu_s:.2f} | "
            f"{cell.peak_rss_mib:.0f} | {vs_text} |"
        )
    lines += [
        "",
        "merge (one run each; `--json` added to check the report):",
        "",
        "| strategy | flags | layers | wall s | CPU s | peak RSS MiB | out r (min–max) | max residual | out MB |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for job in jobs.values():
        if job.run is None:
            continue
        rep = job.report
        lines.append(
            f"| {job.strategy} | `{' '.join(MERGE_FLAGS[job.strategy])}` | {job.layers} | {job.run.wall_s:.2f} | "
            f"{job.run.cpu_s:.2f} | {job.run.maxrss_kib / 1024:.0f} | {rep['r']} ({rep['rank_min']}–{rep['rank_max']}) | "
            f"{rep['residual_max']:.3f} | {rep['out_bytes'] / 1e6:.0f} |"
        )
    mem_rows = []
    for strategy in ("linear", "ties"):
        few, full = jobs.get(f"{strategy}/{FEW_LAYERS}"), jobs.get(f"{strategy}/{FULL_LAYERS}")
        if few and full and few.run and full.run:
            mem_rows.append(
                f"| {strategy} | {few.run.maxrss_kib / 1024:.0f} | {full.run.maxrss_kib / 1024:.0f} | "
                f"{ratios[f'{strategy}_rss_{FULL_LAYERS}_over_{FEW_LAYERS}']:.2f}× | "
                f"{ratios[f'{strategy}_rss_mib_per_layer']:.1f} |"
            )
    if mem_rows:
        lines += [
            "",
            "Peak RSS against the number of layers:",
            "",
            f"| strategy | {FEW_LAYERS} layers MiB | {FULL_LAYERS} layers MiB | ratio | MiB per extra layer |",
            "|---|---:|---:|---:|---:|",
            *mem_rows,
        ]
    lines += ["", "Targets:", ""]
    for t in targets:
        val = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"- **{t['result']}** {t['what']}: {val}")
    m = meta["machine"]
    audit = meta.get("audit_outputs", {})
    lines += [
        "",
        "Warm-up merge-audit outputs: "
        + "; ".join(
            f"{k}: {v['overall_verdict']}, mean overlap {v['mean_overlap']:.4f}, "
            f"mean agreement {v['mean_agreement']:.4f}"
            for k, v in audit.items()
        )
        + ".",
        f"Machine: {m['cpu_model']}, nproc {m['nproc']} (affinity {m['affinity']}), "
        f"{m['mem_total_gib']} GiB RAM, Linux {m['kernel']}; Python {m['python']}, numpy {m['numpy']}"
        f"; child thread env: {m['thread_env'] or 'inherited defaults'}.",
        f"Versions: {'; '.join(f'{k}: {v}' for k, v in meta['versions'].items())}.",
        f"Date: {meta['date']}. merge-audit: {meta['repeat']} timed rounds (round-robin, rotating order) "
        f"after one warm-up run each; merges: one run each; hot page cache. Load average before/after: "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Whole-process benchmark: gradience merge-audit vs 0.11, and gradience merge "
        "(linear, TIES, DARE-TIES) time and peak RSS.",
    )
    add_common_arguments(
        p, repeat_help="timed merge-audit rounds (default 3)", results_name="merge.json/merge.md"
    )
    p.add_argument("--skip-dense", action="store_true", help="skip the TIES and DARE-TIES merges")
    return check_common_arguments(p, p.parse_args(argv))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.blas_threads > 0:
        env.update({k: str(args.blas_threads) for k in THREAD_VARS})
    a, b = adapter_pair(workdir, FULL_LAYERS)
    n_pairs = FULL_LAYERS * len(MODULES)

    cells = {
        "gradience": Cell(
            VARIANT.name, "gradience", [args.gradience, "merge-audit", str(a), str(b), "--json"]
        )
    }
    versions = {"gradience": package_versions(str(Path(args.gradience).parent / "python"))}
    if not args.skip_011:
        v011_dir = args.v011
        if v011_dir is None:
            v011_dir = SYSTEM_V011 if (SYSTEM_V011 / "bin" / "gradience").exists() else workdir / "venv-011"
        exe = ensure_v011(v011_dir.resolve())
        cells["gradience-0.11"] = Cell(
            VARIANT.name,
            "gradience-0.11",
            [str(exe), "merge-audit", "--adapter-a", str(a), "--adapter-b", str(b), "--json"],
        )
        versions["gradience-0.11"] = f"{package_versions(str(exe.parent / 'python'))} ({exe})"

    strategies = ["linear"] if args.skip_dense else ["linear", "ties", "dare_ties"]
    jobs: dict[str, MergeJob] = {}
    for strategy in strategies:
        for layers in (FEW_LAYERS, FULL_LAYERS) if strategy != "dare_ties" else (FULL_LAYERS,):
            job = merge_job(args.gradience, workdir, strategy, layers)
            jobs[job.key] = job

    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    log(f"merge-audit warm-up ({len(cells)} runs) ...")
    audit_outputs: dict[str, dict[str, Any]] = {}
    for name, cell in cells.items():
        run, out = run_once(cell.argv, env, workdir, capture_stdout=True)
        audit_outputs[name] = check_audit(name, out, n_pairs)
        log(f"  {name:15} {run.wall_s:7.2f} s  {audit_outputs[name]}")
    if len(audit_outputs) == 2:
        x, y = (v["mean_overlap"] for v in audit_outputs.values())
        if abs(x - y) > 1e-3:
            raise SystemExit(f"the two merge-audits disagree on the mean overlap: {x} vs {y}")

    keys = list(cells)
    for i in range(args.repeat):
        shift = i % len(keys)
        log(f"merge-audit round {i + 1}/{args.repeat} ...")
        for key in keys[shift:] + keys[:shift]:
            run, _ = run_once(cells[key].argv, env, workdir)
            cells[key].runs.append(run)
            log(f"  {key:15} {run.wall_s:7.2f} s  cpu {run.cpu_s:6.2f} s  {run.maxrss_kib / 1024:5.0f} MiB")

    for job in jobs.values():
        log(f"merge {job.strategy} ({job.layers} layers) ...")
        run_merge(job, env, workdir)
        assert job.run is not None
        log(
            f"  {job.run.wall_s:7.2f} s  cpu {job.run.cpu_s:6.2f} s  {job.run.maxrss_kib / 1024:5.0f} MiB  "
            f"r {job.report['r']}, max residual {job.report['residual_max']:.3f}"
        )
    shutil.rmtree(workdir / "merged", ignore_errors=True)
    loadavg_after = [round(x, 2) for x in os.getloadavg()]

    ratios, targets = evaluate(cells, jobs)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(env),
        "versions": versions,
        "repeat": args.repeat,
        "blas_threads": args.blas_threads or "inherited",
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "audit_outputs": audit_outputs,
    }
    adapters = {}
    for layers in (FULL_LAYERS, FEW_LAYERS):
        for ab, path in zip("ab", adapter_pair(workdir, layers), strict=True):
            adapters[path.name] = {
                **asdict(VARIANT),
                "seed": SEEDS[ab],
                "layers": layers,
                "path": str(path),
                "bytes": (path / "adapter_model.safetensors").stat().st_size,
            }
    results = {
        **meta,
        "adapters": adapters,
        "merge_audit": [
            {
                "contender": c.contender,
                "argv": c.argv,
                "median_wall_s": c.median_s,
                "median_cpu_s": c.median_cpu_s,
                "peak_rss_mib": c.peak_rss_mib,
                "runs": [asdict(r) for r in c.runs],
            }
            for c in cells.values()
        ],
        "merges": [
            {
                "strategy": j.strategy,
                "layers": j.layers,
                "argv": j.argv,
                **(asdict(j.run) if j.run else {}),
                "peak_rss_mib": j.run.maxrss_kib / 1024 if j.run else None,
                "output": j.report,
            }
            for j in jobs.values()
        ],
        "ratios": ratios,
        "targets": targets,
    }
    return write_results(args.results, "merge", results, render_markdown(cells, jobs, ratios, targets, meta))


if __name__ == "__main__":
    sys.exit(main())
