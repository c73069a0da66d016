"""Shapes and inputs the core was not first designed for, and one recommendation everywhere.

Every check compares against a dense float64 SVD of the formed update (tests/helpers.py), never
against Gradience's own maths.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import gradience
from gradience.errors import IncompatibleAdaptersError, UntrainedAdapterError
from tests.helpers import PREFIX, dense_sigma, write_adapter

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradience", *argv], capture_output=True, text=True)


def _factors(rng: np.random.Generator, out: int, inp: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((r, inp)).astype(np.float32), rng.standard_normal((out, r)).astype(np.float32)


def _dense_update(folder: Path) -> dict[str, np.ndarray]:
    """Each layer's s·B·A formed densely from the files on disk (the oracle's input)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    t = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key, a in t.items():
        if ".lora_A" not in key:
            continue
        name = key[len(PREFIX) :].split(".lora_A")[0]
        b = t[key.replace("lora_A", "lora_B")]
        r = a.shape[0]
        alpha = cfg.get("alpha_pattern", {}).get(name, cfg["lora_alpha"])
        r_cfg = cfg.get("rank_pattern", {}).get(name, cfg["r"])
        assert r == r_cfg
        out[name] = (alpha / r) * (b.astype(np.float64) @ a.astype(np.float64))
    return out


def test_the_bundled_pair_that_crashed_merge_audit():
    p = _cli("merge-audit", str(EXAMPLES / "healthy-r8"), str(EXAMPLES / "overprovisioned-r64"), "--json")
    assert p.returncode == 0, p.stderr
    agg = json.loads(p.stdout)["aggregate"]
    assert agg["overall_verdict"] in ("SAFE", "REDUNDANT", "IMBALANCED", "CONFLICTING")
    assert agg["n_layers_compared"] == 14


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    out=st.integers(2, 12),
    inp=st.integers(2, 12),
    extra=st.integers(-3, 6),
    k=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_rank_above_a_layers_width_everywhere(tmp_path_factory, out, inp, extra, k, seed):
    """r > out, r > in, r == min(out, in): audit, merge-audit, merge and compress all work and
    agree with a dense SVD; compress caps k at the attainable rank and says so."""
    rng = np.random.default_rng(seed)
    r = max(1, min(out, inp) + extra)
    tmp = tmp_path_factory.mktemp("w")
    a1 = write_adapter(tmp / "a", {"m.layers.0.proj": _factors(rng, out, inp, r)}, alpha=2.0 * r)
    a2 = write_adapter(tmp / "b", {"m.layers.0.proj": _factors(rng, out, inp, r)}, alpha=2.0 * r)

    res = gradience.audit(a1)
    (layer,) = res.layers
    want = dense_sigma(*_dense_pair(a1), 2.0)
    np.testing.assert_allclose(layer.singular_values[: min(out, inp, r)], want[: min(out, inp, r)], rtol=1e-6)
    assert res.recommendation.rank <= min(out, inp, r)

    ma = gradience.merge_audit([a1, a2])
    assert ma.pairs[0].aggregate()["n_layers_compared"] == 1

    merged = gradience.merge([a1, a2], tmp / "m", strategy="linear")
    got = _dense_update(tmp / "m")["m.layers.0.proj"]
    oracle = 0.5 * (_dense_update(a1)["m.layers.0.proj"] + _dense_update(a2)["m.layers.0.proj"])
    assert np.linalg.norm(got - oracle) <= 1e-5 * np.linalg.norm(oracle)
    assert merged.layers[0].rank <= min(out, inp)

    c = gradience.compress(a1, tmp / "c", rank=k)
    top = min(out, inp, r)
    assert c.layers[0].r_after == min(k, top)
    if k > top and top < r:
        assert any("capped" in w for w in c.warnings)
    best = np.linalg.svd(_dense_update(a1)["m.layers.0.proj"], compute_uv=False)
    err = np.linalg.norm(_dense_update(tmp / "c")["m.layers.0.proj"] - _dense_update(a1)["m.layers.0.proj"])
    assert err <= np.sqrt(np.sum(best[min(k, top) :] ** 2)) + 1e-4 * best[0]  # Eckart–Young optimal


