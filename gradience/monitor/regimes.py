"""The regime study (the article's Study 15): does early geometry tell training regimes apart
better than early loss?

Input: ``DIR/<regime>/<run>.jsonl`` — one telemetry file per run, the folder name is the label.
Each run needs ``train_step`` records (loss) and ``metrics`` records with ``kind: "geometry"``
(``weight_norm``, ``grad_norm``, ``spectral_complexity``; ``GradienceCallback`` and
``probes.geometry`` write them). Features are computed on the early phase only — the first 20%
of each run's steps — because the question is what you can know *early*.

For each feature set the report gives the leave-one-run-out ridge classification accuracy, the
McNemar test between geometry and loss, the mutual information between features and regime,
the conditional entropy of the regime given each set's most informative feature, and the DFA
exponent of each run's spectral-complexity series, summarised per regime.

Why leave-one-run-out: with tens of runs, anything fitted and scored on the same runs looks
better than it is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradience.errors import TelemetryError, UsageError
from gradience.monitor import stats
from gradience.monitor.telemetry import LineIssue, iter_records
from gradience.report.jsonsafe import finite

__all__ = ["EARLY_FRACTION", "FEATURE_SETS", "SCHEMA", "RegimeReport", "RunFeatures", "analyze_regimes"]

SCHEMA = "gradience.regimes/v1"
EARLY_FRACTION = 0.20
GEOMETRY_NORMS = (
    "log_grad_norm_mean", "grad_norm_log_slope", "log_weight_norm_mean", "weight_norm_log_slope",
    "log_grad_weight_ratio_mean", "grad_weight_ratio_log_slope",
)  # fmt: skip
#: Feature sets compared; "geometry" vs "loss" is the headline (McNemar, ratios).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "geometry": (*GEOMETRY_NORMS, "spectral_complexity_mean"),
    "geometry_norms_only": GEOMETRY_NORMS,
    "loss": ("loss_mean", "loss_slope", "loss_end"),
    "spectral_complexity": ("spectral_complexity_mean",),
}
MIN_RUNS_PER_REGIME = 2
MIN_EARLY_POINTS = 2


@dataclass(frozen=True)
class RunFeatures:
    """One run: its label, early-phase features, and the DFA exponent of its whole
    spectral-complexity series (None when too short)."""

    regime: str
    run: str
    path: str
    n_steps: int
    features: Mapping[str, float]
    dfa_alpha: float | None


@dataclass(frozen=True)
class RegimeReport:
    """The regime study on one folder of runs.

    Attributes:
        source: the folder.
        runs: per-run features and DFA exponents.
        classification: feature set → accuracy, correct, n, features, predictions.
        chance: majority-class accuracy and 1 / number of regimes.
        mcnemar: geometry vs loss (b, c, χ², exact p).
        information: mutual information and conditional-entropy figures per set, and ratios.
        dfa: regime → mean, std, n, values of the DFA exponent; plus the ANOVA F across regimes.
        warnings: e.g. a feature dropped because some runs lack it.
    """

    source: str
    runs: tuple[RunFeatures, ...]
    classification: Mapping[str, Any]
    chance: Mapping[str, float]
    mcnemar: Mapping[str, Any]
    information: Mapping[str, Any]
    dfa: Mapping[str, Any]
    early_fraction: float = EARLY_FRACTION
    ridge_alpha: float = 1.0
    warnings: tuple[str, ...] = ()
    caveats: tuple[str, ...] = field(default=())

    @property
    def regimes(self) -> dict[str, int]:
        return dict(sorted(Counter(r.regime for r in self.runs).items()))

    def accuracy(self, feature_set: str) -> float | None:
        c = self.classification.get(feature_set)
        return c["accuracy"] if c else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (schema ``gradience.regimes/v1``; no NaN: non-finite → null)."""
        from gradience import __version__

        return finite(
            {
                "schema": SCHEMA,
                "gradience_version": __version__,
                "source": self.source,
                "n_runs": len(self.runs),
                "n_regimes": len(self.regimes),
                "regimes": self.regimes,
                "early_fraction": self.early_fraction,
                "ridge_alpha": self.ridge_alpha,
                "classification": {k: dict(v) for k, v in self.classification.items()},
                "chance": dict(self.chance),
                "mcnemar": dict(self.mcnemar),
                "information": dict(self.information),
                "dfa": dict(self.dfa),
                "runs": [
                    {
                        "regime": r.regime,
                        "run": r.run,
                        "n_steps": r.n_steps,
                        "dfa_alpha": r.dfa_alpha,
                        "features": dict(r.features),
                    }
                    for r in self.runs
                ],
                "warnings": list(self.warnings),
                "caveats": list(self.caveats),
            }
        )


