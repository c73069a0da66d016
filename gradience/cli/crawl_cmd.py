"""``gradience crawl``: keep the ecosystem dataset current (discover, audit, write, publish)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradience.cli._common import _size, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crawl",
        help="audit the Hub's public LoRA adapters into a dataset (incremental, crash-safe)",
        description=(
            "Discover PEFT adapters on the Hub, audit the new or changed ones with byte caps and "
            "timeouts, and write the dataset folder (README.md, adapters/*.parquet, layers/*.parquet). "
            "A rerun audits only new or changed repos and retries transient failures; `crawl status` "
            "reports the last runs and the scheduler's next one."
        ),
        epilog="example: gradience crawl --out ecosystem/ --publish me/lora-audits",
    )
    p.add_argument(
        "action", nargs="?", choices=["run", "status"], default="run", help="run (default) or status"
    )
    p.add_argument("--out", type=Path, default=Path("ecosystem"), help="dataset folder (default ./ecosystem)")
    p.add_argument("--passes", default="all",
                   help="discovery passes, comma-separated: all, families, tasks, ranks, architectures, recent "
                   "(default all)")  # fmt: skip
    p.add_argument("--per-pass", dest="per_pass", type=positive_int, default=50,
                   help="repos per search in the stratified passes (default 50)")  # fmt: skip
    p.add_argument("--concurrency", type=positive_int, default=8, help="audits in flight (default 8)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or your saved login)")
    p.add_argument(
        "--max-bytes",
        dest="max_bytes",
        type=_size,
        default=None,
        help="LoRA bytes per adapter (default 256MiB)",
    )
    p.add_argument(
        "--max-bin-bytes",
        dest="max_bin_bytes",
        type=_size,
        default=None,
        help="cap on a whole .bin (default 64MiB)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may stall (default 30)")
    p.add_argument(
        "--deadline", type=float, default=300.0, help="seconds one audit may take in all (default 300)"
    )
    p.add_argument("--shard", help="crawl only shard i of n (i/n), partitioned by repo id")
    p.add_argument("--limit", type=positive_int, help="audit at most this many adapters this run")
    p.add_argument(
        "--publish", metavar="REPO_ID", help="then publish the folder to this Hub dataset repo (one commit)"
    )
    p.add_argument("--jobs-db", dest="jobs_db", type=Path, help="status: the scheduler's job store (SQLite)")
    p.add_argument("--json", action="store_true", help="the run summary (or status) as JSON on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        return _status(args)
    from gradience.ecosystem.crawl import CrawlConfig, parse_shard, run_crawl
    from gradience.ecosystem.discovery import parse_passes
    from gradience.errors import UsageError

    shard = parse_shard(args.shard) if args.shard else None
    if args.publish and shard is not None:
        raise UsageError("a shard holds part of the dataset: publish after merging the shards", param="shard")
    config = CrawlConfig(
        out=args.out,
        token=args.token,
        passes=parse_passes(args.passes),
        concurrency=args.concurrency,
        per_pass=args.per_pass,
        read_timeout=args.timeout,
        deadline=args.deadline,
        shard=shard,
        limit=args.limit,
    )
    if args.max_bytes:
        config.max_bytes = args.max_bytes
    if args.max_bin_bytes:
        config.max_bin_bytes = args.max_bin_bytes
    summary = run_crawl(config, progress=not args.quiet)
    if args.publish:
        from gradience.ecosystem.publish import publish

        summary["published"] = publish(args.out, args.publish, token=args.token)
    if args.json:
        print_json(summary)
    else:
        statuses = ", ".join(f"{k} {v}" for k, v in summary["statuses"].items()) or "nothing due"
        rate = summary["adapters_per_minute"]
        print(
            f"crawl: {summary['discovered']} adapter folders listed, {summary['audited']} audited ({statuses})"
            + (f", {rate:.0f}/min" if rate else ""),
            file=sys.stderr,
        )
        print(
            f"dataset: {args.out}"
            + (f" → published {summary['published']['commit']}" if args.publish else "")
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from gradience.ecosystem.status import crawl_status, format_status

    status = crawl_status(args.out, jobs_db=args.jobs_db)
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
    return 0
