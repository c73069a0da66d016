"""The Space's public API (and MCP tools): ``audit``, ``compress``, ``merge_audit``, ``merge``,
``badge``; plus ``badge_pr``, the browser-only "open a pull request" step.

Each function parses what the visitor gave, calls the core, and returns plain JSON and files.
Hub reads use the *visitor's* token (their "Sign in with Hugging Face" session) or none at all:
``OpenOptions(token=False)`` sends no token, so the Space's own ``HF_TOKEN`` secret never
opens a repo for a visitor (without it, ``token=None`` would fall back to that secret and
expose its owner's private and gated repos).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from notices import err, notice
from sources import Source, audit_source, bundled, hub_source, merge_sources

import gradience
from gradience.errors import GradienceError
from gradience.open import OpenOptions
from gradience.report.badge import badge_markdown
from gradience.report.jsonsafe import finite

MAX_BYTES = int(os.environ.get("GRADIENCE_SPACE_MAX_BYTES", str(2 * 1024**3)))
MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what gradio's local OAuth mock hands out
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


# -- helpers ---------------------------------------------------------------------------------------------


def visitor_token(oauth_token: gr.OAuthToken | None) -> str | bool:
    """The signed-in visitor's token, or False (send none). Never the Space's own secret."""
    token = oauth_token.token if oauth_token is not None else None
    if token == MOCK_OAUTH_TOKEN and not os.environ.get("SPACE_ID"):
        # Local development only: gradio's OAuth mock stands for the developer's own login.
        from huggingface_hub import get_token

        token = get_token()
    return token or False


def _options(oauth_token: gr.OAuthToken | None) -> OpenOptions:
    return OpenOptions(token=visitor_token(oauth_token), max_bytes=MAX_BYTES)


def _call(fn: Callable[..., Any], sources: list[Source], *args: Any, **kwargs: Any) -> Any:
    """Run a core call; a typed error becomes a titled notice naming what the visitor typed."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except GradienceError as e:
        raise notice(e, {s.target: s.name for s in sources}) from None


def _progress_cb(progress: gr.Progress, desc: str) -> Callable[[int, int], None]:
    def cb(done: int, total: int) -> None:
        progress((done, total), desc=desc)

    return cb


def _out_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gradience-out-"))


def _write_json(obj: Any, name: str) -> str:
    path = _out_dir() / name
    path.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str) + "\n")
    return str(path)


def _zip_folder(folder: Path, name: str) -> str:
    return shutil.make_archive(str(_out_dir() / name), "zip", root_dir=folder)


def _slug(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.split("://")[-1])
    return cleaned.strip("-")[:80] or "adapter"


def _api_view(report: dict[str, Any]) -> dict[str, Any]:
    """The report as the API returns it: ``path`` keys renamed ``name``.

    gradio_client takes any ``{"path": str}`` object in a JSON output for a file to download,
    so the schema's ``source.path`` / ``adapters[].path`` would break every API client; the
    downloadable report file keeps the schema's names.
    """
    out = dict(report)
    if isinstance(out.get("source"), dict):
        src = dict(out["source"])
        src["name"] = src.pop("path", None)
        out["source"] = src
    if isinstance(out.get("adapters"), list):
        out["adapters"] = [{("name" if k == "path" else k): v for k, v in a.items()} for a in out["adapters"]]
    return out


def _public_source(src: Source, core: dict[str, Any]) -> dict[str, Any]:
    """The report's ``source`` without server paths: what was audited, as the visitor named it."""
    keep = {
        k: core[k] for k in ("revision", "commit", "subfolder", "weights_file") if core.get(k) is not None
    }
    return {"path": src.name, "kind": src.kind, **({"repo": src.repo_id} if src.repo_id else {}), **keep}


#: The published ecosystem dataset (a folder or a Hub dataset repo id, docs/ecosystem.md): when
#: set, every audit is placed among public adapters ("higher than 73% of public r=16 adapters").
DATASET = os.environ.get("GRADIENCE_DATASET") or None
_dataset_dir: list[Path] = []


