"""Whole-process benchmark of ``gradience audit`` on Llama-2-7B-shaped LoRA adapters.

Method
------
1. *Adapters.* Two synthetic PEFT LoRA adapters with the exact tensor layout of a
   Llama-2-7B adapter are generated once into the work dir (default
   ``benchmarks/.work/``, git-ignored) and cached between runs (a ``spec.json`` stamp
   next to the weights says what was generated; a mismatch regenerates):

   * ``r16-fp32``: r=16, float32, ~160 MB;
   * ``r64-bf16``: r=64, bfloat16, ~320 MB;
   * ``r64-bf16-deficient``: the same shapes and dtype, but every product is rank-deficient
     or has a spectrum far below the noise floor (see ``make_tensor``): compressed to r/4
     and stored at full r (q, k, v, o), steep spectra (gate, up), every other component
     pruned (down). These used to fall back to Householder QR on every layer (~5× slower
     than the realistic file); it is timed side by side with ``r64-bf16`` in the same run.

   32 layers × ``q_proj k_proj v_proj o_proj`` (4096→4096), ``gate_proj up_proj``
   (4096→11008) and ``down_proj`` (11008→4096); ``lora_A`` is [r, in], ``lora_B`` is
   [out, r]. Each factor pair gets a realistic, decaying spectrum: A is Gaussian with
   1/sqrt(in) scale (nearly orthogonal rows), B is Gaussian with its columns scaled by
   ``exp(-j / (r/4))``, times a per-layer/per-module magnitude. Every tensor has its own
   seeded RNG, so the bytes are reproducible. The safetensors file is written by hand
   (8-byte little-endian header length, JSON header, data), tensor by tensor, so
   generation needs only a few MB of RAM; bf16 is float32 rounded to nearest-even on the
   top 16 bits.

2. *Contenders*, each a separate process:

   * ``gradience``: ``gradience audit DIR --json`` from this project's venv;
   * ``yardstick``: ``benchmarks/yardstick.py`` — read, decode to float32 and form the
     two r×r Gram cores per pair; nothing else. The lower bound for any audit;
   * ``gradience-0.11``: ``gradience audit --peft-dir DIR --json`` from a venv with the
     0.11.0 release (``--v011``; created with pip if missing; ``--skip-011`` skips it).

   They run in the work dir (so no source checkout in the current directory can shadow
   an installed package), with stdout to /dev/null. Wall time is measured with ``time.perf_counter`` from just
   before ``Popen`` to the return of ``os.wait4`` on that child; peak RSS is the child's
   own ``ru_maxrss`` from ``os.wait4`` (KiB on Linux), so it is exactly that process
   (it would include children it waited for; none of the contenders spawns any). The
   child's user+system CPU time (also from ``wait4``) is recorded too: CPU time well
   above wall time means several threads; wall time well above CPU time means the child
   waited (for the disk, or for cores other processes held).

   BLAS/OpenMP thread pools: by default every child gets ``OMP_NUM_THREADS``,
   ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to 1 (``--blas-threads N`` for N,
   ``--blas-threads 0`` to leave the environment alone). The r×r Gram products are far too
   small to gain from threads, and a multi-threaded OpenBLAS whose cores are partly taken
   by other processes busy-waits: on a shared 2-vCPU machine a [64, 4096] Gram took
   0.75 ms with one thread and 2.5-370 ms with two, depending on the neighbours. Pinning
   to one thread removes that noise for all contenders alike (0.11's torch included).

3. *Schedule.* One untimed warm-up run per (adapter, contender) puts the files in the
   page cache, compiles ``.pyc`` files and checks that the output is what we expect
   (valid JSON with one entry per LoRA pair for the audits). Then ``--repeat`` rounds;
   each round runs every (adapter, contender) once, in an order that rotates from round
   to round, so slow drifts and bursts of machine noise hit all contenders alike. We
   report the median wall time and the maximum peak RSS over the rounds. All runs are
   hot-cache: this measures CPU and memory work, not the disk.

4. *Targets* (r64-bf16 unless stated): (i) gradience ≤ 1.5 × yardstick wall time;
   (ii) gradience ≥ 3× faster than 0.11 on r64-bf16 and ≥ 4.5× on r16-fp32;
   (iii) gradience peak RSS ≤ 200 MiB; (iv) gradience on r64-bf16-deficient ≤ 1.5 × its
   median wall time on r64-bf16, and (v) its peak RSS ≤ 1.1 × (the same peak memory, up to
   noise). (iv) and (v) are ratios of medians from the same interleaved rounds, so machine
   load cancels out.

Results go to ``benchmarks/results/audit.json`` and ``benchmarks/results/audit.md``
(``audit-<only>.json``/``.md`` for an ``--only`` run)
(with the machine, Python and numpy versions and the date) and the table is printed.

Usage::

    python benchmarks/bench_audit.py [--repeat 3] [--only r16|r64|r64d] [--skip-011]
        [--v011 PATH] [--workdir DIR] [--blas-threads N] [--gradience EXE] [--results DIR]

Exit status 0 when no target FAILs (SKIP is fine), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE / ".work"
RESULTS_DIR = HERE / "results"
YARDSTICK = HERE / "yardstick.py"
SYSTEM_V011 = Path("/tmp/v011")
#: Environment variables that size the BLAS/OpenMP thread pools of the children.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

BASE_MODEL = "meta-llama/Llama-2-7b-hf"
N_LAYERS = 32
HIDDEN = 4096
INTERMEDIATE = 11008
#: (block, module, in_features, out_features) for one decoder layer.
MODULES: tuple[tuple[str, str, int, int], ...] = (
    ("self_attn", "q_proj", HIDDEN, HIDDEN),
    ("self_attn", "k_proj", HIDDEN, HIDDEN),
    ("self_attn", "v_proj", HIDDEN, HIDDEN),
    ("self_attn", "o_proj", HIDDEN, HIDDEN),
    ("mlp", "gate_proj", HIDDEN, INTERMEDIATE),
    ("mlp", "up_proj", HIDDEN, INTERMEDIATE),
    ("mlp", "down_proj", INTERMEDIATE, HIDDEN),
)
N_PAIRS = N_LAYERS * len(MODULES)
SEED = 20240611
GENERATOR_VERSION = 1

# Targets.
MAX_TIME_VS_YARDSTICK = 1.5
MIN_SPEEDUP_VS_011 = {"r64-bf16": 3.0, "r16-fp32": 4.5}
MAX_RSS_MIB = 200.0
MAX_TIME_VS_PAIRED = 1.5  # deficient / realistic gradience wall time
MAX_RSS_VS_PAIRED = 1.1  # deficient / realistic gradience peak RSS


@dataclass(frozen=True)
class Variant:
    name: str
    r: int
    dtype: str  # safetensors dtype: "F32" or "BF16"
    kind: str = "realistic"  # "realistic" or "deficient" (see make_tensor)

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "F32" else 2


VARIANTS: dict[str, Variant] = {
    "r16": Variant("r16-fp32", 16, "F32"),
    "r64": Variant("r64-bf16", 64, "BF16"),
    "r64d": Variant("r64-bf16-deficient", 64, "BF16", "deficient"),
}
#: Variants whose wall time and peak RSS are compared with another variant's in the same run.
PAIRED = {"r64-bf16-deficient": "r64-bf16"}


# --------------------------------------------------------------------------- generation


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even) and return the uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return ((bits + rounding) >> np.uint32(16)).astype(np.uint16)  # inputs are finite


def tensor_specs(
    variant: Variant, layers: int = N_LAYERS
) -> list[tuple[str, tuple[int, int], int, int, int]]:
    """(name, shape, layer, module index, 0 for A / 1 for B) of the first ``layers`` decoder
    layers, sorted by name."""
    specs = []
    for layer in range(layers):
        for m, (block, module, fan_in, fan_out) in enumerate(MODULES):
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            specs.append((f"{prefix}.lora_A.weight", (variant.r, fan_in), layer, m, 0))
            specs.append((f"{prefix}.lora_B.weight", (fan_out, variant.r), layer, m, 1))
    specs.sort(key=lambda s: s[0])
    return specs


def make_tensor(
    variant: Variant, shape: tuple[int, int], layer: int, module: int, which: int, seed: int = SEED
) -> np.ndarray:
    """One LoRA factor, float32, from its own seeded RNG.

    ``deficient`` variants have products whose spectra reach far below the realistic noise
    floor, one kind per module (the cases that used to send every layer to Householder QR):
    q/k/v/o are compressed to rank r/4 and stored at full r (trailing rows of A and columns
    of B are zero); gate/up have steep spectra (B's columns decay as 2^(-j/2), so σ_r/σ₁ is
    ~1e-10); down has every other rank component pruned (zero rows of A, as AdaLoRA's
    pruned E leaves them).
    """
    rng = np.random.default_rng((seed, variant.r, layer, module, which))
    x = rng.standard_normal(shape, dtype=np.float32)
    if which == 0:  # A: [r, in], rows nearly orthonormal
        x *= np.float32(1.0 / np.sqrt(shape[1]))
    else:  # B: [out, r], columns on a geometric decay, magnitude varying by layer/module
        decay = np.exp(-np.arange(variant.r, dtype=np.float32) / np.float32(variant.r / 4))
        if variant.kind == "deficient" and MODULES[module][1] in ("gate_proj", "up_proj"):
            decay = np.float32(2.0) ** (-np.arange(variant.r, dtype=np.float32) / np.float32(2))
        magnitude = 0.02 * (0.5 + layer / N_LAYERS) * (1.0 + 0.25 * module)
        x *= (decay * np.float32(magnitude)).astype(np.float32)[None, :]
    if variant.kind == "deficient":
        name = MODULES[module][1]
        if name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if which == 0:
                x[variant.r // 4 :] = 0
            else:
                x[:, variant.r // 4 :] = 0
        elif name == "down_proj" and which == 0:
            x[1::2] = 0
    return x


def write_adapter(out_dir: Path, variant: Variant, *, seed: int = SEED, layers: int = N_LAYERS) -> None:
    """Write adapter_config.json and adapter_model.safetensors, one tensor at a time.

    ``layers < N_LAYERS`` writes the first ``layers`` decoder layers only; their bytes are the
    same as in the full adapter with the same seed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = tensor_specs(variant, layers)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, *_ in specs:
        nbytes = shape[0] * shape[1] * variant.itemsize
        header[name] = {
            "dtype": variant.dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    target = out_dir / "adapter_model.safetensors"
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, shape, layer, module, which in specs:
            x = make_tensor(variant, shape, layer, module, which, seed)
            data = float32_to_bf16_bits(x) if variant.dtype == "BF16" else x.astype("<f4", copy=False)
            f.write(data.tobytes())
    os.replace(partial, target)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": BASE_MODEL,
        "r": variant.r,
        "lora_alpha": 2 * variant.r,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "target_modules": [m for _, m, _, _ in MODULES],
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def ensure_adapter(
    workdir: Path, variant: Variant, *, seed: int = SEED, layers: int = N_LAYERS, name: str | None = None
) -> Path:
    """Return the adapter folder for ``variant`` (``workdir / (name or variant.name)``),
    generating it unless a matching one is cached."""
    name = name or variant.name
    out_dir = workdir / name
    weights = out_dir / "adapter_model.safetensors"
    stamp = out_dir / "spec.json"
    spec = {"generator": GENERATOR_VERSION, "seed": seed, **asdict(variant), "layers": layers}
    if weights.exists() and stamp.exists() and (out_dir / "adapter_config.json").exists():
        try:
            cached = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            cached = None
        if cached == {**spec, "bytes": weights.stat().st_size}:
            return out_dir
    print(f"generating {name} adapter in {out_dir} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    stamp.unlink(missing_ok=True)
    write_adapter(out_dir, variant, seed=seed, layers=layers)
    stamp.write_text(json.dumps({**spec, "bytes": weights.stat().st_size}) + "\n")
    mb = weights.stat().st_size / 1e6
    print(f"  {mb:.0f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out_dir


# --------------------------------------------------------------------------- contenders


def ensure_v011(path: Path) -> Path:
    """Return the 0.11 ``gradience`` executable, creating a venv at ``path`` if needed."""
    exe = path / "bin" / "gradience"
    if exe.exists():
        return exe
    print(f"creating gradience 0.11.0 venv at {path} ...", file=sys.stderr, flush=True)
    python3 = shutil.which("python3") or sys.executable
    subprocess.run([python3, "-m", "venv", str(path)], check=True)
    pip = str(path / "bin" / "pip")
    subprocess.run([pip, "install", "torch==2.13.0"], check=True)  # the local CPU wheel first
    subprocess.run([pip, "install", "gradience==0.11.0"], check=True)
    if not exe.exists():
        raise SystemExit(f"pip did not install a gradience executable at {exe}")
    return exe


@dataclass(frozen=True)
class Contender:
    name: str
    argv_prefix: tuple[str, ...]
    dir_flag: str | None  # None: the adapter dir is positional
    kind: str  # "audit" (JSON on stdout) or "yardstick"

    def argv(self, adapter_dir: Path) -> list[str]:
        if self.name == "yardstick":
            return [*self.argv_prefix, str(adapter_dir)]
        where = [self.dir_flag, str(adapter_dir)] if self.dir_flag else [str(adapter_dir)]
        return [*self.argv_prefix, *where, "--json"]


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system time of the child
    maxrss_kib: int


@dataclass
class Cell:
    variant: str
    contender: str
    argv: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(r.maxrss_kib for r in self.runs) / 1024


def run_once(
    argv: list[str], env: dict[str, str], cwd: Path, capture_stdout: bool = False
) -> tuple[Run, bytes]:
    """Run ``argv`` to completion; wall time and the child's own peak RSS via ``os.wait4``."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        stdout = out if capture_stdout else subprocess.DEVNULL
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc  # reaped by wait4; keep Popen from waiting again
        if rc != 0:
            err.seek(0)
            tail = err.read()[-4000:].decode(errors="replace")
            raise SystemExit(f"command failed with exit code {rc}: {' '.join(argv)}\n{tail}")
        out.seek(0)
        run = Run(wall, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss))
        return run, out.read() if capture_stdout else b""


def check_output(contender: Contender, stdout: bytes) -> str:
    """Sanity-check a warm-up run's output; return a short description of it."""
    if contender.kind == "yardstick":
        text = stdout.decode().strip()
        if not text.startswith(f"{N_PAIRS} pairs"):
            raise SystemExit(f"yardstick saw the wrong number of pairs: {text!r}")
        return text
    text = stdout.decode()
    if not text.lstrip().startswith("{"):  # 0.11 prints progress lines on stdout first
        text = text[text.index("\n{") + 1 :]
    data = json.loads(text)
    n = _count_layers(data)
    if n is not None and n != N_PAIRS:
        raise SystemExit(f"{contender.name} reported {n} layers, expected {N_PAIRS}")
    srm = data.get("stable_rank_mean") if isinstance(data, dict) else None
    srm_text = f", stable_rank_mean {srm:.6f}" if isinstance(srm, float) else ""
    return f"valid JSON, {n if n is not None else '?'} layers{srm_text}"


def _count_layers(data: Any) -> int | None:
    """Best effort: the number of audited layers in an audit JSON (either version)."""
    if not isinstance(data, dict):
        return None
    for key in ("n_layers", "num_layers", "layers_audited", "n_lora_layers"):
        if isinstance(data.get(key), int):
            return data[key]
    for key in ("summary", "audit"):
        if isinstance(data.get(key), dict):
            n = _count_layers(data[key])
            if n is not None:
                return n
    for key in ("layers", "suggested_rank_pattern", "rank_pattern"):
        if isinstance(data.get(key), list | dict) and len(data[key]) > 0:
            return len(data[key])
    return None


# --------------------------------------------------------------------------- reporting


def machine_info(env: dict[str, str]) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "thread_env": {k: env[k] for k in THREAD_VARS if k in env},
    }


def package_versions(python: str) -> str:
    """``gradience x, numpy y`` as installed for the interpreter ``python``."""
    code = (
        "import importlib.metadata as m, sys\n"
        "print(', '.join(f'{p} {m.version(p)}' for p in ('gradience', 'numpy')), end='')\n"
        "print(f', python {sys.version.split()[0]}')"
    )
    try:
        # -I: ignore the current directory (a source checkout there would shadow the installed metadata)
        res = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def evaluate(cells: dict[tuple[str, str], Cell]) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Ratios per variant and the PASS/FAIL/SKIP verdict of each target."""
    ratios: dict[str, dict[str, float]] = {}
    for v in VARIANTS.values():
        g = cells.get((v.name, "gradience"))
        if g is None:
            continue
        r: dict[str, float] = {}
        if (y := cells.get((v.name, "yardstick"))) is not None:
            r["gradience_over_yardstick"] = g.median_s / y.median_s
        if (o := cells.get((v.name, "gradience-0.11"))) is not None:
            r["v011_over_gradience"] = o.median_s / g.median_s
        if v.name in PAIRED and (p := cells.get((PAIRED[v.name], "gradience"))) is not None:
            r["time_over_paired"] = g.median_s / p.median_s
            r["cpu_over_paired"] = g.median_cpu_s / p.median_cpu_s
            r["rss_over_paired"] = g.peak_rss_mib / p.peak_rss_mib
        ratios[v.name] = r

    def verdict(ok: bool | None) -> str:
        return "SKIP" if ok is None else ("PASS" if ok else "FAIL")

    targets: list[dict[str, Any]] = []
    r64 = ratios.get("r64-bf16", {})
    val = r64.get("gradience_over_yardstick")
    targets.append(
        {
            "id": "i",
            "what": f"r64-bf16: gradience time ≤ {MAX_TIME_VS_YARDSTICK} × yardstick",
            "value": val,
            "result": verdict(None if val is None else val <= MAX_TIME_VS_YARDSTICK),
        }
    )
    for name, need in MIN_SPEEDUP_VS_011.items():
        val = ratios.get(name, {}).get("v011_over_gradience")
        targets.append(
            {
                "id": "ii",
                "what": f"{name}: gradience ≥ {need}× faster than 0.11",
                "value": val,
                "result": verdict(None if val is None else val >= need),
            }
        )
    g64 = cells.get(("r64-bf16", "gradience"))
    val = g64.peak_rss_mib if g64 is not None else None
    targets.append(
        {
            "id": "iii",
            "what": f"r64-bf16: gradience peak RSS ≤ {MAX_RSS_MIB:.0f} MiB",
            "value": val,
            "result": verdict(None if val is None else val <= MAX_RSS_MIB),
        }
    )
    for name, paired in PAIRED.items():
        for key, tid, limit, what in (
            ("time_over_paired", "iv", MAX_TIME_VS_PAIRED, "wall time"),
            ("rss_over_paired", "v", MAX_RSS_VS_PAIRED, "peak RSS"),
        ):
            val = ratios.get(name, {}).get(key)
            targets.append(
                {
                    "id": tid,
                    "what": f"{name}: gradience {what} ≤ {limit} × on {paired}",
                    "value": val,
                    "result": verdict(None if val is None else val <= limit),
                }
            )
    return ratios, targets


def render_markdown(
    cells: dict[tuple[str, str], Cell],
    ratios: dict[str, dict[str, float]],
    targets: list[dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    lines = [
        "| adapter | contender | median wall s | runs (s) | median CPU s | peak RSS MiB | "
        "gradience / yardstick | 0.11 / gradience | vs realistic: time (CPU), RSS |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cell in cells.values():
        r = ratios.get(cell.variant, {})
        is_g = cell.contender == "gradience"
        vs_y = f"{r['gradience_over_yardstick']:.2f}×" if is_g and "gradience_over_yardstick" in r else ""
        vs_o = f"{r['v011_over_gradience']:.2f}×" if is_g and "v011_over_gradience" in r else ""
        vs_p = (
            f"{r['time_over_paired']:.2f}× ({r['cpu_over_paired']:.2f}×), {r['rss_over_paired']:.2f}×"
            if is_g and "time_over_paired" in r
            else ""
        )
        runs = ", ".join(f"{x.wall_s:.2f}" for x in cell.runs)
        lines.append(
            f"| {cell.variant} | {cell.contender} | {cell.median_s:.3f} | {runs} | {cell.median_cpu_s:.2f} | "
            f"{cell.peak_rss_mib:.0f} | {vs_y} | {vs_o} | {vs_p} |"
        )
    lines += ["", "Targets:", ""]
    for t in targets:
        val = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"- **{t['result']}** ({t['id']}) {t['what']}: {val}")
    m = meta["machine"]
    lines += [
        "",
        f"Machine: {m['cpu_model']}, nproc {m['nproc']} (affinity {m['affinity']}), "
        f"{m['mem_total_gib']} GiB RAM, Linux {m['kernel']}; Python {m['python']}, numpy {m['numpy']}"
        + f"; child thread env: {m['thread_env'] or 'inherited defaults'}"
        + ".",
        f"Versions: {'; '.join(f'{k}: {v}' for k, v in meta['versions'].items())}.",
        f"Date: {meta['date']}. {meta['repeat']} timed rounds (round-robin, rotating order) after one "
        f"warm-up run each; hot page cache. Load average before/after: "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def add_common_arguments(p: argparse.ArgumentParser, *, repeat_help: str, results_name: str) -> None:
    """The options every side-by-side benchmark shares (bench_merge.py uses them too)."""
    p.add_argument("--repeat", type=int, default=3, help=repeat_help)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where adapters are cached")
    p.add_argument(
        "--v011",
        type=Path,
        default=None,
        help=f"venv with gradience 0.11.0 (default {SYSTEM_V011} if present, else WORKDIR/venv-011; "
        "created if missing)",
    )
    p.add_argument("--skip-011", action="store_true", help="do not run gradience 0.11")
    p.add_argument(
        "--gradience",
        default=str(Path(sys.executable).parent / "gradience"),
        help="the gradience executable under test (default: next to this Python)",
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help=f"set {', '.join(THREAD_VARS)} to N in every child; 0 leaves the environment alone (default 1)",
    )
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"where {results_name} go")


def check_common_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.repeat < 1:
        p.error("--repeat must be ≥ 1")
    if args.blas_threads < 0:
        p.error("--blas-threads must be ≥ 0")
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Side-by-side whole-process benchmark: gradience audit vs a numpy yardstick vs 0.11.",
    )
    add_common_arguments(p, repeat_help="timed rounds (default 3)", results_name="audit.json/audit.md")
    p.add_argument(
        "--only",
        choices=sorted(VARIANTS),
        help="run one adapter variant only (r64d brings r64 along: they are compared in one run)",
    )
    return check_common_arguments(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.blas_threads > 0:
        env.update({k: str(args.blas_threads) for k in THREAD_VARS})
    variants = [VARIANTS[args.only]] if args.only else list(VARIANTS.values())
    variant_by_name = {v.name: v for v in VARIANTS.values()}
    for v in list(variants):
        if v.name in PAIRED and variant_by_name[PAIRED[v.name]] not in variants:
            variants.insert(0, variant_by_name[PAIRED[v.name]])
    adapters = {v.name: ensure_adapter(workdir, v) for v in variants}

    contenders = [
        Contender("gradience", (args.gradience, "audit"), None, "audit"),
        Contender("yardstick", (sys.executable, str(YARDSTICK)), None, "yardstick"),
    ]
    versions = {
        "gradience": package_versions(str(Path(args.gradience).parent / "python")),
        "yardstick": f"numpy {np.__version__}",
    }
    if not args.skip_011:
        v011_dir = args.v011
        if v011_dir is None:
            v011_dir = SYSTEM_V011 if (SYSTEM_V011 / "bin" / "gradience").exists() else workdir / "venv-011"
        exe = ensure_v011(v011_dir.resolve())
        contenders.append(Contender("gradience-0.11", (str(exe), "audit"), "--peft-dir", "audit"))
        versions["gradience-0.11"] = f"{package_versions(str(exe.parent / 'python'))} ({exe})"

    cells: dict[tuple[str, str], Cell] = {}
    for v in variants:
        for c in contenders:
            cells[(v.name, c.name)] = Cell(v.name, c.name, c.argv(adapters[v.name]))
    keys = list(cells)
    by_name = {c.name: c for c in contenders}

    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    print(f"warm-up ({len(keys)} runs) ...", file=sys.stderr, flush=True)
    for key in keys:
        run, out = run_once(cells[key].argv, env, workdir, capture_stdout=True)
        desc = check_output(by_name[key[1]], out)
        print(f"  {key[0]:9} {key[1]:15} {run.wall_s:7.2f} s  {desc}", file=sys.stderr, flush=True)

    for i in range(args.repeat):
        shift = i % len(keys)
        order = keys[shift:] + keys[:shift]
        print(f"round {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
        for key in order:
            run, _ = run_once(cells[key].argv, env, workdir)
            cells[key].runs.append(run)
            print(
                f"  {key[0]:9} {key[1]:15} {run.wall_s:7.2f} s  cpu {run.cpu_s:6.2f} s  "
                f"{run.maxrss_kib / 1024:5.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    loadavg_after = [round(x, 2) for x in os.getloadavg()]

    ratios, targets = evaluate(cells)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(env),
        "versions": versions,
        "repeat": args.repeat,
        "blas_threads": args.blas_threads or "inherited",
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
    }
    results = {
        **meta,
        "adapters": {
            v.name: {
                **asdict(v),
                "path": str(adapters[v.name]),
                "bytes": (adapters[v.name] / "adapter_model.safetensors").stat().st_size,
            }
            for v in variants
        },
        "cells": [
            {
                "variant": c.variant,
                "contender": c.contender,
                "argv": c.argv,
                "median_wall_s": c.median_s,
                "median_cpu_s": c.median_cpu_s,
                "peak_rss_mib": c.peak_rss_mib,
                "runs": [asdict(r) for r in c.runs],
            }
            for c in cells.values()
        ],
        "ratios": ratios,
        "targets": targets,
    }
    name = f"audit-{args.only}" if args.only else "audit"  # a partial run keeps the full one
    return write_results(args.results, name, results, render_markdown(cells, ratios, targets, meta))


def write_results(folder: Path, name: str, results: dict, md: str) -> int:
    """Write ``<name>.json`` and ``<name>.md``, print the table; exit 1 if any target failed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (folder / f"{name}.md").write_text(f"# gradience {name} benchmark\n\n" + md)
    print(md)
    return 0 if all(t["result"] != "FAIL" for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
