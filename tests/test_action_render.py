"""The comment's table stays a table whatever a pull request names its folders or whatever an
error says: names and messages are untrusted, so they are escaped, never interpreted."""

from __future__ import annotations

from pathlib import Path

from markdown_it import MarkdownIt

from gradience.action.compare import compare
from gradience.action.render import Context, comment, marker, read_digest
from gradience.diff import Rules

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HOSTILE = "evil|<img src=x onerror=alert(1)>`<!-- x -->[link](https://example.com)"


def _md() -> MarkdownIt:
    """GitHub's flavour as far as it matters here: tables, and raw HTML passed through (so an
    unescaped tag would show up in the output)."""
    return MarkdownIt("commonmark", {"html": True}).enable("table")


def _ctx(verdict: str = "fail") -> Context:
    return Context("acme/adapters", 7, "a" * 40, "b" * 40, "energy@0.9", "error", verdict, None, "0.12.0")


def _table_rows(body: str) -> list[list[str]]:
    tokens = _md().parse(body)
    rows, row = [], None
    for t in tokens:
        if t.type == "tr_open":
            row = []
        elif t.type == "inline" and row is not None:
            row.append(t.content)
        elif t.type == "tr_close":
            rows.append(row)
            row = None
    return rows


def test_hostile_names_and_messages_stay_inside_their_cells(tmp_path):
    rules = Rules(forbid_flags=("untrained",))
    good = compare(HOSTILE, kind="git", base=None, head=EXAMPLES / "untrained-r8", base_label=None,
                   head_label=f"{HOSTILE}@aaaaaaa", policy="energy@0.9", rules=rules)  # fmt: skip
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8 | <b>')
    bad = compare("x|y", kind="git", base=None, head=broken, base_label=None, head_label="x|y@a",
                  policy="energy@0.9", rules=rules)  # fmt: skip
    assert good.status == "added" and bad.status == "unreadable"
    body = comment([good, bad], [], _ctx(), "default")
    assert body.startswith(marker("default")) and body.count("<!--") == 2  # the marker and the digest
    html = _md().render(body)
    assert "<img" not in html and "<b>" not in html and "<a href" not in html
    rows = _table_rows(body)
    assert len(rows) == 3 and all(len(r) == 8 for r in rows)  # header + two adapters, 8 columns each
    assert [r[1] for r in rows[1:]] == ["unreadable", "added"]
    assert "forbid_flags" in rows[2][7] and rows[1][7].startswith("❌")


def test_digest_ignores_commits_but_not_numbers():
    rules = Rules()
    a = compare("a", kind="git", base=EXAMPLES / "untrained-r8", head=EXAMPLES / "healthy-r8",
                base_label="a@1", head_label="a@2", policy="energy@0.9", rules=rules)  # fmt: skip
    same = comment([a], [], _ctx("pass"), "s")
    moved = comment([a], [], Context("acme/adapters", 7, "c" * 40, "b" * 40, "energy@0.9", "error", "pass",
                                     "https://github.com/acme/adapters/actions/runs/1", "0.12.0"), "s")  # fmt: skip
    assert same != moved and read_digest(same) == read_digest(moved)
    b = compare("a", kind="git", base=EXAMPLES / "untrained-r8", head=EXAMPLES / "overprovisioned-r64",
                base_label="a@1", head_label="a@2", policy="energy@0.9", rules=rules)  # fmt: skip
    assert read_digest(comment([b], [], _ctx("pass"), "s")) != read_digest(same)
