"""The bundled example adapters: they load in PEFT, and the audit sees what they were made to be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradience

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def test_audit_sees_what_each_example_was_made_to_be():
    healthy = gradience.audit(EX / "healthy-r8").summary()
    over = gradience.audit(EX / "overprovisioned-r64").summary()
    untrained = gradience.audit(EX / "untrained-r8").summary()
    assert "over_provisioned" in over["flags"] and over["energy_rank_90_p50"] <= 64 / 4
    assert healthy["flags"] == [] and healthy["utilization_mean"] > 5 * over["utilization_mean"]
    assert untrained["flags"] == ["untrained"] and untrained["n_untrained"] == untrained["n_layers"] == 14
    for name in ("healthy-r8", "overprovisioned-r64", "untrained-r8"):
        assert (EX / name / "adapter_model.safetensors").stat().st_size < 1024 * 1024


@pytest.mark.peft
@pytest.mark.parametrize("name", sorted(p.name for p in EX.iterdir() if (p / "adapter_config.json").exists()))
def test_examples_load_with_peft(name):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(EX / "base"))
    model = peft.PeftModel.from_pretrained(base, EX / name)
    result = gradience.audit(EX / name)
    for layer in result.layers:
        module = model.base_model.model.get_submodule(layer.name)
        delta = module.get_delta_weight("default").detach().double().numpy()
        want = np.linalg.svd(delta, compute_uv=False)[: layer.layer.r]
        assert np.max(np.abs(layer.singular_values - want)) <= 1e-6 * max(want[0], 1e-30)


@pytest.mark.peft
def test_compressing_the_overprovisioned_example_keeps_its_behaviour(tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    res = gradience.compress(EX / "overprovisioned-r64", tmp_path / "r8", rank=8)
    assert min(x.retained_energy for x in res.layers) >= 0.9  # every layer has E90 ≤ 8
    cfg = transformers.AutoConfig.from_pretrained(EX / "base")
    # the example's task (examples/README.md): after each token x comes x // 16
    x = torch.randint(0, cfg.vocab_size, (8, 8), generator=torch.Generator().manual_seed(1))
    ids = torch.stack([x, x // 16], dim=-1).reshape(8, 16)
    accuracy = []
    for folder in (EX / "overprovisioned-r64", tmp_path / "r8"):
        torch.manual_seed(0)
        base = transformers.AutoModelForCausalLM.from_config(cfg)
        model = peft.PeftModel.from_pretrained(base, folder).eval()
        with torch.no_grad():
            predicted = model(ids).logits[:, 0::2].argmax(-1)
        accuracy.append(float((predicted == x // 16).float().mean()))
    assert accuracy[0] == 1.0 and accuracy[1] == 1.0
