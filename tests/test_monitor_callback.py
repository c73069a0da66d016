"""GradienceCallback in a real (tiny) transformers Trainer run, and the torch probes.

A 1-layer Llama with random weights, a LoRA adapter via peft, synthetic token data, CPU, 30
steps. The monitor's settings are shrunk (window 6) so a 30-step run raises alerts at all.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytestmark = pytest.mark.peft
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import gradience  # noqa: E402
from gradience.monitor import GradienceCallback, MonitorConfig, TrainingMonitor  # noqa: E402
from gradience.monitor.probes import geometry, lora_audit_metrics, lora_factors, lora_spectra  # noqa: E402
from gradience.monitor.replay import replay  # noqa: E402
from gradience.monitor.telemetry import read_telemetry  # noqa: E402

SMALL = {
    "window": 6,
    "cooldown": 3,
    "grad_spike": {"min_history": 2},
    "eval_plateau": {"patience": 2},
    "utilization_low": {"threshold": 0.99},
}


def tiny_lora_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return peft.get_peft_model(transformers.LlamaForCausalLM(cfg), lora)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.x = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.x[i]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trainer")
    model = tiny_lora_model()
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=30, per_device_train_batch_size=8, logging_steps=1,
        eval_strategy="steps", eval_steps=3, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    seen = []
    callback = GradienceCallback(config=SMALL, audit_every=5, on_alert=seen.append)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(64, 0), eval_dataset=Tokens(16, 1), callbacks=[callback]
    )
    logger = logging.getLogger("gradience.monitor")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        trainer.train()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    adapter = out / "adapter"
    model.save_pretrained(str(adapter))
    return {"callback": callback, "model": model, "path": callback.path, "seen": seen, "logs": records,
            "adapter": adapter, "out": out}  # fmt: skip


def test_callback_writes_the_telemetry(trained):
    path = trained["path"]
    assert path == trained["out"] / "gradience_telemetry.jsonl"  # the default: <output_dir>/...
    t = read_telemetry(path)
    assert t.issues == ()
    assert t.count("run_start") == 1 and t.count("run_end") == 1 and t.count("train_step") == 30
    assert t.count("eval") == 10
    start = t.events("run_start")[0]
    assert start.get("config")["lora"]["r"] == 4 and start.get("config")["monitor"]["window"] == 6
    assert start.get("meta")["transformers"] == transformers.__version__
    steps = t.events("train_step")
    assert [r.step for r in steps] == list(range(1, 31))
    assert all(r.number("loss") > 0 and r.number("grad_norm") > 0 and r.number("lr") > 0 for r in steps)
    geo = [r for r in t.events("metrics") if r.kind == "geometry"]
    assert len(geo) == 30
    for g, s in zip(geo, steps, strict=True):
        assert g.step == s.step and g.metrics["grad_norm"] == s.number("grad_norm")
        assert g.metrics["weight_norm"] > 0 and 0 < g.metrics["spectral_complexity"] <= 1
    audits = [r for r in t.events("metrics") if r.kind == "lora_audit"]
    assert [r.step for r in audits] == [5, 10, 15, 20, 25, 30]
    assert all(r.metrics["n_layers"] == 2 and 0 < r.metrics["utilization_mean"] <= 1 for r in audits)
    evals = t.events("eval")
    assert all("loss" in r.metrics and "eval_loss" not in r.metrics for r in evals)


def test_telemetry_replays_to_the_alerts_the_live_monitor_raised(trained):
    live = trained["callback"].alerts
    assert live, "the shrunk settings make a 30-step run raise alerts"
    assert {a.rule for a in live} >= {"UTILIZATION_LOW"}
    result = replay(trained["path"])  # the settings the run used are recorded in run_start
    assert result.config_source == "recorded" and result.config == MonitorConfig.from_dict(SMALL)
    assert [a.to_dict() for a in result.alerts] == [a.to_dict() for a in live]
    assert [a.to_dict() for a in replay(trained["path"], config=SMALL).alerts] == [a.to_dict() for a in live]
    assert replay(trained["path"], use_recorded=False).config_source == "defaults"
    assert [a.to_dict() for a in result.recorded_alerts] == [a.to_dict() for a in live]
    assert trained["seen"] == list(live)  # on_alert saw each one as it happened
    logged = [r.getMessage() for r in trained["logs"]]
    assert len(logged) == len(live) and all(a.rule in m for a, m in zip(live, logged, strict=True))


def test_the_live_audit_matches_gradience_audit_of_the_saved_adapter(trained):
    live = lora_audit_metrics(trained["model"])
    saved = gradience.audit(trained["adapter"]).summary()
    assert live["n_layers"] == saved["n_layers"] == 2 and live["n_untrained"] == 0
    assert live["utilization_mean"] == pytest.approx(saved["utilization_mean"], rel=1e-5)
    assert live["stable_rank_mean"] == pytest.approx(saved["stable_rank_mean"], rel=1e-5)
    spectra = lora_spectra(trained["model"])
    rows = {x.name: x for x in gradience.audit(trained["adapter"]).layers}
    for name, (s, r) in spectra.items():
        assert r == 4
        np.testing.assert_allclose(s, rows[name].singular_values, rtol=1e-5, atol=1e-9)


def test_lora_factors_are_views_of_the_live_weights():
    model = tiny_lora_model()
    params = {id(p): p for p in model.parameters()}
    (name, a, _, scale, r), _ = list(lora_factors(model))
    assert name.endswith("q_proj") and r == 4 and scale == 2.0
    shared = [p for p in params.values() if np.shares_memory(a, p.detach().numpy())]
    assert len(shared) == 1  # A is read in place, not copied
    assert lora_audit_metrics(model)["utilization_mean"] is None  # B = 0 at init: untrained, no alert
    assert lora_audit_metrics(model)["n_untrained"] == 2


def test_plain_pytorch_loop_helper(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    path = tmp_path / "loop.jsonl"
    with TrainingMonitor({"window": 10, "grad_spike": {"min_history": 5}}, telemetry=path) as monitor:
        for step in range(1, 41):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            geo = geometry(model)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
            assert geo["grad_norm"] == pytest.approx(float(grad_norm), rel=1e-5)
            opt.step()
            monitor.step(loss=loss, grad_norm=grad_norm, lr=0.1, step=step)  # tensors are fine
            monitor.metrics("geometry", geo, step=step)
            if step % 5 == 0:
                monitor.eval(loss=loss.item() + 0.1, step=step)
    t = read_telemetry(path)
    assert t.count("train_step") == 40 and t.count("eval") == 8 and t.count("run_end") == 1
    assert 0 < t.events("metrics")[0].metrics["spectral_complexity"] <= 1
    result = replay(path)
    assert result.config_source == "recorded" and result.config == monitor.config
    assert [a.to_dict() for a in result.alerts] == [a.to_dict() for a in monitor.alerts]


def test_callback_ignores_events_it_does_not_handle():
    cb = GradienceCallback()
    assert cb.on_some_future_event(None, None, None) is None
    with pytest.raises(AttributeError):
        cb.not_an_event  # noqa: B018
