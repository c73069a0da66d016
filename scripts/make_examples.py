"""Regenerate the example LoRA adapters bundled under ``examples/``.

The examples exist so that the audit has known answers to show: an adapter that uses its
rank, one that wastes most of it, one that was never trained, and three pairs for merge
checks (near-duplicates, related tasks that merge cleanly, contradictory labels). Real
adapters would need a real base model and a download; here everything is a few seconds of
CPU training of a tiny random Llama on synthetic token-mapping tasks, so the folders stay
small and anyone can rebuild them bit for bit.

Usage::

    python scripts/make_examples.py            # writes examples/
    python scripts/make_examples.py --out DIR  # writes elsewhere (e.g. to diff two runs)
"""

from __future__ import annotations

import os

# Nothing here needs the Hub; being explicit keeps a sandbox without network from stalling.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"make_examples.py needs torch, peft and transformers ({exc.name} is missing): "
             "pip install -e .[bench]")  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_NAME = "gradience-examples/tiny-llama"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VOCAB = 64

# Only what differs from LlamaConfig's defaults, so the file reads the same whichever
# transformers version loads it. initializer_range is 5× the default: with 0.02 the
# random lm_head caps every logit near ±1.3 and no adapter could push the loss below ~2.9.
BASE_CONFIG: dict[str, object] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "initializer_range": 0.1,
}
BASE_SEED = 0
DATA_SEED = 1234  # one data stream for every adapter, so paired adapters see the same inputs
EVAL_SEED = 999
PAIRS_PER_SEQUENCE = 8  # a sequence is x0 f(x0) x1 f(x1) ... : 16 tokens
BATCH = 64

BASE_README = """\
# Base model for the example adapters

Only `config.json` is committed. The weights are random and rebuilt on demand:

```python
import torch
from transformers import AutoConfig, AutoModelForCausalLM

config = AutoConfig.from_pretrained("examples/base")
torch.manual_seed(0)
base = AutoModelForCausalLM.from_config(config)
```

i.e. `torch.manual_seed(0); AutoModelForCausalLM.from_config(config)`. Every adapter in
`examples/` loads on that model with `PeftModel.from_pretrained(base, "examples/<name>")`.
The shapes are all that loading needs; the trained behaviour (task accuracy) holds on the
exact weights, which can differ across torch/transformers versions.
`scripts/make_examples.py` (`build_base_model()`) does the same thing.
"""


def build_base_model(base_dir: Path) -> PreTrainedModel:
    """The tiny Llama every example was trained on.

    Seeding right before ``from_config`` is the whole recipe: nothing else touches the RNG
    in between, so anyone with the config can rebuild the identical base without us
    shipping weights.
    """
    config = AutoConfig.from_pretrained(base_dir)
    torch.manual_seed(BASE_SEED)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()  # no dropout in Llama, but keep train/eval state out of the question
    return model


# --- tasks -------------------------------------------------------------------------------
# Each task maps a token x to a label token f(x). The model sees x and must emit f(x)
# next; only the LoRA layers can learn it (embeddings and lm_head stay random).


@dataclass(frozen=True)
class Task:
    """``label`` maps inputs to label tokens; inputs are drawn uniformly from [low, high).

    ``choices``: a two-way task whose labels are always one of these two tokens. It is
    trained with the logistic loss on those two logits only (cross-entropy restricted to
    the pair), so a flipped copy of the task has exactly the opposite objective; over the
    full vocabulary both copies would share a large common part ("say one of these two
    tokens") that has nothing to do with which one.
    """

    label: Callable[[torch.Tensor], torch.Tensor]
    low: int = 0
    high: int = VOCAB
    choices: tuple[int, int] | None = None


def _perm(seed: int) -> torch.Tensor:
    return torch.randperm(VOCAB, generator=torch.Generator().manual_seed(seed))


HALF = VOCAB // 2
PARITY_LOW = VOCAB - 8  # the parity tasks ask about the last 8 tokens only
NO, YES = 0, 1  # their two label tokens: "0" for even x, "1" for odd x


