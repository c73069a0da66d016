"""The command line as users meet it: JSON that parses, one-line errors, exit codes, no torch."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import planted, write_adapter

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "audit.schema.json").read_text())


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradience", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def big_adapter(tmp_path_factory) -> Path:
    """60 layers: enough that 0.11 printed progress into its JSON."""
    rng = np.random.default_rng(0)
    layers = {
        f"model.layers.{i}.self_attn.{m}": planted(rng, 32, 32, 8, np.array([3.0, 1.0, 0.5]))
        for i in range(15)
        for m in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    return write_adapter(tmp_path_factory.mktemp("big"), layers, alpha=16)


def test_json_is_valid_schema_checked_and_alone_on_stdout(big_adapter):
    p = run("audit", str(big_adapter), "--json", "--layers", "--top-singular-values", "3")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["n_layers"] == 60 and len(data["layer_data"]["layer_rows"]) == 60
    row = next(r for r in data["layer_data"]["layer_rows"] if r["name"] == "model.layers.0.self_attn.q_proj")
    assert row["top_singular_values"] == pytest.approx([6.0, 2.0, 1.0])  # planted σ × α/r = 2


def test_0_11_spelling_is_accepted(big_adapter):
    p = run(
        "audit", "--peft-dir", str(big_adapter), "--json", "--layers", "--suggest-per-layer",
        "--top-wasteful", "2", "--rank-policies", "energy@0.90,knee,erank,oht",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert set(data["policy_global_suggestions"]) == {"energy@0.9", "knee", "erank", "oht"}
    assert len(data["top_wasteful"]) == 2
    jsonschema.validate(data, SCHEMA)


def test_human_output_is_a_table(big_adapter):
    p = run("audit", str(big_adapter), "--layers", "--suggest-per-layer")
    assert p.returncode == 0, p.stderr
    assert "utilisation" in p.stdout and "model.layers.14.self_attn.o_proj" in p.stdout


def test_import_and_local_audit_load_no_torch_gradio_or_matplotlib(big_adapter):
    code = (
        "import sys, gradience\n"
        "from gradience.cli.main import main\n"
        f"main(['audit', {str(big_adapter)!r}, '--json', '--layers'])\n"
        f"main(['audit', {str(big_adapter)!r}])\n"
        "heavy = [m for m in ('torch', 'gradio', 'matplotlib', 'transformers', 'peft') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-500:]


def test_compress_cli_writes_an_adapter_gradience_can_audit(big_adapter, tmp_path):
    p = run("compress", str(big_adapter), "--out", str(tmp_path / "c"), "--rank", "2", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["r"] == 2 and all(x["r_after"] == 2 for x in report["layers"])
    again = json.loads(run("audit", str(tmp_path / "c"), "--json").stdout)
    assert again["adapter"]["r"] == 2 and again["n_layers"] == 60
    p = run("truncate", str(big_adapter), "--out", str(tmp_path / "c"), "--rank", "2")
    assert p.returncode == 2 and "--overwrite" in p.stderr


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (argv, substring the one-line error must contain)."""
    rng = np.random.default_rng(0)
    good = {"m.q_proj": (rng.standard_normal((4, 8)), rng.standard_normal((8, 4)))}
    cases: dict[str, tuple[list[str], str]] = {}

    def folder(name: str) -> Path:
        return write_adapter(tmp / name, good)

    cases["missing folder"] = (["audit", str(tmp / "nope")], "no such folder")
    (tmp / "empty").mkdir()
    cases["missing config"] = (["audit", str(tmp / "empty")], "adapter_config.json")
    f = folder("noweights")
    (f / "adapter_model.safetensors").unlink()
    cases["missing weights"] = (["audit", str(f)], "weights are missing")
    f = folder("lfs")
    (f / "adapter_model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\nsize 9\n")
    cases["lfs pointer"] = (["audit", str(f)], "Git LFS pointer")
    f = folder("truncated")
    data = (f / "adapter_model.safetensors").read_bytes()
    (f / "adapter_model.safetensors").write_bytes(data[: len(data) - 20])
    cases["truncated"] = (["audit", str(f)], "outside the file")
    f = folder("hugeheader")
    (f / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    cases["huge header"] = (["audit", str(f)], "header claims")
    f = folder("garbage")
    (f / "adapter_model.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{{{{{" + b"\0" * 10)
    cases["corrupt json"] = (["audit", str(f)], "not valid JSON")
    f = folder("badconfig")
    (f / "adapter_config.json").write_text("{not json")
    cases["invalid config"] = (["audit", str(f)], "not valid JSON")
    f = folder("badr")
    (f / "adapter_config.json").write_text('{"peft_type": "LORA", "r": -3, "lora_alpha": 8}')
    cases["negative r"] = (["audit", str(f)], "'r' must be a positive integer")
    for kind in ("LOHA", "LOKR", "VERA", "OFT", "IA3", "PROMPT_TUNING"):
        f = folder(f"type-{kind}")
        (f / "adapter_config.json").write_text(json.dumps({"peft_type": kind, "r": 4}))
        cases[f"unsupported {kind}"] = (["audit", str(f)], "unsupported adapter type")
    f = write_adapter(
        tmp / "mismatch", {"m.q_proj": (rng.standard_normal((4, 8)), rng.standard_normal((8, 3)))}
    )
    cases["A/B mismatch"] = (["audit", str(f)], "do not form a low-rank product")
    f = write_adapter(
        tmp / "partner", {}, extra={"base_model.model.m.q_proj.lora_A.weight": np.ones((4, 8), np.float32)}
    )
    cases["missing partner"] = (["audit", str(f)], "partner lora_B is missing")
    f = write_adapter(tmp / "nolora", {}, extra={"w": np.ones(3, np.float32)})
    cases["no lora tensors"] = (["audit", str(f)], "no LoRA tensors")
    f = folder("policy")
    cases["unknown policy"] = (["audit", str(f), "--policy", "magic"], "unknown rank policy")
    cases["bad policy value"] = (["audit", str(f), "--policy", "energy@7"], "needs t in")
    cases["bad rank"] = (["compress", str(f), "--out", str(tmp / "o"), "--rank", "0"], "positive integer")
    cases["two rank choices"] = (
        ["compress", str(f), "--out", str(tmp / "o"), "--rank", "2", "--policy", "knee"],
        "not allowed with argument",
    )
    cases["unknown flag"] = (["audit", str(f), "--frobnicate"], "unrecognized arguments")
    return cases


def test_bad_inputs_give_one_line_errors_and_exit_2(tmp_path):
    for name, (argv, needle) in _bad_inputs(tmp_path).items():
        p = run(*argv)
        assert p.returncode == 2, f"{name}: rc={p.returncode} {p.stderr}"
        assert "Traceback" not in p.stderr, name
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, f"{name}: {p.stderr}"
        assert needle in lines[0], f"{name}: {lines[0]}"
        assert p.stdout == "", name


def test_nan_layers_are_flagged_invalid_and_kept_out_of_aggregates(tmp_path):
    rng = np.random.default_rng(0)
    a, b = planted(rng, 16, 16, 4, np.array([2.0, 1.0]))
    bad = b.copy()
    bad[3, 1] = np.nan
    inf = a.copy()
    inf[0, 0] = np.inf
    f = write_adapter(tmp_path / "nan", {"m.q_proj": (a, b), "m.k_proj": (a, bad), "m.v_proj": (inf, b)})
    data = json.loads(run("audit", str(f), "--json", "--layers").stdout)
    jsonschema.validate(data, SCHEMA)
    flags = {r["name"]: r["flags"] for r in data["layer_data"]["layer_rows"]}
    assert flags == {"m.k_proj": ["invalid"], "m.q_proj": [], "m.v_proj": ["invalid"]}
    assert data["n_invalid"] == 2 and "invalid" in data["flags"]
    assert data["stable_rank_mean"] == pytest.approx(1.25)  # only the valid layer: (4+1)/4


def test_untrained_adapter_is_flagged_never_rank_one(tmp_path):
    rng = np.random.default_rng(0)
    f = write_adapter(tmp_path / "u", {"m.q_proj": (rng.standard_normal((8, 16)), np.zeros((16, 8)))})
    data = json.loads(run("audit", str(f), "--json", "--layers").stdout)
    assert data["flags"] == ["untrained"]
    assert data["layer_data"]["layer_rows"][0]["flags"] == ["untrained"]
    assert data["suggested_r_global_median"] is None and data["rank_suggestions"]["default_r"] is None
    human = run("audit", str(f)).stdout
    assert "untrained" in human
