"""Does ``gradience merge-audit`` predict which adapter dominates a linear merge?

A validation study of the seed article's claim that subspace overlap and magnitude ratios
predict merge dominance (r = 0.846 over 27 cross-task pairs). Not part of the test suite;
the method, the pre-stated predictor and the results are in ``docs/merge-validation.md``.

Method
------
1. *Adapters.* LoRA adapters (r=8 unless stated, all seven Llama projections) are trained
   on the tiny random Llama of ``examples/base`` (``torch.manual_seed(0)`` then
   ``from_config``), as ``scripts/make_examples.py`` does: a plain AdamW loop, one thread,
   deterministic algorithms, seeded LoRA init and a seeded data stream. A *task* maps an
   input token x, drawn from the task's *domain* (a set of tokens), to a label token f(x);
   sequences interleave ``x0 f(x0) x1 f(x1) ...`` and the loss is taken on the labels only.
   Embeddings and ``lm_head`` stay random, so only the adapters learn. Adapters are cached
   under ``benchmarks/.work/merge-validation/adapters/`` with a ``spec.json`` stamp; a
   mismatch (or ``--retrain``) retrains.
2. *Pairs.* 46 pairs. Round 1 (36, the pre-planned design) in five categories:
   near-duplicate (same task, other seeds), related (label tables or domains that partly
   agree), unrelated (disjoint input domains), conflicting (same inputs, every label
   different) and unequal strength (one side trained 8× longer, with a 5× learning rate or a
   4× alpha, across all four relations). Round 2 (10, added after round 1 produced no
   IMBALANCED layer): strongly unequal pairs, one side trained 6× shorter and/or the other
   with 5× learning rate and 4× alpha. Which side is ``a`` alternates, so the stronger
   adapter is not always ``a``.
3. *Audit.* ``merge_audit([a, b])`` with default settings; per-layer rows give the
   predictors (below).
4. *Merge.* ``gradience.merge.execute.merge([a, b], out, strategy="linear", energy=1.0)``
   (weights 0.5/0.5, exact in factor space), loaded with ``PeftModel.from_pretrained`` on a
   fresh copy of the base. The merged updates are checked against 0.5·(ΔW_a + ΔW_b).
5. *Outcome.* On each adapter's own held-out batch (fixed seed, 256 sequences × 8 labels):
   ``retained = (L_base − L_merged) / (L_base − L_own)``: the fraction of the adapter's own
   loss improvement over the base that survives the merge (1 = all, 0 = none, < 0 = worse
   than the base). **Dominance** ``D = retained_a − retained_b``. The same with accuracy
   (``(acc_merged − acc_base) / (acc_own − acc_base)``) is reported as a secondary outcome,
   and (added after the first results) ``dominance_capped`` with each retention capped at 1.
6. *Predictor* (stated before any result was seen): with e_l the layer's share of the pair's
   combined update energy (Σ ‖ΔW_a‖²_F + ‖ΔW_b‖²_F), and s_l = +1 when a has the larger σ₁,
   −1 when b does, ``P = Σ_l e_l · overlap_l · s_l · ln(σ₁ ratio_l)``. Also reported:
   the same without the overlap factor (magnitude only), the Frobenius-ratio version, the
   whole-adapter norm ratio, and the article's literal reading (mean overlap vs |D|).
7. *Statistics.* Pearson and Spearman r over the pairs, 95% percentile bootstrap CIs
   (resampling pairs), and a two-sided permutation p-value. Verdicts are compared with the
   outcomes by group (mean retention, |D|).

Usage::

    python benchmarks/merge_validation.py              # trains what is missing, writes results
    python benchmarks/merge_validation.py --retrain    # ignore the adapter cache

Results go to ``benchmarks/results/merge_validation.json``; ``--markdown`` also prints the
results table for the docs.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub

import argparse
import copy
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import peft
    import torch
    import torch.nn.functional as F
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"merge_validation.py needs torch, peft and transformers ({exc.name} is missing): "
             "pip install -e .[bench]")  # fmt: skip

from gradience.merge.execute import merge
from gradience.merge.pairwise import merge_audit

REPO = Path(__file__).resolve().parent.parent
BASE_DIR = REPO / "examples" / "base"
WORK = REPO / "benchmarks" / ".work" / "merge-validation"
RESULTS = REPO / "benchmarks" / "results" / "merge_validation.json"

#: Bump when training or task definitions change: cached adapters with another stamp retrain.
CACHE_VERSION = 1
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VOCAB = 64
BASE_SEED = 0
EVAL_SEED = 999
PAIRS_PER_SEQUENCE = 8
BATCH = 64
EVAL_BATCH = 256
BASE_STEPS = 120
BASE_LR = 3e-3
SHORT_STEPS = 20  # 6× fewer than BASE_STEPS: σ₁ ratios of ~3-15, enough for IMBALANCED layers
ARTICLE = {"r": 0.846, "n": 27, "p": "< 0.0001", "source": "seed article, Gradience Post 7"}

# --- tasks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A token-to-token mapping on a domain of input tokens."""

    name: str
    domain: torch.Tensor  # input tokens the task is defined (trained and evaluated) on
    table: torch.Tensor  # [VOCAB] label for each token; only ``table[domain]`` matters

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x]