def analyze_regimes(
    folder: str | Path, *, early_fraction: float = EARLY_FRACTION, ridge_alpha: float = 1.0
) -> RegimeReport:
    """Run the regime study on ``folder/<regime>/<run>.jsonl``.

    Args:
        folder: one sub-folder per regime, one telemetry file per run inside.
        early_fraction: the share of each run's steps the features are computed on.
        ridge_alpha: the ridge penalty (on standardised features).

    Returns:
        A :class:`RegimeReport`; ``.to_dict()`` is the ``gradience regimes --json`` output.

    Raises:
        TelemetryError: the layout is wrong, there are fewer than 2 regimes or fewer than 2 runs
            in a regime, or a run lacks the records the features need (the message names it).
        UsageError: ``early_fraction`` or ``ridge_alpha`` out of range.

    Example:
        >>> report = analyze_regimes("tests/data/regimes")  # doctest: +SKIP
        >>> report.accuracy("geometry"), report.accuracy("loss")  # doctest: +SKIP
        (0.95, 0.55)
    """
    if not 0 < early_fraction <= 1:
        raise UsageError(f"early_fraction must be in (0, 1], got {early_fraction}")
    if not ridge_alpha > 0:
        raise UsageError(f"ridge_alpha must be > 0, got {ridge_alpha}")
    warnings: list[str] = []
    runs = [_run_features(regime, path, early_fraction, warnings) for regime, path in _discover(Path(folder))]

    names = sorted({k for r in runs for k in r.features})
    usable = []
    for name in names:
        missing = [r.run for r in runs if not math.isfinite(r.features.get(name, math.nan))]
        if missing:
            warnings.append(f"feature {name} left out: {len(missing)} runs lack it (e.g. {missing[0]})")
        else:
            usable.append(name)
    labels = [r.regime for r in runs]
    classification: dict[str, Any] = {}
    for set_name, wanted in FEATURE_SETS.items():
        cols = [f for f in wanted if f in usable]
        if not cols:
            continue
        x = np.array([[r.features[f] for f in cols] for r in runs])
        pred = stats.loo_ridge_predictions(x, labels, alpha=ridge_alpha)
        correct = [p == y for p, y in zip(pred, labels, strict=True)]
        classification[set_name] = {
            "accuracy": sum(correct) / len(correct),
            "correct": sum(correct),
            "n": len(correct),
            "features": cols,
            "predictions": pred,
        }
    counts = Counter(labels)
    chance = {"majority": max(counts.values()) / len(labels), "uniform": 1 / len(counts)}
    for c in classification.values():
        c["p_vs_chance"] = stats.binomial_tail(c["correct"], c["n"], chance["majority"])

    mcnemar: dict[str, Any] = {}
    if "geometry" in classification and "loss" in classification:
        ga = [p == y for p, y in zip(classification["geometry"]["predictions"], labels, strict=True)]
        la = [p == y for p, y in zip(classification["loss"]["predictions"], labels, strict=True)]
        mcnemar = {"a": "geometry", "b_means": "geometry right, loss wrong", **stats.mcnemar_exact(ga, la)}
    return RegimeReport(
        source=str(folder),
        runs=tuple(runs),
        classification=classification,
        chance=chance,
        mcnemar=mcnemar,
        information=_information(runs, labels, usable, classification),
        dfa=_dfa_summary(runs),
        early_fraction=early_fraction,
        ridge_alpha=ridge_alpha,
        warnings=tuple(warnings),
        caveats=_caveats(runs),
    )


# ------------------------------------------------------------------------------- reading runs


def _discover(folder: Path) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        raise TelemetryError("not a folder; expected DIR/<regime>/<run>.jsonl", path=folder)
    found: list[tuple[str, Path]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [(sub.name, f) for f in sorted(sub.glob("*.jsonl"))]
    loose = sorted(folder.glob("*.jsonl"))
    by = Counter(regime for regime, _ in found)
    if not by:
        extra = f" (found {len(loose)} .jsonl files directly in it: put each regime's runs in its own folder)"
        raise TelemetryError(f"no runs found; expected DIR/<regime>/<run>.jsonl{extra if loose else ''}",
                             path=folder)  # fmt: skip
    if len(by) < 2:
        raise TelemetryError(f"needs at least 2 regimes (sub-folders with runs), found 1: {next(iter(by))}",
                             path=folder)  # fmt: skip
    few = {k: v for k, v in by.items() if v < MIN_RUNS_PER_REGIME}
    if few:
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(few.items()))
        raise TelemetryError(
            f"each regime needs at least {MIN_RUNS_PER_REGIME} runs for leave-one-run-out "
            f"classification; too few in: {listed}",
            path=folder,
        )
    return found


