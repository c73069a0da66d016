"""Yardstick for ``bench_audit.py``: the least work any LoRA audit has to do.

For every ``lora_A``/``lora_B`` pair in a safetensors file it reads the two tensors'
bytes with ordinary file reads (no mmap), decodes each to float32 once (bf16 as
``uint16 -> uint32 << 16 -> view float32``) and forms the two r×r Gram cores in float32,
``A @ A.T`` and ``B.T @ B``. Nothing else: no eigen-decomposition, no metrics, no report.
A real audit cannot be faster than this, so it is the lower bound the benchmark compares
against.

Usage: ``python yardstick.py ADAPTER_DIR_OR_SAFETENSORS_FILE``. Prints the number of
pairs and a checksum (the sum of the Gram traces), so the work is visibly used.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


def read_f32(f: BinaryIO, entry: dict, data_start: int) -> np.ndarray:
    """Read one tensor's bytes and decode them to a float32 array of its shape."""
    start, end = entry["data_offsets"]
    f.seek(data_start + start)
    raw = f.read(end - start)
    if len(raw) != end - start:
        raise OSError(f"short read: wanted {end - start} bytes, got {len(raw)}")
    dtype = entry["dtype"]
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4")
    elif dtype == "BF16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        raise ValueError(f"unsupported dtype {dtype}")
    return arr.reshape(entry["shape"])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1])
    if path.is_dir():
        path = path / "adapter_model.safetensors"
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header: dict = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        data_start = 8 + header_len
        pairs = 0
        checksum = 0.0
        for name in header:
            if not name.endswith(A_SUFFIX):
                continue
            b_name = name[: -len(A_SUFFIX)] + B_SUFFIX
            if b_name not in header:
                continue
            a = read_f32(f, header[name], data_start)  # [r, in]
            b = read_f32(f, header[b_name], data_start)  # [out, r]
            gram_a = a @ a.T  # r×r
            gram_b = b.T @ b  # r×r
            checksum += float(np.trace(gram_a)) + float(np.trace(gram_b))
            pairs += 1
    print(f"{pairs} pairs, checksum {checksum:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
