"""``gradience compress`` (alias ``truncate``): optimal rank-k truncation to a new adapter."""

from __future__ import annotations

import argparse

from gradience.cli._common import add_hub_options, open_options, positive_int, print_json, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        aliases=["truncate"],
        help="write the optimal rank-k truncation of an adapter as a new PEFT adapter",
        description=(
            "Replace every LoRA update by its best rank-k approximation (Eckart–Young) and "
            "write a PEFT adapter that loads with PeftModel.from_pretrained."
        ),
        epilog=(
            "examples: gradience compress examples/overprovisioned-r64 --out r8/   (the recommended rank)\n"
            "          gradience compress examples/overprovisioned-r64 --out r8/ --rank 8"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="adapter folder or Hub repo")
    p.add_argument("--out", required=True, help="output folder")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--rank", type=positive_int, help="keep K directions in every layer (capped per layer)")
    how.add_argument("--policy", help="the recommended uniform rank under this policy (default energy@0.9)")
    how.add_argument("--per-layer", dest="per_layer", nargs="?", const="energy@0.9",
                     metavar="POLICY", help="each layer its recommended rank (default energy@0.9)")  # fmt: skip
    p.add_argument("--dtype", help="F32, F16, BF16 or F64 (default: the input's)")
    p.add_argument("--overwrite", action="store_true", help="replace an adapter in --out")
    p.add_argument("--json", action="store_true", help="JSON report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_hub_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gradience.compression import compress

    per_layer = args.per_layer is not None
    with progress("compressing", enabled=not args.quiet) as bar:
        result = compress(
            args.path,
            args.out,
            rank=args.rank,
            policy=args.per_layer if per_layer else args.policy,
            per_layer=per_layer,
            dtype=args.dtype,
            overwrite=args.overwrite,
            progress=bar,
            options=open_options(args),
        )
    if args.json:
        print_json(result.to_dict())
    else:
        from gradience.report.terminal import render_compress

        render_compress(result.to_dict())
    return 0