def _ecosystem(report: dict[str, Any]) -> dict[str, Any] | None:
    """The audit's percentile among public adapters, or None (no dataset, untrained adapter, or
    a dataset that cannot be read right now — an audit never fails for want of context)."""
    util = report.get("utilization_mean")
    if not DATASET or util is None or "untrained" in (report.get("flags") or []):
        return None
    from gradience.ecosystem.discovery import family_of
    from gradience.ecosystem.percentile import place
    from gradience.ecosystem.stats import resolve_dataset

    a, src = report.get("adapter") or {}, report.get("source") or {}
    try:
        if not _dataset_dir:
            _dataset_dir.append(resolve_dataset(DATASET, token=False))
        family = family_of(a.get("base_model"))
        exclude = (src["repo"], src.get("subfolder") or "") if src.get("repo") else None
        among = place(_dataset_dir[0], utilization=util, r=a.get("r"), family=family, exclude=exclude)
    except GradienceError:
        return None
    return {"dataset": DATASET, "r": a.get("r"), "family": family, "among": among}


def _audit_report(src: Source, options: OpenOptions, progress: gr.Progress) -> dict[str, Any]:
    result = _call(
        gradience.audit,
        [src],
        src.target,
        options=options,
        progress=_progress_cb(progress, "Auditing layers"),
    )
    report = finite(result.to_dict(layers=True))
    eco = _ecosystem(report)
    report["source"] = _public_source(src, report.get("source") or {})
    if eco is not None:
        report["ecosystem"] = eco
    return report


# -- the public endpoints ---------------------------------------------------------------------------------


def audit(
    repo: str,
    revision: str = "",
    subfolder: str = "",
    files: list[str] | None = None,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008  (gradio's injection idiom)
) -> tuple[dict[str, Any], str]:
    """Audit a LoRA adapter's singular-value spectra: how much of its rank it uses, per layer.

    Args:
        repo: a Hub model repo id (user/repo or user/repo@revision), a Hub URL, or a bundled
            example such as examples/overprovisioned-r64. Ignored when files are uploaded.
        revision: branch, tag or commit on the Hub (optional).
        subfolder: folder inside the repo that holds adapter_config.json (optional).
        files: uploaded adapter_config.json and adapter_model.safetensors (or one .zip) (optional).

    Returns:
        The JSON report (schema gradience.audit/v1, with per-layer rows and the single rank
        "recommendation") and the same report as a downloadable file.
    """
    src = audit_source(repo, revision or "", subfolder or "", files)
    progress(0, desc=f"Reading {src.name}")
    options = _options(oauth_token).replace(
        progress=_progress_cb(progress, f"Downloading {src.name}'s LoRA tensors")
    )
    report = _audit_report(src, options, progress)
    return _api_view(report), _write_json(report, f"gradience-audit-{_slug(src.name)}.json")


def _tensor_bytes(weights: Path) -> tuple[int, int]:
    """(bytes of tensor data, item size of the first tensor) from a safetensors header."""
    with weights.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    size = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in tensors)
    return size, _ITEMSIZE.get(tensors[0]["dtype"], 4) if tensors else 4


