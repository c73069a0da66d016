"""Entry point: parse, dispatch, and turn every user error into one line and exit code 2.

Exit codes: 0 success · 1 internal error (a bug: please report it) · 2 bad input or
usage · 3 ``diff``: a rule fails on the head · 130 interrupted. ``GRADIENCE_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# The audit's matrices are small (r×r cores, thin Grams): BLAS threads buy nothing, and on a
# busy machine spinning OpenBLAS threads made one audit take tens of seconds instead of
# under one. Pin them before numpy loads, unless the user chose otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from gradience import __version__  # noqa: E402  (after the thread pinning above)
from gradience.errors import GradienceError  # noqa: E402

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from gradience.cli import (
        action_cmd,
        audit_cmd,
        bench_cmd,
        bot_cmd,
        compress_cmd,
        crawl_cmd,
        diff_cmd,
        ecosystem_cmd,
        merge_cmd,
        monitor_cmd,
        regimes_cmd,
    )

    parser = _Parser(
        prog="gradience",
        description="Spectral audits of LoRA adapters from the weights alone.",
    )
    parser.add_argument("--version", action="version", version=f"gradience {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # the order of `gradience --help`: audits first, then merges, training, and the services
    for module in (
        audit_cmd, compress_cmd, diff_cmd, merge_cmd, bench_cmd, monitor_cmd, regimes_cmd,
        action_cmd, bot_cmd, crawl_cmd, ecosystem_cmd,
    ):  # fmt: skip
        module.register(sub)
    return parser


#: The flag that changes each option an error may name (``GradienceError.param``).
_FLAGS = {
    "max_bytes": "--max-bytes",
    "max_bin_bytes": "--max-bin-bytes",
    "subfolder": "--subfolder",
    "overwrite": "--overwrite",
    "allow_different_base": "--allow-different-base",
    "fail_on": "--fail-on",
    "forbid_flags": "--forbid-flags",
    "min_utilization": "--min-utilization",
    "max_rank_ratio": "--max-rank-ratio",
}


def advice(e: GradienceError) -> str:
    """The CLI's own words on what to do next: errors name no flags, the CLI does."""
    from gradience import errors as E

    if isinstance(e, E.HubOIDCError):
        return ""  # the message already says what to change
    if isinstance(e, E.HubAccessError):
        return " (pass --token or set HF_TOKEN)"
    if type(e) is E.AdapterNotFoundError and e.repo_id:
        return " (for a private repo, pass --token or set HF_TOKEN)"
    if isinstance(e, E.RateLimitedError) and e.retry_after:
        return f" (retry after {e.retry_after:.0f} s)"
    flag = _FLAGS.get(e.param or "")
    if flag and isinstance(e, E.TooLargeError):
        return f" (raise it with {flag})"
    if flag and isinstance(e, E.UsageError):
        return f" (see {flag})"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = os.environ.get("GRADIENCE_DEBUG", "") not in ("", "0")
    try:
        return int(args.run(args) or EXIT_OK)
    except GradienceError as e:
        if debug:
            raise
        print(f"gradience: error: {e}{advice(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gradience: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:
        if debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"gradience: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug, not bad input: say so, in one line
        if debug:
            raise
        print(
            f"gradience: internal error: {e.__class__.__name__}: {e} — please report it; "
            "set GRADIENCE_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
