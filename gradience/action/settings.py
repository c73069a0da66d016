"""The Action's inputs, from command-line flags or from ``INPUT_*`` variables.

``action.yml`` hands every input to the runtime through ``env`` (a composite action never
expands ``${{ }}`` inside a script, which keeps inputs out of the shell), so each setting is
read from a flag first, then from ``INPUT_<NAME>`` (upper case, ``-`` → ``_``; GitHub's own
``INPUT_FAIL-ON`` spelling is read too), then its default. An empty input means "not set", as on a runner where an omitted input is ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience.errors import UsageError

COMMENT_MODES = ("sticky", "new", "off")
FAIL_ON = ("none", "warning", "error")
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class HubSpec:
    """A Hub adapter to audit on every run: ``repo[@head]`` or ``repo@base..head``."""

    repo_id: str
    head: str
    base: str | None

    @classmethod
    def parse(cls, text: str) -> HubSpec:
        repo, _, rev = text.partition("@")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise UsageError(f"cannot read Hub repo {text!r}; write owner/name[@rev] or owner/name@base..head",
                             param="hub_repos")  # fmt: skip
        base, dots, head = rev.partition("..")
        if not dots:
            return cls(repo, rev or "main", None)
        if not base or not head:
            raise UsageError(
                f"cannot read Hub range in {text!r}; write owner/name@base..head", param="hub_repos"
            )
        return cls(repo, head, base)

    @property
    def name(self) -> str:
        return f"{self.repo_id}@{self.head}"


@dataclass(frozen=True)
class Settings:
    """What one run does. See ``docs/action.md`` for each input."""

    paths: tuple[str, ...] = ()
    hub_repos: tuple[HubSpec, ...] = ()
    fail_on: str = "error"
    min_utilization: float | None = None
    max_rank_ratio: float | None = None
    forbid_flags: tuple[str, ...] = ()
    comment: str = "sticky"
    comment_scope: str = "default"
    skip_unchanged: bool = False
    merge_pairs: tuple[tuple[str, str], ...] = ()
    policy: str = "energy@0.9"
    report: Path | None = None
    allow_untrusted: bool = False
    bench: bool = False
    bench_flavor: str = "a10g-small"
    bench_timeout: str = "45m"
    bench_config: str | None = None
    bench_namespace: str | None = None
    bench_image: str | None = None

    def rules(self) -> Any:
        from gradience.diff import Rules

        return Rules(
            min_utilization=self.min_utilization,
            max_rank_ratio=self.max_rank_ratio,
            forbid_flags=self.forbid_flags,
        )


def _split(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in re.split(r"[,\n]", text) if x.strip())


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{name.replace('_', '-')} must be a number, got {text!r}", param=name) from None


def _bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f"{name.replace('_', '-')} must be true or false, got {text!r}", param=name)


def _choice(name: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise UsageError(
            f"{name.replace('_', '-')} must be one of {', '.join(choices)}, got {text!r}", param=name
        )
    return text


def input_env(env: Mapping[str, str], name: str) -> str | None:
    """An input from the environment: ``INPUT_FAIL_ON`` (what ``action.yml`` sets) or
    ``INPUT_FAIL-ON`` (GitHub's own spelling for JavaScript and container actions); empty = unset."""
    for key in (f"INPUT_{name.upper()}", f"INPUT_{name.upper().replace('_', '-')}"):
        if env.get(key):
            return env[key]
    return None


def resolve(flags: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Settings from parsed flags (None = not given) over ``INPUT_*`` variables over defaults."""

    def raw(name: str) -> str | None:
        v = flags.get(name)
        if v is not None:
            return v if isinstance(v, str) else str(v)
        return input_env(env, name)

    d: dict[str, Any] = {}
    if (v := raw("paths")) is not None:
        d["paths"] = _split(v)
    if (v := raw("hub_repos")) is not None:
        d["hub_repos"] = tuple(HubSpec.parse(x) for x in _split(v))
    if (v := raw("fail_on")) is not None:
        d["fail_on"] = _choice("fail_on", v.strip(), FAIL_ON)
    for name in ("min_utilization", "max_rank_ratio"):
        if (v := raw(name)) is not None:
            d[name] = _number(name, v)
    if (v := raw("forbid_flags")) is not None:
        d["forbid_flags"] = _split(v)
    if (v := raw("comment")) is not None:
        d["comment"] = _choice("comment", v.strip(), COMMENT_MODES)
    if (v := raw("comment_scope")) is not None:
        if not _SCOPE.fullmatch(v.strip()):
            raise UsageError(f"comment-scope must be 1-64 letters, digits, '.', '_' or '-', got {v!r}",
                             param="comment_scope")  # fmt: skip
        d["comment_scope"] = v.strip()
    for name in ("skip_unchanged", "allow_untrusted", "bench"):
        if (v := raw(name)) is not None:
            d[name] = _bool(name, v)
    if (v := raw("merge_pairs")) is not None:
        pairs = []
        for item in _split(v):
            a, sep, b = item.partition(":")
            if not sep or not a.strip() or not b.strip():
                raise UsageError(f"cannot read merge pair {item!r}; write A:B", param="merge_pairs")
            pairs.append((a.strip().strip("/"), b.strip().strip("/")))
        d["merge_pairs"] = tuple(pairs)
    if (v := raw("policy")) is not None:
        d["policy"] = v.strip()
    if (v := raw("report")) is not None:
        d["report"] = Path(v)
    for name in ("bench_flavor", "bench_timeout", "bench_config", "bench_namespace", "bench_image"):
        if (v := raw(name)) is not None:
            d[name] = v.strip()
    if d.get("bench"):
        if not d.get("bench_timeout", Settings.bench_timeout):
            raise UsageError("a bench needs a timeout, e.g. 45m", param="bench_timeout")
        try:
            from gradience.bench.jobs import parse_timeout
        except ImportError:  # an install without the bench module: run_bench says so
            pass
        else:
            parse_timeout(d.get("bench_timeout", Settings.bench_timeout))
    settings = Settings(**d)
    settings.rules()  # bad flags or thresholds fail here, before any network call
    return settings
