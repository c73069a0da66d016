"""Bytes and time for a Hub audit: ranged LoRA-only reads vs downloading the whole file.

Starts the local Hub (tests/servers/hub.py, seeded) on a free loopback port and audits
``gradience-test/padded-adapter`` — a real adapter padded with a ~60 MB non-LoRA tensor placed
between its LoRA tensors, ≥ 90% of the file — three ways, side by side, whole processes:

* ``gradience audit REPO --json`` with an empty cache (ranged reads of the LoRA tensors only);
* the same again with the cache warm (the revision is unchanged);
* the naive route: ``hf_hub_download`` of the whole weights file, then a local audit.

The server's own counters give the body bytes each route received. Target (issue 3): the
cold audit receives at most LoRA bytes + header + 5% of the LoRA bytes.

    python benchmarks/bench_hub.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import hub as H  # noqa: E402

REPO = H.PADDED_REPO
FILE = "adapter_model.safetensors"


def _run(code_or_args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(code_or_args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        port = H.free_port()
        hub = H.start_local_hub(port, Path(tmp) / "hub")
        try:
            env = dict(os.environ, HF_ENDPOINT=hub.url, GRADIENCE_CACHE=str(Path(tmp) / "cache"),
                       HF_HOME=str(Path(tmp) / "hf"), NO_PROXY="127.0.0.1,localhost")  # fmt: skip
            env.pop("HF_TOKEN", None)
            gradience = [sys.executable, "-m", "gradience", "audit", REPO, "--json"]
            rows = []
            for label, argv in (
                ("gradience audit (cold cache)", gradience),
                ("gradience audit (warm cache)", gradience),
                ("hf_hub_download + local audit", [sys.executable, "-c", (
                    "import sys, gradience; from huggingface_hub import hf_hub_download; "
                    f"p = hf_hub_download({REPO!r}, {FILE!r}); "
                    f"hf_hub_download({REPO!r}, 'adapter_config.json'); "
                    "gradience.audit(p)"
                )]),
            ):  # fmt: skip
                hub.reset_stats()
                seconds = _run(argv, env)
                rows.append((label, hub.bytes_served(REPO, FILE), seconds))
            from gradience.adapters.safetensors_io import SafetensorsFile

            local = next(Path(tmp, "hf").rglob(FILE))
            with SafetensorsFile(local) as f:
                lora = sum(t.nbytes for n, t in f.tensors.items() if "lora_" in n)
                total = f.size
                header_bytes = min(t.start for t in f.tensors.values())
        finally:
            hub.stop()
    print(f"file {total / 1e6:.1f} MB, LoRA tensors {lora / 1e3:.1f} kB, header {header_bytes} B\n")
    print("| route | bytes received | wall s |")
    print("|---|---:|---:|")
    for label, nbytes, seconds in rows:
        print(f"| {label} | {nbytes:,} | {seconds:.2f} |")
    cold = rows[0][1]
    bound = lora + header_bytes + 0.05 * lora
    ok = cold <= bound and rows[1][1] == 0
    print(f"\n{'PASS' if ok else 'FAIL'}: cold audit {cold:,} B ≤ LoRA + header + 5% = {bound:,.0f} B; "
          f"warm audit {rows[1][1]} B; whole-file route {rows[2][1] / max(cold, 1):.0f}× more bytes")  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "hub.json").write_text(json.dumps({
        "file_bytes": total, "lora_bytes": lora, "header_bytes": header_bytes,
        "routes": [{"route": r, "bytes": b, "seconds": s} for r, b, s in rows], "pass": ok,
    }, indent=2) + "\n")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
