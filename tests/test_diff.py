"""Audit diffs: every number against a dense SVD of both sides, statuses, rules, the JSON
schema, the CLI's exit codes, and Hub references at two revisions (local Hub)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import oracle_metrics, planted, write_adapter
from servers import hub as H

import gradience
from gradience.cli.main import main
from gradience.diff import Rules
from gradience.errors import AdapterNotFoundError, UsageError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "diff.schema.json").read_text())


def _valid(d: dict) -> dict:
    """The diff as JSON text would carry it, checked against the schema."""
    data = json.loads(json.dumps(d, allow_nan=False))
    jsonschema.validate(data, SCHEMA)
    return data


# -- the oracle: a reader and an SVD that share nothing with Gradience ------------------------------


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Decode a safetensors file with numpy alone (F32, F16, BF16)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        chunk = body[lo:hi]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(chunk, dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8"}[info["dtype"]])
        out[key] = arr.astype(np.float64).reshape(info["shape"])
    return out


def _oracle(folder: Path, only: set[str] | None = None) -> dict[str, dict]:
    """Layer name → metrics of the dense SVD of s·B·A, from the files alone (every layer,
    or the layers in ``only``: a dense 768×768 SVD costs seconds on a busy 2-core runner)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    tensors = _read_safetensors(folder / "adapter_model.safetensors")
    out = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        if only is not None and name not in only:
            continue
        r = a.shape[0]
        alpha = next(
            (v for k, v in (cfg.get("alpha_pattern") or {}).items() if name == k or name.endswith("." + k)),
            cfg["lora_alpha"],
        )
        scale = alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)
        s = np.linalg.svd(scale * (b.reshape(b.shape[0], -1) @ a.reshape(r, -1)), compute_uv=False)[:r]
        o = oracle_metrics(s)
        out[name] = {
            "r": r,
            "utilization": o["stable_rank"] / r,
            "stable_rank": o["stable_rank"],
            "energy_rank_90": o["er90"],
            "energy_rank_95": o["er95"],
            "energy_rank_99": o["er99"],
            "sigma_max_scaled": float(s[0]),
            "frob_norm_scaled": float(np.sqrt(np.sum(s**2))),
        }
    return out


def _assert_side(value, want, what: str) -> None:
    if isinstance(want, int):
        assert value == want, what
    else:
        assert value == pytest.approx(want, rel=1e-6, abs=1e-12), what


def _check_against_oracle(base: Path, head: Path, *, sample: int | None = None) -> dict:
    """Every layer of both sides (or ``sample`` layers spread over the adapter) against the
    oracle; adapter-level means only when every layer is checked."""
    d = _valid(gradience.diff(base, head).to_dict())
    layers = {x["name"]: x for x in d["layers"]}
    only = None
    if sample:
        names = sorted(layers)
        only = {names[i] for i in np.linspace(0, len(names) - 1, sample).round().astype(int)}
    ob, oh = _oracle(base, only), _oracle(head, only)
    if only is None:
        assert set(layers) == set(ob) | set(oh)
    for name, x in layers.items():
        if only is not None and name not in only:
            continue
        b, h = ob.get(name), oh.get(name)
        assert x["status"] == ("added" if b is None else "removed" if h is None else x["status"])
        for m in ("utilization", "stable_rank", "energy_rank_90", "energy_rank_95", "energy_rank_99",
                  "sigma_max_scaled", "frob_norm_scaled"):  # fmt: skip
            c = x["metrics"][m]
            if b is None:
                assert c["base"] is None and c["delta"] is None
            else:
                _assert_side(c["base"], b[m], f"{name} base {m}")
            if h is None:
                assert c["head"] is None and c["delta"] is None
            else:
                _assert_side(c["head"], h[m], f"{name} head {m}")
            if b is not None and h is not None:
                assert c["delta"] == pytest.approx(h[m] - b[m], rel=1e-6, abs=1e-9), f"{name} Δ{m}"
        assert x["r"]["base"] == (b and b["r"]) and x["r"]["head"] == (h and h["r"])
    for side, o in (("base", ob), ("head", oh)):
        if only is not None:
            break
        m = d["metrics"]["utilization_mean"][side]
        assert m == pytest.approx(np.mean([v["utilization"] for v in o.values()]), rel=1e-6)
        assert d["metrics"]["n_layers"][side] == len(o)
    return d


