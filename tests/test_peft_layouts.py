"""Every supported layout against PEFT itself: the update PEFT applies is the oracle.

Adapters are made with peft on tiny modules (linear, embedding, Conv2d, GPT-2 Conv1D,
DoRA, AdaLoRA, rsLoRA, rank/alpha patterns with look-alike names), saved with
``save_pretrained``; Gradience's spectra must equal the SVD of ``get_delta_weight``, its
rank suggestions must drop into ``LoraConfig``, and its compressed output must load in
PEFT and apply the optimal truncation.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradience

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
pytestmark = pytest.mark.peft


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.embed = torch.nn.Embedding(50, 24)
        self.q_proj = torch.nn.Linear(24, 24)
        self.qq_proj = torch.nn.Linear(24, 40)
        self.up = torch.nn.Linear(24, 48)
        self.conv = torch.nn.Conv2d(3, 16, 3)
        self.c_attn = Conv1D(72, 24)  # GPT-2 style: weight is [in, out]
        self.classifier = torch.nn.Linear(24, 5)

    def forward(self, x):  # pragma: no cover - never called
        return x


LINEAR = ["q_proj", "qq_proj", "up"]
CASES = {
    "lora": dict(r=6, lora_alpha=12, target_modules=LINEAR),
    "rslora": dict(r=6, lora_alpha=12, use_rslora=True, target_modules=LINEAR),
    "patterns": dict(
        r=6,
        lora_alpha=12,
        target_modules=LINEAR,
        rank_pattern={"qq_proj": 3},
        alpha_pattern={"q_proj": 48, "up": 2},
    ),
    "dora": dict(r=5, lora_alpha=10, use_dora=True, target_modules=LINEAR),
    "embedding": dict(r=4, lora_alpha=8, target_modules=["embed", "q_proj"]),
    "conv": dict(r=4, lora_alpha=8, target_modules=["conv"]),
    "conv1d": dict(r=4, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True),
    "modules_to_save": dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["classifier"]),
}


def _randomise(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("lora_B", "lora_embedding_A", "lora_E")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _make(tmp_path, case: str):
    torch.manual_seed(0)
    if case == "adalora":
        cfg = peft.AdaLoraConfig(init_r=6, target_r=3, lora_alpha=12, target_modules=LINEAR, total_step=10)
    else:
        cfg = peft.LoraConfig(**CASES[case])
    model = peft.get_peft_model(Tiny(), cfg)
    _randomise(model, 1)
    if case == "adalora":  # a pruned direction: E = 0 must give an exact zero σ
        with torch.no_grad():
            model.base_model.model.q_proj.lora_E["default"][2].zero_()
    model.save_pretrained(tmp_path / case)
    return model, tmp_path / case


def _delta(model, name: str) -> np.ndarray:
    module = model.base_model.model.get_submodule(name)
    d = module.get_delta_weight("default").detach().double().numpy()
    return d.reshape(d.shape[0], -1)


@pytest.mark.parametrize("case", [*CASES, "adalora"])
def test_spectra_equal_the_svd_of_peft_delta_weight(tmp_path, case):
    model, folder = _make(tmp_path, case)
    result = gradience.audit(folder).to_dict(layers=True)
    rows = result["layer_data"]["layer_rows"]
    assert rows, "no layers found"
    for row in rows:
        want = np.linalg.svd(_delta(model, row["name"]), compute_uv=False)[: row["r"]]
        want = np.pad(want, (0, row["r"] - want.size))
        got = np.array(row["singular_values"])
        assert want[0] > 0, f"{row['name']}: the test adapter must carry an update"
        assert np.max(np.abs(got - want)) <= 1e-6 * want[0], row["name"]
    if case == "dora":
        assert result["adapter"]["dora"] and all(r["dora_magnitude"]["norm"] > 0 for r in rows)
    if case == "modules_to_save":
        assert any("classifier" in t["name"] for t in result["ignored_tensors"])
    if case == "patterns":  # alpha_pattern "q_proj" must not leak onto qq_proj
        by = {r["name"]: r for r in rows}
        assert by["q_proj"]["alpha"] == 48 and by["qq_proj"]["alpha"] == 12 and by["qq_proj"]["r"] == 3
    if case == "adalora":
        q = next(r for r in rows if r["name"] == "q_proj")
        assert q["singular_values"][-1] <= 1e-12 * q["singular_values"][0]


def test_rank_suggestions_drop_into_loraconfig(tmp_path):
    _, folder = _make(tmp_path, "patterns")
    s = gradience.audit(folder, policy="energy@0.6").rank_suggestions()
    model = peft.get_peft_model(
        Tiny(), peft.LoraConfig(r=s["default_r"], rank_pattern=s["rank_pattern"], target_modules=LINEAR)
    )
    per_layer = {
        x.name: x.suggested_ranks["energy@0.6"] for x in gradience.audit(folder, policy="energy@0.6").layers
    }
    for name, k in per_layer.items():
        assert model.base_model.model.get_submodule(name).r["default"] == k


@pytest.mark.parametrize(
    "case", ["lora", "patterns", "rslora", "embedding", "conv", "conv1d", "modules_to_save"]
)
@pytest.mark.parametrize("mode", ["rank", "per_layer"])
def test_compressed_adapter_loads_in_peft_and_applies_the_optimal_truncation(tmp_path, case, mode):
    model, folder = _make(tmp_path, case)
    kwargs = {"rank": 2} if mode == "rank" else {"per_layer": True, "policy": "energy@0.8"}
    result = gradience.compress(folder, tmp_path / "out", **kwargs)
    torch.manual_seed(0)
    loaded = peft.PeftModel.from_pretrained(Tiny(), tmp_path / "out")
    for lc in result.layers:
        u, s, vt = np.linalg.svd(_delta(model, lc.name), full_matrices=False)
        k = lc.r_after
        best = (u[:, :k] * s[:k]) @ vt[:k]
        got = _delta(loaded, lc.name)
        assert np.linalg.norm(got - best) <= 1e-5 * np.linalg.norm(best) + 1e-12, lc.name
        kept = float(np.sum(s[:k] ** 2) / np.sum(s**2))
        assert lc.retained_energy == pytest.approx(kept, rel=1e-6)  # oracle delta is float32
    if case == "modules_to_save":
        before = model.base_model.model.classifier.modules_to_save["default"].weight
        after = loaded.base_model.model.classifier.modules_to_save["default"].weight
        assert torch.equal(before, after)
