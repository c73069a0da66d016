"""Reading streams tensors: peak memory must not grow with the weights file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path


def _sparse_adapter(folder: Path, n_layers: int, extra_bytes: int) -> Path:
    """A valid adapter whose data region is a sparse hole: big on disk, instant to make."""
    folder.mkdir()
    header: dict[str, dict] = {}
    offset = 0
    for i in range(n_layers):
        for part, shape in (("lora_A", [16, 4096]), ("lora_B", [4096, 16])):
            size = 16 * 4096 * 4
            header[f"base_model.model.layers.{i}.q_proj.{part}.weight"] = {
                "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size],
            }  # fmt: skip
            offset += size
    if extra_bytes:
        header["base_model.model.lm_head.weight"] = {
            "dtype": "F32", "shape": [extra_bytes // 4], "data_offsets": [offset, offset + extra_bytes],
        }  # fmt: skip
        offset += extra_bytes
    blob = json.dumps(header).encode()
    with open(folder / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 16}))
    return folder


def _peak_rss_mib(folder: Path) -> float:
    p = subprocess.Popen(
        [sys.executable, "-m", "gradience", "audit", str(folder), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so tell Popen
    err = p.stderr.read()
    p.stderr.close()
    assert p.returncode == 0, err
    return usage.ru_maxrss / 1024


def test_peak_memory_does_not_follow_file_size(tmp_path):
    small = _peak_rss_mib(_sparse_adapter(tmp_path / "small", 4, 0))  # ~2 MiB of LoRA tensors
    big = _peak_rss_mib(_sparse_adapter(tmp_path / "big", 400, 1 << 30))  # ~200 MiB LoRA + 1 GiB head
    assert big - small < 40, (small, big)