def test_r8_to_r64_against_dense_svd_of_both_sides():
    d = _check_against_oracle(EXAMPLES / "healthy-r8", EXAMPLES / "overprovisioned-r64")
    assert d["status"] == "changed"
    assert d["config"]["r"] == {"base": 8, "head": 64}
    assert d["flags"]["added"] == ["over_provisioned"] and d["flags"]["cleared"] == []
    assert all(x["status"] == "changed" and x["r"]["delta"] == 56 for x in d["layers"])
    assert d["recommendation"]["changed"]  # same uniform rank, nominal r 8 → 64


def test_layers_added_and_removed_against_dense_svd():
    d = _check_against_oracle(EXAMPLES / "merge-related-a", EXAMPLES / "merge-conflict-a")
    counts = d["layer_counts"]
    assert counts["removed"] > 0 and counts["added"] + counts["changed"] + counts["unchanged"] > 0
    removed = [x["name"] for x in d["layers"] if x["status"] == "removed"]
    assert set(removed) == set(_oracle(EXAMPLES / "merge-related-a")) - set(
        _oracle(EXAMPLES / "merge-conflict-a")
    )
    back = _valid(gradience.diff(EXAMPLES / "merge-conflict-a", EXAMPLES / "merge-related-a").to_dict())
    assert sorted(x["name"] for x in back["layers"] if x["status"] == "added") == sorted(removed)


def test_real_adapter_and_its_compressed_variants_against_dense_svd(corpus_dir, tmp_path):
    src = corpus_dir / "lab08"
    gradience.compress(src, tmp_path / "k4", rank=4)
    gradience.compress(src, tmp_path / "per-layer", per_layer=True)
    d = _check_against_oracle(src, tmp_path / "k4", sample=3)
    assert d["status"] == "changed" and d["config"]["r"] == {"base": 16, "head": 4}
    # Truncation keeps the top σ: σ₁ unchanged to storage precision, energy never grows.
    for x in d["layers"]:
        m = x["metrics"]
        assert m["sigma_max_scaled"]["head"] == pytest.approx(m["sigma_max_scaled"]["base"], rel=1e-2)
        assert m["frob_norm_scaled"]["head"] <= m["frob_norm_scaled"]["base"] * (1 + 1e-2)
    d = _check_against_oracle(src, tmp_path / "per-layer", sample=3)
    assert "rank_pattern" in d["config"]
    assert all(x["r"]["head"] <= x["r"]["base"] for x in d["layers"])


def test_example_and_its_per_layer_compression_every_layer_against_dense_svd(tmp_path):
    gradience.compress(EXAMPLES / "overprovisioned-r64", tmp_path / "small", per_layer=True)
    d = _check_against_oracle(EXAMPLES / "overprovisioned-r64", tmp_path / "small")
    rec = gradience.audit(EXAMPLES / "overprovisioned-r64").recommendation
    assert {x["name"]: x["r"]["head"] for x in d["layers"]} == rec.per_layer
    assert d["flags"]["cleared"] == ["over_provisioned"]


def test_trained_from_untrained_and_identical_copies(tmp_path):
    d = _check_against_oracle(EXAMPLES / "untrained-r8", EXAMPLES / "healthy-r8")
    assert d["flags"]["cleared"] == ["untrained"] and d["flags"]["added"] == []
    assert d["recommendation"]["base"]["status"] == "untrained" and d["recommendation"]["head"]["rank"] >= 1
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLES / "healthy-r8", copy)
    same = _valid(gradience.diff(EXAMPLES / "healthy-r8", copy).to_dict())
    assert same["status"] == "unchanged" and same["config"] == {}
    assert same["layer_counts"]["unchanged"] == same["metrics"]["n_layers"]["head"] == 14
    assert all(
        c["delta"] == 0 for x in same["layers"] for c in x["metrics"].values() if c["delta"] is not None
    )


