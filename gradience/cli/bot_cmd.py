"""``gradience bot serve`` and ``gradience badge open|refresh|close``: the Hub bot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradience.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bot",
        help="run the Hub bot: badges on model cards, audit diffs on Hub pull requests",
        description=(
            "Receive Hub webhooks and keep a Gradience badge on opted-in adapters' model cards "
            "(by pull request) and an audit-diff comment on pull requests that change adapter "
            "weights. The bot's token comes from HF_TOKEN, the webhook secret from "
            "GRADIENCE_WEBHOOK_SECRET. See docs/bot.md."
        ),
    )
    bsub = b.add_subparsers(dest="bot_command", metavar="ACTION")
    s = bsub.add_parser("serve", help="serve POST /webhook, GET /healthz and GET /status")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8080)")
    s.add_argument("--state", type=Path, help="SQLite state file (default gradience-bot.sqlite)")
    s.add_argument("--config", type=Path, help="TOML settings (docs/bot.md)")
    s.set_defaults(run=run_serve)
    b.set_defaults(run=lambda args: _usage(b))

    g = sub.add_parser(
        "badge",
        help="open, refresh or close the badge pull request on one repo, as the bot",
        description="What the bot does for one repo, by hand (HF_TOKEN is the acting token).",
    )
    g.add_argument("action", choices=["open", "refresh", "close"])
    g.add_argument("repo", help="Hub repo id, e.g. user/my-lora")
    g.add_argument("--state", type=Path, help="the bot's SQLite state file (default gradience-bot.sqlite)")
    g.add_argument("--config", type=Path, help="TOML settings (docs/bot.md)")
    g.add_argument("--json", action="store_true", help="JSON result on stdout")
    g.set_defaults(run=run_badge)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from gradience.bot.config import load_config
    from gradience.bot.server import Bot

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config, host=args.host, port=args.port, state=args.state)
    bot = Bot(config)
    print(f"gradience bot: listening on {bot.url}/webhook (state {config.state})", file=sys.stderr)
    bot.serve_forever()
    return 0


def run_badge(args: argparse.Namespace) -> int:
    from gradience.bot.config import load_config
    from gradience.bot.state import State
    from gradience.bot.worker import Worker
    from gradience.errors import UsageError

    config = load_config(args.config, state=args.state)
    if not config.token:
        raise UsageError("set HF_TOKEN to the token the badge pull request is opened with", param="token")
    state = State(config.state)
    try:
        worker = Worker(config, state)
        if args.action == "close":
            status, detail = worker.close_badge(args.repo)
        elif args.action == "refresh":
            status, detail = worker.refresh_badge(args.repo)
        else:
            status, detail = worker.open_badge(args.repo)
    finally:
        state.close()
    result = {"repo": args.repo, "action": args.action, "status": status, "detail": detail, "pr": None}
    pr = State(config.state).pr(args.repo)
    result["pr"] = pr["num"] if pr else None
    if args.json:
        print_json(result)
    else:
        print(f"{args.repo}: {detail}")
    return 0
