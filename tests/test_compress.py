"""Compression on its own: ranks, dtypes, configs and refusals (PEFT loading is in
test_peft_layouts.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import planted, write_adapter

import gradience
from gradience.adapters.safetensors_io import SafetensorsFile
from gradience.errors import AdapterFormatError, UnsupportedAdapterError, UsageError


@pytest.fixture
def mixed(tmp_path):
    rng = np.random.default_rng(0)
    layers = {
        "m.0.q_proj": planted(rng, 40, 30, 8, np.array([5.0, 1.0])),
        "m.0.v_proj": planted(rng, 40, 30, 8, np.array([5.0, 4.0, 3.0, 2.0, 1.0])),
        "m.1.q_proj": planted(rng, 40, 30, 8, np.array([5.0, 1.0])),
    }
    return write_adapter(tmp_path / "in", layers, alpha=16, config={"alpha_pattern": {"v_proj": 8}})


def _dense(folder, name):
    from helpers import PREFIX

    cfg = json.loads((folder / "adapter_config.json").read_text())
    with SafetensorsFile(folder / "adapter_model.safetensors") as f:
        a = f.read(f"{PREFIX}{name}.lora_A.weight").astype(np.float64)
        b = f.read(f"{PREFIX}{name}.lora_B.weight").astype(np.float64)
    r = a.shape[0]
    alpha = cfg["alpha_pattern"].get(
        name, cfg["alpha_pattern"].get(name.rsplit(".", 1)[-1], cfg["lora_alpha"])
    )
    return alpha / r * b @ a, r


def test_per_layer_ranks_go_to_rank_pattern_and_reproduce_truncations(mixed, tmp_path):
    res = gradience.compress(mixed, tmp_path / "out", per_layer=True, policy="energy@0.99")
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    ranks = {x.name: x.r_after for x in res.layers}
    assert ranks == {"m.0.q_proj": 2, "m.0.v_proj": 5, "m.1.q_proj": 2}
    assert cfg["r"] == 2 and cfg["rank_pattern"] == {"m.0.v_proj": 5}
    assert cfg["alpha_pattern"] == {"m.0.v_proj": 8.0}
    for name, k in ranks.items():
        before, _ = _dense(mixed, name)
        after, r_new = _dense(tmp_path / "out", name)
        assert r_new == k
        u, s, vt = np.linalg.svd(before)
        np.testing.assert_allclose(after, (u[:, :k] * s[:k]) @ vt[:k], atol=1e-5 * s[0])


def test_bf16_output_and_uniform_policy(mixed, tmp_path):
    res = gradience.compress(mixed, tmp_path / "out", policy="energy@0.9", dtype="bf16")
    with SafetensorsFile(tmp_path / "out" / "adapter_model.safetensors") as f:
        assert {t.dtype for t in f.tensors.values()} == {"BF16"}
    assert len({x.r_after for x in res.layers}) == 1
    assert res.params_after < res.params_before


def test_refusals(mixed, tmp_path):
    with pytest.raises(UsageError, match="exactly one"):
        gradience.compress(mixed, tmp_path / "o", rank=2, per_layer=True)
    with pytest.raises(UsageError, match="must differ"):
        gradience.compress(mixed, mixed.parent / "in" / ".", rank=2, overwrite=True)
    gradience.compress(mixed, tmp_path / "o", rank=2)
    with pytest.raises(UsageError, match="already holds an adapter") as e:
        gradience.compress(mixed, tmp_path / "o", rank=2)
    assert e.value.param == "overwrite"
    with pytest.raises(UsageError, match="unknown dtype"):
        gradience.compress(mixed, tmp_path / "o2", rank=2, dtype="int4")


def test_nan_and_adalora_inputs_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 8)), rng.standard_normal((8, 4))
    b[0, 0] = np.nan
    f = write_adapter(tmp_path / "nan", {"m.q_proj": (a, b)})
    with pytest.raises(AdapterFormatError, match="NaN"):
        gradience.compress(f, tmp_path / "o", rank=2)
    e = np.ones((4, 1), np.float32)
    g = write_adapter(
        tmp_path / "ada", {"m.q_proj": (a, np.abs(b) * 0 + 1)}, config={"peft_type": "ADALORA", "init_r": 4},
        extra={"base_model.model.m.q_proj.lora_E.weight": e},
    )  # fmt: skip
    with pytest.raises(UnsupportedAdapterError, match="ADALORA"):
        gradience.compress(g, tmp_path / "o", rank=2)


def test_bin_input_writes_safetensors(corpus_dir, tmp_path):
    res = gradience.compress(corpus_dir / "sidkris", tmp_path / "o", rank=4)
    again = gradience.audit(tmp_path / "o")
    assert again.adapter["format"] == "safetensors" and len(again.layers) == len(res.layers)
    assert all(x.layer.r == 4 for x in again.layers)