def test_one_retrained_layer_is_the_only_change(tmp_path):
    rng = np.random.default_rng(7)
    layers = {
        f"model.layers.0.self_attn.{p}": planted(rng, 32, 24, 8, np.array([4.0, 2.0, 1.0])) for p in "qkv"
    }
    write_adapter(tmp_path / "base", {f"{k}_proj": v for k, v in layers.items()})
    layers["model.layers.0.self_attn.k"] = planted(rng, 32, 24, 8, np.array([1.0] * 8))
    write_adapter(tmp_path / "head", {f"{k}_proj": v for k, v in layers.items()})
    d = _check_against_oracle(tmp_path / "base", tmp_path / "head")
    status = {x["name"]: x["status"] for x in d["layers"]}
    assert status == {
        "model.layers.0.self_attn.q_proj": "unchanged",
        "model.layers.0.self_attn.k_proj": "changed",
        "model.layers.0.self_attn.v_proj": "unchanged",
    }
    k = next(x for x in d["layers"] if x["status"] == "changed")
    assert k["metrics"]["energy_rank_90"]["head"] == 8  # flat spectrum: 8 directions for 90%
    assert k["metrics"]["utilization"]["head"] == pytest.approx(1.0)


def test_absent_sides_and_audits_passed_in(tmp_path):
    audit = gradience.audit(EXAMPLES / "healthy-r8")
    added = _valid(gradience.diff(None, audit).to_dict())
    assert added["status"] == "added" and added["base"] is None
    assert {x["status"] for x in added["layers"]} == {"added"}
    removed = _valid(gradience.diff(EXAMPLES / "healthy-r8", None).to_dict())
    assert removed["status"] == "removed" and removed["head"] is None and removed["passed"]
    saved = tmp_path / "audit.json"
    saved.write_text(json.dumps(audit.to_dict(layers=True)))
    from_file = gradience.diff(saved, EXAMPLES / "healthy-r8")
    assert from_file.status == "unchanged"
    with pytest.raises(UsageError):
        gradience.diff(None, None)
    with pytest.raises(UsageError, match="policy"):
        gradience.diff(audit, EXAMPLES / "healthy-r8", policy="knee")
    with pytest.raises(UsageError, match="per-layer"):
        gradience.diff(audit.to_dict(), EXAMPLES / "healthy-r8")
    with pytest.raises(AdapterNotFoundError):
        gradience.diff(EXAMPLES / "healthy-r8", tmp_path / "missing")


# -- rules --------------------------------------------------------------------------------------------


def test_rules_on_the_head_errors_for_the_adapter_warnings_for_layers():
    head = gradience.audit(EXAMPLES / "overprovisioned-r64")
    summary = head.to_dict()
    rules = Rules(min_utilization=0.04, max_rank_ratio=0.05, forbid_flags=("over_provisioned", "untrained"))
    d = gradience.diff(EXAMPLES / "healthy-r8", head, rules=rules)
    assert not d.passed
    errors = {v.rule for v in d.violations if v.severity == "error"}
    assert errors == {"min_utilization", "max_rank_ratio", "forbid_flags"}
    assert summary["utilization_mean"] < 0.04 and summary["recommendation"]["ratio"] > 0.05
    low = {x.name for x in head.layers if x.utilization < 0.04}
    warned = {v.layer for v in d.violations if v.rule == "min_utilization" and v.severity == "warning"}
    assert warned == low and 0 < len(low) < len(head.layers)
    assert all(v.layer is None for v in d.violations if v.severity == "error")
    # The same rules pass where the numbers are fine; no rule reaches an absent head.
    ok = gradience.diff(EXAMPLES / "overprovisioned-r64", EXAMPLES / "healthy-r8",
                        rules=Rules(min_utilization=0.2, forbid_flags="untrained,invalid"))  # fmt: skip
    assert ok.passed and ok.violations == ()
    assert gradience.diff(EXAMPLES / "healthy-r8", None, rules=rules).violations == ()


