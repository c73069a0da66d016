"""Regressions found by using Gradience as a demanding new user would: odd names, Hub
references in every command, rank policies other than energy, small byte caps.

Each test goes through the CLI (in process, ``gradience.cli.main.main``) or the public
Python API, on adapters written here or served by the local Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from servers import hub as H

import gradience
from gradience.cli.main import main

#: Rich markup in names that come from untrusted files and folders.
HOSTILE = "[/bold]"


def _adapter(
    folder: Path, *, base: str = "org/base", layers: tuple[str, ...] = ("model.l0.q",), seed: int = 0
) -> Path:
    """A small trained LoRA adapter (r=4, 16×16 layers) written as PEFT saves one."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q"],
        "base_model_name_or_path": base,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for name in layers:
        tensors[f"base_model.model.{name}.lora_A.weight"] = rng.standard_normal((4, 16)).astype(np.float32)
        tensors[f"base_model.model.{name}.lora_B.weight"] = rng.standard_normal((16, 4)).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENCE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def hostile_pair(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Two adapters in folders named relative to the working directory (short enough that
    no table title wraps)."""
    monkeypatch.chdir(tmp_path)
    layers = (f"model.l{HOSTILE}.q[red]", "model.l1.q")
    a = _adapter(Path(f"a{HOSTILE}"), base=f"{HOSTILE}org/m", layers=layers, seed=1)
    b = _adapter(Path(f"b{HOSTILE}"), base=f"{HOSTILE}org/m", layers=layers, seed=2)
    return a, b


def test_audit_shows_markup_like_folder_base_and_layer_names_literally(hostile_pair, capsys):
    a, _ = hostile_pair
    assert main(["audit", str(a), "--layers", "--top-wasteful", "1"]) == 0
    out = capsys.readouterr().out
    assert str(a) in out.splitlines()[0]
    assert f"base={HOSTILE}org/m" in out
    assert f"model.l{HOSTILE}.q[red]" in out


def test_compress_merge_audit_and_merge_show_markup_like_names_literally(hostile_pair, capsys):
    a, b = hostile_pair
    out_c, out_m = Path(f"c{HOSTILE}"), Path(f"m{HOSTILE}")
    assert main(["compress", str(a), "--out", str(out_c), "--rank", "2", "-q"]) == 0
    assert main(["merge-audit", str(a), str(b), "--verbose"]) == 0
    assert main(["merge", str(a), str(b), "--strategy", "linear", "--out", str(out_m), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"compressed → {out_c}" in out and f"merged → {out_m}" in out
    assert f"A = {a}" in out and f"B = {b}" in out
    assert out.count(f"model.l{HOSTILE}.q[red]") == 3


def test_hub_audit_terminal_names_the_repo_and_revision(hub, capsys):
    repo = H.EXAMPLE_REPOS["healthy-r8"]
    assert main(["audit", f"{repo}@main"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{repo}@main  LORA"), first


def test_merge_audit_of_hub_subfolders_names_them_as_references(hub, capsys):
    a, b = (f"hf://{H.MERGE_PAIRS_REPO}/merge-related-{x}" for x in "ab")
    assert main(["merge-audit", a, b, "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)["adapters"]
    assert [p["path"] for p in paths] == [f"{H.MERGE_PAIRS_REPO}@main/merge-related-{x}" for x in "ab"]
    assert main(["merge-audit", a, b]) == 0
    out = capsys.readouterr().out
    assert "hf:/" not in out and f"A = {H.MERGE_PAIRS_REPO}@main/merge-related-a" in out


def test_small_bin_cap_is_reported_in_a_unit_that_is_not_zero(hub, tmp_path):
    """A .bin comes whole, under its own cap; a cap below 1 MB used to read "the cap is 0 MB"."""
    from huggingface_hub import HfApi

    folder = tmp_path / "bin-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (folder / "adapter_model.bin").write_bytes(b"\0" * 4000)  # never read: the size is checked first
    api = HfApi(token=hub.tokens["alice"])
    repo = api.create_repo("alice/qa-bin-cap", exist_ok=True).repo_id
    api.upload_folder(repo_id=repo, folder_path=folder)
    with pytest.raises(gradience.TooLargeError) as e:
        gradience.audit(repo, options=gradience.OpenOptions(token=hub.tokens["alice"], max_bin_bytes=1500))
    assert (e.value.param, e.value.limit, e.value.needed) == ("max_bin_bytes", 1500, 4000)
    assert "is 4.0 kB" in str(e.value) and "cap is 1.5 kB" in str(e.value) and " 0 MB" not in str(e.value)


@pytest.mark.parametrize("policy", ["erank", "knee", "sv_ratio@10"])
def test_recommendation_reason_speaks_of_energy_only_for_energy_policies(examples_dir, policy):
    rec = gradience.audit(examples_dir / "healthy-r8", policy=policy).recommendation
    assert rec.status == "ok" and "energy" not in rec.reason and policy in rec.reason
    energy = gradience.audit(examples_dir / "healthy-r8").recommendation
    assert "keep that energy" in energy.reason


def test_same_layer_name_with_different_shapes_is_incompatible_in_merge_audit_and_merge(tmp_path, capsys):
    """Two adapters for different models that share module names: merge-audit used to call
    the pair SAFE while merge then failed as if a file were corrupt."""
    a = _adapter(tmp_path / "a", layers=("model.l0.q", "model.l1.q"), seed=1)
    b = _adapter(tmp_path / "b", layers=("model.l0.q", "model.l1.q"), seed=2)
    wide = load_file(str(b / "adapter_model.safetensors"))
    wide["base_model.model.model.l0.q.lora_B.weight"] = np.ones((32, 4), np.float32)
    save_file(wide, str(b / "adapter_model.safetensors"))
    pair = gradience.merge_audit([a, b]).to_dict()["pairs"][0]["aggregate"]
    assert pair["overall_verdict"] == "INCOMPATIBLE"
    assert "model.l0.q" in pair["incompatible"] and "16×16 vs 32×16" in pair["incompatible"]
    with pytest.raises(gradience.IncompatibleAdaptersError) as e:
        gradience.merge([a, b], tmp_path / "out", strategy="linear")
    assert e.value.code == "incompatible" and not (tmp_path / "out").exists()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "out"), "--allow-different-base"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different shapes" in err


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "update", "repo": None},
        {"event": {"scope": "repo.content", "action": "update"}, "repo": "user/lora"},
        {"event": {"scope": "repo.content"}, "repo": {"name": "user/lora"}, "updatedRefs": ["refs/heads/main"]},
        {"event": {"scope": "repo.content"}, "repo": {"name": "user/lora"}, "updatedRefs": {"ref": 1}},
        {"event": {"scope": "discussion", "action": "create"}, "repo": {"name": "user/lora"},
         "discussion": {"isPullRequest": True, "num": "7"}},
        {"event": {"scope": "discussion.comment", "action": "create"}, "repo": {"name": "user/lora"},
         "discussion": [], "comment": {"content": 42}},
    ],
)  # fmt: skip
def test_bot_answers_signed_payloads_of_unexpected_shape_instead_of_dropping_the_connection(
    tmp_path, payload
):
    """The Hub changes its payloads; a signed delivery of a shape never seen is ignored with
    a reason (it used to raise inside the handler: no answer at all, a traceback in the log)."""
    import urllib.request

    from gradience.bot.config import BotConfig
    from gradience.bot.server import Bot

    config = BotConfig(port=0, state=tmp_path / "bot.sqlite", token="hf_unused", secret="s", handle="qa-bot")
    with Bot(config) as bot:
        req = urllib.request.Request(
            f"{bot.url}/webhook", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Webhook-Secret": "s"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["queued"] is False
        assert bot.state.counts() == {}


def test_private_repo_error_is_one_line_that_gives_the_token_advice_once(hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["audit", H.PRIVATE_REPO]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and H.PRIVATE_REPO in err
    assert err.count("token") == 1 and "pass --token or set HF_TOKEN" in err


def test_merge_with_a_plan_made_for_other_adapters_says_so(examples_dir, tmp_path):
    a, b, c = (examples_dir / n for n in ("merge-conflict-a", "merge-conflict-b", "merge-related-a"))
    plan = gradience.merge_audit([a, b]).plan()
    same = gradience.merge([a, b], tmp_path / "same", plan=plan)
    assert not any("plan" in w for w in same.warnings)
    other = gradience.merge([a, c], tmp_path / "other", plan=plan)
    assert any("merge plan was made for" in w and str(c) in w for w in other.warnings)


def test_missing_hub_revision_is_named_in_the_error(hub):
    with pytest.raises(gradience.RevisionNotFoundError) as e:
        gradience.audit(f"{H.EXAMPLE_REPOS['healthy-r8']}@no-such-tag")
    assert "revision no-such-tag not found" in str(e.value) and e.value.revision == "no-such-tag"


def test_a_plain_404_is_not_found_not_a_transient_error(hub, tmp_path, capsys, monkeypatch):
    """A one-part repo id ("gpt2" style) the Hub answers with a bare 404: the badge command
    used to say "HTTP 404 ... try again later" (a transient error, so bots retried it)."""
    monkeypatch.setenv("HF_TOKEN", hub.tokens["carol"])
    assert main(["badge", "open", "no-such-model", "--state", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-model not found on the Hub" in err
    assert "try again" not in err


@pytest.mark.parametrize(
    "plan",
    [
        {"default": "linear"},
        {"layers": ["model.l0.q"]},
        {"layers": {"model.l0.q": {"strategy": "linear", "compress_first": {"a": "3"}}}},
    ],
)
def test_a_hand_edited_merge_plan_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, plan):
    a, b = _adapter(tmp_path / "a", seed=1), _adapter(tmp_path / "b", seed=2)
    (tmp_path / "plan.json").write_text(json.dumps({"schema": "gradience.merge_plan/v1", **plan}))
    args = [
        "merge",
        str(a),
        str(b),
        "--plan",
        str(tmp_path / "plan.json"),
        "--out",
        str(tmp_path / "m"),
        "-q",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "merge plan" in err and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["layer_data"]["layer_rows"][0].pop("r"),
        lambda d: d["layer_data"]["layer_rows"][0].pop("flags"),
        lambda d: d.update(adapter="LORA"),
        lambda d: d.update(source=None),
        lambda d: d.update(utilization_mean="0.4"),
    ],
)
def test_diff_of_a_saved_audit_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, edit):
    a = _adapter(tmp_path / "a")
    assert main(["audit", str(a), "--json", "--layers"]) == 0
    saved = json.loads(capsys.readouterr().out)
    edit(saved)
    (tmp_path / "saved.json").write_text(json.dumps(saved))
    assert main(["diff", str(tmp_path / "saved.json"), str(a)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable audit" in err


def test_audit_json_keeps_its_schema_when_the_config_has_odd_informational_fields(tmp_path, capsys):
    """base_model_name_or_path, task_type and target_modules are copied into the report; a
    config holding a number or a list there used to produce JSON that broke the schema."""
    import jsonschema

    a = _adapter(tmp_path / "a")
    config = json.loads((a / "adapter_config.json").read_text())
    config.update(base_model_name_or_path=["org/m"], task_type=5, target_modules=["q", 5])
    (a / "adapter_config.json").write_text(json.dumps(config))
    assert main(["audit", str(a), "--json", "--layers"]) == 0
    report = json.loads(capsys.readouterr().out)
    schema = json.loads((Path(gradience.__file__).parent / "schemas" / "audit.schema.json").read_text())
    jsonschema.validate(report, schema)
    assert report["adapter"]["base_model"] is None and report["adapter"]["task_type"] is None


def _with_extra_tensors(folder: Path, extra: dict[str, np.ndarray]) -> Path:
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    save_file({**tensors, **extra}, str(folder / "adapter_model.safetensors"))
    return folder


def test_lora_bias_is_listed_as_not_audited_and_a_merge_says_it_drops_it(tmp_path):
    a = _adapter(tmp_path / "a")
    config = json.loads((a / "adapter_config.json").read_text())
    (a / "adapter_config.json").write_text(json.dumps({**config, "lora_bias": True}))
    bias = "base_model.model.model.l0.q.lora_B.bias"
    _with_extra_tensors(a, {bias: np.ones(16, np.float32)})
    assert [t["name"] for t in gradience.audit(a).to_dict()["ignored_tensors"]] == [bias]
    merged = gradience.merge([a, a], tmp_path / "m", strategy="linear")
    assert any("lora_bias" in w for w in merged.warnings)
    assert json.loads((tmp_path / "m" / "adapter_config.json").read_text())["lora_bias"] is False


def test_two_tensors_for_one_factor_are_refused_not_silently_one_of_them(tmp_path, capsys):
    a = _adapter(tmp_path / "a")
    key = "base_model.model.model.l0.q.lora_A.default.weight"
    _with_extra_tensors(a, {key: np.ones((4, 16), np.float32)})
    assert main(["audit", str(a)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two lora_A tensors" in err


def _scaled(folder: Path, a_scale: float, b_scale: float) -> Path:
    """An F64 adapter whose factors are scaled to the edges of float64 (1e±150 and beyond)."""
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    out = {k: v.astype(np.float64) * (a_scale if ".lora_A." in k else b_scale) for k, v in tensors.items()}
    save_file(out, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.mark.parametrize(
    ("scales", "dtype", "stored_as"), [((1e150, 1.0), "F32", "Inf"), ((1.0, 1e-170), "BF16", "zeros")]
)
def test_compress_and_merge_refuse_a_dtype_the_factors_do_not_fit(tmp_path, capsys, scales, dtype, stored_as):
    """Such a write used to succeed and leave an adapter that audits as invalid or untrained."""
    a = _scaled(_adapter(tmp_path / "a"), *scales)
    assert main(["compress", str(a), "--out", str(tmp_path / "c"), "--dtype", dtype, "-q"]) == 2
    assert (
        main(
            ["merge", str(a), str(a), "--strategy", "linear", "--out", str(tmp_path / "m"), "--dtype", dtype]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 2 and err.count(f"do not fit in {dtype}: they would be stored as {stored_as}") == 2
    )
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()
    assert gradience.compress(a, tmp_path / "c64").layers[0].r_after >= 1  # F64 holds them


def test_linear_merge_residual_of_huge_updates_is_a_number(tmp_path):
    a = _scaled(_adapter(tmp_path / "a"), 1e150, 1e5)  # σ near 1e156: σ² overflows float64
    merged = gradience.merge([a, a], tmp_path / "m", strategy="linear", energy=0.5, dtype="F64")
    assert all(0 < x.residual < 1 for x in merged.layers)


@pytest.mark.parametrize("scales", [(1e150, 1e5), (1.0, 1e-170)])
def test_merge_audit_of_an_adapter_with_itself_at_extreme_scales_is_redundant(tmp_path, scales):
    """Identical updates near 1e±160: agreement used to be NaN (verdict SAFE) for the large
    ones and a ZeroDivisionError (internal error) for the small ones."""
    a = _scaled(_adapter(tmp_path / "a", layers=("model.l0.q", "model.l1.q")), *scales)
    agg = gradience.merge_audit([a, a]).to_dict()["pairs"][0]["aggregate"]
    assert agg["overall_verdict"] == "REDUNDANT" and agg["mean_agreement"] == pytest.approx(1.0)
    assert agg["compatibility_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("scales", [(1e150, 1e5), (1.0, 1e-170)])
def test_dense_merges_keep_updates_near_the_edges_of_float64(tmp_path, scales):
    """TIES and DARE work on float32 task vectors: updates near 1e+156 overflowed ("SVD did
    not converge", an internal error) and near 1e-168 vanished (an all-zero merge, no error)."""
    a = _scaled(_adapter(tmp_path / "a"), *scales)
    source = gradience.audit(a).layers[0].singular_values
    for strategy, factor in (("ties", 0.5), ("dare_linear", 1.0)):  # weights 0.5 / 0.5, density 1
        out = tmp_path / strategy
        gradience.merge([a, a], out, strategy=strategy, density=1.0, dtype="F64")
        merged = gradience.audit(out).layers[0].singular_values
        assert merged[0] == pytest.approx(factor * source[0], rel=1e-6, abs=0)


def test_a_git_lfs_pointer_on_the_hub_is_named_as_such(hub):
    """A pointer committed as the weights reads as ``lfs_pointer`` (not ``corrupt``), remotely too."""
    import os
    import uuid

    from huggingface_hub import CommitOperationAdd, HfApi
    from servers.hub import BOB_TOKEN

    from gradience.errors import LfsPointerError

    api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=BOB_TOKEN)
    repo = f"bob/pointer-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 123456\n"
    config = (
        Path(__file__).resolve().parents[1] / "examples" / "healthy-r8" / "adapter_config.json"
    ).read_bytes()
    api.create_commit(repo, [CommitOperationAdd("adapter_config.json", config),
                             CommitOperationAdd("adapter_model.safetensors", pointer)], commit_message="oops")  # fmt: skip
    with pytest.raises(LfsPointerError) as e:
        gradience.audit(repo, token=BOB_TOKEN)
    assert e.value.code == "lfs_pointer"
