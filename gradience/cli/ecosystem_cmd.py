"""``gradience ecosystem``: the study's tables from the dataset, and one adapter's percentile."""

from __future__ import annotations

import argparse

from gradience.cli._common import add_hub_options, open_options, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ecosystem",
        help="query the ecosystem dataset: stats, percentile of an adapter",
        description="Tables from the published ecosystem dataset (a folder or a Hub dataset repo).",
    )
    s = p.add_subparsers(dest="ecosystem_command", metavar="SUBCOMMAND", parser_class=type(p))
    st = s.add_parser("stats", help="the study's tables (the card's numbers)")
    st.add_argument("--dataset", required=True, help="dataset folder or Hub dataset repo id")
    st.add_argument("--json", action="store_true", help="exact values as JSON on stdout")
    st.set_defaults(run=run_stats)
    pc = s.add_parser("percentile", help="where an adapter stands: among all, same r, same family")
    pc.add_argument("adapter", help="adapter folder or Hub reference")
    pc.add_argument("--dataset", required=True, help="dataset folder or Hub dataset repo id")
    pc.add_argument("--json", action="store_true", help="JSON on stdout")
    add_hub_options(pc)
    pc.set_defaults(run=run_percentile)


def run_stats(args: argparse.Namespace) -> int:
    from gradience.ecosystem.stats import compute, resolve_dataset

    stats = compute(resolve_dataset(args.dataset))
    if args.json:
        print_json(stats)
    else:
        from gradience.ecosystem.card import render_body

        print(render_body(stats), end="")
    return 0


def run_percentile(args: argparse.Namespace) -> int:
    from gradience.ecosystem.percentile import format_percentile, percentile
    from gradience.ecosystem.stats import resolve_dataset

    result = percentile(args.adapter, resolve_dataset(args.dataset), options=open_options(args))
    if args.json:
        print_json(result)
    else:
        print(format_percentile(result))
    return 0
