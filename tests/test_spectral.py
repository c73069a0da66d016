"""The factored routes against a dense float64 SVD, on random and planted spectra."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_oracle, dense_sigma, oracle_metrics, planted, write_adapter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradience
from gradience.spectral import metrics as M
from gradience.spectral.factored import gram_pair, singular_values_from_grams, singular_values_qr, svd_qr

SPECTRA = st.sampled_from(
    ["random", "planted", "deficient", "mixed_deficient", "tiny", "zero", "geometric", "duplicate"]
)


def _factors(kind: str, rng: np.random.Generator, out: int, inp: int, r: int):
    if kind == "random":
        return rng.standard_normal((r, inp)), rng.standard_normal((out, r)) * 0.1
    if kind == "zero":
        return rng.standard_normal((r, inp)), np.zeros((out, r))
    if kind == "planted":
        return planted(rng, out, inp, r, np.sort(rng.uniform(0.01, 5, r))[::-1])
    if kind == "deficient":  # rank below r: trailing σ are exactly zero
        k = int(rng.integers(1, r + 1))
        return planted(rng, out, inp, r, np.sort(rng.uniform(0.1, 3, k))[::-1])
    if kind == "mixed_deficient":  # full-looking factors whose product has rank < r
        k = int(rng.integers(1, r + 1))
        return rng.standard_normal((r, k)) @ rng.standard_normal((k, inp)), rng.standard_normal((out, r))
    if kind == "tiny":  # a real but tiny update must keep its true stable rank
        a, b = planted(rng, out, inp, r, np.sort(rng.uniform(0.5, 2, r))[::-1])
        return a * 1e-9, b * 1e-9
    if kind == "geometric":
        return planted(rng, out, inp, r, 0.5 ** np.arange(r))
    return planted(rng, out, inp, r, np.ones(r))  # duplicate σ


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=SPECTRA,
    seed=st.integers(0, 2**32 - 1),
    r=st.integers(1, 64),
    out=st.integers(64, 96),
    inp=st.integers(64, 96),
    scale=st.sampled_from([0.5, 2.0, 16.0]),
)
def test_audit_matches_dense_svd(tmp_path_factory, kind, seed, r, out, inp, scale):
    rng = np.random.default_rng(seed)
    a, b = _factors(kind, rng, out, inp, r)
    folder = write_adapter(
        tmp_path_factory.mktemp("a"), {"m.q_proj": (a, b)}, r=r, alpha=scale * r, dtype="float64"
    )
    for precise in (False, True):
        row = gradience.audit(folder, precise=precise).to_dict(layers=True)["layer_data"]["layer_rows"][0]
        want = dense_sigma(a, b, scale)
        got = np.array(row["singular_values"])
        want = np.pad(want, (0, r - want.size))
        tol = (1e-10 if precise else 1e-6) * max(want[0], 1e-300)
        assert np.max(np.abs(got - want)) <= tol
        o = oracle_metrics(want)
        if o["stable_rank"] == 0:
            assert row["flags"] == ["untrained"]
            assert row["stable_rank"] == 0 and row["energy_rank_90"] == 0
            continue
        assert_matches_oracle(row, o, r)


@pytest.mark.parametrize("precise", [False, True])
def test_rank_deficient_product_keeps_tail_metrics_exact(tmp_path, precise):
    # Factors that look full rank but whose product has rank 4 of 64: the Gram route alone
    # turns the zero tail into ~1e-5·σ₁ noise and the σ-convention effective rank drifts
    # by ~2e-6; such layers must be recomputed by the QR route.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 4)) @ rng.standard_normal((4, 300))
    b = rng.standard_normal((200, 64))
    folder = write_adapter(tmp_path, {"m.q_proj": (a, b)}, alpha=64, dtype="float64")
    row = gradience.audit(folder, precise=precise).to_dict(layers=True)["layer_data"]["layer_rows"][0]
    o = oracle_metrics(dense_sigma(a, b, 1.0))
    assert row["effective_rank"] == pytest.approx(o["erank"], rel=1e-6)
    assert row["stable_rank"] == pytest.approx(o["stable_rank"], rel=1e-6)


def test_gram_route_batches_equal_single_pairs():
    rng = np.random.default_rng(0)
    pairs = [gram_pair(rng.standard_normal((6, 20)), rng.standard_normal((30, 6))) for _ in range(5)]
    stacked = singular_values_from_grams(np.stack([p[0].g for p in pairs]), np.stack([p[1].g for p in pairs]))
    for (ga, gb), s in zip(pairs, stacked, strict=True):
        np.testing.assert_allclose(singular_values_from_grams(ga.g, gb.g), s, rtol=1e-12)


def test_qr_svd_reconstructs_update_and_vectors_are_orthonormal():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((8, 50)), rng.standard_normal((40, 8))
    svd = svd_qr(a, b, 3.0)
    np.testing.assert_allclose((svd.u * svd.s) @ svd.vt, 3.0 * b @ a, atol=1e-10)
    np.testing.assert_allclose(svd.u.T @ svd.u, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(svd.vt @ svd.vt.T, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(singular_values_qr(a, b) * 3.0, svd.s, rtol=1e-12)


def test_stable_rank_has_no_absolute_floor():
    # 0.11 used max(σ₁², 1e-12): a real update of size 1e-8 read as rank 0.
    s = np.array([1e-8, 1e-8, 1e-8])
    assert M.stable_rank(s) == pytest.approx(3.0)


def test_energy_rank_counts_threshold_ties_as_reached():
    s = np.sqrt(np.array([0.9, 0.1]))  # exactly 90% in the first direction, up to rounding
    assert M.energy_rank(s, 0.9) == 1
    assert M.energy_rank(np.zeros(4), 0.9) == 0


def test_effective_rank_conventions_differ_and_are_bounded():
    s = 0.7 ** np.arange(16)
    assert 1 <= M.effective_rank_energy(s) < M.effective_rank(s) <= 16
    assert M.effective_rank(np.ones(5)) == pytest.approx(5)
