"""``gradience monitor replay``: what the training monitor would have said about a run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gradience.cli._common import print_json

if TYPE_CHECKING:
    from gradience.monitor.replay import ReplayResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="training monitor: replay telemetry through the five rules",
        description="Training monitor commands. See docs/monitor.md for the rules and telemetry schema.",
    )
    actions = p.add_subparsers(dest="monitor_command", metavar="ACTION", parser_class=type(p))
    r = actions.add_parser(
        "replay",
        help="replay a telemetry .jsonl file: alert timeline and whether it would have stopped",
        description=(
            "Replay a training telemetry file (gradience v1 events or flat per-step records) "
            "through the monitor's rules, and print the alert timeline and a summary."
        ),
        epilog="example: gradience monitor replay run/gradience_telemetry.jsonl --plot run.png",
    )
    r.add_argument("file", help="telemetry .jsonl file")
    which = r.add_mutually_exclusive_group()
    which.add_argument("--config", help="monitor settings, a .toml or .json file (see docs/monitor.md)")
    which.add_argument(
        "--defaults",
        action="store_true",
        help="use the default settings even when the file records the ones its run used",
    )
    r.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    r.add_argument(
        "--plot", metavar="PATH", help="write a PNG of loss, eval loss and gradient norm with alerts"
    )
    r.set_defaults(run=run)
    p.set_defaults(run=_no_action)


def _no_action(args: argparse.Namespace) -> int:
    from gradience.errors import UsageError

    raise UsageError("choose an action: gradience monitor replay FILE (see gradience monitor --help)")


def run(args: argparse.Namespace) -> int:
    from gradience.monitor.replay import replay

    result = replay(args.file, config=args.config, use_recorded=not args.defaults)
    if args.plot:
        from gradience.monitor.plot import plot_replay

        plot_replay(result, args.plot)
    if args.json:
        print_json(result.to_dict())
        return 0
    _render(result)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _render(result: ReplayResult) -> None:
    print(f"telemetry: {result.source} (monitor settings: {result.config_source})")
    if result.alerts:
        print(f"{'step':>8}  {'severity':<8}  {'rule':<17}  message")
        for a in result.alerts:
            step = "-" if a.step is None else str(a.step)
            print(f"{step:>8}  {a.severity:<8}  {a.rule:<17}  {a.message}")
    print(result.summary())