def test_untrained_head_has_no_ratio_but_can_be_forbidden():
    rules = Rules(max_rank_ratio=0.5, forbid_flags=("untrained",))
    d = gradience.diff(EXAMPLES / "healthy-r8", EXAMPLES / "untrained-r8", rules=rules)
    assert [(v.rule, v.severity) for v in d.violations] == [("forbid_flags", "error")]
    assert not Rules(max_rank_ratio=0.5).evaluate(gradience.audit(EXAMPLES / "untrained-r8"))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("min-utilization=0.1 max-rank-ratio=0.5 forbid-flags=untrained,invalid",
         Rules(0.1, 0.5, ("untrained", "invalid"))),
        ("min_utilization=0.2;forbid_flags=over_provisioned", Rules(0.2, None, ("over_provisioned",))),
        ("", Rules()),
    ],
)  # fmt: skip
def test_rules_parse(text, want):
    assert Rules.parse(text) == want


@pytest.mark.parametrize(
    "text", ["min-utilization", "speed=3", "min-utilization=abc", "forbid-flags=shiny", "max-rank-ratio=-1"]
)
def test_bad_rules_are_usage_errors(text):
    with pytest.raises(UsageError):
        Rules.parse(text)


# -- CLI ----------------------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_markdown_and_exit_codes(capsys, tmp_path):
    base, head = str(EXAMPLES / "healthy-r8"), str(EXAMPLES / "overprovisioned-r64")
    code, out, err = _run(capsys, base, head, "--json", "--markdown", str(tmp_path / "d.md"))
    assert code == 0, err
    data = _valid(json.loads(out))
    assert data == _valid(gradience.diff(base, head).to_dict())
    assert (tmp_path / "d.md").read_text().startswith("## Gradience diff:")
    code, out, err = _run(capsys, base, head, "--min-utilization", "0.1")
    assert code == 3 and "min_utilization" in out and "rules fail" in out
    code, out, _ = _run(
        capsys, base, head, "--json", "--fail-on", "max-rank-ratio=0.5 forbid-flags=untrained"
    )
    assert code == 0 and json.loads(out)["passed"]
    code, out, _ = _run(capsys, head, base, "--json", "--fail-on", "max-rank-ratio=0.5")
    assert code == 3 and [v["rule"] for v in json.loads(out)["violations"] if v["severity"] == "error"] == [
        "max_rank_ratio"
    ]
    # A single-rule flag wins over the same rule in --fail-on.
    code, _, _ = _run(capsys, head, base, "--fail-on", "max-rank-ratio=0.5", "--max-rank-ratio", "1")
    assert code == 0
    code, out, _ = _run(capsys, "-", base, "--json")
    assert code == 0 and json.loads(out)["status"] == "added"


