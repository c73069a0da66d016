"""The bench as it runs inside an HF Job: settings from the environment, progress on stdout,
and the report as one marked line that the submitter picks out of the logs.

The Hub token, when the task needs one, arrives as the ``HF_TOKEN`` job secret, which
``huggingface_hub`` reads itself; nothing here prints or stores it.
"""

from __future__ import annotations

import json
import os
import sys

CONFIG_ENV = "GRADIENCE_BENCH_CONFIG"
MARKER = "GRADIENCE_BENCH_REPORT "


def main() -> int:
    from gradience.bench.config import BenchConfig
    from gradience.bench.protocol import run_bench
    from gradience.errors import GradienceError

    try:
        config = BenchConfig(**_settings())
        task = config.make_task(token=os.environ.get("HF_TOKEN"))
        result = run_bench(
            config, os.environ.get("GRADIENCE_BENCH_OUT", "bench-out"), task=task, progress=_line
        )
    except GradienceError as e:
        print(f"gradience bench: error: {e}", flush=True)
        return e.exit_code
    print(MARKER + json.dumps(result.report, separators=(",", ":"), allow_nan=False), flush=True)
    return 0


def _settings() -> dict[str, object]:
    raw = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    if "modes" in raw:
        raw["modes"] = tuple(raw["modes"])
    return raw


def _line(done: int, total: int, label: str) -> None:
    print(f"bench: [{done}/{total or '?'}] {label}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
