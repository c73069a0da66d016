"""Building adapters for tests, and a dense-SVD oracle independent of Gradience's maths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

PREFIX = "base_model.model."


def write_adapter(
    folder: Path,
    layers: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    r: int | None = None,
    alpha: float = 16.0,
    config: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    dtype: str = "float32",
    adapter_name: str | None = None,
) -> Path:
    """Write a PEFT-style folder with safetensors written by the safetensors package."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    infix = f".{adapter_name}" if adapter_name else ""
    for name, (a, b) in layers.items():
        tensors[f"{PREFIX}{name}.lora_A{infix}.weight"] = np.ascontiguousarray(a, dtype=dtype)
        tensors[f"{PREFIX}{name}.lora_B{infix}.weight"] = np.ascontiguousarray(b, dtype=dtype)
    for name, value in (extra or {}).items():
        tensors[name] = np.ascontiguousarray(value)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    first = next(iter(layers.values()))[0] if layers else np.zeros((8, 1))
    cfg = {
        "peft_type": "LORA",
        "r": r or first.shape[0],
        "lora_alpha": alpha,
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n in layers}),
        "base_model_name_or_path": "test/base",
    }
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def planted(
    rng: np.random.Generator, out: int, inp: int, r: int, sigmas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Factors A [r, in], B [out, r] whose product has exactly the singular values ``sigmas``
    (padded with zeros to r)."""
    s = np.zeros(r)
    s[: len(sigmas)] = sigmas
    u, _ = np.linalg.qr(rng.standard_normal((out, r)))
    v, _ = np.linalg.qr(rng.standard_normal((inp, r)))
    root = np.sqrt(s)
    return (root[:, None] * v.T), (u * root)


def dense_sigma(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """The oracle: a full float64 SVD of the formed update."""
    a2 = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b2 = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    s = np.linalg.svd(scale * (b2 @ a2), compute_uv=False)
    return s[: a2.shape[0]]


def oracle_metrics(s: np.ndarray) -> dict[str, float]:
    """Metric definitions written out independently of gradience.spectral.metrics."""
    e = float(np.sum(s**2))
    if e == 0:
        return {"stable_rank": 0.0, "er90": 0, "er95": 0, "er99": 0, "erank": 0.0, "erank_e": 0.0}
    cum = np.cumsum(s**2)

    def er(t: float) -> int:
        return int(np.argmax(cum >= t * e * (1 - 1e-12))) + 1

    p = s / s.sum()
    p = p[p > 0]
    q = s**2 / e
    q = q[q > 0]
    return {
        "stable_rank": e / float(s[0]) ** 2,
        "er90": er(0.9),
        "er95": er(0.95),
        "er99": er(0.99),
        "erank": math.exp(-float(np.sum(p * np.log(p)))),
        "erank_e": math.exp(-float(np.sum(q * np.log(q)))),
    }


def assert_matches_oracle(row: dict[str, Any], o: dict[str, float], r: int) -> None:
    """A layer row's metrics against :func:`oracle_metrics` of the dense SVD (1e-6 relative,
    energy ranks exact)."""
    import pytest

    assert row["stable_rank"] == pytest.approx(o["stable_rank"], rel=1e-6), row["name"]
    assert row["utilization"] == pytest.approx(o["stable_rank"] / r, rel=1e-6), row["name"]
    assert row["effective_rank"] == pytest.approx(o["erank"], rel=1e-6), row["name"]
    assert row["effective_rank_energy"] == pytest.approx(o["erank_e"], rel=1e-6), row["name"]
    energy_ranks = (row["energy_rank_90"], row["energy_rank_95"], row["energy_rank_99"])
    assert energy_ranks == (o["er90"], o["er95"], o["er99"]), row["name"]
