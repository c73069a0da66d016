"""The Gradience Space: audit and merge-audit LoRA adapters in the browser.

A thin surface over the core: each handler parses what the user typed or uploaded, calls
``gradience`` and renders the result. The five public API endpoints (and MCP tools) are the
functions ``audit``, ``merge_audit``, ``compress``, ``merge`` and ``badge``; the browser's
extra rendering steps are private events, so API and MCP clients get plain JSON and files.

Run it with ``python space/app.py`` (``make space``); ``HF_ENDPOINT`` points it at any
Hub-compatible server. Settings (environment): ``GRADIENCE_SPACE_URL`` (where badges link),
``GRADIENCE_SPACE_MAX_BYTES`` (download cap per adapter), ``GRADIENCE_SPACE_CONCURRENCY``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

import gradience
from gradience.errors import GradienceError
from gradience.hub.refs import looks_like_hub_ref, parse_hub_ref
from gradience.report.badge import badge_for, badge_markdown

if __package__ in (None, ""):  # `python space/app.py`: this folder is sys.path[0]
    import plots  # type: ignore[import-not-found,no-redef]
else:
    from . import plots

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path(os.environ.get("GRADIENCE_EXAMPLES_DIR", ROOT / "examples"))
MAX_BYTES = int(os.environ.get("GRADIENCE_SPACE_MAX_BYTES", str(2 * 1024**3)))
MAX_UPLOAD_BYTES = int(os.environ.get("GRADIENCE_SPACE_MAX_UPLOAD_BYTES", str(1024**3)))
CONCURRENCY = int(os.environ.get("GRADIENCE_SPACE_CONCURRENCY", "2"))
MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what gradio's local OAuth mock hands out

AUDIT_EXAMPLES = ["examples/overprovisioned-r64", "examples/healthy-r8", "examples/untrained-r8"]
MERGE_EXAMPLES = [
    "examples/merge-conflict-a\nexamples/merge-conflict-b",
    "examples/merge-related-a\nexamples/merge-related-b",
    "examples/merge-duplicate-a\nexamples/merge-duplicate-b",
]


# -- input parsing -----------------------------------------------------------------------------------


def _bundled(text: str) -> Path | None:
    """A bundled example adapter named ``examples/<name>`` (or ``<name>``), else None.

    These are the only local folders the Space reads: anything else typed into the box must be a
    Hub reference, so a visitor can never make the server read its own files.
    """
    name = text.strip().removeprefix("examples/").strip("/")
    if not name or "/" in name or name.startswith("."):
        return None
    folder = EXAMPLES_DIR / name
    return folder if (folder / "adapter_config.json").is_file() else None


def _hub_source(text: str, revision: str = "", subfolder: str = "") -> str:
    """The ``hf://`` form of what the user typed, so it can never be taken for a local path."""
    text = text.strip()
    if not looks_like_hub_ref(text):
        raise _err(
            f"{text!r} is not a Hub repo id: expected user/repo, user/repo@revision or a Hub URL",
            title="Not a repo id",
        )
    try:
        ref = parse_hub_ref(text, revision=revision.strip() or None, subfolder=subfolder.strip() or None)
    except GradienceError as e:
        raise _err(str(e), title="Not a repo id") from None
    return str(ref)


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unzip refusing absolute paths, ``..`` and archives that expand past the upload cap."""
    with zipfile.ZipFile(archive) as z:
        total = 0
        for info in z.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise _err(f"{archive.name}: refusing a path outside the archive ({info.filename})")
            total += info.file_size
            if total > MAX_UPLOAD_BYTES:
                raise _err(f"{archive.name} expands past the {MAX_UPLOAD_BYTES / 1e9:.1f} GB upload cap")
        z.extractall(dest)


def _adapter_folder(root: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("adapter_config.json"))
    if not found:
        raise _err(
            "no adapter_config.json among the uploaded files: upload adapter_config.json and "
            "adapter_model.safetensors (or .bin), or a .zip of the adapter folder",
            title="Not a LoRA adapter",
        )
    return found[0]


def _from_uploads(files: list[str]) -> str:
    """Uploaded loose files, or one .zip, as an adapter folder on disk."""
    paths = [Path(f) for f in files]
    if sum(p.stat().st_size for p in paths) > MAX_UPLOAD_BYTES:
        raise _err(f"uploads are capped at {MAX_UPLOAD_BYTES / 1e9:.1f} GB", title="Too large")
    work = Path(tempfile.mkdtemp(prefix="gradience-upload-"))
    for p in paths:
        if p.suffix == ".zip":
            _safe_extract(p, work / p.stem)
        else:
            shutil.copy(p, work / p.name)
    return str(_adapter_folder(work))


def _zip_sources(files: list[str] | None) -> list[str]:
    """One adapter per uploaded .zip (the merge tab takes several adapters at once)."""
    out = []
    for f in files or []:
        p = Path(f)
        if p.suffix != ".zip":
            raise _err(f"{p.name}: upload each adapter as a .zip of its folder to merge uploads")
        work = Path(tempfile.mkdtemp(prefix="gradience-upload-"))
        _safe_extract(p, work)
        out.append(str(_adapter_folder(work)))
    return out


def _source(repo: str, revision: str, subfolder: str, files: list[str] | None) -> tuple[str, str]:
    """(source for the core, a display name) from the audit inputs."""
    if files:
        return _from_uploads(files), "uploaded adapter"
    text = (repo or "").strip()
    if not text:
        raise _err(
            "enter a Hub repo id (user/repo), a Hub URL, or upload adapter files", title="Nothing to audit"
        )
    example = _bundled(text)
    if example is not None and not (revision or subfolder):
        return str(example), f"examples/{example.name}"
    return _hub_source(text, revision or "", subfolder or ""), text


def _sources(refs: str, files: list[str] | None) -> list[str]:
    out = []
    for line in (refs or "").replace(",", "\n").splitlines():
        if line.strip():
            example = _bundled(line)
            out.append(str(example) if example is not None else _hub_source(line))
    out += _zip_sources(files)
    if len(out) < 2:
        raise _err(
            "give two or more adapters: Hub repo ids one per line, or .zip uploads", title="Need two adapters"
        )
    return out


def _err(message: str, title: str = "Error") -> gr.Error:
    """A message for the user; no server-side traceback, since nothing went wrong in the app."""
    return gr.Error(message, title=title, print_exception=False)


def _friendly(e: GradienceError, what: str) -> gr.Error:
    """The core's one-line message, with the hint a browser user needs."""
    msg = str(e)
    title = "Cannot audit"
    if "adapter_config.json" in msg and ("not found" in msg or "not a PEFT adapter" in msg):
        title = "Not a LoRA adapter"
        msg += " (if the adapter is in a folder of the repo, give it as the subfolder)"
    elif "gated" in msg:
        title = "Gated repo"
    elif "exceeds" in msg or "cap" in msg:
        title = "Too large"
    return _err(msg if what in msg else f"{what}: {msg}", title=title)


