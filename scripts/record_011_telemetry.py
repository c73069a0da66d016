"""Write a telemetry file with gradience 0.11.0's own writer, for the compatibility tests.

The tests must read what 0.11 wrote without 0.11 installed, so this script runs 0.11's
``TelemetryWriter`` in its own virtualenv (see ``scripts/record_011.py`` for the setup) and
keeps the output as ``tests/data/telemetry/v011-writer.jsonl``. The series is a fixed,
deterministic curve (a format fixture, not a training run): a training loss that falls, an
eval loss that bottoms out at step 100 and rises, a periodic LoRA audit whose utilisation
falls to 0.2, one alert, and 0.11's extras (``ppl``, ``split``, ``ConfigSnapshot``).

    python scripts/record_011_telemetry.py --v011 /tmp/v011
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "telemetry" / "v011-writer.jsonl"

PROGRAM = r"""
import math, sys
from gradience.vnext.telemetry import TelemetryWriter
from gradience.vnext.types import ConfigSnapshot, Severity

with TelemetryWriter(sys.argv[1], run_id="v011-format") as w:
    w.run_start(ConfigSnapshot(model_name="tiny", dataset_name="synthetic"), meta={"writer": "gradience 0.11.0"})
    for step in range(1, 301):
        loss = 0.5 + 2.0 * math.exp(-step / 40) + 0.01 * math.sin(step)
        w.train_step(step, loss=loss, lr=1e-3, grad_norm=1.0 + 0.5 * math.exp(-step / 60), epoch=step / 300)
        if step % 20 == 0:
            ev = 0.8 + 0.002 * (step - 100) ** 2 / 100
            w.eval(step, split="eval", metrics={"loss": ev, "ppl": math.exp(ev), "n": 64})
        if step % 50 == 0:
            w.metrics(step, kind="lora_audit", metrics={"utilization_mean": 0.5 - step / 1000, "n_layers": 4})
    w.alert(severity=Severity.WARNING, code="memorization_gap", message="train/eval gap", step=300,
            context={"gap": 1.7})
    w.run_end(status="ok")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--v011", type=Path, required=True, help="the virtualenv with gradience==0.11.0")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # cwd outside the repo: "python -c" puts the cwd first on sys.path, which would import this
    # checkout's gradience instead of 0.11.
    subprocess.run(
        [str(args.v011 / "bin" / "python"), "-c", PROGRAM, str(args.out.resolve())], check=True, cwd="/"
    )
    print(f"wrote {args.out} ({sum(1 for _ in args.out.open())} lines)")


if __name__ == "__main__":
    main()
