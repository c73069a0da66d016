"""Audit spectra at the edges, through ``gradience.audit`` on written adapter folders, against
a dense float64 SVD of the stored update: shapes with r above a layer's width, rank-deficient
products (zero-padded, pruned, duplicated, steep), untrained layers, entries from 1e-170 to
1e+150, and F64/F32/F16/BF16 storage; both the Gram route and ``precise=True``.

The files are written here byte by byte (8-byte header length, JSON header, data), so the
oracle sees exactly the stored values, BF16 included, without going through Gradience's
reader or writer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_matches_oracle, oracle_metrics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradience

PREFIX = "base_model.model.m.q_proj"
#: numpy dtype of the stored bits, per safetensors dtype.
STORED = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
KINDS = (
    "random",
    "zero_b",
    "deficient",
    "mixed_deficient",
    "zero_padded",
    "pruned",
    "duplicate_columns",
    "steep_columns",
    "geometric",
    "near_duplicate",
)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to BF16, nearest-even (inputs are finite), as uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _stored(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(bits as written, the float64 values they decode to)."""
    if dtype == "BF16":
        bits = _bf16_bits(x)
        return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    bits = np.ascontiguousarray(x, dtype=STORED[dtype])
    return bits, bits.astype(np.float64)


def write_folder(
    folder: Path,
    tensors: dict[str, tuple[np.ndarray, str]],
    config: dict,
) -> Path:
    """A PEFT folder whose safetensors file holds ``name -> (bits, dtype)``."""
    folder.mkdir(parents=True, exist_ok=True)
    header, blobs, offset = {}, [], 0
    for name, (bits, dtype) in tensors.items():
        raw = np.ascontiguousarray(bits).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(bits.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (folder / "adapter_model.safetensors").write_bytes(
        len(head).to_bytes(8, "little") + head + b"".join(blobs)
    )
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def write_lora(folder: Path, a: np.ndarray, b: np.ndarray, dtype: str, alpha: float):
    """One-layer LoRA adapter; returns (folder, stored A, stored B) as float64."""
    a_bits, a_val = _stored(a, dtype)
    b_bits, b_val = _stored(b, dtype)
    config = {"peft_type": "LORA", "r": a.shape[0], "lora_alpha": alpha, "target_modules": ["q_proj"]}
    tensors = {f"{PREFIX}.lora_A.weight": (a_bits, dtype), f"{PREFIX}.lora_B.weight": (b_bits, dtype)}
    return write_folder(folder, tensors, config), a_val, b_val


def oracle_sigma(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Dense SVD of scale·B·A, min(r, out, in) values. Each factor is first divided by a power of two
    (exact in binary floating point) so entries near 1e-170 or 1e+150 neither underflow nor
    overflow in the dense product; σ are multiplied back by the same powers."""
    ea = int(np.frexp(np.max(np.abs(a)))[1]) if np.any(a) else 0
    eb = int(np.frexp(np.max(np.abs(b)))[1]) if np.any(b) else 0
    s = np.linalg.svd(scale * (np.ldexp(b, -eb) @ np.ldexp(a, -ea)), compute_uv=False)
    return np.ldexp(s, ea + eb)[: min(a.shape[0], s.size)]


def audit_row(folder: Path, precise: bool) -> dict:
    return gradience.audit(folder, precise=precise).to_dict(layers=True)["layer_data"]["layer_rows"][0]


def assert_row_matches(row: dict, want: np.ndarray, r: int, tol: float) -> None:
    """σ (p = min(r, out, in) of them, as many as the update can have) and the metrics."""
    got = np.array(row["singular_values"])
    assert got.shape == want.shape
    top = float(want[0])
    if top == 0:
        assert row["flags"] == ["untrained"] and not np.any(got)
        assert row["stable_rank"] == 0 and row["energy_rank_90"] == 0
        return
    assert "untrained" not in row["flags"]
    assert np.max(np.abs(got - want)) <= tol * top
    # the rank metrics are scale-free: compare them on σ/σ₁, which never underflows
    assert_matches_oracle(row, oracle_metrics(want / top), r)


def _factors(
    kind: str, rng: np.random.Generator, out: int, inp: int, r: int
) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((r, inp))
    b = rng.standard_normal((out, r))
    k = int(rng.integers(1, r + 1))
    if kind == "zero_b":
        b[:] = 0
    elif kind == "deficient":  # product of rank k: both factors planted on k directions
        u, _ = np.linalg.qr(rng.standard_normal((out, min(out, k))))
        v, _ = np.linalg.qr(rng.standard_normal((inp, min(inp, k))))
        m = u.shape[1] if u.shape[1] < v.shape[1] else v.shape[1]
        s = np.sqrt(np.sort(rng.uniform(0.1, 3, m))[::-1])
        b[:] = 0
        a[:] = 0
        b[:, :m] = u[:, :m] * s
        a[:m] = (v[:, :m] * s).T
    elif kind == "mixed_deficient":  # dense factors, A of rank k
        a = rng.standard_normal((r, k)) @ rng.standard_normal((k, inp))
    elif kind == "zero_padded":  # compressed to k, stored at full r
        a[k:] = 0
        b[:, k:] = 0
    elif kind == "pruned":  # components switched off at scattered positions
        a[rng.random(r) < 0.5] = 0
    elif kind == "duplicate_columns":  # a concatenation of an adapter with itself
        h = (r + 1) // 2
        b[:, h:] = b[:, : r - h]
        a[h:] = a[: r - h]
    elif kind == "near_duplicate":  # half the columns of B repeat the others to 1e-7
        h = r // 2
        b[:, h : 2 * h] = b[:, :h] + 1e-7 * rng.standard_normal((out, h))
    elif kind == "steep_columns":  # σ ratios down to ~1e-14, from B's column scaling
        b *= 10.0 ** (-14 * np.arange(r) / max(r - 1, 1))
    elif kind == "geometric":  # planted steep spectrum, 0.5^i
        u, _ = np.linalg.qr(rng.standard_normal((out, min(out, r))))
        v, _ = np.linalg.qr(rng.standard_normal((inp, min(inp, r))))
        m = min(u.shape[1], v.shape[1])
        s = np.sqrt(0.5 ** np.arange(m))
        a[:] = 0
        b[:] = 0
        b[:, :m] = u[:, :m] * s
        a[:m] = (v[:, :m] * s).T
    return a, b


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int, int]:
    """(r, out, in), a third of them with r above a width and some with r = min width."""
    mode = draw(st.sampled_from(["free", "r>out", "r>in", "r=min"]))
    r = draw(st.integers(1, 40))
    out, inp = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    if mode == "r>out":
        out = draw(st.integers(1, max(1, r - 1)))
        r = max(r, out + 1)
    elif mode == "r>in":
        inp = draw(st.integers(1, max(1, r - 1)))
        r = max(r, inp + 1)
    elif mode == "r=min":
        r = min(out, inp)
    return r, out, inp


#: (storage, log10 of the smallest and largest factor scale it can hold with full precision)
STORAGE = {"F64": (-170, 150), "F32": (-15, 15), "BF16": (-15, 15), "F16": (-1, 1)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    shape=shapes(),
    dtype=st.sampled_from(sorted(STORAGE)),
    exps=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    seed=st.integers(0, 2**32 - 1),
    alpha_over_r=st.sampled_from([0.5, 2.0]),
)
def test_audit_matches_dense_svd_at_the_edges(tmp_path_factory, kind, shape, dtype, exps, seed, alpha_over_r):
    r, out, inp = shape
    rng = np.random.default_rng(seed)
    a, b = _factors(kind, rng, out, inp, r)
    lo, hi = STORAGE[dtype]
    ka, kb = (round(lo + (hi - lo) * x) for x in exps)
    ka = int(np.clip(ka + kb, -290, 140)) - kb  # σ itself stays an ordinary double
    a, b = a * 10.0**ka, b * 10.0**kb
    folder, a_val, b_val = write_lora(tmp_path_factory.mktemp("edge"), a, b, dtype, alpha_over_r * r)
    want = oracle_sigma(a_val, b_val, alpha_over_r)
    for precise in (False, True):
        assert_row_matches(audit_row(folder, precise), want, r, 1e-10 if precise else 1e-6)


@pytest.mark.parametrize("dtype", sorted(STORED))
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "random"])
def test_tail_of_rank_deficient_and_steep_products(tmp_path, kind, dtype):
    # At r=48 the tail has enough components that σ at the Gram route's noise floor
    # (~1e-8·σ₁) would move the σ-convention effective rank by ~1e-6. Layers that reach
    # the tail are resolved as well as the QR route resolves them, so they are held to
    # that here (σ to 1e-12·σ₁, effective rank to 1e-10), on both routes.
    rng = np.random.default_rng(sorted(KINDS).index(kind))
    a, b = _factors(kind, rng, 96, 80, 48)
    folder, a_val, b_val = write_lora(tmp_path, a, b, dtype, 96.0)
    want = oracle_sigma(a_val, b_val, 2.0)
    erank = oracle_metrics(want / want[0])["erank"] if want[0] > 0 else 0.0
    for precise in (False, True):
        row = audit_row(folder, precise)
        assert_row_matches(row, want, 48, 1e-12)
        assert row["effective_rank"] == pytest.approx(erank, rel=1e-10, abs=0)


@pytest.mark.parametrize(
    ("exp_a", "exp_b"),
    [(0, -170), (-170, 0), (-160, -100), (155, -100), (-20, 160), (150, 100)],
    ids=["B~1e-170", "A~1e-170", "both-small", "A~1e+155", "B~1e+160", "both-large"],
)
def test_extreme_entries_keep_their_spectrum(tmp_path, exp_a, exp_b):
    # Entries near 1e-170 square to ~1e-340 in a float64 Gram, below the smallest double,
    # and the layer read as untrained; entries near 1e+155 overflowed the Gram and the layer
    # read as invalid. Both are real updates whose σ are ordinary doubles.
    rng = np.random.default_rng(exp_a - exp_b + 1000)
    a = rng.standard_normal((8, 40)) * 10.0**exp_a
    b = rng.standard_normal((30, 8)) * 10.0**exp_b
    folder, a_val, b_val = write_lora(tmp_path, a, b, "F64", 16.0)
    want = oracle_sigma(a_val, b_val, 2.0)
    assert np.isfinite(want).all() and want[-1] > 0
    for precise in (False, True):
        row = audit_row(folder, precise)
        assert row["flags"] == [], row["flags"]
        assert_row_matches(row, want, 8, 1e-10 if precise else 1e-6)
    assert gradience.audit(folder).to_dict()["recommendation"]["status"] == "ok"


def test_adalora_with_pruned_components_matches_dense_svd(tmp_path):
    # AdaLoRA prunes rank components by zeroing entries of E: ΔW = B·diag(E)·A has rank
    # below r, and the zero components must not blur the tail (σ-convention effective rank).
    rng = np.random.default_rng(3)
    r = 12
    a, b = rng.standard_normal((r, 50)), rng.standard_normal((40, r))
    e = rng.uniform(0.5, 2.0, (r, 1))
    e[rng.permutation(r)[:7]] = 0
    tensors = {
        f"{PREFIX}.lora_A.weight": (a, "F64"),
        f"{PREFIX}.lora_B.weight": (b, "F64"),
        f"{PREFIX}.lora_E.weight": (e, "F64"),
    }
    config = {"peft_type": "ADALORA", "init_r": r, "r": 8, "lora_alpha": 12, "target_modules": ["q_proj"]}
    folder = write_folder(tmp_path, tensors, config)
    scale = gradience.audit(folder).layers[0].layer.scale
    want = oracle_sigma(a * e, b, scale)
    assert np.count_nonzero(want > 1e-12 * want[0]) == 5
    for precise in (False, True):
        assert_row_matches(audit_row(folder, precise), want, r, 1e-10 if precise else 1e-6)


def test_oracle_rescaling_is_exact():
    # The oracle's power-of-two rescaling is only a way to evaluate the same dense SVD: on
    # ordinary entries it must agree with the plain one to the last bits.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 20)) * 3.7, rng.standard_normal((15, 6)) * 0.01
    plain = np.linalg.svd(2.0 * (b @ a), compute_uv=False)
    np.testing.assert_allclose(oracle_sigma(a, b, 2.0), plain[:6], rtol=1e-13)
    assert math.isclose(float(oracle_sigma(a * 2.0**-600, b * 2.0**-500, 2.0)[0]), plain[0] * 2.0**-1100)