def _perm(seed: int, n: int = VOCAB) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _edited(table: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``table`` with ``n`` entries rotated among themselves: every one of them changes."""
    out = table.clone()
    idx = _perm(seed)[:n]
    out[idx] = table[idx.roll(1)]
    return out


def make_tasks() -> dict[str, Task]:
    """All tasks, from seeded generators so that no table depends on run order.

    ``P`` and ``Q`` are independent permutations of the vocabulary. ``L`` permutes the low
    half among itself and ``H`` the high half, so ``lo2lo``/``hi2hi`` differ in both input
    and output tokens. ``*-contra`` tasks shift the input before the lookup, so that (the
    table being a bijection) every label differs from the unshifted task's.
    """
    all_, lo, hi = torch.arange(VOCAB), torch.arange(VOCAB // 2), torch.arange(VOCAB // 2, VOCAB)
    mid = torch.arange(VOCAB // 4, 3 * VOCAB // 4)
    p, q = _perm(1), _perm(3)
    half = VOCAB // 2
    lmap = torch.cat([_perm(5, half), _perm(6, half) + half])  # lo→lo, hi→hi
    hmap = torch.cat([_perm(7, half), _perm(8, half) + half])
    lo_contra = lmap.clone()
    lo_contra[lo] = lmap[(lo + 5) % half]
    hi_contra = hmap.clone()
    hi_contra[hi] = hmap[half + (hi - half + 5) % half]
    quarter = all_ // (VOCAB // 4)
    quarter_hi = quarter.clone()
    quarter_hi[hi] = 40 + (hi - half) // 8  # four labels 40..43 from the high half
    tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
        "p": (all_, p),
        "p-edit2": (all_, _edited(p, 2, 2)),
        "p-edit8": (all_, _edited(p, 8, 2)),
        "p-edit24": (all_, _edited(p, 24, 4)),
        "p-contra": (all_, p[(all_ + 17) % VOCAB]),
        "q": (all_, q),
        "quarter": (all_, quarter),
        "p-lo": (lo, p),
        "p-mid": (mid, p),
        "p-hi": (hi, p),
        "p-contra-lo": (lo, p[(all_ + 17) % VOCAB]),
        "q-lo": (lo, q),
        "q-hi": (hi, q),
        "lo2lo": (lo, lmap),
        "lo2lo-contra": (lo, lo_contra),
        "hi2hi": (hi, hmap),
        "hi2hi-contra": (hi, hi_contra),
        "quarter-hi": (hi, quarter_hi),
    }
    return {name: Task(name, d, t) for name, (d, t) in tables.items()}


def make_batch(gen: torch.Generator, task: Task, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x0 f(x0) x1 f(x1) ...`` with inputs drawn uniformly from the task's domain."""
    x = task.domain[torch.randint(0, task.domain.numel(), (batch, PAIRS_PER_SEQUENCE), generator=gen)]
    y = task(x)
    return torch.stack([x, y], dim=-1).reshape(batch, 2 * PAIRS_PER_SEQUENCE), y


def label_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits at the input positions, i.e. the predictions of the labels that follow."""
    return model(input_ids=ids).logits[:, 0::2]


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task) -> tuple[float, float]:
    """(cross-entropy, accuracy) on the labels of the task's fixed held-out batch."""
    ids, y = make_batch(torch.Generator().manual_seed(EVAL_SEED), task, EVAL_BATCH)
    logits = label_logits(model, ids)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).item()
    return loss, (logits.argmax(-1) == y).float().mean().item()


# --- adapters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterSpec:
    """One trained adapter; ``seed`` drives the LoRA init, ``data_seed`` the batches."""

    name: str
    task: str
    steps: int = BASE_STEPS
    lr: float = BASE_LR
    r: int = 8
    alpha: int = 16
    seed: int = 0
    data_seed: int = 1234