def _kb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def compress(
    repo: str,
    revision: str = "",
    subfolder: str = "",
    files: list[str] | None = None,
    rank: int = 0,
    policy: str = "energy@0.9",
    per_layer: bool = False,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[str, str]:
    """Compress a LoRA adapter to the optimal lower-rank truncation of every layer.

    Args:
        repo: Hub repo id, Hub URL or bundled example (as for audit). Ignored with uploads.
        revision: branch, tag or commit on the Hub (optional).
        subfolder: folder inside the repo that holds the adapter (optional).
        files: uploaded adapter files (or one .zip) instead of a repo (optional).
        rank: target rank for every layer; 0 (default) uses the audit's recommended rank.
        policy: rank policy behind the recommendation when rank is 0, e.g. energy@0.9, energy@0.95, knee.
        per_layer: give each layer its own recommended rank (written as rank_pattern).

    Returns:
        A .zip of the compressed PEFT adapter and a Markdown summary (parameters and bytes
        before → after, and any warning).
    """
    src = audit_source(repo, revision or "", subfolder or "", files)
    out = _out_dir() / "adapter"
    rank = int(rank or 0)
    kwargs: dict[str, Any] = (
        {"rank": rank}
        if rank > 0
        else {"policy": (policy or "").strip() or None, "per_layer": bool(per_layer)}
    )
    result = _call(
        gradience.compress,
        [src],
        src.target,
        out,
        progress=_progress_cb(progress, "Compressing"),
        options=_options(oauth_token),
        **kwargs,
    )
    data, itemsize = _tensor_bytes(out / "adapter_model.safetensors")
    r_before = max(lc.r_before for lc in result.layers)
    how = (
        f"rank {rank}"
        if rank > 0
        else ("per-layer recommended ranks" if per_layer else "the recommended rank")
    )
    lines = [
        f"**Compressed {src.name}** to {how}: r {r_before} → {result.config['r']}"
        + (
            f" ({len(result.config.get('rank_pattern') or {})} layers differ)"
            if result.config.get("rank_pattern")
            else ""
        ),
        "",
        f"- Parameters: {result.params_before:,} → {result.params_after:,}"
        f" ({result.params_after / max(result.params_before, 1):.0%} of the original)",
        f"- LoRA weights: {_kb(result.params_before * itemsize)} → {_kb(data)}",
        f"- Energy kept: worst layer {min(lc.retained_energy for lc in result.layers):.1%}",
    ]
    if rank > r_before:
        lines.append(
            f"\n⚠️ The requested rank {rank} is above this adapter's rank ({r_before}): there is nothing "
            "to compress, so every layer keeps its rank."
        )
    lines += [f"\n⚠️ {w}" for w in result.warnings if not (rank > r_before and "above r" in w)]
    return _zip_folder(out, f"{_slug(src.name)}-compressed"), "\n".join(lines)


def merge_audit(
    repos: str,
    files: list[str] | None = None,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[dict[str, Any], str]:
    """Compare two or more LoRA adapters layer by layer and recommend how to merge them.

    Args:
        repos: Hub repo ids, Hub URLs or bundled examples, one per line (two or more in all,
            counting uploads), e.g. "examples/merge-conflict-a" and "examples/merge-conflict-b".
        files: adapters uploaded as .zip files, one adapter per .zip (optional).

    Returns:
        The merge-audit JSON report (verdicts SAFE / REDUNDANT / CONFLICTING / IMBALANCED per
        layer with merge parameters; an "incompatible" reason when the adapters cannot be
        merged at all) and the merge plan file (schema gradience.merge_plan/v1).
    """
    from gradience.merge.pairwise import merge_audit as core_merge_audit

    sources = merge_sources(repos, files)
    result = _call(
        core_merge_audit,
        sources,
        [s.target for s in sources],
        progress=_progress_cb(progress, "Comparing layers"),
        options=_options(oauth_token),
    )
    report = finite(result.to_dict())
    for a, s in zip(report.get("adapters", []), sources, strict=False):
        a["path"] = s.name
    plan = finite(result.plan())
    plan["adapters"] = [s.name for s in sources]
    return _api_view(report), _write_json(plan, "gradience-merge-plan.json")


def _read_plan(plan: str, sources: list[Source]) -> dict[str, Any]:
    """A merge plan file from merge_audit, checked to be for exactly the adapters listed now."""
    try:
        data = json.loads(Path(plan).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise err("the merge plan file could not be read as JSON", title="Bad merge plan") from None
    listed = [s.name for s in sources]
    if not isinstance(data, dict) or data.get("adapters") != listed:
        planned = ", ".join(map(str, data.get("adapters") or [])) if isinstance(data, dict) else "?"
        raise err(
            f"the merge plan is for {planned}, not for the adapters listed now ({', '.join(listed)}): "
            "run the merge audit again, or pick a strategy instead of auto",
            title="Merge plan out of date",
        )
    data["adapters"] = [s.target for s in sources]
    return data


def merge(
    repos: str,
    files: list[str] | None = None,
    strategy: str = "auto",
    plan: str | None = None,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[str, str]:
    """Merge two or more LoRA adapters into one PEFT adapter, without the base model.

    Adapters trained for different base models (or sharing no layer) are refused.

    Args:
        repos: Hub repo ids, Hub URLs or bundled examples, one per line (as for merge_audit).
        files: adapters uploaded as .zip files, one adapter per .zip (optional).
        strategy: auto (follow the merge audit's per-layer plan), linear, ties, dare_linear or
            dare_ties for every layer.
        plan: the merge plan file from merge_audit for these same adapters (optional; followed
            when strategy is auto; a plan made for other adapters is refused).

    Returns:
        A .zip of the merged PEFT adapter and a Markdown summary.
    """
    from gradience.merge.execute import merge as core_merge

    sources = merge_sources(repos, files)
    strategy = strategy or "auto"
    kwargs: dict[str, Any] = {"strategy": strategy}
    if plan and strategy == "auto":
        kwargs = {"plan": _read_plan(plan, sources)}
    out = _out_dir() / "merged"
    result = _call(
        core_merge,
        sources,
        [s.target for s in sources],
        out,
        progress=_progress_cb(progress, "Merging layers"),
        options=_options(oauth_token),
        **kwargs,
    )
    n = len(result.to_dict().get("layers", []))
    how = "the merge audit's plan" if "plan" in kwargs else strategy
    summary = f"**Merged {len(sources)} adapters** ({how}): {n} layers written."
    return _zip_folder(out, "gradience-merged-adapter"), summary


def badge(
    repo: str, revision: str = "", subfolder: str = "", oauth_token: gr.OAuthToken | None = None
) -> str:
    """The Markdown badge for a Hub adapter's model card: its LoRA utilisation and recommended rank.

    Args:
        repo: a Hub model repo id (user/repo) or Hub URL of a LoRA adapter.
        revision: branch, tag or commit (optional).
        subfolder: folder inside the repo that holds the adapter (optional).

    Returns:
        A Markdown snippet: a shields.io badge such as "LoRA utilisation | 4% · r64→7", linking
        to this Space's audit of the repo.
    """
    if not (repo or "").strip():
        raise err("enter the Hub repo id of the adapter the badge is for", title="Nothing to badge")
    if bundled(repo) is not None:
        raise err(
            f"{repo.strip()} is a bundled example, not a Hub repo: badges go on a Hub repo's model card",
            title="Badges are for Hub repos",
        )
    src = hub_source(repo, revision or "", subfolder or "")
    report = _audit_report(src, _options(oauth_token), gr.Progress())
    return badge_markdown(src.repo_id or "", report)


def badge_pr(repo: str, oauth_token: gr.OAuthToken | None = None) -> str:
    """Open (or update) a pull request adding the badge to the repo's card, in the visitor's name.

    The repo is audited again here, so the badge always shows that repo's own numbers,
    whatever the page showed before. Only the visitor's OAuth token is used.
    """
    from gradience.hub.badges import publish_badge

    token = visitor_token(oauth_token)
    if not token:
        raise err("sign in with Hugging Face first: the pull request is opened in your name", title="Sign in")
    if not (repo or "").strip():
        raise err("enter the Hub repo id of the adapter the badge is for", title="Nothing to badge")
    src = hub_source(repo)
    report = _audit_report(src, OpenOptions(token=token, max_bytes=MAX_BYTES), gr.Progress())
    result = _call(publish_badge, [src], src.repo_id, report, token)
    rid = src.repo_id
    if result.status == "unchanged" and result.pr_num is None:
        return f"✅ The card of {rid} already shows this badge: nothing to change."
    verb = {"created": "Opened", "updated": "Updated your open", "unchanged": "Your open"}[result.status]
    tail = " (it already shows this badge)" if result.status == "unchanged" else ""
    return f"✅ {verb} pull request [{rid} #{result.pr_num}]({result.pr_url}){tail}."
