"""``gradience regimes``: do early geometric features tell training regimes apart better than loss?"""

from __future__ import annotations

import argparse
from typing import Any

from gradience.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "regimes",
        help="regime study: early geometry vs loss features for classifying training runs",
        description=(
            "Read DIR/<regime>/<run>.jsonl telemetry (train_step losses and geometry metrics), "
            "compute early-phase features, and compare geometry with loss: leave-one-run-out "
            "ridge accuracy, McNemar test, mutual information, and DFA exponents per regime."
        ),
        epilog="example: gradience regimes tests/data/regimes",
    )
    p.add_argument("dir", help="folder with one sub-folder of .jsonl runs per regime")
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradience.monitor.regimes import analyze_regimes

    report = analyze_regimes(args.dir)
    if args.json:
        print_json(report.to_dict())
    else:
        _render(report.to_dict())
    return 0


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _render(d: dict[str, Any]) -> None:
    regimes = ", ".join(f"{k} ({v})" for k, v in d["regimes"].items())
    print(f"regime study: {d['n_runs']} runs in {d['n_regimes']} regimes: {regimes}")
    print(f"features on the first {d['early_fraction']:.0%} of each run's steps\n")
    print(f"{'feature set':<22} {'features':>8} {'LOO accuracy':>13} {'p vs chance':>12} {'MI bits':>8} "
          f"{'H(R|best F)':>12}")  # fmt: skip
    sets = d["information"]["sets"]
    for name, c in d["classification"].items():
        info = sets.get(name, {})
        print(f"{name:<22} {len(c['features']):>8} {c['accuracy']:>12.1%} {_fmt(c['p_vs_chance'], '.2g'):>12} "
              f"{_fmt(info.get('mi_bits_mean')):>8} {_fmt(info.get('conditional_entropy_bits')):>12}")  # fmt: skip
    ch = d["chance"]
    print(
        f"chance: {ch['majority']:.1%} (majority class), H(regime) = {d['information']['regime_entropy_bits']:.3f} bits"
    )
    m = d["mcnemar"]
    if m:
        print(f"McNemar geometry vs loss: b={m['b']} (geometry right, loss wrong), c={m['c']}, "
              f"χ²={m['chi2']:.2f}, exact p={m['p_value']:.2g}")  # fmt: skip
    info = d["information"]
    if "mi_ratio_geometry_over_loss" in info:
        print(f"MI ratio geometry/loss: {_fmt(info['mi_ratio_geometry_over_loss'], '.2f')}; "
              f"uncertainty-reduction ratio: {_fmt(info['uncertainty_reduction_ratio_geometry_over_loss'], '.2f')}")  # fmt: skip
    print("\nDFA exponent of spectral complexity (whole run):")
    for k, v in d["dfa"]["per_regime"].items():
        print(f"  {k:<20} α = {_fmt(v['mean'])} ± {_fmt(v['std'])} (n={v['n']})")
    if d["dfa"]["anova_f"] is not None:
        print(
            f"  ANOVA F = {d['dfa']['anova_f']:.2f}, permutation p = {_fmt(d['dfa']['anova_p_permutation'], '.2g')}"
        )
    for w in d["warnings"]:
        print(f"warning: {w}")
    print("\ncaveats:")
    for c in d["caveats"]:
        print(f"  - {c}")
