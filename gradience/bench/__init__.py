"""``gradience bench``: retrain and truncate at the audited ranks over several seeds, and
keep a smaller rank only if its worst seed stays within tolerance of the probe.

torch, peft and transformers (the ``bench`` extra) are imported only when work starts.
"""

from __future__ import annotations

from gradience.bench.config import BenchConfig, load_config
from gradience.bench.protocol import BenchResult, BenchStats, run_bench

__all__ = ["BenchConfig", "BenchResult", "BenchStats", "load_config", "run_bench"]
