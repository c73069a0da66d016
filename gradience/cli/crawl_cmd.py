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
    g = p.add_argument_group("past one machine")
    g.add_argument("--fan-out", dest="fan_out", type=positive_int, metavar="N",
                   help="launch N jobs that each crawl a shard, then merge and publish (needs --on and --publish)")  # fmt: skip
    g.add_argument("--on", choices=["hf-jobs"], help="where --fan-out runs its jobs")
    g.add_argument("--job-image", dest="job_image", help="image for the jobs (default: the uv image)")
    g.add_argument(
        "--job-flavor", dest="job_flavor", help="hardware flavor for the jobs (default: cpu-basic)"
    )
    g.add_argument("--job-timeout", dest="job_timeout", type=positive_int, default=6 * 3600,
                   help="seconds each job may run (default 21600)")  # fmt: skip
    g.add_argument("--upload-shard", dest="upload_shard", metavar="REPO_ID", help=argparse.SUPPRESS)
    g.add_argument("--run-id", dest="run_id", help=argparse.SUPPRESS)
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
    if args.fan_out is not None:
        return _fan_out(args)
    if args.upload_shard and (shard is None or not args.run_id):
        raise UsageError("uploading a shard needs the shard and the crawl's run id", param="shard")
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
    config.repo_id = args.publish
    summary = run_crawl(config, progress=not args.quiet)
    if args.upload_shard:
        from gradience.ecosystem.fanout import upload_shard

        summary["staged"] = upload_shard(args.out, args.upload_shard, args.run_id, shard, token=args.token)
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


def _fan_out(args: argparse.Namespace) -> int:
    from gradience.ecosystem.fanout import fan_out
    from gradience.errors import UsageError

    if args.on != "hf-jobs" or not args.publish:
        raise UsageError("--fan-out needs --on hf-jobs and --publish REPO_ID", param="fan_out")
    if args.shard:
        raise UsageError("--fan-out makes its own shards; drop --shard", param="shard")
    passthrough = [
        "--passes",
        args.passes,
        "--concurrency",
        str(args.concurrency),
        "--timeout",
        str(args.timeout),
    ]
    if args.max_bytes:
        passthrough += ["--max-bytes", str(args.max_bytes)]
    if args.max_bin_bytes:
        passthrough += ["--max-bin-bytes", str(args.max_bin_bytes)]
    result = fan_out(
        args.fan_out,
        args.publish,
        args.out,
        token=args.token,
        crawl_args=passthrough,
        image=args.job_image,
        flavor=args.job_flavor,
        timeout_s=args.job_timeout,
        poll_interval=1.0,
    )
    if args.json:
        print_json(result)
    else:
        print(
            f"fan-out: {len(result['jobs'])} jobs, {result['rows']} rows → published {result['published']['commit']}"
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
