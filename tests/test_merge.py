"""merge-audit verdicts on constructed cases, degenerate inputs, and merges against oracles."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import PREFIX, write_adapter

from gradience.adapters.safetensors_io import SafetensorsFile
from gradience.merge.execute import merge
from gradience.merge.pairwise import merge_audit

OUT, IN, R = 48, 40, 8


def _orth(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def _factors(u, s, v):
    """A [r, in], B [out, r] with B·A = U·diag(s)·Vᵀ."""
    root = np.sqrt(s)
    return root[:, None] * v.T, u * root


def _pair(tmp_path, kind: str):
    rng = np.random.default_rng(7)
    s = np.array([4.0, 3.0, 2.0, 1.5, 1.0, 0.2, 0.1, 0.05])
    layers_a, layers_b = {}, {}
    for name in ("m.0.q_proj", "m.0.v_proj", "m.1.q_proj"):
        u, v = _orth(rng, OUT, R), _orth(rng, IN, R)
        layers_a[name] = _factors(u, s, v)
        if kind == "identical":
            layers_b[name] = _factors(u, s, v)
        elif kind == "sign_flipped":
            a, b = _factors(u, s, v)
            layers_b[name] = (a, -b)
        elif kind == "orthogonal":
            q = _orth(rng, OUT, 2 * R)
            qv = _orth(rng, IN, 2 * R)
            layers_a[name] = _factors(q[:, :R], s, qv[:, :R])
            layers_b[name] = _factors(q[:, R:], s, qv[:, R:])
        elif kind == "imbalanced":  # same output subspace, unrelated inputs, 10× larger
            q = _orth(rng, IN, 2 * R)
            layers_a[name] = _factors(u, s, q[:, :R])
            layers_b[name] = _factors(u, 10 * s, q[:, R:])
    return (
        write_adapter(tmp_path / "a", layers_a, alpha=R),
        write_adapter(tmp_path / "b", layers_b, alpha=R),
    )


@pytest.mark.parametrize(
    ("kind", "verdict"),
    [
        ("identical", "REDUNDANT"),
        ("sign_flipped", "CONFLICTING"),
        ("orthogonal", "SAFE"),
        ("imbalanced", "IMBALANCED"),
    ],
)
def test_constructed_pairs_get_the_expected_verdicts(tmp_path, kind, verdict):
    d = merge_audit(_pair(tmp_path, kind)).to_dict()
    assert {c["verdict"] for c in d["per_layer"]} == {verdict}
    assert d["aggregate"]["overall_verdict"] == verdict
    recs = d["recommendations"]
    if verdict == "IMBALANCED":  # B is 10× stronger: A, the weaker, gets the larger weight
        for r in recs:
            wa, wb = r["coefficients"]
            assert wa > wb and wa == pytest.approx(0.9) and wa + wb == pytest.approx(1.0)
    if verdict == "CONFLICTING":
        assert all(r["strategy"] == "dare_ties" and r["drop_rate"] == pytest.approx(0.5) for r in recs)
        assert all(c["n_conflict"] == c["n_principal"] for c in d["per_layer"])
    if verdict == "REDUNDANT":
        c = d["per_layer"][0]
        assert c["overlap"] == pytest.approx(1.0) and c["agreement"] == pytest.approx(1.0)
        assert all(r["strategy"] == "ties" and r["trim"] == pytest.approx(0.5) for r in recs)
    if verdict == "SAFE":
        assert all(c["overlap"] < 1e-6 for c in d["per_layer"])  # float32 factors
        assert all(r["coefficients"] == [0.5, 0.5] for r in recs)


def test_degenerate_inputs_give_valid_json(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((R, IN)), rng.standard_normal((OUT, R))
    nan_b = b.copy()
    nan_b[0, 0] = np.nan
    x = write_adapter(tmp_path / "x", {"m.q_proj": (a, b), "m.k_proj": (a, b), "m.v_proj": (a, b)})
    y = write_adapter(
        tmp_path / "y",
        {"m.q_proj": (a, np.zeros_like(b)), "m.k_proj": (a, nan_b), "m.o_proj": (a[:1], b[:, :1])},
    )
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "merge-audit", str(x), str(y), "--json"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)  # strict parse: no NaN / Infinity tokens
    by = {c["layer"]: c for c in d["per_layer"]}
    assert by["m.q_proj"]["flags"] == ["b_zero"] and by["m.q_proj"]["sigma_ratio"] is None
    assert by["m.k_proj"]["verdict"] == "INVALID"
    assert d["compatibility"]["only_in_a"] == ["m.v_proj"] and d["compatibility"]["only_in_b"] == ["m.o_proj"]
    rec = {r["layer"]: r for r in d["recommendations"]}
    assert rec["m.q_proj"]["coefficients"] == [1.0, 0.0]


def test_rank_one_adapters(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1, IN)), rng.standard_normal((OUT, 1))
    x = write_adapter(tmp_path / "x", {"m.q_proj": (a, b)}, alpha=1)
    y = write_adapter(tmp_path / "y", {"m.q_proj": (a, -b)}, alpha=1)
    d = merge_audit([x, y]).to_dict()
    assert d["per_layer"][0]["verdict"] == "CONFLICTING" and d["per_layer"][0]["k_a"] == 1


def _dense(folder, name):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    with SafetensorsFile(folder / "adapter_model.safetensors") as f:
        a = f.read(f"{PREFIX}{name}.lora_A.weight").astype(np.float64)
        b = f.read(f"{PREFIX}{name}.lora_B.weight").astype(np.float64)
    r = a.shape[0]
    alpha = cfg["lora_alpha"]
    for key, value in (cfg.get("alpha_pattern") or {}).items():
        if name.endswith(key):
            alpha = value
    return alpha / r * b @ a


def test_linear_merge_is_exact_in_factor_space(tmp_path):
    x, y = _pair(tmp_path, "imbalanced")
    res = merge([x, y], tmp_path / "m", strategy="linear", weights=[0.7, 0.3], energy=1.0)
    for lm in res.layers:
        want = 0.7 * _dense(x, lm.name) + 0.3 * _dense(y, lm.name)
        got = _dense(tmp_path / "m", lm.name)
        assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want)
        assert lm.rank == 2 * R and lm.residual < 1e-6


def test_merge_strategies_agree_with_peft_merge_utils(monkeypatch):
    torch = pytest.importorskip("torch")
    mu = pytest.importorskip("peft.utils.merge_utils")
    from gradience.merge import strategies as S

    rng = np.random.default_rng(0)
    tasks = [rng.standard_normal((30, 20)), rng.standard_normal((30, 20))]
    w = [0.6, 0.4]
    tt = [torch.from_numpy(t) for t in tasks]
    wt = torch.tensor(w, dtype=torch.float64)
    np.testing.assert_allclose(S.ties(tasks, w, 0.3), mu.ties(tt, wt, 0.3).numpy(), atol=1e-12)
    masks = [rng.random(t.shape) < 0.6 for t in tasks]
    queue = [torch.from_numpy(m.astype(np.float64)) for m in masks]

    def injected(p):  # peft draws one Bernoulli mask per task, in order
        return queue.pop(0)

    monkeypatch.setattr(torch, "bernoulli", injected)
    np.testing.assert_allclose(
        S.dare_linear(tasks, w, 0.6, masks=masks), mu.dare_linear(tt, wt, 0.6).numpy(), atol=1e-12
    )
    queue[:] = [torch.from_numpy(m.astype(np.float64)) for m in masks]
    np.testing.assert_allclose(
        S.dare_ties(tasks, w, 0.6, masks=masks), mu.dare_ties(tt, wt, 0.6).numpy(), atol=1e-12
    )


@pytest.mark.parametrize("strategy", ["ties", "dare_ties", "dare_linear"])
def test_dense_strategies_refactor_with_reported_residual(tmp_path, strategy):
    from gradience.merge.strategies import get_strategy

    x, y = _pair(tmp_path, "orthogonal")
    res = merge([x, y], tmp_path / "m", strategy=strategy, density=0.7, energy=1.0, max_rank=12, seed=3)
    masks = np.random.default_rng([3, 0])  # the merge draws DARE masks from this, layer by layer
    for lm in res.layers:
        tasks = [_dense(x, lm.name), _dense(y, lm.name)]
        want = get_strategy(strategy).rule(tasks, [0.5, 0.5], 0.7, masks)
        s = np.linalg.svd(want, compute_uv=False)
        got = _dense(tmp_path / "m", lm.name)
        optimal = np.sqrt(np.sum(s[lm.rank :] ** 2))  # Eckart–Young: the best any rank-k factor can do
        error = np.linalg.norm(got - want)
        assert error <= 1.02 * optimal + 1e-6 * np.linalg.norm(want)
        assert lm.residual == pytest.approx(error / np.linalg.norm(want), rel=1e-3, abs=1e-6)


@pytest.mark.peft
def test_merged_examples_load_in_peft_and_apply_the_weighted_sum(tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from conftest import EXAMPLES

    a, b = EXAMPLES / "healthy-r8", EXAMPLES / "overprovisioned-r64"
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "merge", str(a), str(b), "--out", str(tmp_path / "m"),
         "--strategy", "linear", "--energy", "1.0", "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    cfg = transformers.AutoConfig.from_pretrained(EXAMPLES / "base")
    deltas = []
    for folder in (a, b, tmp_path / "m"):
        torch.manual_seed(0)
        model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_config(cfg), folder)
        deltas.append(
            {
                n: m.get_delta_weight("default").double()
                for n, m in model.named_modules()
                if hasattr(m, "get_delta_weight") and "default" in getattr(m, "lora_A", {})
            }
        )
    for name, merged in deltas[2].items():
        want = 0.5 * deltas[0][name] + 0.5 * deltas[1][name]
        assert torch.linalg.norm(merged - want) <= 1e-5 * torch.linalg.norm(want), name


def test_cli_outputs_validate_against_their_schemas_and_plans_round_trip(tmp_path):
    import jsonschema
    from conftest import ROOT

    schemas = ROOT / "gradience" / "schemas"
    audit_schema = json.loads((schemas / "merge_audit.schema.json").read_text())
    plan_schema = json.loads((schemas / "merge_plan.schema.json").read_text())
    x, y = _pair(tmp_path, "sign_flipped")
    z, _ = _pair(tmp_path / "more", "identical")
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "merge-audit", "--adapter-a", str(x), "--adapter-b", str(y), "--json",
         "--plan-out", str(tmp_path / "plan.json"), "--markdown", str(tmp_path / "r.md")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    jsonschema.validate(json.loads(p.stdout), audit_schema)
    plan = json.loads((tmp_path / "plan.json").read_text())
    jsonschema.validate(plan, plan_schema)
    assert "| Layer | Strategy | Coefficients | Trim | Notes |" in (tmp_path / "r.md").read_text()
    three = subprocess.run(
        [sys.executable, "-m", "gradience", "merge-audit", str(x), str(y), str(z), "--json"],
        capture_output=True,
        text=True,
    )
    d3 = json.loads(three.stdout)
    jsonschema.validate(d3, audit_schema)
    assert [(p["a"], p["b"]) for p in d3["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    res = merge([x, y], tmp_path / "m", plan=tmp_path / "plan.json")
    assert {lm.strategy for lm in res.layers} == {"dare_ties"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["merge-audit", "ONLY"], "at least two adapters"),
        (["merge-audit", "A", "B", "--energy-threshold", "2"], "energy threshold must be in"),
        (["merge", "A", "B", "--out", "O", "--weights", "1,x"], "comma-separated numbers"),
        (["merge", "A", "B", "--out", "O", "--weights", "1,2,3", "--strategy", "linear"], "need 2 values"),
        (["merge", "A", "B", "--out", "O", "--strategy", "magic"], "invalid choice: 'magic'"),
        (["merge", "A", "B", "--out", "O", "--plan", "PLAN"], "not a merge plan"),
    ],
)
def test_merge_usage_errors_are_one_line_exit_2(tmp_path, argv, needle):
    x, y = _pair(tmp_path, "identical")
    (tmp_path / "plan.json").write_text('{"schema": "something/else"}')
    subs = {
        "A": str(x),
        "B": str(y),
        "ONLY": str(x),
        "O": str(tmp_path / "o"),
        "PLAN": str(tmp_path / "plan.json"),
    }
    p = subprocess.run(
        [sys.executable, "-m", "gradience", *[subs.get(a, a) for a in argv]], capture_output=True, text=True
    )
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    ("pair", "verdict"),
    [("merge-conflict", "CONFLICTING"), ("merge-related", "SAFE"), ("merge-duplicate", "REDUNDANT")],
)
def test_bundled_example_pairs(pair, verdict):
    from conftest import EXAMPLES

    d = merge_audit([EXAMPLES / f"{pair}-a", EXAMPLES / f"{pair}-b"]).to_dict()
    assert d["aggregate"]["overall_verdict"] == verdict


def test_cholesky_route_equals_the_qr_route(tmp_path):
    from gradience.adapters.load import load_adapter
    from gradience.merge.compare import LayerSpectrum, compare_layers, layer_spectrum
    from gradience.merge.verdicts import PRESETS
    from gradience.spectral.factored import svd_qr
    from gradience.spectral.metrics import energy_rank

    x, y = _pair(tmp_path, "imbalanced")
    with load_adapter(x) as ax, load_adapter(y) as ay:
        for la, lb in zip(ax.layers, ay.layers, strict=True):
            fast = [layer_spectrum(ad, layer, 0.9) for ad, layer in ((ax, la), (ay, lb))]
            assert all(sp.fast for sp in fast)
            slow = []
            for ad, layer in ((ax, la), (ay, lb)):
                f = ad.factors(layer)
                svd = svd_qr(f.a, f.b, layer.scale)
                slow.append(LayerSpectrum(layer, svd, energy_rank(svd.s, 0.9)))
            c1 = compare_layers(*fast, PRESETS["default"]).to_dict()
            c2 = compare_layers(*slow, PRESETS["default"]).to_dict()
            for key in ("overlap", "overlap_right", "agreement", "sigma_ratio", "frob_ratio"):
                assert c1[key] == pytest.approx(c2[key], rel=1e-6, abs=1e-9), key
            assert (c1["verdict"], c1["n_conflict"], c1["k_a"]) == (
                c2["verdict"],
                c2["n_conflict"],
                c2["k_a"],
            )


@pytest.mark.parametrize("pair", ["merge-duplicate", "merge-related", "merge-conflict"])
def test_agrees_with_gradience_0_11_merge_audit(pair):
    from conftest import EXAMPLES, ROOT

    recorded = json.loads((ROOT / "tests" / "data" / "gradience011" / f"merge-{pair}.json").read_text())
    ours = merge_audit([EXAMPLES / f"{pair}-a", EXAMPLES / f"{pair}-b"]).to_dict()
    by = {c["layer"]: c for c in ours["per_layer"]}
    for old in recorded["per_layer"]:
        row = by[old["layer"].removeprefix("base_model.model.")]
        assert row["overlap"] == pytest.approx(old["mean_overlap"], abs=1e-6)
        assert row["agreement"] == pytest.approx(old["directional_agreement"], abs=1e-6)
        assert row["sigma_ratio"] == pytest.approx(old["magnitude_ratio"], rel=1e-6)
        assert row["frob_ratio"] == pytest.approx(old["frobenius_ratio"], rel=1e-6)
        assert row["verdict"] == old["verdict"].upper()
    assert ours["aggregate"]["overall_verdict"] == recorded["aggregate"]["overall_verdict"].upper()


def test_blocked_rules_match_whole_tensor_definitions(monkeypatch):
    """More entries than a block, float32 and float64: the blocked TIES/DARE equal the
    whole-tensor formulas, keep the input dtype, and DARE is reproducible per seed."""
    from gradience.merge import strategies as S

    monkeypatch.setattr(S, "BLOCK", 97)  # many uneven blocks
    rng = np.random.default_rng(5)
    tasks = [rng.standard_normal((23, 19)) for _ in range(3)]
    w = [0.5, 0.3, 0.2]

    def reference(pruned):
        p = np.stack(pruned)
        agree = np.sign(p) == np.where(p.sum(axis=0) >= 0, 1.0, -1.0)
        return (p * np.reshape(w, (-1, 1, 1)) * agree).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)

    def top_k(t, d):
        k = int(d * t.size)
        out = np.zeros(t.size)
        keep = np.argsort(-np.abs(t.ravel()), kind="stable")[:k]
        out[keep] = t.ravel()[keep]
        return out.reshape(t.shape)

    for d in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(S.ties(tasks, w, d), reference([top_k(t, d) for t in tasks]), atol=1e-12)
    masks = [rng.random(t.shape) < 0.6 for t in tasks]
    np.testing.assert_allclose(
        S.dare_ties(tasks, w, 0.6, masks=masks),
        reference([t * m / 0.6 for t, m in zip(tasks, masks, strict=True)]),
        atol=1e-12,
    )
    f32 = [t.astype(np.float32) for t in tasks]
    assert S.ties(f32, w, 0.5).dtype == np.float32
    np.testing.assert_allclose(S.ties(f32, w, 0.5), S.ties(tasks, w, 0.5), atol=1e-5)
    one = S.dare_ties(f32, w, 0.5, rng=np.random.default_rng(1))
    assert one.dtype == np.float32
    np.testing.assert_array_equal(one, S.dare_ties(f32, w, 0.5, rng=np.random.default_rng(1)))
    kept = np.mean(S.dare_linear([np.ones((300, 300))], [1.0], 0.25, rng=np.random.default_rng(2)) != 0)
    assert kept == pytest.approx(0.25, abs=0.01)


def test_randomized_svd_on_float32_keeps_its_accuracy():
    from gradience.spectral.randomized import randomized_svd

    rng = np.random.default_rng(3)
    u, v = _orth(rng, 300, 60), _orth(rng, 200, 60)
    s = 0.8 ** np.arange(60)
    m = (u * s) @ v.T
    svd = randomized_svd(m.astype(np.float32), 20, rng=np.random.default_rng(0))
    np.testing.assert_allclose(svd.s, s[:20], rtol=1e-4)
    err = np.linalg.norm(m - (svd.u * svd.s) @ svd.vt)
    assert err <= 1.02 * np.sqrt(np.sum(s[20:] ** 2))


def test_merge_streams_layers_and_writes_atomically(tmp_path, monkeypatch):
    """Every layer's factors are final as it is merged (alpha = rank per layer, so PEFT's
    scale is 1), ranks that differ go to rank_pattern and alpha_pattern alike, and a merge
    that fails midway leaves no adapter and no temporary files behind."""
    from gradience.adapters import write as W
    from gradience.merge import execute as E

    x, y = _pair(tmp_path, "orthogonal")
    res = merge([x, y], tmp_path / "m", strategy="linear", energy=1.0, max_rank=12)
    cfg = json.loads((tmp_path / "m" / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] == cfg["r"] and cfg["rank_pattern"] == {}
    for lm in res.layers:
        want = 0.5 * _dense(x, lm.name) + 0.5 * _dense(y, lm.name)
        assert np.linalg.norm(_dense(tmp_path / "m", lm.name) - want) <= (
            lm.residual + 1e-6
        ) * np.linalg.norm(want)
    plan = {"schema": "gradience.merge_plan/v1", "default": {"strategy": "linear", "weights": [0.5, 0.5]},
            "layers": {"m.0.v_proj": {"strategy": "ties", "weights": [0.5, 0.5], "density": 0.5}}}  # fmt: skip
    ks = {lm.name: lm.rank for lm in merge([x, y], tmp_path / "p", plan=plan, energy=0.9).layers}
    assert ks["m.0.v_proj"] != ks["m.0.q_proj"] == ks["m.1.q_proj"]
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == ks["m.0.q_proj"]
    assert cfg["rank_pattern"] == {"m.0.v_proj": ks["m.0.v_proj"]}
    assert cfg["alpha_pattern"] == {"m.0.v_proj": float(ks["m.0.v_proj"])}
    seen = []
    real_add = W.PeftAdapterWriter.add

    def add_then_fail(self, name, arr):
        real_add(self, name, arr)
        seen.append(name)
        if len(seen) == 3:
            raise RuntimeError("crash")

    monkeypatch.setattr(W.PeftAdapterWriter, "add", add_then_fail)
    with pytest.raises(RuntimeError):
        E.merge([x, y], tmp_path / "crash", strategy="linear")
    assert not (tmp_path / "crash").exists()
    seen.clear()
    before = [(tmp_path / "m" / f).read_bytes() for f in ("adapter_config.json", "adapter_model.safetensors")]
    with pytest.raises(RuntimeError):
        E.merge([x, y], tmp_path / "m", strategy="linear", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert [
        (tmp_path / "m" / f).read_bytes() for f in ("adapter_config.json", "adapter_model.safetensors")
    ] == before


def test_safetensors_writer_streams_the_same_file_as_write_safetensors(tmp_path):
    from gradience.adapters.safetensors_io import SafetensorsWriter, write_safetensors

    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
              "c": ("BF16", (2,), b"\x80\x3f\x00\x40")}  # fmt: skip
    write_safetensors(tmp_path / "one.safetensors", arrays, metadata={"format": "pt"})
    with SafetensorsWriter(tmp_path / "two.safetensors", metadata={"format": "pt"}) as w:
        for name, value in arrays.items():
            w.add(name, value)
        assert not (tmp_path / "two.safetensors").exists()
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.safetensors", "two.safetensors"]
    with SafetensorsFile(tmp_path / "two.safetensors") as f:
        np.testing.assert_array_equal(f.read("a"), arrays["a"])
        np.testing.assert_array_equal(f.read("c"), [1.0, 2.0])