def _call(fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except GradienceError as e:
        raise _friendly(e, what) from None


def _progress_cb(progress: gr.Progress, desc: str) -> Callable[[int, int], None]:
    def cb(done: int, total: int) -> None:
        progress((done, total), desc=desc)

    return cb


def _write_json(obj: Any, name: str) -> str:
    path = Path(tempfile.mkdtemp(prefix="gradience-out-")) / name
    path.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str) + "\n")
    return str(path)


def _zip_folder(folder: Path, name: str) -> str:
    base = Path(tempfile.mkdtemp(prefix="gradience-out-")) / name
    return shutil.make_archive(str(base), "zip", root_dir=folder)


def _slug(text: str) -> str:
    return (
        "".join(c if c.isalnum() or c in "-_." else "-" for c in text.split("://")[-1]).strip("-")[:80]
        or "adapter"
    )


def _display(source: str) -> str:
    """How a source is shown: bundled examples by name, uploads as such, Hub refs as typed."""
    p = Path(source)
    if p.is_absolute() and p.is_relative_to(EXAMPLES_DIR):
        return f"examples/{p.name}"
    if p.is_absolute():
        return f"upload:{p.name}"
    return source


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


def _jsonable(obj: Any) -> Any:
    """NaN/Inf → None, so the report is valid JSON for every client."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


# -- the public endpoints (their names are the API and MCP tool names) ---------------------------------


def audit(
    repo: str,
    revision: str = "",
    subfolder: str = "",
    files: list[str] | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008  (gradio's injection idiom)
) -> tuple[dict[str, Any], str]:
    """Audit a LoRA adapter's singular-value spectra: how much of its rank it uses, per layer.

    Args:
        repo: a Hub model repo id (user/repo or user/repo@revision), a Hub URL, or a bundled
            example such as examples/overprovisioned-r64. Ignored when files are uploaded.
        revision: branch, tag or commit on the Hub (optional).
        subfolder: folder inside the repo that holds adapter_config.json (optional).
        files: uploaded adapter_config.json and adapter_model.safetensors (or one .zip).

    Returns:
        The JSON report (schema gradience.audit/v1, with per-layer rows and rank suggestions)
        and the same report as a downloadable file.
    """
    source, name = _source(repo, revision, subfolder, files)
    progress(0, desc=f"Reading {name}")
    result = _call(
        gradience.audit,
        name,
        source,
        progress=_progress_cb(progress, "Auditing layers"),
        **({"max_bytes": MAX_BYTES} if source.startswith("hf://") else {}),
    )
    report = _jsonable(result.to_dict(layers=True))
    report["source"]["path"] = name  # never the server's own (temp) paths
    return _api_view(report), _write_json(report, f"gradience-audit-{_slug(name)}.json")


def compress(
    repo: str,
    revision: str = "",
    subfolder: str = "",
    files: list[str] | None = None,
    rank: int = 0,
    policy: str = "energy@0.9",
    per_layer: bool = False,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[str, str]:
    """Compress a LoRA adapter to the optimal lower-rank truncation of every layer.

    Args:
        repo: Hub repo id, Hub URL or bundled example (as for audit). Ignored with uploads.
        revision: branch, tag or commit on the Hub (optional).
        subfolder: folder inside the repo that holds the adapter (optional).
        files: uploaded adapter files (or one .zip) instead of a repo.
        rank: target rank for every layer; 0 lets the policy choose.
        policy: rank policy used when rank is 0, e.g. energy@0.9, energy@0.95, knee.
        per_layer: give each layer its own rank (written as rank_pattern) instead of one rank.

    Returns:
        A .zip of the compressed PEFT adapter and a Markdown summary.
    """
    source, name = _source(repo, revision, subfolder, files)
    if source.startswith("hf://"):  # enforce the download cap before compress reads anything
        with _call(gradience.load_adapter, name, source, max_bytes=MAX_BYTES):
            pass
    out = Path(tempfile.mkdtemp(prefix="gradience-compress-")) / "adapter"
    rank = int(rank or 0)
    kwargs: dict[str, Any] = (
        {"rank": rank} if rank > 0 else {"policy": policy or "energy@0.9", "per_layer": per_layer}
    )
    result = _call(
        gradience.compress, name, source, out, progress=_progress_cb(progress, "Compressing"), **kwargs
    )
    d = result.to_dict()
    before = sum(lc.r_before for lc in result.layers)
    after = sum(lc.r_after for lc in result.layers)
    summary = (
        f"**Compressed {name}**: {len(result.layers)} layers, total rank {before} → {after}"
        f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})."
    )
    del d
    return _zip_folder(out, f"{_slug(name)}-compressed"), summary


def merge_audit(
    repos: str,
    files: list[str] | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[dict[str, Any], str]:
    """Compare two or more LoRA adapters layer by layer and recommend how to merge them.

    Args:
        repos: Hub repo ids, Hub URLs or bundled examples, one per line (two or more in all,
            counting uploads), e.g. "examples/merge-conflict-a" and "examples/merge-conflict-b".
        files: adapters uploaded as .zip files, one adapter per .zip (optional).

    Returns:
        The merge-audit JSON report (verdicts SAFE / REDUNDANT / CONFLICTING / IMBALANCED per
        layer, with merge parameters) and the merge plan file (schema gradience.merge_plan/v1).
    """
    from gradience.merge.pairwise import merge_audit as core_merge_audit

    sources = _sources(repos, files)
    result = _call(
        core_merge_audit, "merge audit", sources, progress=_progress_cb(progress, "Comparing layers")
    )
    report = _jsonable(result.to_dict())
    names = [_display(src) for src in sources]
    for a, n in zip(report.get("adapters", []), names, strict=False):
        a["path"] = n
    plan = _jsonable(result.plan())
    return _api_view(report), _write_json(plan, "gradience-merge-plan.json")


def merge(
    repos: str,
    files: list[str] | None = None,
    strategy: str = "auto",
    plan: str | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[str, str]:
    """Merge two or more LoRA adapters into one PEFT adapter, without the base model.

    Args:
        repos: Hub repo ids, Hub URLs or bundled examples, one per line (as for merge_audit).
        files: adapters uploaded as .zip files, one adapter per .zip (optional).
        strategy: auto (follow the merge audit's per-layer plan), linear, ties, dare_linear or
            dare_ties for every layer.
        plan: a merge plan JSON file from merge_audit (optional; followed when strategy is auto).

    Returns:
        A .zip of the merged PEFT adapter and a Markdown summary.
    """
    from gradience.merge.execute import merge as core_merge

    sources = _sources(repos, files)
    out = Path(tempfile.mkdtemp(prefix="gradience-merge-")) / "merged"
    strategy = strategy or "auto"
    kwargs: dict[str, Any] = {"plan": plan} if plan and strategy == "auto" else {"strategy": strategy}
    result = _call(
        core_merge, "merge", sources, out, progress=_progress_cb(progress, "Merging layers"), **kwargs
    )
    n = len(result.to_dict().get("layers", []))
    summary = f"**Merged {len(sources)} adapters** ({kwargs.get('strategy', 'plan')}): {n} layers written."
    return _zip_folder(out, "gradience-merged-adapter"), summary


def badge(repo: str, revision: str = "", subfolder: str = "") -> str:
    """The Markdown badge for a Hub adapter's model card: its LoRA utilisation and suggested rank.

    Args:
        repo: a Hub model repo id (user/repo) or Hub URL of a LoRA adapter.
        revision: branch, tag or commit (optional).
        subfolder: folder inside the repo that holds the adapter (optional).

    Returns:
        A Markdown snippet: a shields.io badge such as "LoRA utilisation | 17% · r16→4", linking
        to this Space's audit of the repo.
    """
    text = (repo or "").strip()
    source = _hub_source(text, revision or "", subfolder or "") if text else ""
    if not source:
        raise _err("enter the Hub repo id of the adapter the badge is for", title="Nothing to badge")
    report = _call(gradience.audit, text, source, max_bytes=MAX_BYTES).to_dict()
    return badge_markdown(parse_hub_ref(text).repo_id, _jsonable(report))


def badge_pr(
    repo: str,
    snippet: str,
    oauth_token: gr.OAuthToken | None = None,
) -> str:
    """Open a pull request adding the badge to the repo's card, in the signed-in user's name.

    Args:
        repo: the Hub repo id the badge is for.
        snippet: the badge Markdown to put in the card's Gradience section.
        oauth_token: injected by gradio from the user's "Sign in with Hugging Face" session.
    """
    from gradience.hub.badges import publish_badge

    token = oauth_token.token if oauth_token is not None else None
    if token == MOCK_OAUTH_TOKEN and not os.environ.get("SPACE_ID"):
        # Local development only: gradio's OAuth mock stands for the developer's own login.
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise _err(
            "sign in with Hugging Face first: the pull request is opened in your name", title="Sign in"
        )
    text = (repo or "").strip()
    if not text or not snippet:
        raise _err("audit a Hub repo first, then open the pull request", title="Nothing to badge")
    if not looks_like_hub_ref(text):
        raise _err(f"{text!r} is not a Hub repo id", title="Not a repo id")
    repo_id = parse_hub_ref(text).repo_id
    result = _call(publish_badge, repo_id, repo_id, None, token, section=snippet)
    if result.status == "unchanged" and result.pr_num is None:
        return f"✅ {repo_id}'s card already shows this badge: nothing to change."
    verb = {"created": "Opened", "updated": "Updated your open", "unchanged": "You already have an open"}[
        result.status
    ]
    return f"✅ {verb} pull request: [{repo_id} #{result.pr_num}]({result.pr_url})"


# -- rendering (browser only; private events) ---------------------------------------------------------


def _fmt(v: Any, pattern: str = "{:.3f}") -> str:
    return "–" if v is None else pattern.format(v)


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (
        f'<div class="g-card {tone}"><div class="g-label">{label}</div>'
        f'<div class="g-value">{value}</div><div class="g-note">{note}</div></div>'
    )


def _summary_html(report: dict[str, Any]) -> str:
    a = report.get("adapter", {})
    b = badge_for(report)
    tone = {"red": "bad", "orange": "warn", "yellow": "meh", "brightgreen": "good"}.get(b.color, "")
    util = report.get("utilization_mean")
    rs = report.get("rank_suggestions") or {}
    flags = report.get("flags") or []
    cards = [
        _card(
            "utilisation (mean)",
            _fmt(util, "{:.0%}"),
            f"median {_fmt(report.get('utilization_median'), '{:.0%}')}",
            tone,
        ),
        _card("stable rank (mean)", _fmt(report.get("stable_rank_mean"), "{:.2f}"), f"of r = {a.get('r')}"),
        _card(
            "suggested rank", f"r{a.get('r')} → {rs.get('default_r', '–')}", f"policy {rs.get('policy', '')}"
        ),
        _card(
            "layers",
            str(report.get("n_layers", 0)),
            f"{report.get('n_over_provisioned', 0)} over-provisioned · {report.get('n_untrained', 0)} untrained"
            f" · {report.get('n_invalid', 0)} invalid",
        ),
        _card("verdict", ", ".join(f.replace("_", " ") for f in flags) or "healthy", b.message, tone),
    ]
    src = report.get("source", {}).get("name", "")
    head = (
        f'<div class="g-head"><b>{src}</b> · {a.get("peft_type", "")} · r={a.get("r")} · '
        f"α={a.get('lora_alpha')} · base {a.get('base_model') or 'unknown'}</div>"
    )
    return head + '<div class="g-cards">' + "".join(cards) + "</div>"


def _layer_table(report: dict[str, Any]) -> Any:
    import pandas as pd

    rows = (report.get("layer_data") or {}).get("layer_rows", [])
    policy = report.get("policy", "")
    return pd.DataFrame(
        [
            {
                "layer": r["name"],
                "type": r.get("module_type"),
                "r": r.get("r"),
                "stable rank": None if r.get("stable_rank") is None else round(r["stable_rank"], 3),
                "utilisation": None if r.get("utilization") is None else round(r["utilization"], 4),
                "energy rank 90%": r.get("energy_rank_90"),
                "suggested": (r.get("suggested_ranks") or {}).get(policy),
                "σ₁": None if r.get("sigma_max_scaled") is None else round(r["sigma_max_scaled"], 4),
                "flags": ", ".join(r.get("flags") or []),
            }
            for r in rows
        ]
    )


def _rank_snippet(report: dict[str, Any]) -> str:
    rs = report.get("rank_suggestions") or {}
    pattern = json.dumps(rs.get("rank_pattern") or {}, indent=4).replace("\n", "\n    ")
    return f"from peft import LoraConfig\n\nconfig = LoraConfig(\n    r={rs.get('default_r')},\n    rank_pattern={pattern},\n    # ... your other settings\n)\n"


def _row(report: dict[str, Any] | None, layer: str | None) -> dict[str, Any] | None:
    rows = ((report or {}).get("layer_data") or {}).get("layer_rows", [])
    return next((r for r in rows if r["name"] == layer), None)


def _spectrum_plot(report: dict[str, Any] | None, layer: str | None) -> Any:
    return plots.spectrum(_row(report, layer))


def _render_audit(report: dict[str, Any] | None, repo: str) -> tuple[Any, ...]:
    if not report:
        return tuple(gr.skip() for _ in range(8))
    rows = (report.get("layer_data") or {}).get("layer_rows", [])
    names = [r["name"] for r in rows]
    most = max(rows, key=lambda r: r.get("sigma_max_scaled") or 0.0)["name"] if rows else None
    util = {r["name"]: r.get("utilization") for r in rows}
    text = (repo or "").strip()
    is_hub = bool(text) and _bundled(text) is None and looks_like_hub_ref(text)
    repo_id = parse_hub_ref(text).repo_id if is_hub else (text or "user/repo")
    snippet = badge_markdown(repo_id, report)
    return (
        _summary_html(report),
        _layer_table(report),
        gr.update(choices=names, value=most),
        plots.spectrum(_row(report, most)),
        plots.grid_heatmap(
            util, "utilisation (stable rank / r) per layer and module", label="utilisation", vmax=1.0
        ),
        _rank_snippet(report),
        snippet,
        repo_id if is_hub else "",
    )


def _render_merge(report: dict[str, Any] | None) -> tuple[Any, ...]:
    import pandas as pd

    if not report:
        return gr.skip(), gr.skip(), gr.skip()
    names = [Path(a.get("name") or "?").name for a in report.get("adapters", [])]
    recs, overlaps = [], {}
    for pair in report.get("pairs", []):
        label = f"{names[pair['a']]} × {names[pair['b']]}"
        by_layer = {c["layer"]: c for c in pair.get("per_layer", [])}
        for r in pair.get("recommendations", []):
            c = by_layer.get(r["layer"], {})
            recs.append({
                "pair": label, "layer": r["layer"], "verdict": r["verdict"], "strategy": r["strategy"],
                "weights": ", ".join(f"{w:.2f}" for w in r.get("coefficients", [])),
                "density": None if r.get("density") is None else round(r["density"], 3),
                "overlap": None if c.get("overlap") is None else round(c["overlap"], 3),
                "agreement": None if c.get("agreement") is None else round(c["agreement"], 3),
                "notes": r.get("notes", ""),
            })  # fmt: skip
        for c in pair.get("per_layer", []):
            if c.get("overlap") is not None:
                overlaps.setdefault(c["layer"], []).append(c["overlap"])
    mean_overlap = {k: sum(v) / len(v) for k, v in overlaps.items()}
    agg_lines = []
    for pair in report.get("pairs", []):
        g = pair.get("aggregate", {})
        agg_lines.append(
            f"- **{names[pair['a']]} × {names[pair['b']]}**: {g.get('overall_verdict')} "
            f"(risk {g.get('risk_level')}, compatibility {_fmt(g.get('compatibility_score'), '{:.0%}')}, "
            f"mean overlap {_fmt(g.get('mean_overlap'), '{:.2f}')})"
        )
    return (
        "\n".join(agg_lines),
        pd.DataFrame(recs),
        plots.grid_heatmap(mean_overlap, "subspace overlap per layer and module", label="overlap", vmax=1.0),
    )


def _repo_from_url(request: gr.Request) -> tuple[Any, ...]:
    """``?repo=<id>`` (the badge link): fill the box and audit it straight away."""
    repo = (request.query_params.get("repo") or "").strip() if request else ""
    if not repo:
        return tuple(gr.skip() for _ in range(3))
    report, path = audit(
        repo, request.query_params.get("revision") or "", request.query_params.get("subfolder") or ""
    )
    return repo, report, path


CSS = """
.g-head { font-size: 0.95rem; margin: 4px 0 10px; opacity: 0.85; }
.g-cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 10px; }
.g-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px;
          background: var(--background-fill-secondary); }