def _specs() -> dict[str, AdapterSpec]:
    """Every adapter the pairs use. Suffixes: ``-s1`` other seeds; ``-x8`` 8× the steps;
    ``-lr5`` 5× the learning rate; ``-al4`` 4× alpha; ``-r4`` rank 4; ``-short``
    ``SHORT_STEPS``; ``-hot`` 5× the learning rate and 4× alpha."""
    s = [
        AdapterSpec("p", "p"),
        AdapterSpec("p-s1", "p", seed=1, data_seed=2001),
        AdapterSpec("p-r4", "p", r=4, alpha=8, seed=2, data_seed=2002),
        AdapterSpec("p-edit2", "p-edit2", seed=3, data_seed=2003),
        AdapterSpec("p-edit8", "p-edit8", seed=4, data_seed=2004),
        AdapterSpec("p-edit24", "p-edit24", seed=5, data_seed=2005),
        AdapterSpec("p-contra", "p-contra", seed=6, data_seed=2006),
        AdapterSpec("q", "q", seed=7, data_seed=2007),
        AdapterSpec("quarter", "quarter", seed=8, data_seed=2008),
        AdapterSpec("quarter-s1", "quarter", seed=9, data_seed=2009),
        AdapterSpec("p-lo", "p-lo", seed=10, data_seed=2010),
        AdapterSpec("p-lo-s1", "p-lo", seed=11, data_seed=2011),
        AdapterSpec("p-mid", "p-mid", seed=12, data_seed=2012),
        AdapterSpec("p-hi", "p-hi", seed=13, data_seed=2013),
        AdapterSpec("p-contra-lo", "p-contra-lo", seed=14, data_seed=2014),
        AdapterSpec("q-lo", "q-lo", seed=15, data_seed=2015),
        AdapterSpec("q-hi", "q-hi", seed=16, data_seed=2016),
        AdapterSpec("lo2lo", "lo2lo", seed=17, data_seed=2017),
        AdapterSpec("lo2lo-s1", "lo2lo", seed=18, data_seed=2018),
        AdapterSpec("lo2lo-contra", "lo2lo-contra", seed=19, data_seed=2019),
        AdapterSpec("hi2hi", "hi2hi", seed=20, data_seed=2020),
        AdapterSpec("hi2hi-contra", "hi2hi-contra", seed=21, data_seed=2021),
        AdapterSpec("quarter-hi", "quarter-hi", seed=22, data_seed=2022),
        # stronger versions: same task, own seeds
        AdapterSpec("p-x8", "p", steps=8 * BASE_STEPS, seed=30, data_seed=3000),
        AdapterSpec("p-edit8-x8", "p-edit8", steps=8 * BASE_STEPS, seed=31, data_seed=3001),
        AdapterSpec("lo2lo-contra-x8", "lo2lo-contra", steps=8 * BASE_STEPS, seed=32, data_seed=3002),
        AdapterSpec("p-contra-lr5", "p-contra", lr=5 * BASE_LR, seed=33, data_seed=3003),
        AdapterSpec("hi2hi-lr5", "hi2hi", lr=5 * BASE_LR, seed=34, data_seed=3004),
        AdapterSpec("p-lo-lr5", "p-lo", lr=5 * BASE_LR, seed=35, data_seed=3005),
        AdapterSpec("q-hi-al4", "q-hi", alpha=64, seed=36, data_seed=3006),
        AdapterSpec("quarter-al4", "quarter", alpha=64, seed=37, data_seed=3007),
        AdapterSpec("q-al4", "q", alpha=64, seed=38, data_seed=3008),
        AdapterSpec("p-lo-x3", "p-lo", steps=3 * BASE_STEPS, seed=39, data_seed=3009),
        # round 2: much weaker (SHORT_STEPS) and much stronger (5× lr and 4× alpha) versions
        AdapterSpec("p-short", "p", steps=SHORT_STEPS, seed=40, data_seed=4000),
        AdapterSpec("p-edit8-short", "p-edit8", steps=SHORT_STEPS, seed=41, data_seed=4001),
        AdapterSpec("q-hi-short", "q-hi", steps=SHORT_STEPS, seed=42, data_seed=4002),
        AdapterSpec("hi2hi-short", "hi2hi", steps=SHORT_STEPS, seed=43, data_seed=4003),
        AdapterSpec("p-contra-short", "p-contra", steps=SHORT_STEPS, seed=44, data_seed=4004),
        AdapterSpec("q-short", "q", steps=SHORT_STEPS, seed=45, data_seed=4005),
        AdapterSpec("quarter-short", "quarter", steps=SHORT_STEPS, seed=46, data_seed=4006),
        AdapterSpec("lo2lo-contra-short", "lo2lo-contra", steps=SHORT_STEPS, seed=47, data_seed=4007),
        AdapterSpec("p-lo-short", "p-lo", steps=SHORT_STEPS, seed=48, data_seed=4008),
        AdapterSpec("lo2lo-hot", "lo2lo", lr=5 * BASE_LR, alpha=64, seed=49, data_seed=4009),
        AdapterSpec("p-contra-hot", "p-contra", lr=5 * BASE_LR, alpha=64, seed=50, data_seed=4010),
        AdapterSpec("hi2hi-hot", "hi2hi", lr=5 * BASE_LR, alpha=64, seed=51, data_seed=4011),
    ]
    return {x.name: x for x in s}


SPECS = _specs()


@dataclass(frozen=True)
class PairSpec:
    """A pair to audit and merge; ``category`` is the designed relation between the tasks."""

    category: str
    a: str
    b: str
    note: str
    round: int = 1  # 1: the pre-planned design; 2: added after round 1 (see the docs)


