"""The rank configurations a bench retrains and truncates, all derived from one probe audit.

Every candidate is a full map from LoRA module to rank, so parameter counts are exact and
identical maps (say, the recommendation and the p90 uniform rank) share their results.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from gradience.adapters.write import most_common_rank


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    ranks: dict[str, int]
    control: bool = False

    def params(self, dims: dict[str, int]) -> int:
        """LoRA parameters: r·(in + out) per module."""
        return sum(r * dims[n] for n, r in self.ranks.items())

    @property
    def r(self) -> int:
        return most_common_rank(self.ranks)

    @property
    def rank_pattern(self) -> dict[str, int]:
        r = self.r
        return {n: k for n, k in self.ranks.items() if k != r}


def layer_dims(audit: Any) -> dict[str, int]:
    return {x.name: x.layer.in_features + x.layer.out_features for x in audit.layers}


def from_audit(audit: Any, probe_rank: int, control_seed: int = 0) -> list[Candidate]:
    """Uniform p50 and p90 of energy_rank_90, the per-layer pattern, the recommendation and
    a random control with the per-layer pattern's parameter count."""
    names = [x.name for x in audit.layers]
    summary = audit.summary()
    rec = audit.recommendation

    def uniform(k: float | None) -> dict[str, int]:
        k = max(1, min(probe_rank, math.ceil((k or 1) - 1e-9)))
        return dict.fromkeys(names, k)

    out = [
        Candidate(
            "uniform-p50",
            "one rank: median energy_rank_90 over layers",
            uniform(summary["energy_rank_90_p50"]),
        ),
        Candidate(
            "uniform-p90",
            "one rank: 90th percentile of energy_rank_90",
            uniform(summary["energy_rank_90_p90"]),
        ),
    ]
    if rec.ok:
        per_layer = {n: rec.per_layer.get(n, rec.rank) for n in names}
        out.append(Candidate("recommended", f"the audit's recommendation: r={rec.rank}", uniform(rec.rank)))
        out.append(
            Candidate("per-layer", "the recommendation's rank_pattern (each layer its own rank)", per_layer)
        )
        dims = layer_dims(audit)
        out.append(
            Candidate(
                "control",
                "random per-layer ranks with the per-layer candidate's parameter count",
                random_ranks(per_layer, dims, probe_rank, control_seed),
                control=True,
            )
        )
    return out


def random_ranks(like: dict[str, int], dims: dict[str, int], cap: int, seed: int) -> dict[str, int]:
    """Random ranks in [1, cap] whose parameter count is as close as steps of one rank allow
    to ``like``'s: what rank allocation alone is worth, at equal budget."""
    rng = random.Random(seed)
    target = sum(like[n] * dims[n] for n in like)
    mean = max(1, round(sum(like.values()) / len(like)))
    ranks = {n: rng.randint(1, min(cap, 2 * mean)) for n in like}
    names = list(like)
    for _ in range(100 * len(names) * cap):
        total = sum(ranks[n] * dims[n] for n in names)
        n = rng.choice(names)
        if total < target and ranks[n] < cap and total + dims[n] - target <= target - total:
            ranks[n] += 1
        elif total > target and ranks[n] > 1 and target - (total - dims[n]) < total - target:
            ranks[n] -= 1
        elif abs(total - target) <= max(dims.values()) // 2 + 1:
            break
    return ranks
