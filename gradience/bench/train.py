"""One LoRA training run and one evaluation: the unit of work of the bench grid.

Ranks are given as a map from module name to rank and become ``LoraConfig(r=…,
rank_pattern=…)``. α is set to 2·rank for every module, so the update's scale α/r is the
same at every rank and candidates differ in capacity only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gradience.adapters.config import exact_pattern
from gradience.adapters.write import most_common_rank
from gradience.bench.tasks import Task


def lora_kwargs(task: Task, ranks: dict[str, int] | int) -> dict[str, Any]:
    """``LoraConfig`` keywords for a uniform rank or a per-module rank map."""
    base = {
        "target_modules": list(task.target_modules) or None,  # None: PEFT's default for the model type
        "task_type": getattr(task, "task_type", None),
        "lora_dropout": 0.0,
        "modules_to_save": list(task.modules_to_save) or None,
    }
    if isinstance(ranks, int):
        return {**base, "r": ranks, "lora_alpha": 2 * ranks}
    r = most_common_rank(ranks)
    names = list(ranks)
    pattern = exact_pattern({k: v for k, v in ranks.items() if v != r}, names)
    alphas = {k: 2 * v for k, v in pattern.items()}
    return {**base, "r": r, "lora_alpha": 2 * r, "rank_pattern": pattern, "alpha_pattern": alphas}


def train(
    task: Task, ranks: dict[str, int] | int, seed: int, *, steps: int, batch_size: int, lr: float
) -> tuple[Any, float]:
    """Train a LoRA from scratch on ``task``; returns the PEFT model and the seconds it took."""
    import torch
    from peft import LoraConfig, get_peft_model

    start = time.perf_counter()
    torch.manual_seed(seed)
    model = get_peft_model(task.base_model(), LoraConfig(**lora_kwargs(task, ranks)))
    model.to(task.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for batch in task.batches(seed, steps, batch_size):
        loss = task.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model, time.perf_counter() - start


def load(task: Task, adapter_dir: Path) -> Any:
    """A saved adapter on a fresh base model, ready to evaluate."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(task.base_model(), str(adapter_dir))
    return model.to(task.device).eval()
