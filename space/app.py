"""The Gradience Space: audit, compress and merge-audit LoRA adapters in the browser.

A thin surface over the core. ``endpoints`` holds the public API (and MCP tools): ``audit``,
``compress``, ``merge_audit``, ``merge``, ``badge``; ``render`` and ``plots`` turn reports
into the page; this module lays the page out and wires its events. The browser's extra steps
(clearing old results, rendering, the address bar) are private events, so API and MCP clients
get plain JSON and files.

Every run first clears what the page showed, so a failed audit never leaves the previous
adapter's results under a new repo id, and a merge never follows a plan made for other
adapters.

Run it with ``python space/app.py`` (``make space``); ``HF_ENDPOINT`` points it at any
Hub-compatible server. Settings (environment): ``GRADIENCE_SPACE_URL`` (where badges link),
``GRADIENCE_SPACE_MAX_BYTES`` (download cap per adapter), ``GRADIENCE_SPACE_CONCURRENCY``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, however app is imported

import gradio as gr
import render
from endpoints import audit, badge, badge_pr, compress, merge, merge_audit
from notices import err
from sources import merge_sources

from gradience.merge.strategies import available_strategies
from gradience.report.badge import badge_markdown

CONCURRENCY = int(os.environ.get("GRADIENCE_SPACE_CONCURRENCY", "2"))

AUDIT_EXAMPLES = {
    "r=64, mostly unused": "examples/overprovisioned-r64",
    "r=8, healthy": "examples/healthy-r8",
    "r=8, never trained": "examples/untrained-r8",
}
MERGE_EXAMPLES = {
    "conflicting pair": "examples/merge-conflict-a\nexamples/merge-conflict-b",
    "related pair": "examples/merge-related-a\nexamples/merge-related-b",
    "duplicate pair": "examples/merge-duplicate-a\nexamples/merge-duplicate-b",
}

INTRO = """\
# Gradience — how much of its rank does your LoRA use?
Paste a Hub repo id of a PEFT LoRA adapter (or upload one) and press **Enter**: Gradience
reads the singular values of every layer's update from the weights alone — no GPU, no data —
and tells you what rank it really needs, whether two adapters will fight when merged, and how
to compress it. Try an example:
"""

# Copy the page address (it carries ?repo=…) and say so on the button for a moment.
COPY_LINK_JS = """() => {
  navigator.clipboard && navigator.clipboard.writeText(window.location.href);
  const b = document.getElementById('copy-link');
  if (b) { const t = b.textContent; b.textContent = 'Link copied ✓'; setTimeout(() => b.textContent = t, 1500); }
}"""

# The address's audit inputs, read in the browser (so they are exactly what the address says).
READ_URL_JS = """() => {
  const p = new URLSearchParams(window.location.search);
  return [p.get('repo') || '', p.get('revision') || '', p.get('subfolder') || ''];
}"""

# After an audit, put what was audited in the address bar so the page can be shared.
SET_URL_JS = """(report) => {
  if (!report || !report.source) return [];
  const s = report.source;
  const u = new URL(window.location.href);
  for (const k of ['repo', 'revision', 'subfolder']) u.searchParams.delete(k);
  const q = [];
  const add = (k, v) => q.push(k + '=' + encodeURIComponent(v).replace(/%2F/g, '/').replace(/%40/g, '@'));
  if (s.kind === 'hub' && s.repo) {
    add('repo', s.repo);
    if (s.revision && s.revision !== 'main') add('revision', s.revision);
    if (s.subfolder) add('subfolder', s.subfolder);
  } else if (s.kind === 'example') {
    add('repo', s.name);
  }
  const rest = u.searchParams.toString();
  if (rest) q.push(rest);
  window.history.replaceState(null, '', u.pathname + (q.length ? '?' + q.join('&') : '') + u.hash);
  return [];
}"""

CSS = """
.g-head { font-size: 0.95rem; margin: 4px 0 6px; opacity: 0.85; overflow-wrap: anywhere; }
.g-answer { font-size: 1.08rem; font-weight: 600; margin: 2px 0 12px; }
.g-cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; }
.g-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px;
          background: var(--background-fill-secondary); }
