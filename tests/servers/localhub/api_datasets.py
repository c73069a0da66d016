"""The dataset parquet listing: ``/api/datasets/{id}/parquet[/{config}[/{split}]]``.

On the Hub this endpoint lists the parquet files of each config and split (its own converted
copies under ``refs/convert/parquet``). Here a dataset whose files are already parquet is
listed as is: configs and splits come from the card's ``configs`` block (``data_files`` with
``split`` and ``path`` globs) or, without one, one ``default`` config whose ``train`` split is
every ``*.parquet`` file. URLs are ``resolve`` URLs pinned to the current commit, so a client
reading them sees one consistent version even while the dataset is being republished.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from .api_read import card_of
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _configs(card: dict[str, Any], paths: list[str]) -> dict[str, dict[str, list[str]]]:
    """config → split → sorted file paths, as the card's ``configs`` block declares them."""
    parquet = sorted(p for p in paths if p.endswith(".parquet"))
    declared = card.get("configs")
    if not isinstance(declared, list) or not declared:
        return {"default": {"train": parquet}} if parquet else {}
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in declared:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            continue
        files = cfg.get("data_files")
        specs: list[tuple[str, list[str]]] = []
        if isinstance(files, list):
            for item in files:
                if isinstance(item, dict):
                    specs.append((str(item.get("split") or "train"), _as_list(item.get("path"))))
                else:
                    specs.append(("train", _as_list(item)))
        elif isinstance(files, dict):
            specs = [(str(k), _as_list(v)) for k, v in files.items()]
        elif files is not None:
            specs = [("train", _as_list(files))]
        splits: dict[str, list[str]] = {}
        for split, globs in specs:
            matched = {p for p in parquet for g in globs if fnmatchcase(p, g)}
            splits.setdefault(split, [])
            splits[split] = sorted(set(splits[split]) | matched)
        out[cfg["config_name"]] = splits
    return out


def parquet(
    app: HubApp, req: Request, repo: str, config: str | None = None, split: str | None = None
) -> Response:
    with app.store.lock:
        r = app.downloadable_repo(req, "dataset", unquote(repo))
        commit = r.head()
        configs = _configs(card_of(app, commit), sorted(commit.files))
    if not configs:
        raise HubError(404, f"{r.id} has no parquet files", code="EntryNotFound")

    def url(path: str) -> str:
        return f"{req.base_url}/datasets/{r.id}/resolve/{commit.oid}/{quote(path)}"

    if config is None:
        return json_response(
            {c: {s: [url(p) for p in ps] for s, ps in splits.items()} for c, splits in configs.items()}
        )
    if config not in configs:
        raise HubError(404, f"config {config!r} not found; configs: {sorted(configs)}")
    if split is None:
        return json_response({s: [url(p) for p in ps] for s, ps in configs[config].items()})
    if split not in configs[config]:
        raise HubError(404, f"split {split!r} not found in config {config!r}")
    return json_response([url(p) for p in configs[config][split]])


ROUTES = [
    Route(
        ("GET",),
        r"/api/datasets/(?P<repo>[^/]+/[^/]+)/parquet(?:/(?P<config>[^/]+)(?:/(?P<split>[^/]+))?)?",
        parquet,
        "dataset-parquet",
    ),
]
