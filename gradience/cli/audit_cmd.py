"""``gradience audit``: spectra, utilisation and rank suggestions of one adapter."""

from __future__ import annotations

import argparse

from gradience.cli._common import add_hub_options, open_options, positive_int, print_json, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="audit the singular value spectrum of every LoRA layer",
        description=(
            "Audit a PEFT LoRA/DoRA/AdaLoRA adapter folder: stable rank, utilisation, energy "
            "ranks and rank suggestions per layer. No GPU, no data, no torch."
        ),
        epilog="example: gradience audit examples/overprovisioned-r64 --layers",
    )
    p.add_argument("path", nargs="?", help="adapter folder (adapter_config.json + weights)")
    p.add_argument("--peft-dir", dest="peft_dir", help="same as PATH (0.11 spelling)")
    p.add_argument("--json", action="store_true", help="JSON on stdout (schema gradience.audit/v1)")
    p.add_argument("--layers", action="store_true", help="include per-layer rows")
    p.add_argument(
        "--suggest-per-layer",
        action="store_true",
        help="show the per-layer rank_pattern suggestion (always in --json)",
    )
    p.add_argument(
        "--policy",
        default="energy@0.9",
        help="rank policy behind the recommendation: " + ", ".join(_policy_specs()) + " (default energy@0.9)",
    )
    p.add_argument(
        "--rank-policies",
        dest="rank_policies",
        default="",
        help="comma-separated extra policies to compare, e.g. energy@0.90,knee,erank,oht",
    )
    p.add_argument("--top-wasteful", dest="top_wasteful", type=positive_int, default=None,
                   help="list the N layers with the lowest utilisation")  # fmt: skip
    p.add_argument("--top-singular-values", dest="top_sv", type=positive_int, default=None,
                   help="include the top K singular values per layer")  # fmt: skip
    p.add_argument("--precise", action="store_true",
                   help="QR route for every layer (σ to ~1e-15·σ₁; slower)")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_hub_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradience.auditor import audit
    from gradience.errors import UsageError

    path = args.path or args.peft_dir
    if not path:
        raise UsageError("give an adapter folder: gradience audit PATH")
    if args.path and args.peft_dir and args.path != args.peft_dir:
        raise UsageError("give the adapter once: PATH or --peft-dir, not both")
    extra = [x for x in args.rank_policies.split(",") if x.strip()]
    with (
        progress("downloading", enabled=not args.quiet, unit="bytes") as dl,
        progress("auditing", enabled=not args.quiet) as bar,
    ):
        result = audit(
            path, policy=args.policy, policies=extra, precise=args.precise, progress=bar,
            options=open_options(args, progress=dl),
        )  # fmt: skip
    data = result.to_dict(layers=args.layers, top_k=args.top_sv)
    if args.top_wasteful:
        data["top_wasteful"] = _top_wasteful(result, args.top_wasteful)
    if args.json:
        print_json(data)
    else:
        from gradience.report.terminal import render_audit

        render_audit(data, per_layer=args.layers, suggest_per_layer=args.suggest_per_layer)
    return 0


def _policy_specs() -> list[str]:
    from gradience.spectral.policies import policy_specs

    return policy_specs()


def _top_wasteful(result, n: int) -> list[dict]:
    rows = [x for x in result.layers if x.trained]
    rows.sort(key=lambda x: (x.utilization, -x.layer.params))
    return [
        {
            "name": x.name,
            "r": x.layer.r,
            "stable_rank": x.stable_rank,
            "utilization": x.utilization,
            "energy_rank_90": x.energy_rank(0.9),
            "params": x.layer.params,
        }
        for x in rows[:n]
    ]