.g-card.bad { border-left: 6px solid #e05d44; } .g-card.warn { border-left: 6px solid #fe7d37; }
.g-card.meh { border-left: 6px solid #dfb317; } .g-card.good { border-left: 6px solid #4c1; }
.g-label { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.04em; opacity: 0.7; }
.g-value { font-size: 1.5rem; font-weight: 700; margin-top: 2px; }
.g-note { font-size: 0.8rem; opacity: 0.75; }
.g-plot { margin: 0; color: var(--body-text-color); }
.g-plot svg { display: block; max-width: 100%; height: auto; }
.g-empty { opacity: 0.7; font-style: italic; }
#badge-code textarea, #badge-code .cm-content { white-space: pre-wrap !important; word-break: break-all; }
"""


# -- private page steps ------------------------------------------------------------------------------


def _clear_audit() -> tuple[Any, ...]:
    """Everything an audit shows, emptied (the results disappear until the new one succeeds)."""
    return (
        gr.update(visible=False),  # results column
        None,  # report state
        "",  # summary
        None,  # table
        gr.update(choices=[], value=None),  # layer picker
        "",  # spectrum
        "",  # heatmap
        "",  # rank snippet
        None,  # report file
        "",  # badge repo
        "",  # badge code
        "",  # badge note
        "",  # PR message
        gr.update(value=None, visible=False),  # compressed file
        "",  # compress summary
        "",  # Markdown report
    )


def _render_audit(report: dict[str, Any] | None) -> tuple[Any, ...]:
    if not report:
        return tuple(gr.skip() for _ in range(12))
    choices, most = render.layer_choices(report)
    src = report.get("source") or {}
    if src.get("kind") == "hub" and src.get("repo"):
        b_repo, b_code = src["repo"], badge_markdown(src["repo"], report)
        b_note = f"Badge for **{src['repo']}**, from the audit on the Audit tab."
    else:
        b_repo, b_code = "", ""
        b_note = (
            f"Badges go on a Hub repo's model card; **{src.get('name', 'this adapter')}** is not a Hub repo. "
            "Audit a Hub repo id to get its badge."
        )
    return (
        gr.update(visible=True),
        render.headline(report),
        render.layer_table(report),
        gr.update(choices=choices, value=most),
        render.plots.spectrum(render.row(report, most)),
        render.utilisation_heatmap(report),
        render.rank_snippet(report),
        b_repo,
        b_code,
        b_note,
        gr.update(visible=True),  # copy-link button
        render.markdown_report(report),
    )


def _spectrum(report: dict[str, Any] | None, layer: str | None) -> str:
    return render.plots.spectrum(render.row(report, layer))


def _copy_inputs(repo: str, revision: str, subfolder: str, files: list[str] | None) -> tuple[Any, ...]:
    """The adapter just audited, filled in on the Compress tab."""
    return repo, revision, subfolder, files


def _from_url(repo: str, revision: str, subfolder: str) -> tuple[Any, ...]:
    """``?repo=…&revision=…&subfolder=…`` (shared links and badges), read by the browser
    (``READ_URL_JS``), fill the audit inputs."""
    if not (repo or "").strip():
        return tuple(gr.skip() for _ in range(3))
    return repo.strip(), (revision or "").strip(), (subfolder or "").strip()


def _audit_if_named(
    repo: str,
    revision: str,
    subfolder: str,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[Any, ...]:
    """The landing page's audit: only when the address named a repo."""
    if not (repo or "").strip():
        return gr.skip(), gr.skip()
    return audit(repo, revision, subfolder, None, oauth_token, progress)


def _audit_typed(
    repo: str,
    revision: str,
    subfolder: str,
    oauth_token: gr.OAuthToken | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[Any, ...]:
    return audit(repo, revision, subfolder, None, oauth_token, progress)


def _clear_merge() -> tuple[Any, ...]:
    return (
        gr.update(visible=False),  # results column
        None,  # state
        None,  # plan file
        "",  # summary
        None,  # table
        "",  # heatmap
        gr.update(visible=False, value=False),  # severe confirmation
        gr.update(value=None, visible=False),  # merged file
        "",  # merge summary
        "",  # Markdown report
    )


def _render_merge(report: dict[str, Any] | None) -> tuple[Any, ...]:
    if not report:
        return tuple(gr.skip() for _ in range(7))
    incompatible = any((p.get("aggregate") or {}).get("incompatible") for p in report.get("pairs", []))
    return (
        gr.update(visible=True),
        render.merge_summary(report),
        render.merge_table(report),
        render.overlap_heatmap(report),
        gr.update(visible=render.is_severe(report) and not incompatible, value=False),
        gr.update(interactive=not incompatible),
        render.merge_markdown_report(report),
    )


def _check_merge(report: dict[str, Any] | None, repos: str, files: list[str] | None, confirmed: bool) -> None:
    """The merge button follows the merge audit shown, for the adapters listed now."""
    if not report:
        raise err("run the merge audit on these adapters first", title="Merge audit first")
    listed = [s.name for s in merge_sources(repos, files)]
    if [a.get("name") for a in report.get("adapters", [])] != listed:
        raise err(
            "the adapters listed changed since the merge audit: run it again", title="Merge audit first"
        )
    for pair in report.get("pairs", []):
        reason = (pair.get("aggregate") or {}).get("incompatible")
        if reason:
            raise err(f"{reason[:1].upper()}{reason[1:]}.", title="These adapters cannot be merged")
    if render.is_severe(report) and not confirmed:
        raise err(
            "the merge audit rates this merge severe risk: tick the confirmation box to merge anyway",
            title="Confirm the merge",
        )


def _hidden_file() -> tuple[Any, str]:
    return gr.update(value=None, visible=False), ""


def _shown() -> Any:
    return gr.update(visible=True)


def _login_available() -> bool:
    """Show "Sign in with Hugging Face" on a Space, or locally when a token can stand in for it.

    Locally gradio mocks OAuth with the machine's own login and refuses to start without one, so
    a developer with no token gets the app without the button rather than no app.
    """
    if os.environ.get("SPACE_ID"):
        return True
    from huggingface_hub import get_token

    return get_token() is not None


# -- the page -------------------------------------------------------------------------------------------


def build() -> gr.Blocks:
    """The Blocks app (not launched), so tests and ``make space`` launch the same thing."""
    with gr.Blocks(title="Gradience: LoRA spectral audit") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Audit", id="audit"):
            with gr.Row(equal_height=True):
                repo = gr.Textbox(
                    label="Hub repo id or URL",
                    placeholder="user/my-lora  ·  https://huggingface.co/user/my-lora",
                    scale=4,
                    elem_id="repo-box",
                )
                audit_btn = gr.Button("Audit", variant="primary", scale=1, min_width=100)
            with gr.Row():
                example_btns = {
                    gr.Button(label, size="sm", variant="secondary", elem_classes="g-example"): path
                    for label, path in AUDIT_EXAMPLES.items()
                }
            with gr.Accordion("Revision, subfolder, or upload files instead", open=False):
                with gr.Row():
                    revision = gr.Textbox(label="Revision (optional)", placeholder="main", value="")
                    subfolder = gr.Textbox(label="Subfolder (optional)", value="")
                files = gr.File(
                    label="Upload adapter_config.json + weights, or one .zip (replaces the repo id)",
                    file_count="multiple",
                    type="filepath",
                )
            with gr.Column(visible=False) as results:
                summary = gr.HTML(elem_id="audit-summary")
                with gr.Row():
                    copy_link = gr.Button(
                        "Copy link to this audit", size="sm", elem_id="copy-link", scale=0, min_width=200
                    )
                with gr.Row():
                    with gr.Column():
                        layer = gr.Dropdown(label="Layer", choices=[], interactive=True, elem_id="layer-pick")
                        spectrum_plot = gr.HTML(elem_id="spectrum-plot")
                    heatmap = gr.HTML(elem_id="util-heatmap")
                table = gr.Dataframe(
                    label="Per-layer audit (util. = stable rank / r; rec. r = recommended rank)",
                    elem_id="layer-table",
                    interactive=False,
                    max_height=420,
                )
                with gr.Row():
                    rank_code = gr.Code(
                        label="Recommended rank as a peft.LoraConfig", language="python", elem_id="rank-code"
                    )
                    report_file = gr.File(label="Full JSON report")
                with gr.Accordion("The audit as Markdown (for a model card, an issue or a PR)", open=False):
                    report_md = gr.Code(
                        language="markdown",
                        wrap_lines=True,
                        show_label=False,
                        buttons=["copy"],
                        elem_id="report-md",
                    )
        with gr.Tab("Compress", id="compress"):
            gr.Markdown(
                "Write the best lower-rank version of an adapter (the optimal truncation of every "
                "layer). Rank 0 uses the audit's recommended rank. The adapter you audit is filled in."
            )
            with gr.Row():
                c_repo = gr.Textbox(label="Hub repo id, URL or bundled example", scale=3, elem_id="c-repo")
                c_revision = gr.Textbox(label="Revision (optional)", value="")
                c_subfolder = gr.Textbox(label="Subfolder (optional)", value="")
            c_files = gr.File(
                label="…or upload adapter files / a .zip", file_count="multiple", type="filepath"
            )
            with gr.Row():
                c_rank = gr.Number(label="Rank (0 = recommended)", value=0, precision=0, minimum=0)
                c_policy = gr.Textbox(label="Policy (when rank is 0)", value="energy@0.9")
                c_per_layer = gr.Checkbox(label="A rank per layer", value=False)
            c_btn = gr.Button("Compress", variant="primary")
            c_md = gr.Markdown(elem_id="compress-summary")
            c_file = gr.File(label="Compressed adapter (.zip)", visible=False)
        with gr.Tab("Merge audit", id="merge"):
            gr.Markdown("Will two adapters fight when merged? Compare them layer by layer, then merge.")
            with gr.Row():
                m_repos = gr.Textbox(
                    label="Adapters: Hub repo ids or URLs, one per line", lines=2, scale=3, elem_id="m-repos"
                )
                m_files = gr.File(
                    label="…or upload adapters, one .zip each", file_count="multiple", type="filepath"
                )
            with gr.Row():
                m_btn = gr.Button("Merge audit", variant="primary")
                m_examples = {gr.Button(label, size="sm"): pair for label, pair in MERGE_EXAMPLES.items()}
            m_state = gr.JSON(visible=False, label="merge audit report")
            with gr.Column(visible=False) as m_results:
                m_summary = gr.Markdown(elem_id="merge-summary")
                with gr.Accordion("How to read overlap, agreement and density", open=False):
                    gr.Markdown(render.MERGE_LEGEND)
                m_heat = gr.HTML()
                with gr.Accordion("The merge audit as Markdown", open=False):
                    m_md = gr.Code(language="markdown", wrap_lines=True, show_label=False, buttons=["copy"])
                m_table = gr.Dataframe(
                    label="Recommendation per layer", interactive=False, max_height=420, elem_id="merge-table"
                )
                with gr.Row():
                    m_plan = gr.File(label="Merge plan (JSON)")
                    with gr.Column():
                        m_strategy = gr.Dropdown(["auto", *available_strategies()], value="auto",
                                                 label="Strategy (auto follows the plan)")  # fmt: skip
                        m_confirm = gr.Checkbox(
                            label="I understand this merge is severe risk; merge anyway",
                            visible=False,
                            elem_id="merge-confirm",
                        )
                        merge_btn = gr.Button("Merge", elem_id="merge-btn")
                merge_md = gr.Markdown(elem_id="merge-result")
                merge_file = gr.File(label="Merged adapter (.zip)", visible=False)
        with gr.Tab("Badge", id="badge"):
            gr.Markdown(
                "A badge for a **Hub** adapter's model card, showing its utilisation and recommended "
                "rank and linking to its audit here. Copy the Markdown, or sign in and open a pull "
                "request in your name (only a marked section of the card changes). The bundled "
                "examples are not on the Hub, so they have no badge."
            )
            b_note = gr.Markdown()
            if _login_available():
                gr.LoginButton()
            with gr.Row(equal_height=True):
                b_repo = gr.Textbox(label="Hub repo id the badge is for", scale=3, elem_id="badge-repo")
                b_btn = gr.Button("Make badge", scale=1)
            b_code = gr.Code(
                label="Markdown for the model card",
                language="markdown",
                wrap_lines=True,
                show_line_numbers=False,
                lines=2,
                buttons=["copy"],
                elem_id="badge-code",
            )
            b_preview = gr.Markdown()
            pr_btn = gr.Button("Open a pull request with this badge")
            pr_md = gr.Markdown()

        # -- audit: clear, run (the public /audit), render, share ----------------------------------
        audit_inputs = [repo, revision, subfolder, files]
        report_state = gr.JSON(visible=False, label="audit report")
        clear_outputs = [results, report_state, summary, table, layer, spectrum_plot, heatmap, rank_code,
                         report_file, b_repo, b_code, b_note, pr_md, c_file, c_md, report_md]  # fmt: skip
        render_outputs = [results, summary, table, layer, spectrum_plot, heatmap, rank_code,
                          b_repo, b_code, b_note, copy_link, report_md]  # fmt: skip

        def after(dep: Any) -> None:
            dep.success(_render_audit, report_state, render_outputs, api_visibility="private").success(
                _copy_inputs,
                audit_inputs,
                [c_repo, c_revision, c_subfolder, c_files],
                api_visibility="private",
            ).success(None, report_state, None, js=SET_URL_JS, api_visibility="private")

        run = audit_btn.click(_clear_audit, None, clear_outputs, api_visibility="private").then(
            audit, audit_inputs, [report_state, report_file], api_name="audit", concurrency_id="work"
        )
        after(run)
        # Enter in the repo box audits what was typed, even if an upload's removal is still in flight.
        typed = repo.submit(_clear_audit, None, clear_outputs, api_visibility="private").then(
            _audit_typed, [repo, revision, subfolder], [report_state, report_file], api_visibility="private",
            concurrency_id="work",
        )  # fmt: skip
        after(typed)
        for btn, path in example_btns.items():
            ex = btn.click(
                lambda p=path: (p, "", "", None), None, audit_inputs, api_visibility="private"
            ).then(_clear_audit, None, clear_outputs, api_visibility="private")
            after(ex.then(audit, audit_inputs, [report_state, report_file], api_visibility="private",
                          concurrency_id="work"))  # fmt: skip
        # An upload and a typed id never both apply: using one empties the other.
        files.upload(lambda: ("", "", ""), None, [repo, revision, subfolder], api_visibility="private")
        repo.input(lambda: None, None, files, api_visibility="private")
        layer.change(_spectrum, [report_state, layer], spectrum_plot, api_visibility="private")
        copy_link.click(None, None, None, js=COPY_LINK_JS, api_visibility="private")
        landing = demo.load(
            _from_url, [repo, revision, subfolder], [repo, revision, subfolder], js=READ_URL_JS,
            api_visibility="private",
        )  # fmt: skip
        after(
            landing.then(
                _audit_if_named,
                [repo, revision, subfolder],
                [report_state, report_file],
                api_visibility="private",
            )
        )

        # -- compress ---------------------------------------------------------------------------------
        c_btn.click(_hidden_file, None, [c_file, c_md], api_visibility="private").then(
            compress,
            [c_repo, c_revision, c_subfolder, c_files, c_rank, c_policy, c_per_layer],
            [c_file, c_md],
            api_name="compress",
            concurrency_id="work",
        ).success(_shown, None, c_file, api_visibility="private")
        c_files.upload(
            lambda: ("", "", ""), None, [c_repo, c_revision, c_subfolder], api_visibility="private"
        )
        c_repo.input(lambda: None, None, c_files, api_visibility="private")

        # -- merge audit, then merge ----------------------------------------------------------------
        m_clear = [
            m_results,
            m_state,
            m_plan,
            m_summary,
            m_table,
            m_heat,
            m_confirm,
            merge_file,
            merge_md,
            m_md,
        ]
        m_render = [m_results, m_summary, m_table, m_heat, m_confirm, merge_btn, m_md]
        m_run = m_btn.click(_clear_merge, None, m_clear, api_visibility="private").then(
            merge_audit, [m_repos, m_files], [m_state, m_plan], api_name="merge_audit", concurrency_id="work"
        )
        m_run.success(_render_merge, m_state, m_render, api_visibility="private")
        for btn, pair in m_examples.items():
            btn.click(lambda p=pair: (p, None), None, [m_repos, m_files], api_visibility="private").then(
                _clear_merge, None, m_clear, api_visibility="private"
            ).then(
                merge_audit,
                [m_repos, m_files],
                [m_state, m_plan],
                api_visibility="private",
                concurrency_id="work",
            ).success(_render_merge, m_state, m_render, api_visibility="private")
        # Changing the adapters listed retires the audit and plan shown: merge needs a fresh one.
        for ev in (m_repos.input, m_files.upload, m_files.clear):
            ev(_clear_merge, None, m_clear, api_visibility="private")
        merge_btn.click(
            _check_merge, [m_state, m_repos, m_files, m_confirm], None, api_visibility="private"
        ).success(_hidden_file, None, [merge_file, merge_md], api_visibility="private").then(
            merge, [m_repos, m_files, m_strategy, m_plan], [merge_file, merge_md], api_name="merge",
            concurrency_id="work",
        ).success(_shown, None, merge_file, api_visibility="private")  # fmt: skip

        # -- badge ------------------------------------------------------------------------------------
        b_repo.input(lambda: ("", "", ""), None, [b_code, b_note, pr_md], api_visibility="private")
        b_btn.click(lambda: ("", ""), None, [b_code, pr_md], api_visibility="private").then(
            badge, [b_repo], b_code, api_name="badge", concurrency_id="work"
        )
        b_code.change(lambda s: s, b_code, b_preview, api_visibility="private")
        pr_btn.click(badge_pr, [b_repo], pr_md, api_visibility="private", concurrency_id="work")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


def launch(demo: gr.Blocks | None = None, **kwargs: Any) -> tuple[Any, str, str | None]:
    """Launch with the Space's look and settings; ``kwargs`` override (tests pass a port)."""
    from sources import MAX_UPLOAD_BYTES

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
