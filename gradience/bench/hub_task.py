"""A real task from the Hub: a base model and a dataset, through the same protocol.

Classification (a ``label`` column; accuracy) trains a fresh head with the LoRA; generation
(``prompt``/``answer`` columns; exact match after stripping whitespace) trains a causal LM
on the answer tokens only. Data files (JSON lines, JSON, CSV or Parquet) are fetched with
``huggingface_hub``; ``train`` in a file name marks the training split and ``test``,
``validation`` or ``eval`` the held-out one (one file alone is split 80/20). On CUDA the
forward passes run in bf16 autocast; the LoRA weights stay in float32.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from gradience.bench.tasks import Task, register
from gradience.errors import GradienceError, UsageError

TEXT_COLUMNS = ("text", "sentence", "content")
PROMPT_COLUMNS = ("prompt", "question", "input")
ANSWER_COLUMNS = ("answer", "target", "output")
EVAL_WORDS = ("test", "validation", "valid", "eval", "dev")
MAX_LENGTH = 128


@dataclass
class HubTask(Task):
    model: str = ""
    dataset: str = ""
    revision: str | None = None
    dataset_revision: str | None = None
    max_train: int = 2048
    max_eval: int = 512
    token: str | None = field(default=None, repr=False)
    name: str = "hub"
    _state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    # -- description ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._data()["kind"]

    @property
    def metric(self) -> str:  # type: ignore[override]
        return "accuracy" if self.kind == "classification" else "exact_match"

    @property
    def description(self) -> str:
        d = self._data()
        return (
            f"{self.kind} of {self.dataset} with {self.model}: "
            f"{len(d['train'])} train / {len(d['eval'])} held-out examples"
        )

    @cached_property
    def precision(self) -> str:
        """How the forward passes run: ``bf16-autocast`` on a CUDA device that has it, else
        ``fp32``; fixed for the task's life, and asked on every training step."""
        import torch

        return "bf16-autocast" if self.device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    def info(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "kind": self.kind, "device": self.device,
                "precision": self.precision}  # fmt: skip

    def fingerprint(self) -> dict[str, Any]:
        data = self._data()  # resolves the model's and the dataset's commits first
        return {
            "task": "hub",
            "version": 1,
            "model": self.model,
            "revision": self.revision or self._state.get("model_sha"),
            "dataset": self.dataset,
            "dataset_revision": self.dataset_revision or data["sha"],
            "max_train": self.max_train,
            "max_eval": self.max_eval,
            # bf16 autocast moves the metrics: results from another precision are not reused
            "precision": self.precision,
        }

    @property
    def task_type(self) -> str:
        return "SEQ_CLS" if self.kind == "classification" else "CAUSAL_LM"

    # -- data ----------------------------------------------------------------------------------

    def _data(self) -> dict[str, Any]:
        if "data" not in self._state:
            with _hub_errors(self.dataset, self.dataset_revision):
                self._state["data"] = _load_dataset(self)
        return self._state["data"]

    def _tokenizer(self) -> Any:
        if "tokenizer" not in self._state:
            from transformers import AutoTokenizer

            with _hub_errors(self.model, self.revision):
                tok = AutoTokenizer.from_pretrained(self.model, revision=self.revision, token=self.token)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            self._state["tokenizer"] = tok
        return self._state["tokenizer"]

    def chance(self) -> float:
        d = self._data()
        answers = [ex["label"] for ex in d["eval"]]
        if not answers:
            return 0.0
        top = max(answers.count(a) for a in set(answers))
        return 100.0 * top / len(answers)

    # -- model ---------------------------------------------------------------------------------

    def base_model(self) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        d = self._data()
        with torch.random.fork_rng(), _hub_errors(self.model, self.revision):
            torch.manual_seed(0)  # a fresh classification head: the same one for every run
            if self.kind == "classification":
                model = AutoModelForSequenceClassification.from_pretrained(
                    self.model, revision=self.revision, token=self.token, num_labels=len(d["labels"])
                )
                if model.config.pad_token_id is None:
                    model.config.pad_token_id = self._tokenizer().pad_token_id
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    self.model, revision=self.revision, token=self.token
                )
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def _autocast(self) -> Any:
        import torch

        if self.precision == "bf16-autocast":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- training and evaluation ---------------------------------------------------------------

    def batches(self, seed: int, steps: int, batch_size: int) -> Any:
        train = self._data()["train"]
        rng = random.Random(seed)
        for _ in range(steps):
            yield [train[rng.randrange(len(train))] for _ in range(batch_size)]

    def _encode(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        tok = self._tokenizer()
        if self.kind == "classification":
            enc = tok([ex["text"] for ex in examples], padding=True, truncation=True,
                      max_length=MAX_LENGTH, return_tensors="pt")  # fmt: skip
            enc["labels"] = torch.tensor([ex["label"] for ex in examples])
            return {k: v.to(self.device) for k, v in enc.items()}
        rows, labels = [], []
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for ex in examples:
            p = tok(ex["text"], add_special_tokens=True)["input_ids"]
            a = tok(ex["answer"], add_special_tokens=False)["input_ids"] + eos
            ids = (p + a)[:MAX_LENGTH]
            rows.append(ids)
            labels.append(([-100] * len(p) + a)[:MAX_LENGTH])
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": lab.to(self.device),
        }

    def loss(self, model: Any, batch: Any) -> Any:
        with self._autocast():
            return model(**self._encode(batch)).loss

    def evaluate(self, model: Any) -> float:
        import torch

        examples = self._data()["eval"]
        if not examples:
            return 0.0
        hits = 0
        with torch.no_grad(), self._autocast():
            if self.kind == "classification":
                for i in range(0, len(examples), 64):
                    chunk = examples[i : i + 64]
                    enc = self._encode(chunk)
                    labels = enc.pop("labels")
                    hits += int((model(**enc).logits.argmax(-1) == labels).sum())
            else:
                tok = self._tokenizer()
                for ex in examples:
                    enc = tok(ex["text"], return_tensors="pt").to(self.device)
                    want = ex["answer"].strip()
                    budget = len(tok(want, add_special_tokens=False)["input_ids"]) + 2
                    out = model.generate(
                        **enc, max_new_tokens=budget, do_sample=False, pad_token_id=tok.pad_token_id
                    )
                    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                    hits += text.strip() == want
        return 100.0 * hits / len(examples)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub's and transformers' failures as one-line typed errors."""
    from gradience.hub.errors import translate

    try:
        yield
    except GradienceError:
        raise
    except Exception as e:
        typed = translate(e, repo_id, revision=revision)
        if typed is None and isinstance(e.__cause__, Exception):
            typed = translate(e.__cause__, repo_id, revision=revision)
        if typed is not None:
            raise typed from e
        if isinstance(e, OSError | ValueError):
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise UsageError(f"cannot load {repo_id}: {first}", repo_id=repo_id, param="model") from e
        raise


def _load_dataset(task: HubTask) -> dict[str, Any]:
    """Download the dataset's data files and sort them into train and held-out examples."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(token=task.token)
    info = api.dataset_info(task.dataset, revision=task.dataset_revision)
    try:
        model_info = api.model_info(task.model, revision=task.revision)
        task._state["model_sha"] = model_info.sha
    except Exception:  # the model may be a local folder; its files then identify it
        task._state["model_sha"] = None
    folder = Path(
        snapshot_download(
            task.dataset, repo_type="dataset", revision=info.sha, token=task.token,
            allow_patterns=["*.jsonl", "*.json", "*.csv", "*.parquet"],
        )
    )  # fmt: skip
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jsonl", ".json", ".csv", ".parquet"))
    if not files:
        raise UsageError(
            f"dataset {task.dataset} has no JSON lines, JSON, CSV or Parquet file", param="dataset"
        )
    train_files = [p for p in files if "train" in p.name.lower()]
    eval_files = [p for p in files if any(w in p.name.lower() for w in EVAL_WORDS)]
    rows_train = [r for p in train_files for r in _read(p)]
    rows_eval = [r for p in eval_files for r in _read(p)]
    if not rows_train or not rows_eval:
        rows = [r for p in files for r in _read(p)]
        random.Random(0).shuffle(rows)
        cut = max(1, int(0.8 * len(rows)))
        rows_train, rows_eval = rows[:cut], rows[cut:]
    columns = set(rows_train[0]) if rows_train else set()
    text = next((c for c in (*TEXT_COLUMNS, *PROMPT_COLUMNS) if c in columns), None)
    answer = next((c for c in ANSWER_COLUMNS if c in columns), None)
    if text and "label" in columns:
        labels = sorted({r["label"] for r in rows_train + rows_eval}, key=str)
        index = {v: i for i, v in enumerate(labels)}

        def conv(r: dict[str, Any]) -> dict[str, Any]:
            return {"text": str(r[text]), "label": index[r["label"]]}

        kind = "classification"
    elif text and answer:
        labels = []

        def conv(r: dict[str, Any]) -> dict[str, Any]:
            return {"text": str(r[text]), "answer": str(r[answer]), "label": str(r[answer]).strip()}

        kind = "generation"
    else:
        raise UsageError(
            f"dataset {task.dataset} needs text and label columns (classification) or prompt and "
            f"answer columns (generation); it has {', '.join(sorted(columns)) or 'none'}",
            param="dataset",
        )
    return {
        "kind": kind,
        "labels": labels,
        "sha": info.sha,
        "train": [conv(r) for r in rows_train[: task.max_train]],
        "eval": [conv(r) for r in rows_eval[: task.max_eval]],
    }


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            return [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else data.get("data", [])
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install pyarrow", param="dataset") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path.name} of the dataset: {e}", param="dataset") from None


register("hub", HubTask)
