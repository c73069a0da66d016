"""Markdown renderings: parsed with markdown-it-py (CommonMark + GFM tables), so a broken table,
an injected tag or link, or a changed number shows up as a parse difference, not a string match."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

import gradience
from gradience.report.markdown import audit_markdown, diff_markdown, merge_audit_markdown

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MD = MarkdownIt("commonmark").enable("table")
ALLOWED_HTML = {"<details>", "</details>"}

HOSTILE = [
    "a|b|c",
    "<script>alert(1)</script>",
    "`tick` and ``two``",
    "*em* __strong__ ~~del~~",
    "[click](https://evil.example) ![img](x.png)",
    "line\nbreak # heading",
    "&amp; &lt; \\ back\\slash $x$",
]


def _tables(tokens) -> list[list[list[str]]]:
    """Each table as rows of cell texts (header row first), from the parsed tokens."""
    tables, rows, row, cell = [], None, None, None
    for t in tokens:
        if t.type == "table_open":
            rows = []
        elif t.type == "table_close":
            tables.append(rows)
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close":
            rows.append(row)
        elif t.type in ("th_open", "td_open"):
            cell = ""
        elif t.type == "inline" and cell is not None:
            cell = "".join(c.content for c in t.children if c.type in ("text", "code_inline"))
        elif t.type in ("th_close", "td_close"):
            row.append(cell)
            cell = None
    return tables


def _well_formed(text: str) -> list:
    """Parse; every table rectangular; only our own <details>/<summary> HTML; no links,
    images or emphasis came from data. Returns the tokens."""
    tokens = MD.parse(text)
    for table in _tables(tokens):
        assert len({len(r) for r in table}) == 1, table[:2]
    for t in tokens:
        if t.type == "html_block":
            for line in t.content.strip().splitlines():
                assert line in ALLOWED_HTML or (
                    line.startswith("<summary>") and line.endswith("</summary>")
                ), line
        for c in t.children or []:
            assert c.type not in ("html_inline", "link_open", "image", "em_open", "s_open"), (
                c.type,
                c.content,
            )
    return tokens


@pytest.fixture(scope="module")
def audits(corpus_dir) -> dict[str, dict]:
    out = {n: gradience.audit(EXAMPLES / n).to_dict(layers=True) for n in ("healthy-r8", "overprovisioned-r64",
                                                                          "untrained-r8")}  # fmt: skip
    out["gemma"] = gradience.audit(corpus_dir / "gemma270m_adapter").to_dict(layers=True)
    return out


@pytest.mark.parametrize("which", ["healthy-r8", "overprovisioned-r64", "untrained-r8", "gemma"])
def test_audit_summary_tables_carry_the_audit_numbers(audits, which):
    d = audits[which]
    text = audit_markdown(d)
    tokens = _well_formed(text)
    assert tokens[0].type == "heading_open" and tokens[0].tag == "h2"
    summary, layers = _tables(tokens)
    cells = {row[0]: row[1] for row in summary[1:]}
    rec = d["recommendation"]
    if rec["status"] == "ok":
        assert cells[f"Recommended rank ({d['policy']})"].startswith(
            f"r={rec['rank']} of r={rec['nominal_r']}"
        )
    else:
        assert cells[f"Recommended rank ({d['policy']})"] == "none (untrained)"
    assert (
        cells["Utilisation (mean / median)"] == f"{d['utilization_mean']:.3f} / {d['utilization_median']:.3f}"
    )
    assert cells["Flags"] == (", ".join(d["flags"]) or "none")
    rows = d["layer_data"]["layer_rows"]
    assert [r[0] for r in layers[1:]] == [x["name"] for x in rows]
    assert [r[2] for r in layers[1:]] == [f"{x['utilization']:.3f}" for x in rows]
    assert [r[4] for r in layers[1:]] == [f"{x['energy_rank_90']}/{x['energy_rank_95']}/{x['energy_rank_99']}"
                                          for x in rows]  # fmt: skip
    # The per-layer table is collapsed: it sits between <details> and </details>.
    assert text.index("<details>") < text.index("| Layer |") < text.index("</details>")


def test_no_layer_rows_no_details_and_untrained_says_so(audits):
    text = audit_markdown({k: v for k, v in audits["untrained-r8"].items() if k != "layer_data"})
    _well_formed(text)
    assert "<details>" not in text and "not been trained" in text and "r=None" not in text


def test_hostile_names_are_shown_literally_and_inert(audits):
    d = copy.deepcopy(audits["healthy-r8"])
    rows = d["layer_data"]["layer_rows"]
    for row, bad in zip(rows, HOSTILE, strict=False):
        d["recommendation"]["per_layer"][bad] = d["recommendation"]["per_layer"].pop(row["name"])
        row["name"] = bad
    d["source"] = {"path": HOSTILE[1]}
    d["adapter"]["base_model"] = HOSTILE[4]
    d["warnings"] = [HOSTILE[5]]
    text = audit_markdown(d)
    tokens = _well_formed(text)
    summary, layers = _tables(tokens)
    want = [" ".join(x.split()) for x in HOSTILE]
    assert [r[0] for r in layers[1 : 1 + len(HOSTILE)]] == want
    assert len(layers) == 1 + len(rows) and all(len(r) == 8 for r in layers)
    assert dict(r for r in summary[1:])["Base model"] == HOSTILE[4]
    heading = "".join(c.content for c in tokens[1].children)
    assert heading == f"Gradience audit: {HOSTILE[1]}"
    assert sum(t.type == "heading_open" for t in tokens) == 1  # "# heading" in a warning stayed text


def test_renderings_are_deterministic_functions_of_the_json(audits):
    d = audits["gemma"]
    again = json.loads(json.dumps(d))
    assert audit_markdown(d) == audit_markdown(again)
    diff = gradience.diff(EXAMPLES / "healthy-r8", EXAMPLES / "overprovisioned-r64").to_dict()
    assert diff_markdown(diff) == diff_markdown(json.loads(json.dumps(diff)))


def test_diff_table_and_collapsed_layer_changes():
    rules = gradience.Rules(min_utilization=0.1, forbid_flags=("over_provisioned",))
    d = gradience.diff(EXAMPLES / "merge-related-a", EXAMPLES / "merge-conflict-a", rules=rules).to_dict()
    text = diff_markdown(d)
    tokens = _well_formed(text)
    tables = _tables(tokens)
    compact = tables[0]
    assert compact[0] == ["", "Base", "Head", "Δ"]
    cells = {r[0]: r[1:] for r in compact[1:]}
    m = d["metrics"]["utilization_mean"]
    assert cells["Utilisation (mean)"] == [f"{m['base']:.3f}", f"{m['head']:.3f}", f"{m['delta']:+.3f}"]
    assert cells["LoRA layers"][:2] == [
        str(d["metrics"]["n_layers"]["base"]),
        str(d["metrics"]["n_layers"]["head"]),
    ]
    changed = [x for x in d["layers"] if x["status"] != "unchanged"]
    per_layer = tables[-1]
    assert [r[0] for r in per_layer[1:]] == [x["name"] for x in changed]
    assert [r[1] for r in per_layer[1:]] == [x["status"] for x in changed]
    errors = [v for v in d["violations"] if v["severity"] == "error"]
    assert text.count("❌") == len(errors) + (0 if d["passed"] else 1)
    assert ("rules **pass**" in text) == d["passed"]


def test_added_and_unchanged_diffs_render():
    added = gradience.diff(None, EXAMPLES / "healthy-r8").to_dict()
    tokens = _well_formed(diff_markdown(added))
    assert _tables(tokens)[0][1][1] == "—"  # no base value
    same = gradience.diff(EXAMPLES / "healthy-r8", EXAMPLES / "healthy-r8").to_dict()
    text = diff_markdown(same)
    _well_formed(text)
    assert "**unchanged**" in text and "<details>" not in text


def test_merge_audit_markdown_tables_and_escaping():
    d = gradience.merge_audit([EXAMPLES / "merge-related-a", EXAMPLES / "merge-related-b"]).to_dict()
    text = merge_audit_markdown(d)
    tokens = _well_formed(text)
    pair = d["pairs"][0]
    layers, recs = _tables(tokens)
    assert [r[0] for r in layers[1:]] == [c["layer"] for c in pair["per_layer"]]
    assert [r[7] for r in layers[1:]] == [c["verdict"] for c in pair["per_layer"]]
    assert [r[1] for r in recs[1:]] == [r["strategy"] for r in pair["recommendations"]]
    heading = next(t for i, t in enumerate(tokens) if i and tokens[i - 1].tag == "h2" and t.type == "inline")
    assert heading.content.startswith(f"A × B: {pair['aggregate']['overall_verdict']}")
    bad = copy.deepcopy(d)
    old = bad["pairs"][0]["per_layer"][0]["layer"]
    for c in bad["pairs"][0]["per_layer"] + bad["pairs"][0]["recommendations"]:
        if c["layer"] == old:
            c["layer"] = HOSTILE[0]
    layers, _ = _tables(_well_formed(merge_audit_markdown(bad)))
    assert layers[1][0] == HOSTILE[0] and len(layers[1]) == 9


@pytest.mark.parametrize(
    ("policy", "words"),
    [("energy@0.9", "r={k} keeps 90% of the energy"), ("energy@0.95", "r={k} keeps 95% of the energy"),
     ("knee", "r={k} is enough for 90% of the layers under the knee policy")],
)  # fmt: skip
def test_interpretation_speaks_in_the_policy_s_terms_and_names_the_recommended_rank(policy, words):
    from gradience.report.markdown import interpretation

    a = gradience.audit(EXAMPLES / "healthy-r8", policy=policy)
    sentence = interpretation(a.to_dict())
    assert words.format(k=a.recommendation.rank) in sentence
    assert sentence in audit_markdown(a.to_dict()) and "`" not in sentence and "\\" not in sentence
