"""Model cards: the YAML front matter of README.md, and what the Hub derives from it.

The Hub turns card metadata into searchable tags (``peft``, ``base_model:adapter:<id>``,
``license:<id>``, the pipeline tag...). ``list_models(filter=...)`` matches on those, so the local
Hub derives them the same way.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


class CardError(ValueError):
    """The README front matter is not valid YAML, or not a mapping."""


def parse_front_matter(text: str) -> dict[str, Any]:
    """The metadata block of a card; ``{}`` when there is none. Raises CardError when malformed."""
    match = FRONT_MATTER.match(text)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        raise CardError(f"Invalid YAML in README.md front matter: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError("README.md front matter must be a YAML mapping")
    return data


def render_card(metadata: dict[str, Any], body: str) -> str:
    """A README.md with a front matter block, as the Hub's card tooling writes it."""
    block = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{block}\n---\n\n{body.strip()}\n"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def base_models(card: dict[str, Any]) -> list[str]:
    return _as_list(card.get("base_model"))


def base_model_relation(card: dict[str, Any]) -> str | None:
    if not base_models(card):
        return None
    if isinstance(card.get("base_model_relation"), str):
        return card["base_model_relation"]
    return "adapter" if card.get("library_name") == "peft" else "finetune"


def derived_tags(card: dict[str, Any], paths: list[str]) -> list[str]:
    """Card tags plus the ones the Hub adds: library, file formats, base model, license, region."""
    tags: list[str] = []

    def add(tag: str) -> None:
        if tag and tag not in tags:
            tags.append(tag)

    for t in _as_list(card.get("library_name")):
        add(t)
    if any(p.endswith(".safetensors") for p in paths):
        add("safetensors")
    for t in _as_list(card.get("tags")):
        add(t)
    if isinstance(card.get("pipeline_tag"), str):
        add(card["pipeline_tag"])
    for lang in _as_list(card.get("language")):
        add(lang)
    relation = base_model_relation(card)
    for base in base_models(card):
        add(f"base_model:{base}")
        if relation:
            add(f"base_model:{relation}:{base}")
    for dataset in _as_list(card.get("datasets")):
        add(f"dataset:{dataset}")
    for lic in _as_list(card.get("license")):
        add(f"license:{lic}")
    add("region:us")
    return tags