PAIRS: tuple[PairSpec, ...] = (
    # near-duplicate: same task, other LoRA init and data order
    PairSpec("near-duplicate", "p", "p-s1", "same task, other seeds"),
    PairSpec("near-duplicate", "p-lo-s1", "p-lo", "same task (low half), other seeds"),
    PairSpec("near-duplicate", "quarter", "quarter-s1", "same low-rank task, other seeds"),
    PairSpec("near-duplicate", "lo2lo-s1", "lo2lo", "same task, other seeds"),
    PairSpec("near-duplicate", "p", "p-r4", "same task, rank 8 vs rank 4"),
    PairSpec("near-duplicate", "p-edit2", "p", "2 of 64 labels differ"),
    # related: label tables or domains that partly agree
    PairSpec("related", "p", "p-edit8", "8 of 64 labels differ"),
    PairSpec("related", "p-edit24", "p", "24 of 64 labels differ"),
    PairSpec("related", "p-lo", "p", "same table; a's domain is half of b's"),
    PairSpec("related", "p-hi", "p-lo", "same table, complementary domains"),
    PairSpec("related", "p-edit8", "p-edit24", "tables differ on ~28 labels"),
    PairSpec("related", "p-mid", "p-lo", "same table, domains overlap on a quarter"),
    # unrelated: disjoint input domains, independent tables
    PairSpec("unrelated", "p-lo", "q-hi", "disjoint domains, independent tables"),
    PairSpec("unrelated", "hi2hi", "lo2lo", "disjoint inputs and outputs"),
    PairSpec("unrelated", "p-lo", "quarter-hi", "disjoint domains, permutation vs 4-way"),
    PairSpec("unrelated", "q-lo", "p-hi", "disjoint domains, independent tables"),
    PairSpec("unrelated", "quarter-hi", "lo2lo", "disjoint domains, 4-way vs permutation"),
    PairSpec("unrelated", "hi2hi", "p-lo", "disjoint domains"),
    # conflicting: same inputs, every label different
    PairSpec("conflicting", "p", "p-contra", "every label differs"),
    PairSpec("conflicting", "p-contra-lo", "p-lo", "every label differs (low half)"),
    PairSpec("conflicting", "p", "quarter", "permutation vs 4-way on the same inputs"),
    PairSpec("conflicting", "lo2lo-contra", "lo2lo", "every label differs (low half)"),
    PairSpec("conflicting", "q", "p", "independent permutations of the same inputs"),
    PairSpec("conflicting", "hi2hi", "hi2hi-contra", "every label differs (high half)"),
    PairSpec("conflicting", "q-lo", "p-lo", "independent permutations (low half)"),
    # unequal strength, across the four relations; the stronger side alternates
    PairSpec("unequal", "p-x8", "p-s1", "near-duplicate; a trained 8× longer"),
    PairSpec("unequal", "p", "p-edit8-x8", "related; b trained 8× longer"),
    PairSpec("unequal", "p-lo-lr5", "p-mid", "related; a with 5× learning rate"),
    PairSpec("unequal", "p-lo", "q-hi-al4", "unrelated; b with 4× alpha"),
    PairSpec("unequal", "hi2hi-lr5", "lo2lo", "unrelated; a with 5× learning rate"),
    PairSpec("unequal", "p", "p-contra-lr5", "conflicting; b with 5× learning rate"),
    PairSpec("unequal", "lo2lo-contra-x8", "lo2lo", "conflicting; a trained 8× longer"),
    PairSpec("unequal", "p", "quarter-al4", "conflicting; b with 4× alpha"),
    PairSpec("unequal", "q-al4", "p", "conflicting; a with 4× alpha"),
    PairSpec("unequal", "p-contra-lo", "p-lo-x3", "conflicting; b trained 3× longer"),
    PairSpec("unequal", "p-lo-lr5", "q-lo", "conflicting; a with 5× learning rate"),
    # round 2: round 1's strength levers moved σ₁ by at most ~2.2×, so no layer reached the
    # IMBALANCED threshold (5); these pairs span the verdict's range
    PairSpec("strongly-unequal", "p", "p-short", "near-duplicate; b 6× shorter", 2),
    PairSpec("strongly-unequal", "p-edit8-short", "p", "related; a 6× shorter", 2),
    PairSpec("strongly-unequal", "p-lo", "q-hi-short", "unrelated; b 6× shorter", 2),
    PairSpec("strongly-unequal", "hi2hi-short", "lo2lo", "unrelated; a 6× shorter", 2),
    PairSpec("strongly-unequal", "p", "p-contra-short", "conflicting; b 6× shorter", 2),
    PairSpec("strongly-unequal", "q-short", "p", "conflicting; a 6× shorter", 2),
    PairSpec("strongly-unequal", "quarter-short", "p", "conflicting 4-way; a 6× shorter", 2),
    PairSpec("strongly-unequal", "lo2lo-hot", "lo2lo-contra-short", "conflicting; a hot, b 6× shorter", 2),
    PairSpec("strongly-unequal", "p-short", "p-contra-hot", "conflicting; a 6× shorter, b hot", 2),
    PairSpec("strongly-unequal", "p-lo-short", "hi2hi-hot", "unrelated; a 6× shorter, b hot", 2),
)


def build_base_model() -> PreTrainedModel:
    """The tiny Llama of ``examples/base``: seed 0 right before ``from_config``."""
    config = AutoConfig.from_pretrained(BASE_DIR)
    torch.manual_seed(BASE_SEED)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model


def _stamp(spec: AdapterSpec) -> dict[str, Any]:
    """What a cached adapter must have been trained with to be reused."""
    return {"cache_version": CACHE_VERSION, "torch": torch.__version__, "peft": peft.__version__,
            **asdict(spec)}  # fmt: skip


