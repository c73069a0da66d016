"""Record real training telemetry on the CPU for the monitor's fixtures (tests/data/telemetry/).

Three small runs, each a real training loop instrumented with the plain-PyTorch helper
(``TrainingMonitor(telemetry=...)`` + ``probes.geometry``), default monitor settings:

* ``memorise.jsonl`` — modular addition (p = 31, 60% of the pairs for training), an MLP with
  AdamW and weight decay 0: too little regularisation to generalise, so it memorises the training
  pairs while the held-out loss only rises (the article's Study 7 situation). The same run with
  weight decay 1.0 does generalise (``--weight-decay 1.0 --steps 3000 memorise``: 79% held-out
  accuracy at step 3000, against 0% with weight decay 0).
* ``healthy.jsonl`` — a small classifier learning a fixed random teacher (10% label noise) from
  fresh batches of 2048: it converges to the noise floor and stays there (seed 1; see
  ``docs/monitor.md`` for how CONSIDER_STOPPING lands relative to convergence on seeds 0–4).
* ``lr-spike.jsonl`` — the same task trained with SGD, whose learning rate is raised 20× for
  three steps (600–602) in the middle of training; the gradient-norm spike comes from the
  training dynamics, not from editing the file.

Each file holds the live monitor's alerts too, so replaying it must reproduce them.
Run (about 15 s on one CPU thread; the test suite never runs it):

    .venv/bin/python scripts/make_telemetry.py
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from gradience.monitor import TrainingMonitor
from gradience.monitor.probes import geometry

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "telemetry"
GEOMETRY_EVERY = 10
META = {"generator": "scripts/make_telemetry.py", "torch": torch.__version__}


def global_grad_norm(model: torch.nn.Module) -> float:
    return math.sqrt(math.fsum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))


# --------------------------------------------------------------------------- tasks


class Teacher:
    """A fixed random tanh network labels Gaussian inputs into k classes; ``noise`` of the labels
    are replaced by uniform ones (an irreducible loss floor)."""

    def __init__(self, seed: int, d: int = 16, k: int = 4, noise: float = 0.1) -> None:
        torch.manual_seed(seed)
        self.d, self.k, self.noise = d, k, noise
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.Tanh(), torch.nn.Linear(32, k))
        self.gen = torch.Generator().manual_seed(seed + 1)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.d, generator=self.gen)
        with torch.no_grad():
            y = self.net(x).argmax(1)
        flip = torch.rand(n, generator=self.gen) < self.noise
        return x, torch.where(flip, torch.randint(0, self.k, (n,), generator=self.gen), y)


def student(d: int, hidden: int, k: int, *, init_scale: float = 1.0) -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, k))
    if init_scale != 1.0:
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(init_scale)
    return m


def train_teacher_task(
    path: Path,
    *,
    run_id: str,
    seed: int = 0,
    steps: int = 1200,
    batch: int = 2048,
    hidden: int = 8,
    optimizer: str = "adam",
    lr: float = 3e-3,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    init_scale: float = 1.0,
    noise: float = 0.1,
    eval_every: int = 10,
    geometry_every: int = GEOMETRY_EVERY,
    boost: tuple[int, int, float] | None = None,
) -> TrainingMonitor:
    """Train a student on fresh teacher batches; ``boost=(first, n, factor)`` multiplies the
    learning rate by ``factor`` for ``n`` steps starting at ``first``."""
    teacher = Teacher(seed, noise=noise)
    x_eval, y_eval = teacher.sample(4096)
    torch.manual_seed(seed + 2)
    model = student(teacher.d, hidden, teacher.k, init_scale=init_scale)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    config = {"task": "teacher-student classification", "seed": seed, "steps": steps, "batch": batch,
              "hidden": hidden, "optimizer": optimizer, "lr": lr, "momentum": momentum,
              "weight_decay": weight_decay, "init_scale": init_scale, "label_noise": noise,
              "lr_boost": list(boost) if boost else None}  # fmt: skip
    monitor = TrainingMonitor(telemetry=path, run_id=run_id, log_alerts=False, run_config=config, meta=META)
    for step in range(1, steps + 1):
        step_lr = lr * (boost[2] if boost and boost[0] <= step < boost[0] + boost[1] else 1.0)
        for group in opt.param_groups:
            group["lr"] = step_lr
        x, y = teacher.sample(batch)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        gn = global_grad_norm(model)
        if geometry_every and step % geometry_every == 0:
            geo = geometry(model, grad_norm_value=gn)
        opt.step()
        monitor.step(loss=loss.item(), grad_norm=gn, lr=step_lr, step=step)
        if geometry_every and step % geometry_every == 0:
            monitor.metrics("geometry", geo, step=step)
        if step % eval_every == 0:
            with torch.no_grad():
                out = model(x_eval)
                monitor.eval({"loss": torch.nn.functional.cross_entropy(out, y_eval).item(),
                              "accuracy": (out.argmax(1) == y_eval).float().mean().item()}, step=step)  # fmt: skip
    monitor.close()
    return monitor


def train_modular_addition(
    path: Path, *, run_id: str, p: int = 31, train_fraction: float = 0.6, steps: int = 1200,
    lr: float = 3e-3, weight_decay: float = 0.0, seed: int = 0, eval_every: int = 10,
) -> TrainingMonitor:  # fmt: skip
    """(a + b) mod p from a fraction of all pairs, full batch, AdamW: with weight decay 0 the
    network memorises its training pairs and never generalises."""
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.tensor([(a, b) for a in range(p) for b in range(p)])
    perm = torch.randperm(len(pairs), generator=gen)
    n = int(train_fraction * len(pairs))
    train, held = pairs[perm[:n]], pairs[perm[n:]]
    y_train, y_held = train.sum(1) % p, held.sum(1) % p
    torch.manual_seed(seed)
    embed = torch.nn.Embedding(p, 32)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, p))
    model = torch.nn.ModuleDict({"embed": embed, "mlp": mlp})

    def forward(x: torch.Tensor) -> torch.Tensor:
        return mlp(embed(x).flatten(1))

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    config = {"task": f"(a + b) mod {p}", "train_pairs": n, "held_out_pairs": len(held), "steps": steps,
              "optimizer": "adamw", "lr": lr, "weight_decay": weight_decay, "seed": seed}  # fmt: skip
    monitor = TrainingMonitor(telemetry=path, run_id=run_id, log_alerts=False, run_config=config, meta=META)
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(forward(train), y_train)
        opt.zero_grad()
        loss.backward()
        gn = global_grad_norm(model)
        if step % GEOMETRY_EVERY == 0:
            geo = geometry(model, grad_norm_value=gn)
        opt.step()
        monitor.step(loss=loss.item(), grad_norm=gn, lr=lr, step=step)
        if step % GEOMETRY_EVERY == 0:
            monitor.metrics("geometry", geo, step=step)
        if step % eval_every == 0:
            with torch.no_grad():
                out = forward(held)
                monitor.eval({"loss": torch.nn.functional.cross_entropy(out, y_held).item(),
                              "accuracy": (out.argmax(1) == y_held).float().mean().item()}, step=step)  # fmt: skip
    monitor.close()
    return monitor


RUNS = {
    "memorise": lambda path, **kw: train_modular_addition(path, run_id="memorise", **kw),
    "healthy": lambda path, **kw: train_teacher_task(path, run_id="healthy", seed=1, **kw),
    "lr-spike": lambda path, **kw: train_teacher_task(
        path, run_id="lr-spike", optimizer="sgd", lr=0.5, boost=(600, 3, 20.0), **kw
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--weight-decay", dest="weight_decay", type=float, help="override the weight decay")
    parser.add_argument("runs", nargs="*", default=list(RUNS), help=f"which runs ({', '.join(RUNS)})")
    args = parser.parse_args()
    overrides = {
        k: v for k, v in (("steps", args.steps), ("weight_decay", args.weight_decay)) if v is not None
    }
    torch.set_num_threads(1)
    for name in args.runs:
        t = time.perf_counter()
        path = args.out / f"{name}.jsonl"
        monitor = RUNS[name](path, **overrides)
        alerts = ", ".join(f"{a.rule}@{a.step}" for a in monitor.alerts) or "none"
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {monitor.steps_seen} steps, "
              f"{path.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t:.1f} s; alerts: {alerts}")  # fmt: skip


if __name__ == "__main__":
    main()
