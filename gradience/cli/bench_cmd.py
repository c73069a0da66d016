"""``gradience bench``: evidence that a smaller rank is safe, from multi-seed retraining."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gradience.cli._common import positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="retrain and truncate at the audited ranks over several seeds; pass or fail each",
        description=(
            "Train a probe LoRA, audit it, then evaluate every candidate rank (uniform p50/p90 of "
            "energy_rank_90, per-layer pattern, the recommendation, a random control) truncated from "
            "the probe and retrained from scratch over several seeds. A candidate passes when its "
            "worst seed stays within the tolerance of the probe. Results are cached under --out: "
            "a killed run resumes, a finished one re-reports at once. Needs the bench extra "
            "(pip install 'gradience[bench]')."
        ),
        epilog="example: gradience bench --out bench-out/ --plot bench.png",
    )
    p.add_argument("--config", help="TOML file with bench settings (flags override it)")
    p.add_argument("--out", default="bench-out", help="cache and results folder (default bench-out)")
    p.add_argument("--seeds", type=positive_int, help="seeds per configuration (default 3)")
    p.add_argument("--probe-rank", dest="probe_rank", type=positive_int, help="probe LoRA rank (default 32)")
    p.add_argument("--tolerance", type=float, help="worst-seed change allowed, in points (default -2.5)")
    p.add_argument("--steps", type=positive_int, help="training steps per run (default 300)")
    p.add_argument("--batch-size", dest="batch_size", type=positive_int, help="default 64")
    p.add_argument("--lr", type=float, help="learning rate (default: the task's, 1e-2 embedded, 2e-4 Hub)")
    p.add_argument("--modes", type=_modes, help="truncated,retrained (default both)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default 1; 0: torch's choice)")
    g = p.add_argument_group("a real task on the Hub (instead of the embedded synthetic one)")
    g.add_argument("--model", help="base model repo id (a sequence-classification or causal LM)")
    g.add_argument("--dataset", help="dataset repo id (text/label, or prompt/answer columns)")
    g.add_argument("--revision", help="model revision")
    g.add_argument("--dataset-revision", dest="dataset_revision", help="dataset revision")
    g.add_argument("--token", help="Hub token (default: HF_TOKEN or your saved login)")
    j = p.add_argument_group("running elsewhere")
    j.add_argument("--on", choices=["local", "hf-jobs"], default="local", help="where to run (default local)")
    j.add_argument("--flavor", default="a10g-small", help="HF Jobs hardware flavor (default a10g-small)")
    j.add_argument("--timeout", default="45m", help="HF Jobs timeout, e.g. 45m or 2h (default 45m)")
    j.add_argument("--namespace", help="HF Jobs namespace (default: your user)")
    j.add_argument("--image", help="HF Jobs image (default: the project's bench image)")
    p.add_argument("--json", action="store_true", help="JSON report on stdout")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of metric against parameters")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress")
    p.set_defaults(run=run)


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in ("truncated", "retrained") for m in modes):
        raise argparse.ArgumentTypeError(f"expected truncated, retrained or both, got {text!r}")
    return modes


def settings(args: argparse.Namespace) -> dict[str, object]:
    keys = ("seeds", "probe_rank", "tolerance", "steps", "batch_size", "lr", "modes", "threads",
            "model", "dataset", "revision", "dataset_revision")  # fmt: skip
    return {k: getattr(args, k, None) for k in keys}


def run(args: argparse.Namespace) -> int:
    from gradience.bench.config import load_config

    config = load_config(args.config, **settings(args))
    if args.on == "hf-jobs":
        from gradience.bench.jobs import run_on_jobs

        report = run_on_jobs(
            config, token=args.token, flavor=args.flavor, timeout=args.timeout,
            namespace=args.namespace, image=args.image, quiet=args.quiet,
        )  # fmt: skip
    else:
        report = _run_local(config, args)
    if args.plot:
        from gradience.bench.report import plot_report

        plot_report(report, args.plot)
    if args.json:
        print_json(report)
    else:
        from gradience.bench.report import render_report

        render_report(report)
    return 0


def _run_local(config: object, args: argparse.Namespace) -> dict:
    import importlib.util

    from gradience.bench.protocol import run_bench
    from gradience.errors import UsageError

    missing = [m for m in ("torch", "peft", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"a local bench needs {', '.join(missing)}: pip install 'gradience[bench]' (or run it on HF Jobs)",
            param="on",
        )

    task = config.make_task(token=args.token)  # type: ignore[attr-defined]
    with _progress(enabled=not args.quiet) as bar:
        result = run_bench(config, args.out, task=task, progress=bar)  # type: ignore[arg-type]
    s = result.stats
    if not args.quiet:
        print(
            f"bench: {s.units} units, {s.computed} computed, {s.cached} from the cache "
            f"({args.out}), {s.seconds:.0f} s",
            file=sys.stderr,
        )
    return result.report


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int, str], None]]:
    """A bar over the whole grid on a terminal; one line per unit in a log (HF Jobs streams
    these, so a remote run shows where it is)."""
    if not enabled:
        yield lambda done, total, label: None
        return
    if not sys.stderr.isatty():

        def line(done: int, total: int, label: str) -> None:
            print(f"bench: [{done}/{total or '?'}] {label}", file=sys.stderr, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        "[bold]bench", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total or None, description=label)

        yield update