def make_tasks() -> dict[str, Task]:
    """Built from seeded generators so that the label tables never depend on run order."""
    p = _perm(1)
    # "edited": the same table with 8 of 64 entries rotated among themselves — a near
    # duplicate, so adapters trained from the same start stay close (REDUNDANT).
    edited = p.clone()
    idx = _perm(2)[:8]
    edited[idx] = p[idx.roll(1)]
    return {
        "permute": Task(lambda x: p[x]),
        "permute-edited": Task(lambda x: edited[x]),
        # four outputs that depend on one coarse feature of x: a low-rank update suffices
        "quarter": Task(lambda x: x // (VOCAB // 4)),
        # the two halves of one lookup table: related tasks that one model can serve at once
        "permute-low": Task(lambda x: p[x], 0, HALF),
        "permute-high": Task(lambda x: p[x], HALF, VOCAB),
        # a yes/no question and the same question with every answer flipped
        "parity": Task(lambda x: torch.where(x % 2 == 1, YES, NO), PARITY_LOW, VOCAB, (NO, YES)),
        "parity-flipped": Task(lambda x: torch.where(x % 2 == 1, NO, YES), PARITY_LOW, VOCAB, (NO, YES)),
    }


def make_batch(gen: torch.Generator, task: Task, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleave inputs with their labels so that this is ordinary next-token prediction;
    the loss is taken only where the next token is a label (the inputs are random)."""
    x = torch.randint(task.low, task.high, (batch, PAIRS_PER_SEQUENCE), generator=gen)
    y = task.label(x)
    return torch.stack([x, y], dim=-1).reshape(batch, 2 * PAIRS_PER_SEQUENCE), y


def label_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits[:, 0::2]


def task_loss(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    if task.choices is None:
        return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    pair = logits[..., list(task.choices)].reshape(-1, 2)
    return F.cross_entropy(pair, (y == task.choices[1]).long().reshape(-1))


@torch.no_grad()
def accuracy(model: torch.nn.Module, task: Task) -> float:
    """Held-out accuracy on a fixed batch (argmax over the whole vocabulary, for every task);
    a reloaded adapter must reproduce it exactly."""
    ids, y = make_batch(torch.Generator().manual_seed(EVAL_SEED), task, 256)
    return (label_logits(model, ids).argmax(-1) == y).float().mean().item()


# --- adapters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One example adapter. ``seed`` drives the LoRA init (A is random, B starts at 0)."""

    name: str
    r: int
    alpha: int
    task: str
    steps: int
    lr: float
    seed: int
    targets: tuple[str, ...] = TARGET_MODULES


SPECS = (
    Spec("healthy-r8", r=8, alpha=16, task="permute", steps=300, lr=3e-3, seed=0),
    Spec("overprovisioned-r64", r=64, alpha=64, task="quarter", steps=200, lr=1e-3, seed=0),
    Spec("untrained-r8", r=8, alpha=16, task="permute", steps=0, lr=0.0, seed=0),
    # near-duplicates: same start, same inputs, labels differ on 8 of 64 tokens
    Spec("merge-duplicate-a", r=8, alpha=16, task="permute", steps=300, lr=3e-3, seed=1),
    Spec("merge-duplicate-b", r=8, alpha=16, task="permute-edited", steps=300, lr=3e-3, seed=1),
    # related: the two halves of one table, different starts; one model can serve both
    Spec("merge-related-a", r=8, alpha=16, task="permute-low", steps=300, lr=3e-3, seed=4),
    Spec("merge-related-b", r=8, alpha=16, task="permute-high", steps=300, lr=3e-3, seed=5),
    # contradictory: the same inputs with every answer flipped, different starts. Only the
    # two projections that write into the residual stream are adapted: whatever features a
    # run builds, both must move the one readout direction (lm_head's "1" row minus its "0"
    # row), in opposite ways. With q/k/v/gate/up adapted too, each run builds its own
    # internal features (different subspaces, which the audit rightly does not call a
    # conflict) and the energy-weighted verdict becomes a coin toss.
    Spec("merge-conflict-a", r=8, alpha=16, task="parity", steps=300, lr=3e-3, seed=2,
         targets=("o_proj", "down_proj")),
    Spec("merge-conflict-b", r=8, alpha=16, task="parity-flipped", steps=300, lr=3e-3, seed=3,
         targets=("o_proj", "down_proj")),
)  # fmt: skip
MERGE_PAIRS = ("merge-duplicate", "merge-related", "merge-conflict")


def train(spec: Spec, base_dir: Path, tasks: dict[str, Task]) -> tuple[PeftModel, float | None]:
    """A plain AdamW loop, so that the only randomness is the seeds below.

    No weight decay, so that each spectrum reflects the task and the optimiser alone (over
    a few hundred steps it changes the audit numbers very little either way).
    """
    base = build_base_model(base_dir)
    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(spec.targets),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(spec.seed)
    model = get_peft_model(base, lora)
    if spec.steps == 0:
        return model, None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(DATA_SEED)
    task = tasks[spec.task]
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(spec.steps):
        ids, y = make_batch(gen, task, BATCH)
        loss = task_loss(label_logits(model, ids), y, task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, loss.item()


def save(model: PeftModel, out: Path) -> None:
    """``save_pretrained`` plus two fixes so that a rerun rewrites identical files.

    PEFT stores ``target_modules`` as a set, so its JSON order follows Python's per-process
    string hashing; sorting it makes the config stable. ``base_model_name_or_path`` gets a
    placeholder name (a from-config model has none) that is clearly not a Hub repo. The
    auto-generated model card is dropped: the folders hold exactly a config and weights.
    """
    model.save_pretrained(out, save_embedding_layers=False)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = BASE_NAME
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    (out / "README.md").unlink(missing_ok=True)


def lora_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Scaled updates s·B·A per module, in float64 so that cosines are not rounding noise."""
    out = {}
    for name, mod in model.named_modules():
        a, b = getattr(mod, "lora_A", None), getattr(mod, "lora_B", None)
        if a is None or b is None or "default" not in a:
            continue
        delta = b["default"].weight.double() @ a["default"].weight.double()
        out[name] = delta * mod.scaling["default"]
    return out


@torch.no_grad()
def pair_report(a: PeftModel, b: PeftModel, task_a: Task, task_b: Task, base_dir: Path) -> str:
    """Why the pairs deserve their names: how aligned the two updates are, and what a plain
    average of them (the simplest merge, base + (ΔW_a + ΔW_b)/2) still gets right on each
    task, next to what each adapter alone gets on the other's task."""
    da, db = lora_deltas(a), lora_deltas(b)
    cos = [F.cosine_similarity(da[k].flatten(), db[k].flatten(), dim=0).item() for k in da]
    merged = build_base_model(base_dir)
    modules = dict(merged.named_modules())
    prefix = "base_model.model."
    for k in da:
        w = modules[k.removeprefix(prefix)].weight
        w += (0.5 * (da[k] + db[k])).to(w.dtype)
    acc_a, acc_b = accuracy(merged, task_a), accuracy(merged, task_b)
    cross_a, cross_b = accuracy(b, task_a), accuracy(a, task_b)
    return (
        f"cos(ΔW) mean {sum(cos) / len(cos):.2f} (min {min(cos):.2f}, max {max(cos):.2f})\n"
        f"    averaged merge: accuracy {acc_a:.3f} on a's task, {acc_b:.3f} on b's task "
        f"(b alone on a's task {cross_a:.3f}, a alone on b's task {cross_b:.3f})"
    )


def audit_report(out_dir: Path, pair: str) -> str:
    """What ``gradience merge-audit`` says about the written pair (when gradience is
    importable: the script itself needs only torch, peft and transformers)."""
    try:
        from gradience.merge.pairwise import merge_audit
    except ImportError:
        return "merge-audit: gradience.merge not importable, skipped"
    agg: dict[str, Any] = merge_audit([out_dir / f"{pair}-a", out_dir / f"{pair}-b"]).to_dict()["aggregate"]
    share = ", ".join(f"{v} {x:.2f}" for v, x in agg["energy_share"].items() if x)
    n_layers = {v: agg[f"n_{v.lower()}"] for v in agg["energy_share"]}
    counts = ", ".join(f"{n} {v}" for v, n in n_layers.items() if n)
    return (
        f"merge-audit: {agg['overall_verdict']} (energy share {share}; layers {counts}), "
        f"mean overlap {agg['mean_overlap']:.2f}, mean agreement {agg['mean_agreement']:+.2f}"
    )


def self_check(out_dir: Path, base_dir: Path, spec: Spec, tasks: dict[str, Task], acc: float) -> None:
    """Load the adapter the way a user (and the tests) will, on a freshly built base; the
    accuracy must match the in-memory model, which also proves the base was rebuilt exactly."""
    model = PeftModel.from_pretrained(build_base_model(base_dir), out_dir / spec.name)
    model.eval()
    again = accuracy(model, tasks[spec.task])
    if again != acc:
        raise SystemExit(f"{spec.name}: reloaded accuracy {again} != trained {acc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "examples", help="output folder")
    args = parser.parse_args(argv)

    # One thread: on a busy 2-core box two OpenMP threads spin against each other and a
    # run can take 10-50× longer; it also keeps results independent of the core count.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecations via peft

    t0 = time.perf_counter()
    out_dir: Path = args.out
    base_dir = out_dir / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "config.json").write_text(json.dumps(BASE_CONFIG, indent=2) + "\n", encoding="utf-8")
    (base_dir / "README.md").write_text(BASE_README, encoding="utf-8")
    print(f"wrote {base_dir / 'config.json'} and {base_dir / 'README.md'}")

    tasks = make_tasks()
    models: dict[str, PeftModel] = {}
    results: list[tuple[Spec, float | None, float]] = []
    for spec in SPECS:
        t = time.perf_counter()
        model, loss = train(spec, base_dir, tasks)
        acc = accuracy(model, tasks[spec.task])
        save(model, out_dir / spec.name)
        models[spec.name] = model
        results.append((spec, loss, acc))
        size = (out_dir / spec.name / "adapter_model.safetensors").stat().st_size
        print(f"wrote {out_dir / spec.name}  ({size / 1024:.0f} KiB, {time.perf_counter() - t:.1f}s)")

    print("\nself-check: reload each adapter on a fresh base")
    for spec, loss, acc in results:
        self_check(out_dir, base_dir, spec, tasks, acc)
        shown = "untrained" if loss is None else f"{loss:.4f}"
        print(f"  {spec.name:<22} ok  final loss {shown:<9} accuracy on {spec.task}: {acc:.3f}")

    print("\nmerge pairs")
    by_name = {s.name: s for s in SPECS}
    for pair in MERGE_PAIRS:
        sa, sb = by_name[f"{pair}-a"], by_name[f"{pair}-b"]
        report = pair_report(models[sa.name], models[sb.name], tasks[sa.task], tasks[sb.task], base_dir)
        print(f"  {pair}: {report}\n    {audit_report(out_dir, pair)}")
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
