"""Writing PEFT LoRA adapters: factors from an SVD, tensors and config, atomically."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gradience.adapters.safetensors_io import float32_to_bf16_bits, write_safetensors

__all__ = ["OUT_DTYPES", "encode", "lora_factors", "most_common_rank", "write_peft_adapter"]

OUT_DTYPES: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def lora_factors(u: np.ndarray, s: np.ndarray, vt: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A [k, in] and B [out, k] with ``scale·B·A = U·diag(s)·Vt`` (s ≥ 0): the singular
    values are split evenly between the factors, the sign of ``scale`` goes into B."""
    if scale == 0:
        return np.zeros_like(vt), np.zeros_like(u)
    root = np.sqrt(s / abs(scale))
    return root[:, None] * vt, u * root * math.copysign(1.0, scale)


def encode(x: np.ndarray, dtype: str) -> np.ndarray | tuple[str, tuple[int, ...], bytes]:
    """An array in the safetensors dtype ``dtype`` (BF16 rounded to nearest even)."""
    if dtype == "BF16":
        return ("BF16", tuple(x.shape), float32_to_bf16_bits(x.astype(np.float32)).tobytes())
    return np.ascontiguousarray(x.astype(OUT_DTYPES[dtype]))


def most_common_rank(ranks: Mapping[str, int]) -> int:
    counts = Counter(ranks.values())
    return max(counts, key=lambda k: (counts[k], k))


def write_peft_adapter(out: Path, tensors: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write ``adapter_model.safetensors`` then ``adapter_config.json``, each atomically, so a
    crash never leaves a folder PEFT would load half-written."""
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    tmp = out / (CONFIG_NAME + ".partial")
    tmp.write_text(json.dumps(dict(config), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / CONFIG_NAME)
