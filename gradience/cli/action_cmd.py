"""``gradience action run``: the GitHub Action's runtime (see ``action.yml`` and docs/action.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "action",
        help="the GitHub Action: audit a pull request's adapters, comment, gate",
        description="Commands the GitHub Action runs on a runner (see docs/action.md).",
    )
    actions = p.add_subparsers(dest="action_command", metavar="SUBCOMMAND", parser_class=type(p))
    r = actions.add_parser(
        "run",
        help="audit the adapters a pull request touches, at base and head",
        description=(
            "Reads the runner's environment (GITHUB_EVENT_PATH, GITHUB_REPOSITORY, GITHUB_API_URL, "
            "GITHUB_WORKSPACE, GITHUB_STEP_SUMMARY, GITHUB_OUTPUT). Every flag may also come from "
            "INPUT_<NAME> (e.g. INPUT_FAIL_ON, or GitHub's INPUT_FAIL-ON), which is how action.yml passes its inputs. Exit "
            "status: 0 passed (or only warnings below fail-on), 3 the gate failed, 2 bad input."
        ),
    )
    r.add_argument("--paths", help="globs of adapter folders audited on every run (comma/newline separated)")
    r.add_argument(
        "--hub-repos", dest="hub_repos", help="Hub adapters: owner/name[@rev] or owner/name@base..head"
    )
    r.add_argument("--fail-on", dest="fail_on", help="none | warning | error (default error)")
    r.add_argument("--min-utilization", dest="min_utilization", help="mean utilisation must be at least X")
    r.add_argument("--max-rank-ratio", dest="max_rank_ratio", help="recommended rank / r must be at most X")
    r.add_argument(
        "--forbid-flags", dest="forbid_flags", help="flags that fail: untrained,invalid,over_provisioned"
    )
    r.add_argument("--comment", help="sticky (default) | new | off")
    r.add_argument(
        "--comment-scope", dest="comment_scope", help="name of this workflow's comment (default 'default')"
    )
    r.add_argument("--skip-unchanged", dest="skip_unchanged", action="store_const", const="true",
                   help="leave the comment alone when the report did not change")  # fmt: skip
    r.add_argument("--merge-pairs", dest="merge_pairs", help="adapter folders to merge-audit: A:B,C:D")
    r.add_argument("--policy", help="rank policy behind recommended ranks (default energy@0.9)")
    r.add_argument("--report", help="also write the JSON report here")
    r.add_argument("--allow-untrusted", dest="allow_untrusted", action="store_const", const="true",
                   help="comment on pull_request_target even when the head comes from a fork")  # fmt: skip
    b = r.add_argument_group("GPU bench on HF Jobs (gradience bench --on hf-jobs)")
    b.add_argument(
        "--bench", action="store_const", const="true", help="run the bench and report it in the comment"
    )
    b.add_argument("--bench-flavor", dest="bench_flavor", help="HF Jobs hardware (default a10g-small)")
    b.add_argument("--bench-timeout", dest="bench_timeout", help="always set: e.g. 45m (default), 2h")
    b.add_argument("--bench-config", dest="bench_config", help="bench settings (TOML) in the checkout")
    b.add_argument(
        "--bench-namespace", dest="bench_namespace", help="HF Jobs namespace (default: the token's user)"
    )
    b.add_argument(
        "--bench-image", dest="bench_image", help="HF Jobs image (default: the project's bench image)"
    )
    r.add_argument("--pr-number", dest="pr_number", type=int,
                   help="on workflow_run: the pull request (checked against the run's head commit)")  # fmt: skip
    r.add_argument("--github-token", dest="github_token",
                   help="token for the GitHub API (default: INPUT_GITHUB_TOKEN or GITHUB_TOKEN)")  # fmt: skip
    r.set_defaults(run=run)
    p.set_defaults(run=lambda args: p.print_help() or 2)


def run(args: argparse.Namespace) -> int:
    import os

    from gradience.action.run import run as run_action
    from gradience.action.settings import input_env, resolve

    names = ("paths", "hub_repos", "fail_on", "min_utilization", "max_rank_ratio", "forbid_flags", "comment",
             "comment_scope", "skip_unchanged", "merge_pairs", "policy", "report", "allow_untrusted", "bench",
             "bench_flavor", "bench_timeout", "bench_config", "bench_namespace", "bench_image")  # fmt: skip
    settings = resolve({n: getattr(args, n) for n in names}, os.environ)
    pr_number = args.pr_number
    if pr_number is None and (given := input_env(os.environ, "pr_number")):
        try:
            pr_number = int(given)
        except ValueError:
            from gradience.errors import UsageError

            raise UsageError("pr-number must be a whole number", param="pr_number") from None
    return run_action(settings, github_token=args.github_token, pr_number=pr_number).exit_code
