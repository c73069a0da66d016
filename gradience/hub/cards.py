"""Model-card edits that touch only Gradience's own marked section.

A card belongs to its author: the Space's "open a PR with this badge" and the bot both change
nothing but the lines between ``<!-- gradience:start -->`` and ``<!-- gradience:end -->``.
The YAML front matter and every other byte stay as they were (line endings, a missing final
newline, bytes that are not valid UTF-8), so the PR diff shows exactly one section and the
author can review it at a glance. markdown-it-py finds the markers, so a marker quoted inside
a code fence, an indented code block, a list or a quote is never mistaken for the section.
"""

from __future__ import annotations

import re

__all__ = [
    "END_MARKER",
    "START_MARKER",
    "decode_card",
    "encode_card",
    "find_section",
    "has_section",
    "upsert_section",
]

START_MARKER = "<!-- gradience:start -->"
END_MARKER = "<!-- gradience:end -->"
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n.*?^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_LONE_CR = re.compile(r"\r(?!\n)")


def decode_card(raw: bytes) -> str:
    """README bytes as text that :func:`encode_card` turns back into the very same bytes.

    Invalid UTF-8 is carried through (surrogate escapes) instead of failing or being
    "repaired", because the edit must not change bytes outside the section.
    """
    return raw.decode("utf-8", errors="surrogateescape")


def encode_card(card: str) -> bytes:
    """The inverse of :func:`decode_card`."""
    return card.encode("utf-8", errors="surrogateescape")


def _split_front_matter(card: str) -> tuple[str, str]:
    m = _FRONT_MATTER.match(card)
    return (card[: m.end()], card[m.end() :]) if m else ("", card)


def _lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only, as markdown-it counts them (``str.splitlines`` would also
    split on form feeds and Unicode separators and put the section in the wrong place)."""
    return _LINE.findall(text)


def _tokens(body: str) -> list:
    from markdown_it import MarkdownIt

    # markdown-it treats a lone \r as a line break; \n-split lines do not. A space keeps the
    # two line counts equal (the parse is only used to locate lines).
    return MarkdownIt("commonmark").parse(_LONE_CR.sub(" ", body))


def _marker_lines(tok, marker: str) -> list[int]:
    return [tok.map[0] + i for i, line in enumerate(tok.content.split("\n")) if line.strip() == marker]


def find_section(body: str) -> tuple[int, int] | None:
    """Line span ``[start, end)`` of the marked section in ``body`` (no front matter), or None.

    Only markers on their own line in top-level HTML count, so quoting them in a code fence
    or a list is safe, and HTML around the markers (a centred ``<div>``) is kept. A start
    marker without an end marker is ignored.
    """
    start: int | None = None
    for tok in _tokens(body):
        if tok.type != "html_block" or tok.level != 0 or tok.map is None:
            continue
        events = sorted(
            [(i, "start") for i in _marker_lines(tok, START_MARKER)]
            + [(i, "end") for i in _marker_lines(tok, END_MARKER)]
        )
        for line, kind in events:
            if kind == "start":
                start = line  # a later start wins over an unterminated earlier one
            elif start is not None:
                return start, line + 1
    return None


def has_section(card: str) -> bool:
    """Whether the whole card (front matter included) already has a Gradience section."""
    return find_section(_split_front_matter(card)[1]) is not None


def upsert_section(card: str, content: str) -> str:
    """``card`` with the Gradience section set to ``content``; everything else byte-identical.

    An existing section is replaced in place. Otherwise the section goes right after the
    card's first top-level heading (where badges usually sit), or at the top of the body.
    Line endings follow the card's own (``\\r\\n`` stays ``\\r\\n``).
    """
    front, body = _split_front_matter(card)
    nl = "\r\n" if "\r\n" in card else "\n"
    section = nl.join([START_MARKER, *content.strip("\r\n").splitlines(), END_MARKER]) + nl
    lines = _lines(body)
    span = find_section(body)
    if span is not None:
        a, b = span
        tail = "".join(lines[b:])
        if b == len(lines) and lines and not lines[-1].endswith("\n"):
            section = section[: -len(nl)]  # the end marker was the last line, with no newline
        return front + "".join(lines[:a]) + section + tail
    at = 0
    for tok in _tokens(body):
        if tok.type == "heading_open" and tok.level == 0 and tok.map is not None:
            at = tok.map[1]
            break
    head = "".join(lines[:at])
    if head and not head.endswith("\n"):
        head += nl  # a heading on the card's last line, with no newline after it
    tail = "".join(lines[at:])
    # One blank line around the section, reusing a blank line that is already there.
    before = nl if head.strip() else ""
    after = nl if tail.strip() and tail.lstrip(" \t")[:1] not in ("\n", "\r") else ""
    return front + head + before + section + after + tail
