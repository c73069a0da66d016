"""``adapter_config.json`` → a typed, validated config, and PEFT's per-module rules.

The scale of a layer's update (α/r or α/√r) and its nominal rank come from here; getting
``rank_pattern`` / ``alpha_pattern`` matching exactly as PEFT does is what makes rank
suggestions drop straight into ``LoraConfig(rank_pattern=...)``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience.errors import ConfigError, LfsPointerError, UnsupportedAdapterError

__all__ = ["SUPPORTED_TYPES", "AdapterConfig", "exact_pattern", "match_pattern_key"]

SUPPORTED_TYPES = ("LORA", "ADALORA")


def match_pattern_key(pattern_keys: list[str], module_name: str) -> str | None:
    """The first key PEFT would apply to ``module_name``, or None.

    PEFT treats each key as a regex anchored at the end of the module name and starting
    on a module-path boundary: ``(.*\\.)?{key}$`` — so ``q_proj`` never matches ``qq_proj``.
    """
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of a PEFT adapter config that decide how each update is scaled.

    Attributes:
        peft_type: ``LORA`` or ``ADALORA``.
        r: default nominal rank (AdaLoRA: ``init_r``).
        lora_alpha: default α.
        use_rslora: scale by α/√r instead of α/r.
        use_dora: DoRA magnitude vectors are expected.
        rank_pattern / alpha_pattern: per-module overrides, keys are PEFT regexes.
        raw: the config as read, kept so that compression can write it back faithfully.
    """

    peft_type: str
    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: list[str] | str | None = None
    base_model: str | None = None
    task_type: str | None = None
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: str | Path) -> AdapterConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError("adapter_config.json is not UTF-8 text", path=path) from e
        if text.startswith("version https://git-lfs"):
            raise LfsPointerError(
                "adapter_config.json is a Git LFS pointer; fetch the real file (git lfs pull)", path=path
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"adapter_config.json is not valid JSON (line {e.lineno}: {e.msg})", path=path
            ) from e
        return cls.from_dict(data, path=path)

    @classmethod
    def from_dict(cls, data: Any, *, path: str | Path | None = None) -> AdapterConfig:
        if not isinstance(data, dict):
            raise ConfigError("adapter_config.json must hold a JSON object", path=path)
        peft_type = str(data.get("peft_type") or "LORA").upper()
        if peft_type not in SUPPORTED_TYPES:
            raise UnsupportedAdapterError(
                f"unsupported adapter type {peft_type}: Gradience audits low-rank updates "
                f"({', '.join(SUPPORTED_TYPES)}, including DoRA)",
                path=path,
            )
        r = data.get("init_r") if peft_type == "ADALORA" and data.get("init_r") else data.get("r", 8)
        alpha = data.get("lora_alpha", 8)
        if not _is_int(r) or r < 1:
            raise ConfigError(f"'r' must be a positive integer, got {r!r}", path=path)
        if not _is_number(alpha):
            raise ConfigError(f"'lora_alpha' must be a number, got {alpha!r}", path=path)
        rank_pattern = _pattern(data, "rank_pattern", path, positive_int=True)
        alpha_pattern = _pattern(data, "alpha_pattern", path, positive_int=False)
        targets = data.get("target_modules")
        mts = data.get("modules_to_save")
        return cls(
            peft_type=peft_type,
            r=int(r),
            lora_alpha=float(alpha),
            use_rslora=bool(data.get("use_rslora", False)),
            use_dora=bool(data.get("use_dora", False)),
            rank_pattern={k: int(v) for k, v in rank_pattern.items()},
            alpha_pattern={k: float(v) for k, v in alpha_pattern.items()},
            target_modules=targets if _is_str_or_strs(targets) else None,
            base_model=_str_or_none(data.get("base_model_name_or_path")),
            task_type=_str_or_none(data.get("task_type")),
            modules_to_save=list(mts) if isinstance(mts, list) else None,
            fan_in_fan_out=bool(data.get("fan_in_fan_out", False)),
            raw=dict(data),
        )

    def rank_for(self, module_name: str) -> int:
        key = match_pattern_key(list(self.rank_pattern), module_name)
        return self.rank_pattern[key] if key is not None else self.r

    def alpha_for(self, module_name: str) -> float:
        key = match_pattern_key(list(self.alpha_pattern), module_name)
        return self.alpha_pattern[key] if key is not None else self.lora_alpha

    def scale(self, alpha: float, r: int) -> float:
        """The factor s in ΔW = s·B·A for a layer of rank ``r`` with ``alpha``."""
        if self.peft_type == "ADALORA":
            # PEFT divides by (ranknum + 1e-5) with ranknum = r.
            return (alpha if alpha > 0 else float(r)) / (r + 1e-5)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _pattern(data: dict, name: str, path, *, positive_int: bool) -> dict[str, Any]:
    value = data.get(name)
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(f"'{name}' must be an object mapping module patterns to values", path=path)
    for key, v in value.items():
        ok = (_is_int(v) and v >= 1) if positive_int else _is_number(v)
        if not ok:
            raise ConfigError(f"'{name}' entry {key!r} has an invalid value {v!r}", path=path)
        try:
            re.compile(key)
        except re.error as e:
            raise ConfigError(f"'{name}' key {key!r} is not a valid pattern ({e})", path=path) from e
    return value


def exact_pattern(pattern: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A ``rank_pattern`` / ``alpha_pattern`` keyed by module names that PEFT applies to
    exactly those modules: a name is kept readable unless PEFT's regex matching would also
    apply it to another of ``names``, in which case it is escaped."""
    out = {}
    for key, k in pattern.items():
        leaf = key.rsplit(".", 1)[-1]  # a regex match must end with the key's last segment
        hits = [n for n in names if n.endswith(leaf) and match_pattern_key([key], n) is not None]
        out[key if hits == [key] else re.escape(key)] = k
    return out


def _str_or_none(x: Any) -> str | None:
    """Informational string fields (base model, task type): anything but a non-empty string
    is treated as absent, so reports keep their documented types whatever a config holds."""
    return x if isinstance(x, str) and x else None


def _is_str_or_strs(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, list) and all(isinstance(t, str) for t in x))
