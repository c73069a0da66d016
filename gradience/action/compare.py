"""One result per adapter: both sides audited, compared with :func:`gradience.diff.diff`, the
head checked against the rules, and any side that could not be read kept as a typed error.

The comparison itself is ``gradience.diff``'s; this module only decides what each side is (a
folder at a commit, a Hub revision, or absent) and turns a side that fails to open into an
``unreadable`` result instead of an aborted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradience.errors import GradienceError, HubOIDCError

if TYPE_CHECKING:
    from gradience.diff import AuditDiff, Rules
    from gradience.open import OpenOptions

#: Statuses shown in the comment, in the order rows are sorted.
STATUSES = ("unreadable", "added", "changed", "removed", "unchanged")


@dataclass
class AdapterResult:
    """What the run learned about one adapter.

    Attributes:
        name: the folder in the repository, or ``owner/repo@rev`` for a Hub adapter.
        kind: ``git`` or ``hub``.
        status: ``added``, ``removed``, ``changed``, ``unchanged`` or ``unreadable``.
        config_path: the ``adapter_config.json`` annotations point at (git adapters).
        diff: the :class:`~gradience.diff.AuditDiff`, None when the head could not be read.
        error: ``GradienceError.to_dict()`` of the side that failed, with ``side``.
        violations: the rules the head breaks, as dicts (``rule``, ``severity``, ``message``...).
    """

    name: str
    kind: str
    status: str
    config_path: str | None = None
    base_label: str | None = None
    head_label: str | None = None
    diff: AuditDiff | None = None
    error: dict[str, Any] | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> dict[str, Any] | None:
        return self.diff.base if self.diff else None

    @property
    def head(self) -> dict[str, Any] | None:
        return self.diff.head if self.diff else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "config_path": self.config_path,
            "base": self.base_label,
            "head": self.head_label,
            "error": self.error,
            "violations": self.violations,
            "diff": self.diff.to_dict() if self.diff else None,
        }


def _audit(source: str | Path, policy: str, options: OpenOptions | None, label: str) -> dict[str, Any]:
    from gradience.auditor import audit

    d = audit(source, policy=policy, options=options).to_dict(layers=True)
    if isinstance(source, Path):  # a temporary export: name it by repository path and commit
        d["source"] = {"path": label}
    return d


def compare(
    name: str,
    *,
    kind: str,
    base: str | Path | None,
    head: str | Path | None,
    base_label: str | None,
    head_label: str | None,
    policy: str,
    rules: Rules,
    options: OpenOptions | None = None,
    config_path: str | None = None,
) -> AdapterResult:
    """Audit ``base`` and ``head`` (either may be None: absent on that side) and diff them."""
    from gradience.diff import diff

    result = AdapterResult(name, kind, "unchanged", config_path, base_label, head_label)
    sides: dict[str, dict[str, Any] | None] = {"base": None, "head": None}
    for side, src, label in (("base", base, base_label), ("head", head, head_label)):
        if src is None:
            continue
        try:
            sides[side] = _audit(src, policy, options, label or str(src))
        except HubOIDCError:
            raise  # the job's Hub login, not this adapter: the run stops with it
        except GradienceError as e:
            result.error = {**e.to_dict(), "side": side, "message": _relabel(str(e), src, label)}
    if result.error and result.error["side"] == "head":
        result.status = "unreadable"
        result.violations = [
            {"rule": "readable", "scope": "adapter", "layer": None, "severity": "error",
             "message": f"cannot read the adapter: {result.error['message']}",
             "value": result.error["code"], "limit": None}
        ]  # fmt: skip
        return result
    if sides["base"] is None and sides["head"] is None:
        result.status = "unreadable"  # the base failed and there is no head: nothing to show
        return result
    d = diff(sides["base"], sides["head"], policy=policy, rules=rules)
    result.diff = d
    result.violations = [v.to_dict() for v in d.violations]
    # a base that could not be read is still a change, not an addition
    result.status = "changed" if result.error and d.status == "added" else d.status
    return result


def _relabel(message: str, src: str | Path, label: str | None) -> str:
    """Errors about a temporary export name the repository path instead of the temp folder."""
    return message.replace(str(src), label) if label and isinstance(src, Path) else message
