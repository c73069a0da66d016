"""Training telemetry as JSON Lines: the v1 event schema (the one 0.11 writes) and the flat format.

A v1 line is ``{"schema": "gradience.vnext.telemetry/v1", "ts", "run_id", "event", "step", ...}``
with the event's payload beside those keys (see ``docs/monitor.md``). A *flat* line is one
training step, ``{"step", "train_loss" | "loss", "grad_norm", "lr", "val_loss" | "eval_loss"}``,
the shape many loggers already write; the reader turns it into the same events.

Why the reader never raises on a bad line: telemetry comes from training jobs that get killed,
resumed and appended to, so a torn last line or a stray ``print`` must cost one reported line
(with its number), not the whole analysis. Unknown events and fields are kept untouched, so a
newer writer's files still replay.

Why non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``:
a diverged loss is worth recording, and bare ``NaN`` is not JSON. The reader accepts both the
strings and the bare tokens that 0.11 and Python's ``json`` write.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gradience.errors import TelemetryError

__all__ = [
    "EVENTS",
    "SCHEMA",
    "LineIssue",
    "Record",
    "Telemetry",
    "TelemetryWriter",
    "as_number",
    "iter_records",
    "parse_line",
    "read_telemetry",
]

SCHEMA = "gradience.vnext.telemetry/v1"
#: The events the v1 schema defines; others are kept and passed through.
EVENTS = ("run_start", "train_step", "eval", "metrics", "alert", "recommendation", "run_end")

#: Flat-format keys, first match wins: training loss, eval loss, learning rate.
FLAT_LOSS = ("train_loss", "loss")
FLAT_EVAL = ("val_loss", "eval_loss")
FLAT_LR = ("lr", "learning_rate")
_FLAT_KEYS = (*FLAT_LOSS, *FLAT_EVAL, *FLAT_LR, "grad_norm")

#: Numeric fields checked per event (a bad value is reported; the record is kept).
_NUMERIC = {"train_step": ("loss", "grad_norm")}
_NONFINITE = {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
              "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}  # fmt: skip


def as_number(x: Any) -> float | None:
    """A telemetry value as a float, or None when it is missing or not a number.

    Accepts ints, floats (NaN and ±inf included), 0-d tensors / numpy scalars (via ``item``),
    and the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``. Booleans are not numbers.
    """
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        return _NONFINITE.get(x.strip().lower())
    item = getattr(x, "item", None)
    if callable(item):
        try:
            return as_number(item())
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


@dataclass(frozen=True)
class Record:
    """One telemetry event, as read (or about to be written).

    Attributes:
        event: the event name (``train_step``, ``eval``, ``metrics``, ... or an unknown one).
        step: the training step, or None (``run_start`` / ``run_end`` carry none).
        data: the whole record, unknown fields included.
        line: 1-based line number in the file; 0 when the record did not come from a file.
        format: ``"v1"`` or ``"flat"``.
    """

    event: str
    step: int | None
    data: Mapping[str, Any]
    line: int = 0
    format: str = "v1"

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def number(self, key: str) -> float | None:
        """A numeric field as float (None when missing or not a number)."""
        return as_number(self.data.get(key))

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The ``metrics`` mapping of an ``eval`` or ``metrics`` record ({} otherwise)."""
        m = self.data.get("metrics")
        return m if isinstance(m, Mapping) else {}

    @property
    def kind(self) -> str | None:
        k = self.data.get("kind")
        return k if isinstance(k, str) else None