def _run_features(regime: str, path: Path, early_fraction: float, warnings: list[str]) -> RunFeatures:
    losses: list[tuple[int, float]] = []
    step_grads: dict[int, float] = {}
    geo: list[tuple[int, dict[str, Any]]] = []
    issues: list[LineIssue] = []
    for rec in iter_records(path, on_issue=issues.append):
        if rec.step is None:
            continue
        if rec.event == "train_step":
            if (v := rec.number("loss")) is not None and math.isfinite(v):
                losses.append((rec.step, v))
            if (g := rec.number("grad_norm")) is not None:
                step_grads[rec.step] = g
        elif rec.event == "metrics" and rec.kind == "geometry":
            geo.append((rec.step, dict(rec.metrics)))
    name = f"{regime}/{path.name}"
    if issues:
        warnings.append(f"{name}: {len(issues)} malformed lines skipped (first: {issues[0]})")
    if not geo:
        raise TelemetryError(
            f"{name}: no geometry records (metrics with kind 'geometry': weight_norm, grad_norm, "
            "spectral_complexity); record them with GradienceCallback or probes.geometry"
        )
    if not losses:
        raise TelemetryError(f"{name}: no train_step records with a loss")
    steps = [s for s, _ in losses] + [s for s, _ in geo]
    first, last = min(steps), max(steps)
    cut = first + early_fraction * (last - first)
    early_loss = [(s, v) for s, v in losses if s <= cut]
    early_geo = []
    for s, m in geo:
        if s > cut:
            continue
        g = _num(m.get("grad_norm"))
        g = step_grads.get(s) if g is None else g
        early_geo.append((s, g, _num(m.get("weight_norm")), _num(m.get("spectral_complexity"))))
    norms = [(s, g, w) for s, g, w, _ in early_geo if _pos(g) and _pos(w)]
    if len(norms) < MIN_EARLY_POINTS or len(early_loss) < MIN_EARLY_POINTS:
        raise TelemetryError(
            f"{name}: the early phase (first {early_fraction:.0%} of steps, up to step {cut:g}) holds "
            f"{len(norms)} geometry records with positive weight and gradient norms and {len(early_loss)} "
            f"losses; at least {MIN_EARLY_POINTS} of each are needed (log more often)"
        )
    span = max(cut - first, 1e-12)
    t = np.array([(s - first) / span for s, _, _ in norms])
    lg = np.log10([g for _, g, _ in norms])
    lw = np.log10([w for _, _, w in norms])
    tl = np.array([(s - first) / span for s, _ in early_loss])
    lv = np.array([v for _, v in early_loss])
    sc = [c for *_, c in early_geo if c is not None and math.isfinite(c)]
    tail = lv[-max(1, len(lv) // 4) :]
    features = {
        "log_grad_norm_mean": float(lg.mean()),
        "grad_norm_log_slope": _slope(t, lg),
        "log_weight_norm_mean": float(lw.mean()),
        "weight_norm_log_slope": _slope(t, lw),
        "log_grad_weight_ratio_mean": float((lg - lw).mean()),
        "grad_weight_ratio_log_slope": _slope(t, lg - lw),
        "spectral_complexity_mean": float(np.mean(sc)) if sc else math.nan,
        "loss_mean": float(lv.mean()),
        "loss_slope": _slope(tl, lv),
        "loss_end": float(tail.mean()),
    }
    series = [
        c for _, m in sorted(geo, key=lambda x: x[0]) if (c := _num(m.get("spectral_complexity"))) is not None
    ]
    return RunFeatures(regime, path.stem, str(path), len(losses), features, stats.dfa_exponent(series))


def _num(x: Any) -> float | None:
    from gradience.monitor.telemetry import as_number

    v = as_number(x)
    return v if v is not None and math.isfinite(v) else None


def _pos(x: float | None) -> bool:
    return x is not None and x > 0


def _slope(t: np.ndarray, y: np.ndarray) -> float:
    if len(t) < 2 or np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, y, 1)[0])