@pytest.mark.parametrize(
    "argv",
    [
        ["examples/healthy-r8", "examples/nope"],
        ["examples/healthy-r8", "examples/healthy-r8", "--fail-on", "speed=3"],
        ["examples/healthy-r8", "examples/healthy-r8", "--forbid-flags", "shiny"],
        ["examples/healthy-r8", "examples/healthy-r8", "--min-utilization", "-1"],
        ["examples/healthy-r8", "examples/healthy-r8", "--revision", "v2"],
        ["-", "-"],
        ["examples/healthy-r8"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, argv):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:  # argparse errors exit; the rest return
        raise SystemExit(main(["diff", *argv]))
    _, err = capsys.readouterr()
    assert e.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("gradience")


# -- Hub references ---------------------------------------------------------------------------------------


@pytest.fixture
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENCE_CACHE", str(tmp_path / "cache"))


def _without_sources(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("base", "head")}


def test_two_revisions_of_a_hub_repo_equal_the_local_diff(hub, _fresh_cache, capsys):
    repo = H.REVISIONS_REPO
    remote = _valid(
        gradience.diff(f"{repo}@v1", f"{repo}@v2", rules=Rules(forbid_flags="untrained")).to_dict()
    )
    local = _valid(gradience.diff(EXAMPLES / "untrained-r8", EXAMPLES / "healthy-r8",
                                  rules=Rules(forbid_flags="untrained")).to_dict())  # fmt: skip
    assert _without_sources(remote) == _without_sources(local)
    assert remote["base"]["label"] == f"{repo}@v1" and len(remote["head"]["source"]["commit"]) == 40
    code, out, err = _run(capsys, f"{repo}@v2", f"{repo}@dev", "--json", "--forbid-flags", "over_provisioned")
    assert code == 3, err
    data = json.loads(out)
    assert data["config"]["r"] == {"base": 8, "head": 64} and data["flags"]["added"] == ["over_provisioned"]


def test_the_module_import_leaves_gradience_diff_callable_and_light():
    code = (
        "import sys, gradience.diff, gradience; from gradience.diff import Rules; "
        "d = gradience.diff(None, 'examples/untrained-r8', rules=Rules(forbid_flags='untrained')); "
        "print(d.status, d.passed, type(gradience.Rules).__name__)"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["added", "False", "type"]
    light = "import sys, gradience.diff, gradience.report.markdown; print('numpy' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", light], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_invalid_and_untrained_sides_stay_schema_valid_with_null_metrics(tmp_path):
    rng = np.random.default_rng(3)
    a, b = planted(rng, 16, 12, 4, np.array([3.0, 1.0]))
    broken = a.copy()
    broken[0, 0] = np.nan
    write_adapter(tmp_path / "bad", {"m.q_proj": (broken, b), "m.v_proj": (a, b)})
    write_adapter(tmp_path / "zero", {"m.q_proj": (a, 0 * b), "m.v_proj": (a, 0 * b)})
    rules = Rules(min_utilization=0.5, max_rank_ratio=0.1, forbid_flags="invalid,untrained")
    d = gradience.diff(tmp_path / "zero", tmp_path / "bad", rules=rules)
    data = _valid(d.to_dict())
    assert "invalid" in d.flags_added and d.flags_cleared == ["untrained"]
    q = next(x for x in data["layers"] if x["name"] == "m.q_proj")
    assert q["metrics"]["utilization"] == {"base": 0.0, "head": None, "delta": None}
    assert q["flags"]["added"] == ["invalid"] and q["flags"]["cleared"] == ["untrained"]
    errors = [(v.rule, v.value) for v in d.violations if v.severity == "error"]
    assert ("forbid_flags", "invalid") in errors and ("max_rank_ratio", 0.25) in errors
    # No warning for a layer whose flag the adapter already carries as an error.
    assert not [v for v in d.violations if v.rule == "forbid_flags" and v.severity == "warning"]
    back = gradience.diff(tmp_path / "bad", tmp_path / "zero", rules=rules)
    assert [v.rule for v in back.violations if v.severity == "error"] == ["min_utilization", "forbid_flags"]


def test_hub_options_reach_both_sides(hub, _fresh_cache, capsys):
    """A private repo needs the token on the command line; without it, one line and exit 2."""
    private, public = H.PRIVATE_REPO, H.EXAMPLE_REPOS["merge-conflict-a"]
    code, out, err = _run(capsys, public, private, "--json", "--token", H.ALICE_TOKEN)
    assert code == 0, err
    assert json.loads(out)["status"] == "unchanged"  # the private repo holds the same adapter
    code, out, err = _run(capsys, public, private, "--token", H.CAROL_TOKEN)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--token" in err