@dataclass(frozen=True)
class LineIssue:
    """A line the reader could not use (or could only partly use), with its 1-based number."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass(frozen=True)
class Telemetry:
    """A whole telemetry file: its records in file order and the issues found reading it.

    Attributes:
        path: the file read (None for records built in memory).
        records: usable records, in file order.
        issues: malformed or partly malformed lines, in file order.
    """

    path: str | None
    records: tuple[Record, ...]
    issues: tuple[LineIssue, ...] = ()

    def events(self, name: str) -> list[Record]:
        return [r for r in self.records if r.event == name]

    def count(self, name: str) -> int:
        return sum(1 for r in self.records if r.event == name)

    @property
    def formats(self) -> set[str]:
        return {r.format for r in self.records}


# ---------------------------------------------------------------------------------- reading


def parse_line(text: str, line: int = 0) -> tuple[list[Record], list[LineIssue]]:
    """Parse one JSONL line into records (a flat line may give a step and an eval) and issues.

    Never raises: whatever is wrong with the line comes back as a :class:`LineIssue`.
    """
    text = text.strip()
    if not text:
        return [], []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [LineIssue(line, f"not valid JSON ({e.msg} at column {e.colno})")]
    except RecursionError:
        return [], [LineIssue(line, "not valid JSON (nested too deeply)")]
    if not isinstance(obj, dict):
        return [], [LineIssue(line, f"expected a JSON object, got {type(obj).__name__}")]
    if "event" in obj:
        return _parse_v1(obj, line)
    return _parse_flat(obj, line)


def _step(value: Any) -> tuple[int | None, bool]:
    """(step, ok): ints, integral floats and null are steps; anything else is not."""
    if value is None:
        return None, True
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int):
        return value, True
    if isinstance(value, float) and value.is_integer():
        return int(value), True
    return None, False


def _parse_v1(obj: dict[str, Any], line: int) -> tuple[list[Record], list[LineIssue]]:
    issues: list[LineIssue] = []
    event = obj["event"]
    if not isinstance(event, str) or not event:
        return [], [LineIssue(line, "'event' must be a non-empty string")]
    schema = obj.get("schema")
    if schema is not None and schema != SCHEMA:
        issues.append(LineIssue(line, f"unknown schema {schema!r}; read as {SCHEMA} (kept)"))
    step, ok = _step(obj.get("step"))
    if not ok:
        return [], [
            *issues,
            LineIssue(line, f"{event}: 'step' must be an integer or null, got {obj['step']!r}"),
        ]
    if event in ("eval", "metrics") and not isinstance(obj.get("metrics"), dict):
        return [], [*issues, LineIssue(line, f"{event}: 'metrics' must be an object")]
    for key in _NUMERIC.get(event, ()):
        value = obj.get(key)
        if value is not None and as_number(value) is None:
            issues.append(LineIssue(line, f"{event}: {key!r} is not a number ({value!r}); ignored"))
    return [Record(event, step, obj, line, "v1")], issues


def _parse_flat(obj: dict[str, Any], line: int) -> tuple[list[Record], list[LineIssue]]:
    present = [k for k in _FLAT_KEYS if k in obj]
    if not present:
        return [], [
            LineIssue(
                line,
                "neither a v1 event (no 'event' field) nor a flat step record "
                "(no train_loss, loss, grad_norm, lr, val_loss or eval_loss)",
            )
        ]
    step, ok = _step(obj.get("step"))
    if not ok or step is None:
        return [], [LineIssue(line, f"flat record: 'step' must be an integer, got {obj.get('step')!r}")]
    issues = [
        LineIssue(line, f"flat record: {k!r} is not a number ({obj[k]!r}); ignored")
        for k in present
        if obj[k] is not None and as_number(obj[k]) is None
    ]
    records: list[Record] = []
    loss_key = next((k for k in FLAT_LOSS if k in obj), None)
    lr_key = next((k for k in FLAT_LR if k in obj), None)
    if loss_key or "grad_norm" in obj or lr_key:
        data = {k: v for k, v in obj.items() if k not in FLAT_EVAL}
        data.update(event="train_step", step=step)
        if loss_key:
            data["loss"] = obj[loss_key]
        if lr_key:
            data["lr"] = obj[lr_key]
        records.append(Record("train_step", step, data, line, "flat"))
    eval_key = next((k for k in FLAT_EVAL if k in obj), None)
    if eval_key:
        data = {"event": "eval", "step": step, "split": "eval", "metrics": {"loss": obj[eval_key]}}
        records.append(Record("eval", step, data, line, "flat"))
    return records, issues


def _open(path: str | Path) -> IO[bytes]:
    p = Path(path)
    if not p.exists():
        raise TelemetryError("no such telemetry file", path=p)
    if p.is_dir():
        raise TelemetryError("expected a telemetry .jsonl file, got a folder", path=p)
    try:
        return p.open("rb")
    except OSError as e:
        raise TelemetryError(f"cannot read: {e.strerror or e}", path=p) from e


def iter_records(
    path: str | Path, *, on_issue: Callable[[LineIssue], None] | None = None
) -> Iterator[Record]:
    """Stream the records of a telemetry file (memory stays flat in file size).

    Args:
        path: a ``.jsonl`` file in the v1 or flat format (both may be mixed).
        on_issue: called with each :class:`LineIssue`; issues are dropped when None.

    Raises:
        TelemetryError: the file does not exist or cannot be opened.
    """
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if on_issue:
                    on_issue(LineIssue(number, "not UTF-8 text"))
                continue
            records, issues = parse_line(text, number)
            if on_issue:
                for issue in issues:
                    on_issue(issue)
            yield from records


def read_telemetry(path: str | Path, *, strict: bool = False) -> Telemetry:
    """Read a whole telemetry file.

    Args:
        path: a ``.jsonl`` file in the v1 or flat format.
        strict: raise on the first malformed line instead of reporting it.

    Returns:
        A :class:`Telemetry` with the usable records and the issues (line numbers included).

    Raises:
        TelemetryError: the file is missing, or (``strict``) a line is malformed.

    Example:
        >>> t = read_telemetry("run/telemetry.jsonl")  # doctest: +SKIP
        >>> t.count("train_step"), [str(i) for i in t.issues]  # doctest: +SKIP
        (1200, ['line 1201: not valid JSON (Unterminated string ...)'])
    """
    issues: list[LineIssue] = []

    def note(issue: LineIssue) -> None:
        if strict:
            raise TelemetryError(str(issue), path=path)
        issues.append(issue)

    records = tuple(iter_records(path, on_issue=note))
    return Telemetry(str(path), records, tuple(issues))


# ---------------------------------------------------------------------------------- writing


def _jsonable(x: Any) -> Any:
    """Plain JSON values: non-finite floats become strings, tensors and numpy scalars numbers."""
    if x is None or isinstance(x, bool | str):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    to_dict = getattr(x, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    tolist = getattr(x, "tolist", None)  # numpy scalars/arrays, tensors
    if callable(tolist):
        try:
            return _jsonable(tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(x)


@dataclass
class TelemetryWriter:
    """Append v1 telemetry events to a JSONL file, one flushed line per event.

    Why flushed per line: a killed job should leave every event it logged readable.

    Args:
        path: the ``.jsonl`` file (parent folders are created).
        run_id: identifies the run in every line (a random UUID by default).
        append: add to an existing file instead of replacing it (resumed runs).

    Example:
        >>> with TelemetryWriter("run.jsonl") as w:  # doctest: +SKIP
        ...     w.run_start(config={"lr": 1e-3})
        ...     w.train_step(1, loss=2.3, grad_norm=1.1, lr=1e-3)
        ...     w.eval(1, {"loss": 2.4})
    """

    path: str | Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    append: bool = False
    _file: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._file = p.open("a" if self.append else "w", encoding="utf-8")

    def log(self, event: str, *, step: int | None = None, **payload: Any) -> dict[str, Any]:
        """Write one event; returns the record as written."""
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "ts": round(time.time(), 3),
            "run_id": self.run_id,
            "event": event,
            "step": None if step is None else int(step),
        }
        record.update({k: _jsonable(v) for k, v in payload.items()})
        if self._file is None or self._file.closed:
            raise TelemetryError("telemetry writer is closed", path=self.path)
        self._file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()
        return record

    def run_start(
        self, config: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None
    ) -> None:
        self.log("run_start", config=dict(config or {}), meta=dict(meta or {}))

    def train_step(
        self,
        step: int,
        *,
        loss: Any = None,
        lr: Any = None,
        grad_norm: Any = None,
        epoch: Any = None,
        **extras: Any,
    ) -> None:
        """A training step; fields left as None are omitted (as 0.11 does)."""
        payload = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "epoch": epoch, **extras}
        self.log("train_step", step=step, **{k: v for k, v in payload.items() if v is not None})

    def eval(
        self, step: int | None, metrics: Mapping[str, Any], *, split: str = "eval", **extras: Any
    ) -> None:
        self.log("eval", step=step, split=split, metrics=dict(metrics), **extras)

    def metrics(self, step: int | None, kind: str, metrics: Mapping[str, Any], **extras: Any) -> None:
        self.log("metrics", step=step, kind=kind, metrics=dict(metrics), **extras)

    def alert(
        self,
        *,
        step: int | None,
        severity: str,
        code: str,
        message: str,
        context: Mapping[str, Any] | None = None,
        **extras: Any,
    ) -> None:
        self.log("alert", step=step, severity=severity, code=code, message=message,
                 context=dict(context or {}), **extras)  # fmt: skip

    def run_end(self, status: str = "ok", reason: str | None = None, **extras: Any) -> None:
        payload = {"status": status, **({"reason": reason} if reason else {}), **extras}
        self.log("run_end", **payload)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._file is None or self._file.closed

    def __enter__(self) -> TelemetryWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.closed:
            if exc is not None:
                self.run_end("error", reason=f"{exc_type.__name__}: {exc}"[:500])
            self.close()


def records_from(items: Iterable[Record | Mapping[str, Any]]) -> Iterator[Record]:
    """Records from in-memory dicts (v1 or flat) or records, for replaying without a file."""
    for i, item in enumerate(items, start=1):
        if isinstance(item, Record):
            yield item
            continue
        recs, issues = parse_line(json.dumps(_jsonable(dict(item))), i)
        if issues and not recs:
            raise TelemetryError(f"record {i}: {issues[0].message}")
        yield from recs
