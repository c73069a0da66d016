"""``gradience diff``: what changed between two versions of an adapter, with pass/fail rules.

Exit codes: 0 the head passes (or no rules) · 2 bad input · 3 a rule fails on the head.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gradience.cli._common import add_hub_options, open_options, print_json, progress

#: Exit code when the head breaks an error-level rule (documented in docs/diff.md).
EXIT_RULES = 3

#: The command line's word for an absent side (an adapter added or removed).
ABSENT = "-"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="compare the audits of two versions of an adapter; fail on rules",
        description=(
            "Audit BASE and HEAD and show what changed: utilisation, stable rank, energy ranks, "
            "σ₁, flags, layers, ranks, targets and the recommended rank, per adapter and per "
            f"layer. Either side may be '{ABSENT}' (an adapter added or removed) or a saved "
            "`gradience audit --json --layers` file. Exit 3 when HEAD breaks a rule."
        ),
        epilog=(
            "examples: gradience diff examples/healthy-r8 examples/overprovisioned-r64 · "
            "gradience diff user/adapter@v1 user/adapter@v2 --min-utilization 0.1 · "
            "gradience diff A B --fail-on 'max-rank-ratio=0.5 forbid-flags=untrained,invalid'"
        ),
    )
    p.add_argument("base", help=f"the earlier adapter (folder, user/repo@revision, audit JSON, or {ABSENT})")
    p.add_argument("head", help=f"the later adapter (folder, user/repo@revision, audit JSON, or {ABSENT})")
    p.add_argument("--json", action="store_true", help="JSON on stdout (schema gradience.diff/v1)")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="also write the diff as Markdown to PATH")
    p.add_argument("--layers", action="store_true", help="list unchanged layers too (terminal)")
    p.add_argument("--policy", default="energy@0.9", help="rank policy behind the recommended ranks")
    g = p.add_argument_group("rules checked on HEAD (exit 3 when one fails for the adapter as a whole)")
    g.add_argument("--fail-on", dest="fail_on", metavar="RULES",
                   help="rules in one string: 'min-utilization=0.1 max-rank-ratio=0.5 "
                        "forbid-flags=untrained,invalid'")  # fmt: skip
    g.add_argument("--min-utilization", dest="min_utilization", type=float, metavar="X",
                   help="mean utilisation (stable rank / r) must be at least X")  # fmt: skip
    g.add_argument("--max-rank-ratio", dest="max_rank_ratio", type=float, metavar="X",
                   help="recommended rank / nominal r must be at most X")  # fmt: skip
    g.add_argument("--forbid-flags", dest="forbid_flags", metavar="FLAGS",
                   help="comma-separated flags HEAD must not carry: untrained, invalid, over_provisioned")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_hub_options(p)
    p.set_defaults(run=run)


def rules_from_args(args: argparse.Namespace):
    """One :class:`~gradience.diff.Rules` from ``--fail-on`` and the single-rule flags
    (a single flag wins over the same rule in ``--fail-on``); None when no rule is given."""
    import dataclasses

    from gradience.diff import Rules

    rules = Rules.parse(args.fail_on) if args.fail_on else Rules()
    changes: dict[str, Any] = {}
    if args.min_utilization is not None:
        changes["min_utilization"] = args.min_utilization
    if args.max_rank_ratio is not None:
        changes["max_rank_ratio"] = args.max_rank_ratio
    if args.forbid_flags is not None:
        changes["forbid_flags"] = args.forbid_flags
    rules = dataclasses.replace(rules, **changes)
    return None if rules.empty else rules


def run(args: argparse.Namespace) -> int:
    from gradience.diff import diff
    from gradience.errors import UsageError

    if args.revision is not None:
        raise UsageError(
            "the two sides usually differ in revision: write each in its reference (user/repo@REV)",
            param="revision",
        )
    rules = rules_from_args(args)
    base = None if args.base == ABSENT else args.base
    head = None if args.head == ABSENT else args.head
    with progress("downloading", enabled=not args.quiet, unit="bytes") as dl:
        result = diff(base, head, options=open_options(args, progress=dl), policy=args.policy,
                      rules=rules)  # fmt: skip
    data = result.to_dict()
    if args.markdown:
        from gradience.report.markdown import diff_markdown

        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(diff_markdown(data), encoding="utf-8")
    if args.json:
        print_json(data)
    else:
        render_diff(data, all_layers=args.layers)
    return 0 if result.passed else EXIT_RULES


def render_diff(d: dict[str, Any], *, all_layers: bool = False) -> None:
    """The diff on the terminal: headline, summary table, layer changes, rule results."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from gradience.auditor import Recommendation

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    b, h = d["base"], d["head"]
    con.print(
        f"[bold]{escape(b['label'] if b else '(absent)')}[/bold] → "
        f"[bold]{escape(h['label'] if h else '(absent)')}[/bold]  [cyan]{d['status']}[/cyan]"
    )
    t = Table(box=None, pad_edge=False)
    for col, just in (("", "left"), ("base", "right"), ("head", "right"), ("Δ", "right")):
        t.add_column(col, justify=just, style="dim" if not col else None)
    rows = (
        ("utilisation (mean)", "utilization_mean", 3),
        ("stable rank (mean)", "stable_rank_mean", 2),
        ("energy rank @90% (p50)", "energy_rank_90_p50", 1),
        ("σ₁ scaled (mean)", "delta_sigma_max_scaled_mean", 4),
        ("LoRA layers", "n_layers", 0),
        ("LoRA parameters", "total_lora_params", 0),
    )
    for label, key, digits in rows:
        m = d["metrics"][key]
        delta = m["delta"]
        if delta is not None and abs(delta) <= 1e-6 * max(abs(m["base"] or 0), abs(m["head"] or 0)):
            delta = 0  # storage noise: a truncation keeps σ₁ to ~1e-10
        t.add_row(label, _num(m["base"], digits), _num(m["head"], digits), _num(delta, digits, sign=True))
    rb, rh = d["recommendation"]["base"], d["recommendation"]["head"]
    t.add_row(
        "recommended rank",
        Recommendation.describe(rb),
        Recommendation.describe(rh),
        "changed" if d["recommendation"]["changed"] else "",
    )
    f = d["flags"]
    t.add_row("flags", ", ".join(f["base"]) or "—", ", ".join(f["head"]) or "—",
              " ".join([*(f"+{x}" for x in f["added"]), *(f"−{x}" for x in f["cleared"])]))  # fmt: skip
    con.print(t)
    for key, c in d["config"].items():
        con.print(f"  config [dim]{key}[/dim]: {escape(str(c['base']))} → {escape(str(c['head']))}")
    if d["targets"]["added"] or d["targets"]["removed"]:
        con.print(
            f"  targets: +{', '.join(d['targets']['added']) or '—'}  −{', '.join(d['targets']['removed']) or '—'}"
        )
    n = d["layer_counts"]
    con.print(
        f"layers: {n['changed']} changed, {n['added']} added, {n['removed']} removed, {n['unchanged']} unchanged"
    )
    shown = [x for x in d["layers"] if all_layers or x["status"] != "unchanged"]
    if shown:
        lt = Table(box=None, pad_edge=False)
        lt.add_column("layer", overflow="fold")
        for col in ("status", "r", "utilisation", "stable rank", "er90", "σ₁", "flags"):
            lt.add_column(col, justify="left" if col in ("status", "flags") else "right")
        for x in shown:
            m = x["metrics"]
            flags = " ".join(
                [*(f"+{f}" for f in x["flags"]["added"]), *(f"−{f}" for f in x["flags"]["cleared"])]
            )
            lt.add_row(
                escape(x["name"]),
                x["status"],
                _pair(x["r"], 0),
                _pair(m["utilization"], 3),
                _pair(m["stable_rank"], 2),
                _pair(m["energy_rank_90"], 0),
                _pair(m["sigma_max_scaled"], 4),
                flags,
            )
        con.print(lt)
    if d["rules"] is not None:
        errors = [v for v in d["violations"] if v["severity"] == "error"]
        warnings = [v for v in d["violations"] if v["severity"] == "warning"]
        for v in errors:
            con.print(f"[red]✗ {v['rule']}[/red]: {escape(v['message'])}")
        if warnings:
            con.print(f"[yellow]! {len(warnings)} layer warning{'s' if len(warnings) != 1 else ''}[/yellow] "
                      f"(first: {escape(warnings[0]['layer'] or '')}: {escape(warnings[0]['message'])})")  # fmt: skip
        con.print("[green]✓ rules pass[/green]" if d["passed"] else "[red]✗ rules fail[/red]")


def _num(x: float | None, digits: int, *, sign: bool = False) -> str:
    if x is None:
        return "—"
    if sign and x == 0:
        return "0"
    if digits == 0:
        return f"{x:+,.0f}" if sign else f"{x:,.0f}"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _pair(c: dict[str, Any], digits: int) -> str:
    b, h = _num(c["base"], digits), _num(c["head"], digits)
    if c["base"] is None or c["head"] is None or b == h:
        return h if c["head"] is not None else b
    return f"{b} → {h}"
