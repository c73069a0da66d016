"""Rank policies: one contract for every registered policy, plus each rule's own meaning."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradience
from gradience.errors import UsageError
from gradience.spectral.policies import RankPolicy, available_policies, get_policy, register, suggest_rank

SPECTRUM = st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=64).map(
    lambda xs: np.sort(np.array(xs))[::-1]
)


@pytest.mark.parametrize("name", available_policies())
@settings(max_examples=80, deadline=None)
@given(s=SPECTRUM)
def test_every_policy_keeps_the_contract(name, s):
    policy, t = get_policy(name)
    k = policy(s, t, shape=(128, 64))
    if np.any(s > 0):
        assert 1 <= k <= s.size
    else:
        assert k == 0  # untrained: no suggestion, never "rank 1 is enough"
    assert suggest_rank(s, policy.spec(t), shape=(128, 64)) == k  # names round-trip


def test_policies_by_the_same_names_from_the_api():
    # 0.11's policy names failed through its Python API (k=0); ours resolve everywhere.
    for spec in ["energy@0.9", "energy_rank@0.95", "erank", "oht", "knee", "sv_ratio@4", "sv_fro@0.9",
                 "sv_cumulative@0.8"]:  # fmt: skip
        assert get_policy(spec)[0].name in available_policies()


def test_rule_values():
    s = np.array([4.0, 2.0, 1.0, 0.5, 0.1])
    e = s**2
    assert suggest_rank(s, "energy@0.9") == int(np.argmax(np.cumsum(e) >= 0.9 * e.sum())) + 1
    assert suggest_rank(s, "sv_ratio@3") == 2  # σ > 4/3
    assert suggest_rank(s, "sv_cumulative@0.8") == 3  # cumulative σ: 4, 6, 7 of 7.6
    assert suggest_rank(s, "sv_fro@0.9") == suggest_rank(s, "energy@0.81")
    flat = np.ones(8)
    assert suggest_rank(flat, "erank") == 8
    assert suggest_rank(np.array([10.0, 9.0, 0.1, 0.1, 0.1, 0.1]), "knee") == 2
    assert suggest_rank(np.array([10.0, 1.0, 1.0, 1.0, 1.0]), "oht", shape=(100, 100)) == 1


def test_unknown_and_malformed_policies_are_usage_errors():
    with pytest.raises(UsageError, match=r"choose from: energy@0\.9, erank"):
        get_policy("magic")
    with pytest.raises(UsageError, match="takes no parameter"):
        get_policy("erank@3")
    with pytest.raises(UsageError, match="not a number"):
        get_policy("energy@x")
    with pytest.raises(UsageError, match="needs t in"):
        get_policy("energy@1.5")


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register(RankPolicy("energy", "dup", "none", lambda s, t, shape: 1))


def test_global_suggestion_is_not_capped_at_32(tmp_path):
    from helpers import planted, write_adapter

    rng = np.random.default_rng(0)
    layers = {f"m.{i}.q_proj": planted(rng, 200, 200, 128, np.ones(100)) for i in range(3)}
    data = gradience.audit(write_adapter(tmp_path, layers, alpha=128)).to_dict()
    assert data["suggested_r_global_90"] == 128  # energy rank 90 of a flat 100-dim spectrum is 90
