"""The pull-request comment (short: one row per adapter) and the job summary (every layer).

A comment is capped at 65,536 characters and read by reviewers between other comments, so it
carries the table and a link; the job summary (1 MiB) carries the per-layer detail. Every
string that comes from the pull request (folder names, error messages) is escaped before it
goes into a table cell.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gradience.action.compare import STATUSES, AdapterResult
from gradience.report.markdown import diff_markdown
from gradience.report.markdown import escape as cell
from gradience.report.markdown import name as code

MARKER_PREFIX = "<!-- gradience-action:sticky scope="
COMMENT_LIMIT = 65536

_ICON = {"fail": "❌", "warn": "⚠️", "pass": "✅"}


def marker(scope: str) -> str:
    return f"{MARKER_PREFIX}{scope} -->"


def digest_line(digest: str) -> str:
    return f"<!-- gradience-action:digest={digest} -->"


def read_digest(body: str) -> str | None:
    tag = "<!-- gradience-action:digest="
    i = body.find(tag)
    if i < 0:
        return None
    return body[i + len(tag) :].split(" ", 1)[0].split("-->", 1)[0].strip()


@dataclass(frozen=True)
class Context:
    """What the footer and title say about the run."""

    repository: str
    pr_number: int | None
    head_sha: str | None
    base_sha: str | None
    policy: str
    fail_on: str
    verdict: str
    run_url: str | None
    version: str


def _num(x: Any, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _signed(x: float | None) -> str:
    return "" if x is None else f" ({x:+.2f})"


def adapter_verdict(r: AdapterResult) -> str:
    sev = {v["severity"] for v in r.violations}
    return "fail" if "error" in sev else "warn" if "warning" in sev else "pass"


def _rec(d: dict[str, Any] | None) -> dict[str, Any]:
    return (d or {}).get("recommendation") or {}


def _rec_text(d: dict[str, Any] | None) -> str:
    rec = _rec(d)
    if not rec:
        return "—"
    return str(rec["rank"]) if rec.get("status") == "ok" else str(rec.get("status"))


def _change(r: AdapterResult) -> str:
    if r.status == "unreadable":
        err = r.error or {}
        return f"{code(err.get('code', 'error'))} {cell(str(err.get('message', ''))[:200])}"
    if r.status == "added":
        return "new adapter"
    if r.status == "unchanged":
        return "no change"
    b, h = r.base, r.head
    if r.status == "removed":
        return f"removed (was r={cell((b or {}).get('adapter', {}).get('r'))})"
    parts = []
    if r.error:  # base unreadable: the head is shown on its own
        parts.append(f"base unreadable ({code(r.error.get('code', 'error'))})")
    if b and h:
        rb, rh = b["adapter"].get("r"), h["adapter"].get("r")
        if rb != rh:
            parts.append(f"r {rb} → {rh}")
        ub, uh = b.get("utilization_mean"), h.get("utilization_mean")
        if ub != uh:
            delta = uh - ub if ub is not None and uh is not None else None
            parts.append(f"utilisation {_num(ub)} → {_num(uh)}{_signed(delta)}")
        if _rec_text(b) != _rec_text(h):
            parts.append(f"recommended r {_rec_text(b)} → {_rec_text(h)}")
        if r.diff is not None:
            parts += [f"+{f}" for f in r.diff.flags_added] + [f"−{f}" for f in r.diff.flags_cleared]
            counts = r.diff.layer_counts()
            moved = {k: v for k, v in counts.items() if k != "unchanged" and v}
            if moved:
                parts.append("layers: " + ", ".join(f"{v} {k}" for k, v in moved.items()))
    return "; ".join(parts) or "weights changed, numbers equal"


def _row(r: AdapterResult) -> list[str]:
    side = r.head or r.base or {}
    a = side.get("adapter") or {}
    flags = ", ".join(side.get("flags") or []) if side else ""
    verdict = "—" if r.status == "removed" else f"{_ICON[adapter_verdict(r)]} {adapter_verdict(r)}"
    broken = sorted({v["rule"] for v in r.violations if v["severity"] == "error"})
    if broken:
        verdict += " (" + ", ".join(broken) + ")"
    return [
        code(r.name),
        r.status,
        cell(a.get("r", "—")),
        _num(side.get("utilization_mean")) if side else "—",
        _change(r),
        _rec_text(r.head) if r.head else "—",
        cell(flags) or "—",
        verdict,
    ]


HEADER = ["adapter", "status", "r", "utilisation", "change vs base", "recommended r", "flags", "verdict"]


def ordered(results: Sequence[AdapterResult]) -> list[AdapterResult]:
    return sorted(results, key=lambda r: (STATUSES.index(r.status), r.name))


def table(results: Sequence[AdapterResult]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in ordered(results)]
    return "\n".join(lines) + "\n"


def merge_table(pairs: Sequence[dict[str, Any]]) -> str:
    if not pairs:
        return ""
    lines = ["| merge pair | verdict | risk | compatibility |", "|---|---|---|---|"]
    for p in pairs:
        if p.get("error"):
            lines.append(
                f"| {code(p['a'])} + {code(p['b'])} | unreadable | — | {cell(p['error']['message'])} |"
            )
            continue
        agg = p["aggregate"]
        score = agg.get("compatibility_score")
        lines.append(
            f"| {code(p['a'])} + {code(p['b'])} | {cell(agg.get('overall_verdict'))} | "
            f"{cell(agg.get('risk_level'))} | {_num(score)} |"
        )
    return "\n".join(lines) + "\n"


def headline(results: Sequence[AdapterResult], ctx: Context) -> str:
    if not results:
        return "No adapter changed in this pull request."
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    parts = [f"{v} {k}" for k, v in counts.items() if v]
    noun = "adapter" if len(results) == 1 else "adapters"
    return (
        f"**{len(results)} {noun}** ({', '.join(parts)}) · verdict: {_ICON[ctx.verdict]} **{ctx.verdict}** "
        f"(fail-on: {ctx.fail_on})"
    )


def footer(ctx: Context) -> str:
    bits = []
    if ctx.head_sha:
        bits.append(f"head {ctx.head_sha[:7]}")
    if ctx.base_sha:
        bits.append(f"base {ctx.base_sha[:7]}")
    bits += [f"policy {ctx.policy}", f"gradience {ctx.version}"]
    if ctx.run_url:
        bits.append(f"[per-layer detail in the job summary]({ctx.run_url})")
    return "<sub>" + " · ".join(bits) + "</sub>\n"


def digest(
    results: Sequence[AdapterResult],
    merges: Sequence[dict[str, Any]],
    ctx: Context,
    sections: Sequence[str] = (),
) -> str:
    """A fingerprint of what the comment reports, without commit ids or run links: two pushes
    that leave every adapter's numbers alone give the same digest (``--skip-unchanged``)."""
    rows = [_row(r) for r in ordered(results)]
    payload = {"rows": rows, "merges": merge_table(merges), "verdict": ctx.verdict, "fail_on": ctx.fail_on,
               "sections": list(sections)}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def comment(
    results: Sequence[AdapterResult],
    merges: Sequence[dict[str, Any]],
    ctx: Context,
    scope: str,
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> str:
    """The comment; ``sections`` (Markdown, e.g. the GPU bench's) go under the table and count
    in the digest."""
    fingerprint = digest_line(digest(results, merges, ctx, sections))
    parts = [marker(scope), "### Gradience: LoRA adapter audit", "", headline(results, ctx), ""]
    if results:
        parts.append(table(results))
    if merges:
        parts.append(merge_table(merges))
    parts += [f"> {cell(n)}" for n in notes]
    parts += [*sections, "", footer(ctx), fingerprint]
    body = "\n".join(parts) + "\n"
    if len(body) > COMMENT_LIMIT:  # thousands of adapters: keep the head and the verdict
        keep = COMMENT_LIMIT - 2000
        cut = body[:keep].rsplit("\n", 1)[0]
        body = "\n".join([cut, "", "_(table cut at GitHub's comment limit; see the job summary)_", "",
                          footer(ctx), fingerprint]) + "\n"  # fmt: skip
    return body


# -- job summary ------------------------------------------------------------------------------------


def summary(
    results: Sequence[AdapterResult],
    merges: Sequence[dict[str, Any]],
    ctx: Context,
    notes: Sequence[str] = (),
) -> str:
    parts = ["## Gradience: LoRA adapter audit", "", headline(results, ctx), ""]
    parts += [f"> {cell(n)}" for n in notes]
    if results:
        parts += [table(results), ""]
    if merges:
        parts += ["### Merge pairs", "", merge_table(merges), ""]
    for r in ordered(results):
        title = f"{r.name} — {r.status} (base {r.base_label or 'none'}, head {r.head_label or 'none'})"
        if r.diff is not None:
            parts.append(diff_markdown(r.diff.to_dict(), title=title, heading=3))
        else:
            parts += [f"### {cell(title)}", ""]
        if r.error:
            parts += [
                f"- {r.error['side']} unreadable: {code(r.error['code'])} {cell(r.error['message'])}",
                "",
            ]
    parts.append(footer(ctx))
    return "\n".join(parts) + "\n"