def train_adapter(spec: AdapterSpec, tasks: dict[str, Task], base: PreTrainedModel, out: Path) -> float:
    """Train one adapter with plain AdamW (no weight decay) and save it; returns final loss."""
    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(spec.seed)
    model = get_peft_model(copy.deepcopy(base), lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.data_seed)
    task = tasks[spec.task]
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(spec.steps):
        ids, y = make_batch(gen, task, BATCH)
        loss = F.cross_entropy(label_logits(model, ids).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, save_embedding_layers=False)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = "gradience-examples/tiny-llama"
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    (out / "README.md").unlink(missing_ok=True)
    (out / "spec.json").write_text(json.dumps(_stamp(spec), indent=2), encoding="utf-8")
    return loss.item()


def ensure_adapters(
    names: Sequence[str], tasks: dict[str, Task], base: PreTrainedModel, retrain: bool
) -> dict[str, Path]:
    """Train every adapter whose cached copy is missing or stamped with another spec."""
    paths: dict[str, Path] = {}
    for name in names:
        spec = SPECS[name]
        out = WORK / "adapters" / name
        stamp = out / "spec.json"
        fresh = (
            not retrain
            and stamp.exists()
            and (out / "adapter_model.safetensors").exists()
            and json.loads(stamp.read_text(encoding="utf-8")) == _stamp(spec)
        )
        if not fresh:
            t = time.perf_counter()
            loss = train_adapter(spec, tasks, base, out)
            print(f"  trained {name:<16} {spec.steps:>4} steps, final loss {loss:.3f} "
                  f"({time.perf_counter() - t:.1f}s)", flush=True)  # fmt: skip
        paths[name] = out
    return paths


def load(base: PreTrainedModel, path: Path) -> PeftModel:
    """An adapter (or merge) on a fresh copy of the base, the way a user loads it."""
    model = PeftModel.from_pretrained(copy.deepcopy(base), path)
    model.eval()
    return model


def lora_deltas(model: PeftModel) -> dict[str, torch.Tensor]:
    """ΔW = scale·B·A per LoRA module, in float64."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "get_delta_weight") and "default" in getattr(mod, "lora_A", {}):
            out[name] = mod.get_delta_weight("default").detach().double()
    return out


# --- predictors --------------------------------------------------------------------------


def predictors(audit: dict[str, Any]) -> dict[str, float]:
    """Scalar predictions of dominance (positive: a should dominate) from one audit.

    ``overlap_x_log_sigma`` is the pre-stated primary predictor; ``log_sigma``,
    ``overlap_x_log_frob`` and ``log_norm_ratio`` were stated with it as ablations and
    baselines. ``corrected_x_log_sigma`` (chance-corrected overlap) was added after the
    first results, as an exploratory variant.
    """
    rows = [r for r in audit["per_layer"] if r["verdict"] != "INVALID"]
    total = sum(r["energy_a"] + r["energy_b"] for r in rows)
    keys = ("overlap_x_log_sigma", "log_sigma", "overlap_x_log_frob", "corrected_x_log_sigma")
    p = dict.fromkeys(keys, 0.0)
    for r in rows:
        if r["overlap"] is None or r["stronger"] is None:
            continue
        e = (r["energy_a"] + r["energy_b"]) / total
        s = 1.0 if r["stronger"] == "a" else -1.0
        p["overlap_x_log_sigma"] += e * r["overlap"] * s * math.log(r["sigma_ratio"])
        p["log_sigma"] += e * s * math.log(r["sigma_ratio"])
        p["corrected_x_log_sigma"] += e * r["overlap_corrected"] * s * math.log(r["sigma_ratio"])
        # the audit names the σ₁-stronger side only; the Frobenius side comes from the energies
        sf = 1.0 if r["energy_a"] >= r["energy_b"] else -1.0
        p["overlap_x_log_frob"] += e * r["overlap"] * sf * math.log(r["frob_ratio"])
    ea = sum(r["energy_a"] for r in rows)
    eb = sum(r["energy_b"] for r in rows)
    p["log_norm_ratio"] = 0.5 * math.log(ea / eb) if ea > 0 and eb > 0 else 0.0
    return p


# --- statistics --------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    d = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc) / d if d > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ: Pearson r of the ranks."""
    return pearson(_ranks(x), _ranks(y))


