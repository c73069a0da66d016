"""Finding adapters: listing passes over ``list_models(filter="peft")``, then adapter folders.

One listing call with ``expand`` returns, per repo, everything the crawl needs to decide what to
audit (commit sha, last modified, tags, card data, downloads, gated/private, the file list), so
discovery costs one request per page of 1000 repos, not one per repo. Adapter folders come from
the file list (``siblings``: every file, at any depth), so checkpoints and repos holding several
adapters yield one candidate per folder; only when a listing omits the files is the repo's tree
listed. Candidates are keyed by (repo, subfolder), and each remembers every pass that found it.

Passes (the study's stratification, plus the full and incremental ones):

- ``all``: every PEFT repo (the default; the dataset's coverage claims refer to it);
- ``families``: per base-model family, most downloaded first;
- ``tasks``: per pipeline tag, for tasks a downloads-first listing under-samples;
- ``ranks`` / ``architectures``: searches for rank extremes and architectures the families miss;
- ``recent``: newest first, stopping at the previous crawl's high-water mark.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gradience.errors import UsageError

EXPAND = [
    "sha", "lastModified", "tags", "cardData", "siblings", "downloads", "gated", "private",
    "pipeline_tag", "library_name", "baseModels",
]  # fmt: skip
CONFIG_NAME = "adapter_config.json"
PASSES = ("all", "families", "tasks", "ranks", "architectures", "recent")

#: family → a regular expression on the base model id (first match wins; order matters).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("llama", r"llama|vicuna|alpaca|tinyllama"),
    ("mistral", r"mistral|mixtral|zephyr"),
    ("qwen", r"qwen"),
    ("gemma", r"gemma"),
    ("phi", r"(^|/)phi"),
    ("gpt2", r"gpt2|distilgpt"),
    ("opt", r"(^|/)opt-"),
    ("bloom", r"bloom"),
    ("falcon", r"falcon"),
    ("gpt-neox", r"pythia|gpt-neox|gpt-j|gpt-neo"),
    ("t5", r"t5|flan"),
    ("bart", r"bart"),
    ("bert", r"bert|electra|deberta"),
    ("vit", r"vit|deit|swin|convnext|dino"),
    ("whisper", r"whisper|wav2vec"),
    ("stable-diffusion", r"stable-diffusion|sdxl|flux"),
)
FAMILY_SEARCHES = ("llama", "mistral", "qwen", "gemma", "phi", "gpt2", "opt", "bloom", "falcon", "t5", "bert")
TASKS = (
    "text-classification", "token-classification", "question-answering", "summarization", "translation",
    "image-classification", "automatic-speech-recognition", "text-to-image", "feature-extraction",
)  # fmt: skip
RANK_SEARCHES = ("r1", "r2", "r128", "r256", "rank")
ARCH_SEARCHES = ("roberta", "deberta", "bart", "vit", "whisper", "falcon", "bloom", "pythia")


def family_of(base_model: str | None) -> str | None:
    """The model family of a base model id (``meta-llama/Llama-3.1-8B`` → ``llama``)."""
    if not base_model:
        return None
    low = base_model.lower()
    for name, pattern in FAMILIES:
        if re.search(pattern, low):
            return name
    return "other"


@dataclass
class Candidate:
    """One adapter folder to audit, with what the listing said about its repo."""

    repo_id: str
    subfolder: str  # "" = repo root
    sha: str | None
    last_modified: str | None
    downloads: int | None = None
    gated: str | None = None  # None, "auto" or "manual"
    private: bool = False
    base_model: str | None = None
    task: str | None = None
    tags: list[str] = field(default_factory=list)
    discovered_by: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, str]:
        return (self.repo_id, self.subfolder)


def _base_model(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    value = card.get("base_model") if card is not None else None
    if isinstance(value, list):
        value = value[0] if value else None
    if value:
        return str(value)
    for tag in getattr(info, "tags", None) or []:
        if tag.startswith("base_model:") and tag.count(":") == 1:
            return tag.split(":", 1)[1]
    return None


def adapter_folders(files: Iterable[str]) -> list[str]:
    """Folders holding an ``adapter_config.json`` ("" for the root), sorted."""
    return sorted(
        {f.rsplit("/", 1)[0] if "/" in f else "" for f in files if f.rsplit("/", 1)[-1] == CONFIG_NAME}
    )


def candidates_of(
    info: Any, pass_name: str, list_files: Callable[[str], list[str]] | None = None
) -> list[Candidate]:
    """The candidates of one listed repo: one per adapter folder, or the root when none.

    A PEFT-tagged repo without any ``adapter_config.json`` still yields its root, so the audit
    records it as ``not_lora`` rather than the repo silently vanishing from coverage.
    """
    siblings = getattr(info, "siblings", None)
    if siblings is None and list_files is not None:
        files = list_files(info.id)
    else:
        files = [s.rfilename for s in siblings or []]
    folders = adapter_folders(files) or [""]
    last = getattr(info, "last_modified", None)
    gated = getattr(info, "gated", None)
    common = {
        "sha": getattr(info, "sha", None),
        "last_modified": last.isoformat() if isinstance(last, datetime) else last,
        "downloads": getattr(info, "downloads", None),
        "gated": gated if isinstance(gated, str) else None,
        "private": bool(getattr(info, "private", False)),
        "base_model": _base_model(info),
        "task": getattr(info, "pipeline_tag", None),
        "tags": list(getattr(info, "tags", None) or []),
    }
    return [Candidate(info.id, sub, discovered_by={pass_name}, **common) for sub in folders]


def parse_passes(spec: str) -> list[str]:
    names = [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in names if p not in PASSES]
    if bad or not names:
        raise UsageError(
            f"unknown discovery pass {bad[0] if bad else spec!r}; choose from {', '.join(PASSES)}",
            param="passes",
        )
    return names


def _listings(api: Any, name: str, per_pass: int, since: str | None) -> Iterator[Any]:
    base: dict[str, Any] = {"filter": "peft", "expand": EXPAND}
    if name == "all":
        yield from api.list_models(**base)
    elif name == "recent":
        for info in api.list_models(**base, sort="last_modified"):
            last = info.last_modified.isoformat() if info.last_modified else None
            if since is not None and last is not None and last <= since:
                return
            yield info
    else:
        searches: Iterable[dict[str, Any]] = {
            "families": ({"search": s} for s in FAMILY_SEARCHES),
            "tasks": ({"pipeline_tag": t} for t in TASKS),
            "ranks": ({"search": s} for s in RANK_SEARCHES),
            "architectures": ({"search": s} for s in ARCH_SEARCHES),
        }[name]
        for extra in searches:
            yield from itertools.islice(api.list_models(**base, **extra, sort="downloads"), per_pass)


def discover(
    api: Any,
    passes: Iterable[str],
    *,
    per_pass: int = 50,
    since: str | None = None,
    keep: Callable[[str], bool] | None = None,
) -> dict[tuple[str, str], Candidate]:
    """Run the passes in order; candidates deduplicated by (repo, subfolder), passes merged.

    ``keep(repo_id)`` filters repos (a shard of the crawl); ``since`` is the ``recent`` pass's
    high-water mark (ISO ``lastModified``).
    """

    def list_files(repo_id: str) -> list[str]:
        return [
            f.path
            for f in api.list_repo_tree(repo_id, recursive=True)
            if getattr(f, "size", None) is not None
        ]

    found: dict[tuple[str, str], Candidate] = {}
    for name in passes:
        for info in _listings(api, name, per_pass, since):
            if keep is not None and not keep(info.id):
                continue
            for c in candidates_of(info, name, list_files):
                if c.key in found:
                    found[c.key].discovered_by.add(name)
                else:
                    found[c.key] = c
    return found
