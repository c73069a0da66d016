"""``gradience merge-audit`` and ``gradience merge``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradience.cli._common import add_hub_options, finite, open_options, print_json, progress


def register(sub: argparse._SubParsersAction) -> None:
    from gradience.merge.strategies import available_strategies
    from gradience.merge.verdicts import PRESETS

    p = sub.add_parser(
        "merge-audit",
        help="predict whether adapters merge cleanly, layer by layer, and recommend how",
        description=(
            "Compare two or more LoRA adapters layer by layer (subspace overlap, directional "
            "agreement, magnitude ratios, conflict dimensions), give each shared layer a verdict "
            "(SAFE / REDUNDANT / CONFLICTING / IMBALANCED) and concrete merge parameters."
        ),
        epilog="example: gradience merge-audit examples/merge-conflict-a examples/merge-conflict-b",
    )
    p.add_argument("adapters", nargs="*", help="adapter folders (two or more)")
    p.add_argument("--adapter-a", dest="adapter_a", help="first adapter (0.11 spelling)")
    p.add_argument("--adapter-b", dest="adapter_b", help="second adapter (0.11 spelling)")
    p.add_argument("--energy-threshold", dest="energy", type=float, default=0.90,
                   help="compare each update's top-k directions holding this energy (default 0.90)")  # fmt: skip
    p.add_argument("--thresholds", default="default", choices=list(PRESETS), help="verdict threshold preset")
    p.add_argument("--json", action="store_true", help="JSON on stdout (schema gradience.merge_audit/v3)")
    p.add_argument("--markdown", type=Path, help="write a Markdown report here")
    p.add_argument("--plan-out", dest="plan_out", type=Path, help="write the merge plan (JSON) here")
    p.add_argument("--output-dir", dest="output_dir", type=Path,
                   help="write merge_audit.json, merge_audit.md and merge_plan.json here (0.11)")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="show every layer's evidence")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_hub_options(p)
    p.set_defaults(run=run_audit)

    m = sub.add_parser(
        "merge",
        help="merge LoRA adapters into a new PEFT adapter, without the base model",
        description=(
            "Merge two or more adapters layer by layer. linear is exact in factor space; ties, "
            "dare_linear and dare_ties merge each layer's dense update and re-factor it with a "
            "randomized truncated SVD. auto follows the merge-audit plan."
        ),
        epilog="example: gradience merge examples/merge-related-a examples/merge-related-b --out merged/",
    )
    m.add_argument("adapters", nargs="+", help="adapter folders (two or more)")
    m.add_argument("--out", required=True, type=Path, help="output folder")
    how = m.add_mutually_exclusive_group()
    how.add_argument("--plan", type=Path, help="a merge plan from merge-audit --plan-out")
    how.add_argument("--strategy", default="auto", choices=["auto", *available_strategies()],
                     help="auto (default: follow the merge audit's plan) or one strategy for every layer")  # fmt: skip
    m.add_argument("--weights", help="comma-separated weights, one per adapter (default: equal)")
    m.add_argument("--density", type=float, help="TIES/DARE density with a fixed --strategy (default 0.5)")
    m.add_argument(
        "--energy", type=float, default=None,
        help="truncate each merged update to this fraction of its energy (default: no truncation; linear is exact)",
    )  # fmt: skip
    m.add_argument("--allow-different-base", dest="allow_different_base", action="store_true",
                   help="merge adapters trained for different base models (refused by default)")  # fmt: skip
    m.add_argument("--max-rank", dest="max_rank", type=int, help="cap on each output layer's rank")
    m.add_argument("--seed", type=int, default=0, help="seed for DARE masks and the randomized SVD")
    m.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16", "F64"])
    m.add_argument("--overwrite", action="store_true", help="replace an adapter in --out")
    m.add_argument("--json", action="store_true", help="JSON report on stdout")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_hub_options(m)
    m.set_defaults(run=run_merge)


def _adapters(args: argparse.Namespace) -> list[str]:
    from gradience.errors import UsageError

    paths = list(args.adapters) + [x for x in (args.adapter_a, args.adapter_b) if x]
    if len(paths) < 2:
        raise UsageError("give at least two adapters: gradience merge-audit A B")
    return paths


def run_audit(args: argparse.Namespace) -> int:
    from gradience.merge.pairwise import merge_audit
    from gradience.report.markdown import merge_audit_markdown

    with progress("comparing", enabled=not args.quiet) as bar:
        result = merge_audit(_adapters(args), energy_threshold=args.energy, thresholds=args.thresholds,
                             progress=bar, options=open_options(args))  # fmt: skip
    data = result.to_dict()
    outputs = []
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        outputs.append((args.output_dir / "merge_audit.json", json.dumps(finite(data), indent=2) + "\n"))
        outputs.append((args.output_dir / "merge_audit.md", merge_audit_markdown(data)))
        outputs.append((args.output_dir / "merge_plan.json", json.dumps(result.plan(), indent=2) + "\n"))
    if args.markdown:
        outputs.append((args.markdown, merge_audit_markdown(data)))
    if args.plan_out:
        outputs.append((args.plan_out, json.dumps(result.plan(), indent=2) + "\n"))
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if args.json:
        print_json(data)
    else:
        from gradience.report.terminal import render_merge_audit

        render_merge_audit(data, verbose=args.verbose)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from gradience.errors import UsageError
    from gradience.merge.execute import merge

    weights = None
    if args.weights:
        try:
            weights = [float(x) for x in args.weights.split(",")]
        except ValueError:
            raise UsageError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
    with progress("merging", enabled=not args.quiet) as bar:
        result = merge(
            args.adapters, args.out, plan=args.plan, strategy=args.strategy, weights=weights,
            density=args.density, energy=args.energy, max_rank=args.max_rank, seed=args.seed,
            dtype=args.dtype, overwrite=args.overwrite, progress=bar,
            allow_different_base=args.allow_different_base, options=open_options(args),
        )  # fmt: skip
    if args.json:
        print_json(result.to_dict())
    else:
        from gradience.report.terminal import render_merge

        render_merge(result.to_dict())
    return 0