def _dense_pair(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    t = load_file(str(folder / "adapter_model.safetensors"))
    a = next(v for n, v in t.items() if "lora_A" in n)
    b = next(v for n, v in t.items() if "lora_B" in n)
    return a, b


def _with_base(src: Path, dst: Path, base: str | None) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_cross_base_merge_is_refused_unless_allowed(tmp_path):
    a = EXAMPLES / "merge-related-a"
    b = _with_base(EXAMPLES / "merge-related-b", tmp_path / "b", "someone/other-base")
    with pytest.raises(IncompatibleAdaptersError) as e:
        gradience.merge([a, b], tmp_path / "out")
    assert e.value.code == "incompatible" and not (tmp_path / "out" / "adapter_config.json").exists()
    p = _cli("merge", str(a), str(b), "--out", str(tmp_path / "out2"))
    assert p.returncode == 2 and "different base models" in p.stderr and "--allow-different-base" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    done = gradience.merge([a, b], tmp_path / "out3", allow_different_base=True)
    assert any("different base models" in w for w in done.warnings)

    agg = gradience.merge_audit([a, b]).pairs[0].aggregate()
    assert agg["overall_verdict"] == "INCOMPATIBLE" and agg["risk_level"] == "severe"
    assert agg["incompatible"] == str(e.value)  # one rule: merge-audit says what merge refuses
    # a config that does not name its base is not a mismatch
    c = _with_base(EXAMPLES / "merge-related-b", tmp_path / "c", None)
    assert gradience.merge_audit([a, c]).pairs[0].aggregate()["incompatible"] is None


def test_adapters_without_shared_layers(tmp_path):
    rng = np.random.default_rng(0)
    a = write_adapter(tmp_path / "a", {"m.layers.0.q_proj": _factors(rng, 8, 8, 2)})
    b = write_adapter(tmp_path / "b", {"m.layers.0.v_proj": _factors(rng, 8, 8, 2)})
    agg = gradience.merge_audit([a, b]).pairs[0].aggregate()
    assert agg["overall_verdict"] == "INCOMPATIBLE" and "no layer in common" in agg["incompatible"]
    with pytest.raises(IncompatibleAdaptersError, match="no layer in common"):
        gradience.merge([a, b], tmp_path / "o", strategy="linear")
    p = _cli("merge-audit", str(a), str(b))
    assert p.returncode == 0 and "INCOMPATIBLE" in p.stdout and "no layer in common" in p.stdout


@pytest.mark.parametrize("pair", ["merge-related", "merge-conflict", "merge-duplicate"])
def test_linear_merge_is_exact_by_default(tmp_path, pair):
    a, b = EXAMPLES / f"{pair}-a", EXAMPLES / f"{pair}-b"
    res = gradience.merge([a, b], tmp_path / "m", strategy="linear", weights=[0.7, 0.3])
    got, da, db = _dense_update(tmp_path / "m"), _dense_update(a), _dense_update(b)
    for name in da:
        oracle = 0.7 * da[name] + 0.3 * db.get(name, 0)
        assert np.linalg.norm(got[name] - oracle) <= 1e-6 * np.linalg.norm(oracle), name
    assert all(x.residual == 0.0 or x.residual < 1e-7 for x in res.layers)
    # truncation happens only when asked for
    cut = gradience.merge([a, b], tmp_path / "t", strategy="linear", energy=0.5)
    assert max(x.residual for x in cut.layers) > 1e-3


def test_one_recommendation_in_terminal_json_and_compress(tmp_path):
    src = EXAMPLES / "overprovisioned-r64"
    rec = gradience.audit(src).recommendation
    assert rec.ok and 1 <= rec.rank <= 64
    j = json.loads(_cli("audit", str(src), "--json").stdout)["recommendation"]
    assert j == rec.to_dict()
    assert f"r={rec.rank} of 64" in _cli("audit", str(src)).stdout
    c = gradience.compress(src, tmp_path / "c")
    assert c.config["r"] == rec.rank and all(x.r_after == min(rec.rank, x.r_before) for x in c.layers)
    per = gradience.compress(src, tmp_path / "p", per_layer=True)
    assert {x.name: x.r_after for x in per.layers} == rec.per_layer
    # the snippet reproduces per_layer through LoraConfig's rank_pattern
    assert f"r={rec.rank}," in rec.lora_config()


def test_untrained_adapter_has_no_rank_anywhere(tmp_path):
    src = EXAMPLES / "untrained-r8"
    res = gradience.audit(src)
    rec = res.recommendation
    assert (rec.status, rec.rank, rec.lora_config()) == ("untrained", None, None)
    text = _cli("audit", str(src), "--suggest-per-layer").stdout
    assert "r=None" not in text and "untrained" in text
    with pytest.raises(UntrainedAdapterError):
        gradience.compress(src, tmp_path / "c")
    p = _cli("compress", str(src), "--out", str(tmp_path / "c"))
    assert p.returncode == 2 and "nothing to compress" in p.stderr and "Traceback" not in p.stderr


def test_reports_round_trip_and_flatten():
    from gradience.auditor import ROW_VERSION, AdapterAudit

    res = gradience.audit(EXAMPLES / "healthy-r8")
    d = json.loads(json.dumps(res.to_dict(layers=True)))
    back = AdapterAudit.from_dict(d)
    assert back.to_dict(layers=True) == d
    assert back.recommendation == res.recommendation
    row = res.to_row()
    assert row["row_version"] == ROW_VERSION and row["recommended_r"] == res.recommendation.rank
    assert all(isinstance(v, str | int | float | bool | list | type(None)) for v in row.values())
    layers = res.layer_rows()
    assert len(layers) == 14 and {x["module"] for x in layers} == {x.name for x in res.layers}
    with pytest.raises(gradience.UsageError):
        AdapterAudit.from_dict(res.to_dict())  # no per-layer rows


def test_compress_to_explicit_ranks_per_layer(tmp_path):
    src = EXAMPLES / "overprovisioned-r64"
    names = [x.name for x in gradience.audit(src).layers]
    want = {names[0]: 3, names[1]: 200}
    res = gradience.compress(src, tmp_path / "c", ranks=want)
    got = {x.name: x.r_after for x in res.layers}
    top = next(x for x in gradience.audit(src).layers if x.name == names[1]).layer
    assert got[names[0]] == 3 and got[names[1]] == min(64, top.out_features, top.in_features)
    layers = {x.name: x.layer for x in gradience.audit(src).layers}
    for n in names[2:]:  # not named: they keep their r (or what their width allows)
        assert got[n] == min(64, layers[n].out_features, layers[n].in_features)
    dense = _dense_update(tmp_path / "c")[names[0]]
    assert np.linalg.matrix_rank(dense, tol=1e-6 * np.abs(dense).max()) == 3
    with pytest.raises(gradience.UsageError, match="no LoRA layer named"):
        gradience.compress(src, tmp_path / "d", ranks={"nope": 2})
    with pytest.raises(gradience.UsageError):
        gradience.compress(src, tmp_path / "e", ranks=want, rank=4)


def test_mixed_dtype_factors_are_reported_as_such(tmp_path):
    """A file whose B factors were cast to 16 bits and A factors not: both dtypes are listed."""
    rng = np.random.default_rng(3)
    folder = write_adapter(tmp_path / "m", {"m.layers.0.q_proj": _factors(rng, 16, 12, 4)})
    weights = folder / "adapter_model.safetensors"
    t = load_file(str(weights))
    save_file({k: v.astype(np.float16) if "lora_B" in k else v for k, v in t.items()}, str(weights))
    audit = gradience.audit(folder)
    assert audit.adapter["dtypes"] == ["F16", "F32"]