.g-card.bad { border-left: 6px solid #e05d44; } .g-card.warn { border-left: 6px solid #fe7d37; }
.g-card.meh { border-left: 6px solid #dfb317; } .g-card.good { border-left: 6px solid #4c1; }
.g-label { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.04em; opacity: 0.7; }
.g-value { font-size: 1.6rem; font-weight: 700; margin-top: 2px; }
.g-note { font-size: 0.8rem; opacity: 0.75; }
"""


def _login_available() -> bool:
    """Show "Sign in with Hugging Face" on a Space, or locally when a token can stand in for it.

    Locally gradio mocks OAuth with the machine's own login and refuses to start without one, so
    a developer with no token gets the app without the button rather than no app.
    """
    if os.environ.get("SPACE_ID"):
        return True
    from huggingface_hub import get_token

    return get_token() is not None


def build() -> gr.Blocks:
    """The Blocks app (not launched), so tests and ``make space`` launch the same thing."""
    with gr.Blocks(title="Gradience: LoRA spectral audit") as demo:
        gr.Markdown(
            "# Gradience — how much of its rank does your LoRA use?\n"
            "Spectral audit of a PEFT LoRA adapter from its weights alone: no GPU, no data. "
            "Paste a Hub repo id, or try a bundled example."
        )
        report_state = gr.JSON(visible=False, label="audit report")
        with gr.Tab("Audit"):
            with gr.Row():
                with gr.Column(scale=3):
                    repo = gr.Textbox(
                        label="Hub repo id or URL",
                        placeholder="user/my-lora  ·  https://huggingface.co/user/my-lora",
                    )
                    with gr.Row():
                        revision = gr.Textbox(label="Revision (optional)", placeholder="main")
                        subfolder = gr.Textbox(label="Subfolder (optional)")
                with gr.Column(scale=2):
                    files = gr.File(
                        label="…or upload adapter files / a .zip", file_count="multiple", type="filepath"
                    )
            audit_btn = gr.Button("Audit", variant="primary")
            gr.Examples(AUDIT_EXAMPLES, inputs=[repo], label="Bundled examples (work offline)")
            summary = gr.HTML(elem_id="audit-summary")
            with gr.Row():
                with gr.Column():
                    layer = gr.Dropdown(label="Layer for the spectrum", choices=[], interactive=True)
                    spectrum_plot = gr.Plot(label="Singular value spectrum", elem_id="spectrum-plot")
                with gr.Column():
                    heatmap = gr.Plot(label="Utilisation: layers × modules", elem_id="util-heatmap")
            table = gr.Dataframe(
                label="Per-layer audit (click a header to sort)",
                elem_id="layer-table",
                interactive=False,
                max_height=420,
            )
            with gr.Row():
                with gr.Column():
                    rank_code = gr.Code(label="Rank suggestions → peft.LoraConfig (copy)", language="python")
                with gr.Column():
                    report_file = gr.File(label="JSON report")
                    with gr.Accordion("Compress this adapter", open=False):
                        with gr.Row():
                            c_rank = gr.Number(label="Rank (0 = policy)", value=0, precision=0, minimum=0)
                            c_policy = gr.Textbox(label="Policy", value="energy@0.9")
                            c_per_layer = gr.Checkbox(label="Per-layer ranks", value=False)
                        c_btn = gr.Button("Compress")
                        c_file = gr.File(label="Compressed adapter (.zip)")
                        c_md = gr.Markdown(label="compress summary")
        with gr.Tab("Merge audit"):
            with gr.Row():
                m_repos = gr.Textbox(label="Adapters: Hub repo ids or URLs, one per line", lines=3)
                m_files = gr.File(
                    label="…or upload adapters, one .zip each", file_count="multiple", type="filepath"
                )
            m_btn = gr.Button("Merge audit", variant="primary")
            gr.Examples(MERGE_EXAMPLES, inputs=[m_repos], label="Bundled example pairs")
            m_summary = gr.Markdown()
            m_state = gr.JSON(visible=False, label="merge audit report")
            with gr.Row():
                m_heat = gr.Plot(label="Subspace overlap: layers × modules")
                with gr.Column():
                    m_plan = gr.File(label="Merge plan (JSON)")
                    m_strategy = gr.Dropdown(
                        ["auto", "linear", "ties", "dare_linear", "dare_ties"], value="auto", label="Strategy"
                    )
                    merge_btn = gr.Button("Merge")
                    merge_file = gr.File(label="Merged adapter (.zip)")
                    merge_md = gr.Markdown(label="merge summary")
            m_table = gr.Dataframe(label="Recommendations per layer", interactive=False, max_height=420)
        with gr.Tab("Badge"):
            gr.Markdown(
                "Put the audit on the adapter's model card. Audit a Hub repo on the **Audit** tab, "
                "then copy the snippet, or sign in and open a pull request in your name."
            )
            b_repo = gr.Textbox(label="Repo the badge is for")
            b_btn = gr.Button("Make badge")
            b_code = gr.Code(label="Markdown for the model card", language="markdown")
            b_preview = gr.Markdown()
            if _login_available():
                gr.LoginButton()
            pr_btn = gr.Button("Open a pull request with this badge")
            pr_md = gr.Markdown()

        # Public API endpoints (also MCP tools); the rendering steps after them are private.
        audit_inputs = [repo, revision, subfolder, files]
        render_outputs = [summary, table, layer, spectrum_plot, heatmap, rank_code, b_code, b_repo]
        ev = audit_btn.click(
            audit, audit_inputs, [report_state, report_file], api_name="audit", concurrency_id="work"
        )
        ev.success(_render_audit, [report_state, repo], render_outputs, api_visibility="private")
        layer.change(_spectrum_plot, [report_state, layer], spectrum_plot, api_visibility="private")
        c_btn.click(
            compress,
            [*audit_inputs, c_rank, c_policy, c_per_layer],
            [c_file, c_md],
            api_name="compress",
            concurrency_id="work",
        )
        mev = m_btn.click(
            merge_audit, [m_repos, m_files], [m_state, m_plan], api_name="merge_audit", concurrency_id="work"
        )
        mev.success(_render_merge, [m_state], [m_summary, m_table, m_heat], api_visibility="private")
        merge_btn.click(
            merge,
            [m_repos, m_files, m_strategy, m_plan],
            [merge_file, merge_md],
            api_name="merge",
            concurrency_id="work",
        )
        b_btn.click(badge, [b_repo], b_code, api_name="badge", concurrency_id="work")
        b_code.change(lambda s: s, b_code, b_preview, api_visibility="private")
        pr_btn.click(badge_pr, [b_repo, b_code], pr_md, api_visibility="private")
        demo.load(_repo_from_url, None, [repo, report_state, report_file], api_visibility="private").success(
            _render_audit, [report_state, repo], render_outputs, api_visibility="private"
        )
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


def launch(demo: gr.Blocks | None = None, **kwargs: Any) -> tuple[Any, str, str | None]:
    """Launch with the Space's look and settings; ``kwargs`` override (tests pass a port)."""
    demo = demo or build()
    options: dict[str, Any] = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "share": False,
        "mcp_server": True,
        "css": CSS,
        "theme": gr.themes.Soft(primary_hue="violet"),
        "max_file_size": MAX_UPLOAD_BYTES,
        "footer_links": ["api", "gradio"],
    }
    options.update(kwargs)
    return demo.launch(**options)


def main() -> None:
    """``python space/app.py``: serve the Space and print where to open it."""
    _, url, _ = launch(prevent_thread_lock=True, quiet=True)
    hub = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    print(f"Gradience Space running at {url}  (Hub: {hub}; Ctrl-C to stop)", flush=True)
    try:
        import threading

        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
