"""Card edits (gradience.hub.cards) and the badge (gradience.report.badge): pure functions, no Hub.

Every edit must leave each byte outside the marked section as it was: the expected outputs
below are written out in full, so a stray newline or a moved badge fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import gradience
from gradience.hub.cards import (
    END_MARKER,
    START_MARKER,
    decode_card,
    encode_card,
    find_section,
    has_section,
    upsert_section,
)
from gradience.report.badge import BANDS, badge_for, badge_markdown

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
S, E = START_MARKER, END_MARKER

CARD = (
    "---\nlicense: apache-2.0\ntags:\n- lora\n---\n\n# My adapter\n\nTrained on things.\n\n"
    "```markdown\n<!-- gradience:start -->\nnot a real section\n<!-- gradience:end -->\n```\n\n## Usage\n"
)


def test_insert_after_title_everything_else_identical() -> None:
    out = upsert_section(CARD, "BADGE")
    head, rest = CARD.split("# My adapter\n", 1)
    assert out == head + "# My adapter\n\n" + f"{S}\nBADGE\n{E}\n" + rest
    assert has_section(out) and not has_section(CARD)


def test_replace_is_idempotent_and_ignores_code_blocks() -> None:
    once = upsert_section(CARD, "OLD")
    twice = upsert_section(once, "NEW")
    assert twice == once.replace("OLD", "NEW")
    assert upsert_section(twice, "NEW") == twice
    assert "not a real section" in twice  # the quoted markers in the code fence are untouched


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("", f"{S}\nB\n{E}\n"),
        ("plain text\n", f"{S}\nB\n{E}\n\nplain text\n"),
        ("---\na: 1\n---\n", f"---\na: 1\n---\n{S}\nB\n{E}\n"),
        ("---\r\na: 1\r\n---\r\n", f"---\r\na: 1\r\n---\r\n{S}\r\nB\r\n{E}\r\n"),
        ("\ufeff---\na: 1\n---\n# T\n", f"\ufeff---\na: 1\n---\n# T\n\n{S}\nB\n{E}\n"),
        ("# T", f"# T\n\n{S}\nB\n{E}\n"),
        ("# T\r\n\r\nx\r\n", f"# T\r\n\r\n{S}\r\nB\r\n{E}\r\n\r\nx\r\n"),
        ("Title\n=====\ntext", f"Title\n=====\n\n{S}\nB\n{E}\n\ntext"),
        # existing badges right under the title stay on their own line, byte for byte
        (
            "# T\n[![a](https://x/a.svg)](https://a) [![b](https://x/b.svg)](https://b)\n\nBody\n",
            f"# T\n\n{S}\nB\n{E}\n\n[![a](https://x/a.svg)](https://a) [![b](https://x/b.svg)](https://b)\n\nBody\n",
        ),
        # a title inside HTML is not a Markdown heading: the section goes after the first real one
        (
            '<div align="center">\n<h1>T</h1>\n</div>\n\n## Usage\nx\n',
            f'<div align="center">\n<h1>T</h1>\n</div>\n\n## Usage\n\n{S}\nB\n{E}\n\nx\n',
        ),
    ],
)
def test_insert_edge_cases(card: str, expected: str) -> None:
    out = upsert_section(card, "B")
    assert out == expected
    assert upsert_section(out, "B") == out  # a second run changes nothing


@pytest.mark.parametrize(
    "card",
    [
        # section inside centred HTML: the HTML lines around the markers are kept
        f'# T\n\n<p align="center">\n{S}\nOLD\n{E}\n</p>\n\nrest\n',
        # CRLF throughout
        f"# T\r\n\r\n{S}\r\nOLD\r\n{E}\r\n\r\nrest\r\n",
        # the end marker is the last line and the card has no final newline
        f"# T\n\n{S}\nOLD\n{E}",
        # markers quoted in an indented code block, a list and a quote come first
        f"# T\n\n    {S}\n    quoted\n    {E}\n\n- {S}\n- {E}\n\n> {S}\n> {E}\n\n{S}\nOLD\n{E}\n",
        # an unterminated start marker earlier in the card is left alone
        f"# T\n\n{S}\n\ntext\n\n{S}\nOLD\n{E}\n",
        # a form feed and a Unicode line separator inside lines before the section
        f"# T\n\na\x0cb\u2028c\n\n{S}\nOLD\n{E}\ntail\n",
        # a lone carriage return inside a line before the section
        f"# T\n\na\rb\n\n{S}\nOLD\n{E}\ntail\n",
        # several badge lines in the section become one
        f"# T\n\n{S}\nOLD\n[![x](y)](z)\n{E}\n",
    ],
)
def test_replace_changes_only_the_section(card: str) -> None:
    nl = "\r\n" if "\r\n" in card else "\n"
    old_inner = card[card.rindex(S) + len(S) + len(nl) : card.index(E, card.rindex(S))]
    out = upsert_section(card, "NEW")
    assert out == card.replace(f"{S}{nl}{old_inner}{E}", f"{S}{nl}NEW{nl}{E}")
    assert upsert_section(out, "NEW") == out


def test_invalid_utf8_bytes_survive_the_edit() -> None:
    raw = b"# T\n\nCaf\xe9 (latin-1 byte) and \xff\xfe\n"
    card = decode_card(raw)
    out = encode_card(upsert_section(card, "B"))
    assert out == b"# T\n\n" + f"{S}\nB\n{E}\n".encode() + b"\nCaf\xe9 (latin-1 byte) and \xff\xfe\n"


def test_find_section_top_level_only() -> None:
    body = f"- {S}\n- x\n\n{S}\nhi\n{E}\ntail\n"
    assert find_section(body) == (3, 6)
    assert find_section(f"```\n{S}\n{E}\n```\n") is None
    assert find_section(f"{S}\nno end\n") is None


# -- the badge ----------------------------------------------------------------------------------------


def _report(util: float | None, status: str = "ok", r: int = 16, rank: int | None = 4) -> dict:
    return {"utilization_mean": util, "n_layers": 4, "n_untrained": 4 if status == "untrained" else 0,
            "adapter": {"r": r}, "rank_suggestions": {"default_r": 99},
            "recommendation": {"status": status, "rank": rank, "nominal_r": r}}  # fmt: skip


@pytest.mark.parametrize(
    ("util", "color"),
    [
        (0.05, "red"),
        (0.1, "orange"),
        (0.17, "orange"),
        (0.3, "yellow"),
        (0.5, "brightgreen"),
        (0.9, "brightgreen"),
    ],
)
def test_badge_bands(util: float, color: str) -> None:
    assert badge_for(_report(util)).color == color
    assert [low for low, _ in BANDS] == sorted((low for low, _ in BANDS), reverse=True)


def test_badge_text_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    b = badge_for(_report(0.17))
    assert b.message == "17% · r16→4"  # the recommendation, not rank_suggestions.default_r
    assert (
        b.image_url == "https://img.shields.io/badge/LoRA%20utilisation-17%25%20%C2%B7%20r16%E2%86%924-orange"
    )
    assert badge_for(_report(None)).message == "untrained"
    assert badge_for(_report(0.0, status="untrained", rank=None)).color == "lightgrey"
    assert badge_for(_report(None, status="invalid", rank=None)).message == "invalid"
    monkeypatch.setenv("GRADIENCE_SPACE_URL", "https://me-gradience.hf.space/")
    md = badge_markdown("user/my-lora", _report(0.17))
    assert md.endswith("](https://me-gradience.hf.space?repo=user/my-lora)")


def test_badge_of_real_audits_shows_the_recommendation() -> None:
    for name in ("overprovisioned-r64", "healthy-r8"):
        result = gradience.audit(EXAMPLES / name)
        rec = result.recommendation
        b = badge_for(result)  # an AdapterAudit or its dict give the same badge
        assert b == badge_for(result.to_dict())
        assert b.message.endswith(f" · r{rec.nominal_r}→{rec.rank}")
        assert "None" not in b.message
    untrained = badge_for(gradience.audit(EXAMPLES / "untrained-r8"))
    assert (untrained.message, untrained.color) == ("untrained", "lightgrey")
