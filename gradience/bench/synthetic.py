"""The embedded default task: a teacher–student problem on a tiny random transformer.

No download and no tokenizer: a BERT-style encoder is built from a ``transformers`` config
with a fixed random initialisation and frozen; a *teacher* adds a random low-rank update to
its attention and MLP projections, and every token is labelled with the class the teacher
predicts for it. A LoRA student on the same frozen base can only reproduce what its rank
allows, so accuracy on held-out sequences rises with rank up to the teacher's — the
situation a rank audit has to size correctly. Sequences for training and for evaluation
are drawn from disjoint random streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradience.bench.tasks import Task, register

VOCAB, LENGTH, CLASSES, HIDDEN = 64, 12, 8, 64
TARGETS = ("query", "value", "dense")


@dataclass
class SyntheticTask(Task):
    """Token classification against a rank-``teacher_rank`` teacher (accuracy, in points)."""

    teacher_rank: int = 8
    n_train: int = 4096
    n_eval: int = 1024
    name: str = "synthetic"
    metric: str = "accuracy"
    target_modules: tuple[str, ...] = TARGETS
    default_lr: float = 1e-2
    _data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def description(self) -> str:
        return (
            f"token classification ({CLASSES} classes) on a frozen random 2-layer encoder "
            f"(hidden {HIDDEN}); labels from a rank-{self.teacher_rank} teacher "
            "with a decaying spectrum; "
            f"{self.n_train} train / {self.n_eval} held-out sequences of {LENGTH} tokens"
        )

    def fingerprint(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "version": 2,
            "teacher_rank": self.teacher_rank,
            "n_train": self.n_train,
            "n_eval": self.n_eval,
        }

    def base_model(self) -> Any:
        import torch
        from transformers import BertConfig, BertModel

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                config = BertConfig(
                    vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=2 * HIDDEN, max_position_embeddings=LENGTH,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                )  # fmt: skip
                self.bert = BertModel(config, add_pooling_layer=False)
                self.head = torch.nn.Linear(HIDDEN, CLASSES, bias=False)

            def forward(self, input_ids: Any) -> Any:
                return self.head(self.bert(input_ids=input_ids).last_hidden_state)

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Encoder()
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def _split(self, which: str) -> tuple[Any, Any]:
        if not self._data:
            self._data.update(self._make_data())
        return self._data[which]

    def _make_data(self) -> dict[str, Any]:
        import torch
        from peft import LoraConfig, get_peft_model

        teacher = get_peft_model(
            self.base_model(),
            LoraConfig(r=self.teacher_rank, lora_alpha=self.teacher_rank, target_modules=list(TARGETS)),
        )
        g = torch.Generator().manual_seed(1234)
        decay = 1.0 / torch.arange(1, self.teacher_rank + 1, dtype=torch.float32)
        decay *= (self.teacher_rank / float((decay**2).sum())) ** 0.5  # same total energy as a flat one
        with torch.no_grad():
            for name, p in teacher.named_parameters():
                if "lora_A" in name:
                    p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
                elif "lora_B" in name:  # direction i carries weight ∝ 1/(i+1): a decaying spectrum
                    p.copy_(torch.randn(p.shape, generator=g) * decay / self.teacher_rank**0.5)
        teacher.eval()

        def split(n: int, seed: int) -> tuple[Any, Any]:
            x = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                return x, teacher(x).argmax(-1)

        return {"train": split(self.n_train, 1), "eval": split(self.n_eval, 2)}

    def chance(self) -> float:
        import torch

        _, y = self._split("eval")
        return 100.0 * float(torch.bincount(y.flatten()).max()) / y.numel()

    def batches(self, seed: int, steps: int, batch_size: int) -> Any:
        import torch

        x, y = self._split("train")
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch_size,), generator=g)
            yield x[idx], y[idx]

    def loss(self, model: Any, batch: Any) -> Any:
        import torch

        x, y = batch
        return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def evaluate(self, model: Any) -> float:
        import torch

        x, y = self._split("eval")
        with torch.no_grad():
            return 100.0 * float((model(x).argmax(-1) == y).float().mean())


register("synthetic", SyntheticTask)
