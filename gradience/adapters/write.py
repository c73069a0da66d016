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

from gradience.adapters.safetensors_io import SafetensorsWriter, float32_to_bf16_bits, write_safetensors

__all__ = [
    "OUT_DTYPES",
    "PeftAdapterWriter",
    "encode",
    "lora_factors",
    "most_common_rank",
    "write_peft_adapter",
]

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
    """An array in the safetensors dtype ``dtype`` (BF16 rounded to nearest even).

    Raises ``UsageError`` when the values do not fit: an entry that overflows to Inf, or a
    factor that is not zero but rounds to all zeros, would write an adapter that audits as
    invalid or untrained — a silent corruption of a correct result.
    """
    if dtype == "BF16":
        with np.errstate(over="ignore"):  # an overflow is reported below, as an error
            f32 = x.astype(np.float32)
        bits = float32_to_bf16_bits(f32)
        finite = np.isfinite(f32).all()
        vanished = not (bits & 0x7FFF).any()
        out: np.ndarray | tuple[str, tuple[int, ...], bytes] = ("BF16", tuple(x.shape), bits.tobytes())
    else:
        with np.errstate(over="ignore"):
            y = np.ascontiguousarray(x.astype(OUT_DTYPES[dtype]))
        finite, vanished, out = bool(np.isfinite(y).all()), not y.any(), y
    if (not finite and np.isfinite(x).all()) or (vanished and x.any()):
        from gradience.errors import UsageError

        peak = float(np.abs(x).max())
        raise UsageError(
            f"the factors (entries up to {peak:.3g}) do not fit in {dtype}: they would be stored as "
            f"{'Inf' if not finite else 'zeros'}; write them in a wider dtype",
            param="dtype",
        )
    return out


def most_common_rank(ranks: Mapping[str, int]) -> int:
    counts = Counter(ranks.values())
    return max(counts, key=lambda k: (counts[k], k))


def write_peft_adapter(out: Path, tensors: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write ``adapter_model.safetensors`` then ``adapter_config.json``, each atomically, so a
    crash never leaves a folder PEFT would load half-written."""
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    _write_config(out, config)


def _write_config(out: Path, config: Mapping[str, Any]) -> None:
    tmp = out / (CONFIG_NAME + ".partial")
    tmp.write_text(json.dumps(dict(config), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / CONFIG_NAME)


class PeftAdapterWriter:
    """Stream a PEFT adapter to ``out``: tensors as they are produced (each encoded to
    ``dtype`` and appended to a temporary file), then the config once it is known.

    :meth:`finish` writes ``adapter_model.safetensors`` then ``adapter_config.json``, each
    atomically, as :func:`write_peft_adapter` does; before that nothing in ``out`` changes
    but the temporary ``*.partial`` files, which :meth:`abort` (or an exception in a
    ``with`` block) removes. Memory: one tensor at a time.
    """

    def __init__(self, out: Path, dtype: str = "F32") -> None:
        if dtype not in OUT_DTYPES:
            raise ValueError(f"unknown output dtype {dtype!r}; choose from {', '.join(OUT_DTYPES)}")
        self.out = Path(out)
        self.dtype = dtype
        self.out.mkdir(parents=True, exist_ok=True)
        self._weights = SafetensorsWriter(self.out / WEIGHTS_NAME, metadata={"format": "pt"})

    def __enter__(self) -> PeftAdapterWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, name: str, x: np.ndarray) -> None:
        self._weights.add(name, encode(x, self.dtype))

    def finish(self, config: Mapping[str, Any]) -> None:
        self._weights.finish()
        _write_config(self.out, config)

    def abort(self) -> None:
        self._weights.abort()