# ------------------------------------------------------------------------------- statistics


def _information(
    runs: Sequence[RunFeatures], labels: list[str], usable: list[str], classification: Mapping[str, Any]
) -> dict[str, Any]:
    """Mutual information and conditional entropy between features and regime, in bits.

    Each feature is cut into equal-frequency bins (as many as there are regimes) and
    I(F; R) = H(R) − H(R | F) is the plug-in estimate; the mean over 200 label shuffles is
    reported as the small-sample bias. A set's MI is the mean over its features; its
    conditional entropy is that of its most informative feature, min H(R | F), and the
    uncertainty reduction is 1 − min H(R | F) / H(R).

    Why single features and not the set jointly: with tens of runs, every run falls in its own
    joint cell and H(R | all features) is 0 for any feature set — and a conditional entropy taken
    from cross-validated predictions rewards consistent mislabelling (leave-one-out swaps the
    labels of two indistinguishable regimes, which looks like perfect information).
    """
    k = len(set(labels))
    h = stats.entropy_bits(labels)
    rng = np.random.default_rng(0)
    shuffles = [list(rng.permutation(labels)) for _ in range(200)]
    per_feature: dict[str, dict[str, float]] = {}
    for f in usable:
        bins = stats.discretise(np.array([r.features[f] for r in runs]), k)
        mi = stats.mutual_information_bits(bins, labels)
        null = float(np.mean([stats.mutual_information_bits(bins, s) for s in shuffles]))
        per_feature[f] = {"mi_bits": mi, "null_mi_bits": null, "conditional_entropy_bits": h - mi}
    sets: dict[str, Any] = {}
    for name, c in classification.items():
        mis = [per_feature[f]["mi_bits"] for f in c["features"]]
        nulls = [per_feature[f]["null_mi_bits"] for f in c["features"]]
        h_cond = h - max(mis)
        sets[name] = {
            "mi_bits_mean": float(np.mean(mis)),
            "null_mi_bits_mean": float(np.mean(nulls)),
            "conditional_entropy_bits": h_cond,
            "uncertainty_reduction": (1 - h_cond / h) if h > 0 else None,
        }
    out: dict[str, Any] = {"regime_entropy_bits": h, "bins": k, "sets": sets, "per_feature": per_feature}
    if "geometry" in sets and "loss" in sets:
        g, lo = sets["geometry"], sets["loss"]
        out["mi_ratio_geometry_over_loss"] = _ratio(g["mi_bits_mean"], lo["mi_bits_mean"])
        out["uncertainty_reduction_ratio_geometry_over_loss"] = _ratio(
            g["uncertainty_reduction"], lo["uncertainty_reduction"]
        )
    return out


def _dfa_summary(runs: Sequence[RunFeatures]) -> dict[str, Any]:
    groups: dict[str, list[float]] = {}
    for r in runs:
        groups.setdefault(r.regime, [])
        if r.dfa_alpha is not None:
            groups[r.regime].append(r.dfa_alpha)
    per = {
        k: {
            "mean": float(np.mean(v)) if v else None,
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "n": len(v),
            "values": v,
        }
        for k, v in sorted(groups.items())
    }
    vals = [v for v in groups.values() if v]
    return {
        "series": "spectral_complexity (whole run)",
        "per_regime": per,
        "anova_f": stats.anova_f(vals) if len(vals) >= 2 else None,
        "anova_p_permutation": stats.permutation_p(vals) if len(vals) >= 2 else None,
    }


def _caveats(runs: Sequence[RunFeatures]) -> tuple[str, ...]:
    by = Counter(r.regime for r in runs)
    return (
        f"sample: {len(runs)} runs in {len(by)} regimes ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}); "
        "accuracies on so few runs move in steps of 1/n and have wide confidence intervals",
        "mutual information is a plug-in estimate on binned features and is biased upwards on small "
        "samples; null_mi_bits_mean (labels shuffled) shows how much",
        "regimes that differ in learning rate or initialisation scale differ in gradient and weight norms "
        "by construction; the comparison says which signal separates these regimes, not why",
        "the ridge classifier is linear one-vs-rest: a regime lying between two others along one feature "
        "direction can be masked, and leave-one-run-out on two indistinguishable regimes tends to swap "
        "their labels (accuracy below chance for that pair)",
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b
