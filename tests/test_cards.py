"""Card edits (gradience.hub.cards) and the badge (gradience.report.badge): pure functions, no Hub."""

from __future__ import annotations

import pytest

from gradience.hub.cards import END_MARKER, START_MARKER, find_section, upsert_section
from gradience.report.badge import badge_for, badge_markdown

CARD = (
    "---\nlicense: apache-2.0\ntags:\n- lora\n---\n\n# My adapter\n\nTrained on things.\n\n"
    "```markdown\n<!-- gradience:start -->\nnot a real section\n<!-- gradience:end -->\n```\n\n## Usage\n"
)


def test_insert_after_title_everything_else_identical() -> None:
    out = upsert_section(CARD, "BADGE")
    head, rest = CARD.split("# My adapter\n", 1)
    assert out == head + "# My adapter\n\n" + f"{START_MARKER}\nBADGE\n{END_MARKER}\n" + rest


def test_replace_is_idempotent_and_ignores_code_blocks() -> None:
    once = upsert_section(CARD, "OLD")
    twice = upsert_section(once, "NEW")
    assert twice == once.replace("OLD", "NEW")
    assert upsert_section(twice, "NEW") == twice
    assert "not a real section" in twice  # the quoted markers in the code fence are untouched


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("", f"{START_MARKER}\nB\n{END_MARKER}\n"),
        ("plain text\n", f"{START_MARKER}\nB\n{END_MARKER}\n\nplain text\n"),
        ("---\na: 1\n---\n", f"---\na: 1\n---\n{START_MARKER}\nB\n{END_MARKER}\n"),
        ("# T", f"# T\n\n{START_MARKER}\nB\n{END_MARKER}\n"),
        ("# T\r\n\r\nx\r\n", f"# T\r\n\r\n{START_MARKER}\r\nB\r\n{END_MARKER}\r\n\r\nx\r\n"),
    ],
)
def test_edge_cases(card: str, expected: str) -> None:
    assert upsert_section(card, "B") == expected


def test_find_section_top_level_only() -> None:
    body = f"- {START_MARKER}\n- x\n\n{START_MARKER}\nhi\n{END_MARKER}\ntail\n"
    assert find_section(body) == (3, 6)


def _report(util: float | None, r: int = 16, default_r: int = 4, untrained: int = 0) -> dict:
    return {"utilization_mean": util, "n_layers": 4, "n_untrained": untrained, "adapter": {"r": r},
            "rank_suggestions": {"default_r": default_r}}  # fmt: skip


@pytest.mark.parametrize(
    ("util", "color"),
    [(0.05, "red"), (0.17, "orange"), (0.3, "yellow"), (0.5, "brightgreen"), (0.9, "brightgreen")],
)
def test_badge_bands(util: float, color: str) -> None:
    assert badge_for(_report(util)).color == color


def test_badge_text_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    b = badge_for(_report(0.17))
    assert b.message == "17% · r16→4"
    assert (
        b.image_url == "https://img.shields.io/badge/LoRA%20utilisation-17%25%20%C2%B7%20r16%E2%86%924-orange"
    )
    assert badge_for(_report(None)).message == "untrained"
    assert badge_for(_report(0.0, untrained=4)).color == "lightgrey"
    monkeypatch.setenv("GRADIENCE_SPACE_URL", "https://me-gradience.hf.space/")
    md = badge_markdown("user/my-lora", _report(0.17))
    assert md.endswith("](https://me-gradience.hf.space?repo=user/my-lora)")