def correlate(
    x: Sequence[float], y: Sequence[float], n_boot: int, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """Pearson and Spearman with percentile-bootstrap 95% CIs and permutation p-values."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    out: dict[str, float | int | list[float]] = {"n": len(xa)}
    for label, fn in (("pearson", pearson), ("spearman", spearman)):
        r = fn(xa, ya)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, len(xa), len(xa))
            b = fn(xa[i], ya[i])
            if not math.isnan(b):
                boots.append(b)
        perm = np.array([fn(xa, rng.permutation(ya)) for _ in range(n_boot)])
        out[label] = r
        out[f"{label}_ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        out[f"{label}_p_perm"] = float((np.sum(np.abs(perm) >= abs(r) - 1e-12) + 1) / (n_boot + 1))
    return out


def _json_safe(x: Any) -> Any:
    """Replace NaN/Inf with None, recursively, so the results file is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


# --- the study ---------------------------------------------------------------------------


def retained(base: float, own: float, merged: float) -> float:
    """Fraction of the improvement base → own that survives in the merge."""
    return (base - merged) / (base - own) if base != own else float("nan")


def run_pair(
    pair: PairSpec,
    paths: dict[str, Path],
    tasks: dict[str, Task],
    base: PreTrainedModel,
    own: dict[str, dict[str, float]],
    base_metrics: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    """Audit, merge, load and score one pair."""
    pa, pb = paths[pair.a], paths[pair.b]
    audit = merge_audit([pa, pb]).to_dict()
    out = WORK / "merges" / f"{pair.a}+{pair.b}"
    merge([pa, pb], out, strategy="linear", energy=1.0, overwrite=True)
    merged = load(base, out)
    # the merge must be the plain average of the two updates, or nothing below means anything
    da, db, dm = lora_deltas(load(base, pa)), lora_deltas(load(base, pb)), lora_deltas(merged)
    rel_err = max(
        float(torch.linalg.norm(dm[k] - 0.5 * (da[k] + db[k])) / torch.linalg.norm(0.5 * (da[k] + db[k])))
        for k in da
    )
    outcome: dict[str, float] = {}
    for side, name in (("a", pair.a), ("b", pair.b)):
        task = SPECS[name].task
        lm, am = evaluate(merged, tasks[task])
        lb, ab = base_metrics[task]
        outcome[f"loss_merged_{side}"] = lm
        outcome[f"acc_merged_{side}"] = am
        outcome[f"retained_{side}"] = retained(lb, own[name]["loss"], lm)
        outcome[f"retained_acc_{side}"] = retained(ab, own[name]["acc"], am)
    outcome["dominance"] = outcome["retained_a"] - outcome["retained_b"]
    outcome["dominance_acc"] = outcome["retained_acc_a"] - outcome["retained_acc_b"]
    # post hoc (see the docs): a partner doing the same task better can lift "retained" far
    # above 1; capping at 1 asks only how much of each adapter's own effect survives
    outcome["dominance_capped"] = min(outcome["retained_a"], 1.0) - min(outcome["retained_b"], 1.0)
    outcome["mean_retained"] = 0.5 * (outcome["retained_a"] + outcome["retained_b"])
    outcome["mean_retained_acc"] = 0.5 * (outcome["retained_acc_a"] + outcome["retained_acc_b"])
    agg = audit["aggregate"]
    ratios = [r["sigma_ratio"] for r in audit["per_layer"] if r["sigma_ratio"] is not None]
    return {
        "name": f"{pair.a} + {pair.b}",
        "category": pair.category,
        "round": pair.round,
        "a": pair.a,
        "b": pair.b,
        "note": pair.note,
        "audit": {
            k: agg[k]
            for k in (
                "overall_verdict",
                "risk_level",
                "mean_overlap",
                "mean_agreement",
                "energy_share",
                "n_safe",
                "n_redundant",
                "n_imbalanced",
                "n_conflicting",
            )
        },
        "sigma_ratio": {"median": float(np.median(ratios)), "max": max(ratios)},
        "conflict_dims": {
            "n_conflict": sum(r["n_conflict"] for r in audit["per_layer"]),
            "n_principal": sum(r["n_principal"] for r in audit["per_layer"]),
        },
        "predictors": predictors(audit),
        "outcome": outcome,
        "merge_rel_err": rel_err,
    }


def group_summary(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Mean outcomes per group (verdict or category)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        o = [r["outcome"] for r in rs]
        # the side the audit calls weaker: b when the magnitude-only predictor is positive
        weaker = [
            min(x["retained_b"] if r["predictors"]["log_sigma"] > 0 else x["retained_a"], 1.0)
            for r, x in zip(rs, o, strict=True)
        ]
        out[g] = {
            "n": len(rs),
            "mean_retained": float(np.mean([x["mean_retained"] for x in o])),
            "mean_retained_capped": float(
                np.mean([0.5 * (min(x["retained_a"], 1.0) + min(x["retained_b"], 1.0)) for x in o])
            ),
            "mean_retained_weaker_capped": float(np.mean(weaker)),
            "conflict_dim_fraction": float(
                sum(r["conflict_dims"]["n_conflict"] for r in rs)
                / max(1, sum(r["conflict_dims"]["n_principal"] for r in rs))
            ),
            "min_retained": float(np.min([min(x["retained_a"], x["retained_b"]) for x in o])),
            "mean_retained_acc": float(np.mean([x["mean_retained_acc"] for x in o])),
            "mean_abs_dominance": float(np.mean([abs(x["dominance"]) for x in o])),
            "pairs": [r["name"] for r in rs],
        }
    return out


def paired_difference(
    x1: Sequence[float], x2: Sequence[float], y: Sequence[float], n_boot: int, seed: int = 1
) -> dict[str, float | list[float]]:
    """r(x1, y) − r(x2, y) with a paired percentile-bootstrap 95% CI (same resamples)."""
    a1, a2, ya = (np.asarray(v, dtype=float) for v in (x1, x2, y))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(ya), len(ya))
        b = pearson(a1[i], ya[i]) - pearson(a2[i], ya[i])
        if not math.isnan(b):
            boots.append(b)
    return {"difference": pearson(a1, ya) - pearson(a2, ya),
            "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}  # fmt: skip


def _sign_agreement(pred: Sequence[float], d: Sequence[float], min_abs: float = 0.05) -> dict[str, int]:
    """How often the predictor's sign matches the dominance's, among pairs with |D| > min_abs."""
    rows = [(p, y) for p, y in zip(pred, d, strict=True) if abs(y) > min_abs]
    return {
        "n_pairs_abs_dominance_over_0.05": len(rows),
        "n_sign_correct": sum((p > 0) == (y > 0) for p, y in rows),
    }


def analyse(rows: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """Correlations between predictors and outcomes, and verdicts against outcomes."""
    d = [r["outcome"]["dominance"] for r in rows]
    d_acc = [r["outcome"]["dominance_acc"] for r in rows]
    pred = {k: [r["predictors"][k] for r in rows] for k in rows[0]["predictors"]}
    primary = pred["overlap_x_log_sigma"]
    r1 = [r for r in rows if r["round"] == 1]
    imb = [r for r in rows if r["audit"]["n_imbalanced"] > 0]
    return {
        "primary": {
            "predictor": "overlap_x_log_sigma",
            "outcome": "dominance (loss retention)",
            "pairs": "all",
            **correlate(primary, d, n_boot),
        },
        "primary_round1": {
            "pairs": "round 1 (the pre-planned design)",
            **correlate(
                [r["predictors"]["overlap_x_log_sigma"] for r in r1],
                [r["outcome"]["dominance"] for r in r1],
                n_boot,
            ),
        },
        "secondary": {
            **{
                f"{k} vs dominance": correlate(v, d, n_boot)
                for k, v in pred.items()
                if k != "overlap_x_log_sigma"
            },
            "overlap_x_log_sigma vs dominance_acc": correlate(primary, d_acc, n_boot),
            "|overlap_x_log_sigma| vs |dominance|": correlate(np.abs(primary), np.abs(d), n_boot),
            "mean_overlap vs |dominance|": correlate(
                [r["audit"]["mean_overlap"] for r in rows], np.abs(d), n_boot
            ),
            "mean_agreement vs mean_retained": correlate(
                [r["audit"]["mean_agreement"] for r in rows],
                [r["outcome"]["mean_retained"] for r in rows],
                n_boot,
            ),
        },
        "sensitivity_capped": {
            "outcome": "dominance_capped (retention capped at 1; post hoc)",
            **{
                f"{k} vs dominance_capped": correlate(
                    pred[k], [r["outcome"]["dominance_capped"] for r in rows], n_boot
                )
                for k in ("overlap_x_log_sigma", "log_sigma")
            },
        },
        "primary_minus_magnitude_only": paired_difference(primary, pred["log_sigma"], d, n_boot),
        "sign_agreement": _sign_agreement(primary, d),
        "sign_agreement_imbalanced_pairs": _sign_agreement(
            [r["predictors"]["overlap_x_log_sigma"] for r in imb], [r["outcome"]["dominance"] for r in imb]
        ),
        "by_verdict": group_summary(rows, lambda r: r["audit"]["overall_verdict"]),
        "by_risk_level": group_summary(rows, lambda r: r["audit"]["risk_level"]),
        "by_category": group_summary(rows, lambda r: r["category"]),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The per-pair results table used in ``docs/merge-validation.md``."""
    lines = [
        "| # | Pair (a + b) | Category | Verdict (risk) | Overlap | Agreement | P | Ret. a | Ret. b | D | Acc a / b |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        a, o, p = r["audit"], r["outcome"], r["predictors"]
        lines.append(
            f"| {i} | {r['a']} + {r['b']} | {r['category']} | {a['overall_verdict']} ({a['risk_level']}) "
            f"| {a['mean_overlap']:.2f} | {a['mean_agreement']:+.2f} | {p['overlap_x_log_sigma']:+.2f} "
            f"| {o['retained_a']:.2f} | {o['retained_b']:.2f} | {o['dominance']:+.2f} "
            f"| {o['acc_merged_a']:.2f} / {o['acc_merged_b']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) the adapters, run every pair, write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="ignore cached adapters")
    parser.add_argument("--bootstrap", type=int, default=5000, help="bootstrap/permutation draws")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--markdown", action="store_true", help="print the results table")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.perf_counter()

    tasks = make_tasks()
    base = build_base_model()
    names = list(dict.fromkeys(n for p in PAIRS for n in (p.a, p.b)))
    print(f"{len(names)} adapters, {len(PAIRS)} pairs; cache {WORK.relative_to(REPO)}", flush=True)
    paths = ensure_adapters(names, tasks, base, args.retrain)
    t_train = time.perf_counter() - t0

    base_metrics = {t: evaluate(base, tasks[t]) for t in sorted({SPECS[n].task for n in names})}
    own: dict[str, dict[str, float]] = {}
    for n in names:
        loss, acc = evaluate(load(base, paths[n]), tasks[SPECS[n].task])
        own[n] = {"loss": loss, "acc": acc}

    rows = []
    for i, pair in enumerate(PAIRS, 1):
        row = run_pair(pair, paths, tasks, base, own, base_metrics)
        rows.append(row)
        a, o = row["audit"], row["outcome"]
        print(f"{i:>2} {row['name']:<30} {pair.category:<14} {a['overall_verdict']:<11} "
              f"P={row['predictors']['overlap_x_log_sigma']:+.3f} ret_a={o['retained_a']:+.2f} "
              f"ret_b={o['retained_b']:+.2f} D={o['dominance']:+.2f}", flush=True)  # fmt: skip
    worst_err = max(r["merge_rel_err"] for r in rows)
    if worst_err > 1e-4:
        raise SystemExit(f"a linear merge is not the average of its inputs (rel. error {worst_err:.2e})")

    summary = analyse(rows, args.bootstrap)
    runtime = time.perf_counter() - t0
    result = {
        "schema": "gradience.merge_validation/v1",
        "article": ARTICLE,
        "versions": {
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "definitions": {
            "retained": "(L_base - L_merged) / (L_base - L_own) on the adapter's own held-out batch",
            "dominance": "retained_a - retained_b (positive: a dominates the merge)",
            "retained_acc / dominance_acc": "the same with accuracy in place of loss",
            "overlap_x_log_sigma": "sum_l e_l * overlap_l * s_l * ln(sigma_ratio_l); e_l = layer share "
            "of the pair's update energy, s_l = +1 if a has the larger sigma_1 else -1 (primary)",
            "log_sigma": "the same without the overlap factor",
            "overlap_x_log_frob": "the same with the Frobenius ratio (side from the energies)",
            "log_norm_ratio": "0.5 * ln(sum energy_a / sum energy_b), whole adapter",
            "merge": "gradience linear merge, weights 0.5/0.5, energy 1.0, loaded with peft",
        },
        "setup": {
            "base": "examples/base (torch.manual_seed(0); from_config)",
            "vocab": VOCAB,
            "base_steps": BASE_STEPS,
            "base_lr": BASE_LR,
            "batch": BATCH,
            "eval_batch": EVAL_BATCH,
            "eval_seed": EVAL_SEED,
            "bootstrap": args.bootstrap,
        },
        "adapters": [
            {
                **asdict(SPECS[n]),
                "own_loss": own[n]["loss"],
                "own_acc": own[n]["acc"],
                "base_loss": base_metrics[SPECS[n].task][0],
                "base_acc": base_metrics[SPECS[n].task][1],
            }
            for n in names
        ],
        "pairs": rows,
        "summary": summary,
        "max_merge_rel_err": worst_err,
        "runtime_s": {"total": runtime, "training": t_train},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_json_safe(result), indent=2) + "\n", encoding="utf-8")

    pr = summary["primary"]
    print(f"\nprimary: Pearson r = {pr['pearson']:+.3f} (95% CI {pr['pearson_ci95'][0]:+.3f} … "
          f"{pr['pearson_ci95'][1]:+.3f}, p_perm {pr['pearson_p_perm']:.4f}); Spearman ρ = "
          f"{pr['spearman']:+.3f} (95% CI {pr['spearman_ci95'][0]:+.3f} … {pr['spearman_ci95'][1]:+.3f}); "
          f"n = {pr['n']}   [article: r = {ARTICLE['r']}, n = {ARTICLE['n']}]")  # fmt: skip
    for k, v in summary["secondary"].items():
        print(f"  {k:<40} r = {v['pearson']:+.3f}  ρ = {v['spearman']:+.3f}")
    pr1 = summary["primary_round1"]
    print(f"round 1 only: r = {pr1['pearson']:+.3f} ({pr1['pearson_ci95'][0]:+.3f} … {pr1['pearson_ci95'][1]:+.3f}),"
          f" ρ = {pr1['spearman']:+.3f}, n = {pr1['n']}")  # fmt: skip
    for k, v in summary["sensitivity_capped"].items():
        if k != "outcome":
            print(f"  {k:<40} r = {v['pearson']:+.3f} ({v['pearson_ci95'][0]:+.3f} … "
                  f"{v['pearson_ci95'][1]:+.3f})  ρ = {v['spearman']:+.3f}")  # fmt: skip
    diff = summary["primary_minus_magnitude_only"]
    print(f"r(primary) − r(log_sigma) = {diff['difference']:+.3f} (95% CI {diff['ci95'][0]:+.3f} … "
          f"{diff['ci95'][1]:+.3f})")  # fmt: skip
    print(f"sign agreement: {summary['sign_agreement']}; pairs with IMBALANCED layers: "
          f"{summary['sign_agreement_imbalanced_pairs']}")  # fmt: skip
    print("by verdict:")
    for v, g in [*summary["by_verdict"].items(), *summary["by_risk_level"].items(),
                 *summary["by_category"].items()]:  # fmt: skip
        print(f"  {v:<12} n={g['n']:>2} mean retained {g['mean_retained']:.2f} "
              f"(capped {g['mean_retained_capped']:.2f}, acc {g['mean_retained_acc']:.2f}), weaker side "
              f"{g['mean_retained_weaker_capped']:.2f}, min {g['min_retained']:+.2f}, "
              f"conflict dims {g['conflict_dim_fraction']:.2f}, "
              f"mean |D| {g['mean_abs_dominance']:.2f}")  # fmt: skip
    if args.markdown:
        print("\n" + markdown_table(rows))
    print(f"\nwrote {args.out} in {runtime:.0f}s (training {t_train:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
