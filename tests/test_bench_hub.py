"""``gradience bench --model HUB_ID --dataset HUB_ID``: real tasks through the same protocol,
with a tiny model, tokenizer and datasets uploaded to the local Hub by huggingface_hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("peft", reason="the bench needs the bench extra (torch, peft, transformers)")

from huggingface_hub import HfApi

from gradience.bench import BenchConfig, run_bench

pytestmark = pytest.mark.peft

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "bench.schema.json").read_text())
WORDS = ["good", "bad", "fine", "awful", "movie", "plot", "the", "was", "very", "not", "yes", "no"]


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", eos_token="[EOS]",
    ).save_pretrained(folder)  # fmt: skip


def _upload(api: HfApi, folder: Path, repo_type: str = "model", private: bool = False) -> str:
    repo_id = f"alice/bench-{folder.name}-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type=repo_type, private=private)
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type=repo_type)
    return repo_id


def _where() -> tuple[str, str]:
    """Where a Hub task must say it ran: this machine's device, in bf16 autocast on a GPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", "fp32"
    return "cuda", "bf16-autocast" if torch.cuda.is_bf16_supported() else "fp32"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.tokens["alice"])


@pytest.fixture(scope="module")
def classifier(api, tmp_path_factory) -> tuple[str, str]:
    """A tiny BERT without a head, and a private sentiment-like dataset (train / test files)."""
    import torch
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("cls")
    model_dir, data_dir = root / "bert", root / "words"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    BertModel(config).save_pretrained(model_dir)
    _tokenizer(model_dir)
    data_dir.mkdir()
    rows = [
        {"text": f"the movie was {'very ' * (i % 2)}{w}", "label": "pos" if w in ("good", "fine") else "neg"}
        for i in range(24)
        for w in [("good", "bad", "fine", "awful")[i % 4]]
    ]
    _jsonl(data_dir / "train.jsonl", rows[:16])
    _jsonl(data_dir / "test.jsonl", rows[16:])
    return _upload(api, model_dir), _upload(api, data_dir, "dataset", private=True)


def test_a_classification_task_from_the_hub_through_the_cli(hub, classifier, tmp_path):
    model, dataset = classifier
    token = hub.tokens["alice"]
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["HF_TOKEN"] = token
    args = ["--model", model, "--dataset", dataset, "--seeds", "1", "--steps", "4", "--probe-rank", "4",
            "--batch-size", "8", "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "gradience", "bench", *args],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    jsonschema.validate(report, SCHEMA)
    task = report["task"]
    assert (task["model"], task["dataset"], task["kind"], task["metric"]) == (
        model,
        dataset,
        "classification",
        "accuracy",
    )
    assert task["chance"] == 50.0  # the held-out split: four of each label
    assert (task["device"], task["precision"]) == _where()
    assert "16 train / 8 held-out" in task["description"]
    # PEFT's default targets for BERT, with the fresh head trained alongside the LoRA
    assert all(n.endswith(("query", "value")) for n in report["candidates"][0]["ranks"])
    files = "".join(f.read_text(errors="replace") for f in (tmp_path / "out").rglob("*.json"))
    assert token not in p.stdout + p.stderr + files
    # Without the token the private dataset is refused in one line.
    env.pop("HF_TOKEN")
    denied = subprocess.run([sys.executable, "-m", "gradience", "bench", *args[:-1]],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert denied.returncode == 2 and "Traceback" not in denied.stderr
    assert dataset in denied.stderr and len(denied.stderr.strip().splitlines()) == 1


def test_a_generation_task_from_the_hub(api, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir, data_dir = tmp_path / "llama", tmp_path / "qa"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS) + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         pad_token_id=0, eos_token_id=4, bos_token_id=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(model_dir)
    _tokenizer(model_dir)
    data_dir.mkdir()
    _jsonl(data_dir / "data.jsonl", [{"prompt": f"was the movie {w}", "answer": "yes" if w == "good" else "no"}
                                      for w in ["good", "bad", "fine", "awful", "good"] * 2])  # fmt: skip
    model, dataset = _upload(api, model_dir), _upload(api, data_dir, "dataset")
    config = BenchConfig(model=model, dataset=dataset, seeds=1, steps=3, probe_rank=4, batch_size=4,
                         modes=("truncated",))  # fmt: skip
    result = run_bench(config, tmp_path / "out")
    report = result.report
    jsonschema.validate(report, SCHEMA)
    assert (report["task"]["kind"], report["task"]["metric"]) == ("generation", "exact_match")
    assert (report["task"]["device"], report["task"]["precision"]) == _where()
    assert "8 train / 2 held-out" in report["task"]["description"]  # one file: split 80/20
    assert all(n.endswith(("q_proj", "v_proj")) for n in report["candidates"][0]["ranks"])
    for c in report["candidates"]:
        assert all(0 <= r["metric"] <= 100 for r in c["modes"]["truncated"]["per_seed"])
