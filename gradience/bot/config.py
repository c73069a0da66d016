"""The bot's settings: a TOML file for what an operator edits, the environment for secrets.

Secrets (the bot's Hub token, the webhook secret) come only from the environment, so a config
file can be committed or shown without leaking them; ``repr`` never prints them either.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience.errors import UsageError

__all__ = ["BotConfig", "load_config"]


@dataclass(frozen=True)
class BotConfig:
    """What the bot does and how fast.

    Attributes:
        host / port: where the receiver listens.
        state: the SQLite file holding deliveries, PRs, comments and audited commits.
        token: the bot's Hub token (``HF_TOKEN``); never logged.
        secret: the webhook secret (``GRADIENCE_WEBHOOK_SECRET``); deliveries without it
            are refused.
        handle: the bot's Hub user name, for mentions (default: asked from the Hub).
        repos: repos the operator opted in besides those tagged ``gradience``.
        link: where badges link (default: the Gradience Space).
        repo_interval: seconds between two actions on the same repo.
        global_per_minute: actions per minute across all repos.
        max_attempts: tries before a job is marked failed (429s do not count).
        max_bytes: LoRA bytes one audit may fetch.
        dataset: the published ecosystem dataset (a folder or a Hub dataset repo id); when
            set, badges add the adapter's percentile among public adapters of the same r.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    state: Path = Path("gradience-bot.sqlite")
    token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    handle: str | None = None
    repos: tuple[str, ...] = ()
    link: str | None = None
    repo_interval: float = 10.0
    global_per_minute: int = 30
    max_attempts: int = 5
    max_bytes: int = 512 * 1024**2
    dataset: str | None = None

    def replace(self, **changes: Any) -> BotConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_FIELDS = {f.name: f for f in dataclasses.fields(BotConfig)}
_SECRET_KEYS = {"token", "secret"}


def load_config(path: str | Path | None = None, **overrides: Any) -> BotConfig:
    """Settings from ``path`` (TOML, optional), then the environment, then ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"bot config {p} not found", path=p, param="config") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"bot config is not valid TOML ({e})", path=p, param="config") from None
        data = data.get("bot", data)
        for key, value in data.items():
            if key in _SECRET_KEYS:
                raise UsageError(
                    f"the bot config must not hold {key!r}: secrets come from the environment "
                    "(HF_TOKEN, GRADIENCE_WEBHOOK_SECRET)",
                    path=p,
                    param=key,
                )
            if key not in _FIELDS:
                raise UsageError(f"unknown bot setting {key!r}; known: {', '.join(sorted(_FIELDS))}", path=p)
            values[key] = tuple(value) if key == "repos" else Path(value) if key == "state" else value
    values["token"] = os.environ.get("HF_TOKEN") or None
    values["secret"] = os.environ.get("GRADIENCE_WEBHOOK_SECRET") or None
    return BotConfig(**values).replace(**overrides)
