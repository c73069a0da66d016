"""Config parsing and PEFT's per-module rules, without torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import write_adapter

import gradience
from gradience.adapters.config import AdapterConfig, exact_pattern, match_pattern_key
from gradience.adapters.layout import classify_module
from gradience.errors import AdapterFormatError, ConfigError, UnsupportedAdapterError


def test_pattern_keys_match_on_module_boundaries_like_peft():
    keys = ["q_proj", "layers.1.mlp.up_proj"]
    assert match_pattern_key(keys, "model.layers.0.self_attn.q_proj") == "q_proj"
    assert match_pattern_key(keys, "model.layers.0.self_attn.qq_proj") is None  # 0.11 matched this
    assert match_pattern_key(keys, "model.layers.1.mlp.up_proj") == "layers.1.mlp.up_proj"
    assert match_pattern_key(keys, "model.layers.11.mlp.up_proj") is None


def test_exact_pattern_escapes_only_keys_that_would_hit_other_modules():
    names = ["a.layers.1.q_proj", "a.layers.1xq_proj", "b.q_proj"]
    out = exact_pattern({"a.layers.1.q_proj": 3, "b.q_proj": 2}, names)
    assert out["b.q_proj"] == 2  # readable: PEFT applies it to b.q_proj alone
    escaped = next(k for k in out if k != "b.q_proj")
    assert escaped != "a.layers.1.q_proj"
    assert [n for n in names if match_pattern_key([escaped], n)] == ["a.layers.1.q_proj"]


@pytest.mark.parametrize(
    ("cfg", "r", "alpha", "scale"),
    [
        ({"r": 8, "lora_alpha": 16}, 8, 16, 2.0),
        ({"r": 16, "lora_alpha": 16, "use_rslora": True}, 16, 16, 4.0),
        ({"peft_type": "ADALORA", "init_r": 12, "r": 8, "lora_alpha": 24}, 12, 24, 24 / (12 + 1e-5)),
    ],
)
def test_scales(cfg, r, alpha, scale):
    c = AdapterConfig.from_dict(cfg)
    assert c.r == r and c.scale(c.lora_alpha, r) == pytest.approx(scale)


@pytest.mark.parametrize(
    ("cfg", "error", "needle"),
    [
        ([], ConfigError, "JSON object"),
        ({"r": 0}, ConfigError, "positive integer"),
        ({"r": True}, ConfigError, "positive integer"),
        ({"lora_alpha": "big"}, ConfigError, "must be a number"),
        ({"rank_pattern": {"q": 0}}, ConfigError, "invalid value"),
        ({"rank_pattern": {"(": 4}}, ConfigError, "not a valid pattern"),
        ({"alpha_pattern": []}, ConfigError, "must be an object"),
        ({"peft_type": "LOHA"}, UnsupportedAdapterError, "unsupported adapter type LOHA"),
        ({"peft_type": "PREFIX_TUNING"}, UnsupportedAdapterError, "unsupported"),
    ],
)
def test_invalid_configs(cfg, error, needle):
    with pytest.raises(error, match=needle):
        AdapterConfig.from_dict(cfg)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.layers.0.self_attn.q_proj", "attn"),
        ("distilbert.transformer.layer.0.attention.q_lin", "attn"),
        ("transformer.h.0.attn.c_attn", "attn"),
        ("transformer.h.0.attn.c_proj", "attn"),
        ("transformer.h.0.mlp.c_proj", "mlp"),
        ("model.layers.0.mlp.down_proj", "mlp"),
        ("bert.encoder.layer.0.intermediate.dense", "mlp"),
        ("model.embed_tokens", "other"),
    ],
)
def test_module_types(name, kind):
    assert classify_module(name) == kind


def test_adapter_name_in_keys_and_rank_from_shapes(tmp_path):
    rng = np.random.default_rng(0)
    f = write_adapter(
        tmp_path, {"m.q_proj": (rng.standard_normal((4, 8)), rng.standard_normal((8, 4)))},
        r=8, adapter_name="default",
    )  # fmt: skip
    result = gradience.audit(f)
    assert result.layers[0].name == "m.q_proj" and result.layers[0].layer.r == 4
    assert any("config says r=8" in w for w in result.warnings)
    assert result.layers[0].layer.scale == pytest.approx(16 / 4)


def test_two_adapters_in_one_file_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    extra = {
        "m.q_proj.lora_A.one.weight": a, "m.q_proj.lora_B.one.weight": b,
        "m.q_proj.lora_A.two.weight": a, "m.q_proj.lora_B.two.weight": b,
    }  # fmt: skip
    with pytest.raises(AdapterFormatError, match="several adapters"):
        gradience.audit(write_adapter(tmp_path, {}, extra=extra))


def test_other_tuner_tensors_are_unsupported(tmp_path):
    extra = {"m.q_proj.hada_w1_a": np.ones((4, 4), np.float32)}
    with pytest.raises(UnsupportedAdapterError):
        gradience.audit(write_adapter(tmp_path, {}, extra=extra))


def test_f16_adapter(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 32)), rng.standard_normal((32, 4))
    f = write_adapter(tmp_path, {"m.q_proj": (a, b)}, dtype="float16", alpha=4)
    row = gradience.audit(f).to_dict(layers=True)["layer_data"]["layer_rows"][0]
    a16, b16 = a.astype(np.float16).astype(np.float64), b.astype(np.float16).astype(np.float64)
    want = np.linalg.svd(b16 @ a16, compute_uv=False)[:4]
    assert row["dtype"] == "F16"
    np.testing.assert_allclose(row["singular_values"], want, rtol=1e-9)
    assert row["frob_sq"] == pytest.approx(float(np.sum(want**2)))
    assert row["sigma_max"] == pytest.approx(want[0]) and math.isclose(row["scale"], 1.0)
