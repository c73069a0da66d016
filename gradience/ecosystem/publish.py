"""Publishing the dataset folder: one atomic commit per crawl, guarded by ``parent_commit``.

All files (card and both tables) go in a single ``create_commit``: the Hub switches from the
previous version to the new one at once, and an interrupted upload leaves the previous version
untouched because nothing is committed until every file is uploaded. ``parent_commit`` makes a
concurrent writer's commit fail this one instead of being silently overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradience.errors import HubTransferError, UsageError

TABLE_DIRS = ("adapters", "layers")


def publish(
    folder: Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    message: str | None = None,
    delete_prefix: str | None = None,
) -> dict[str, Any]:
    """Commit ``folder``'s card and parquet files to the dataset repo; returns the new commit.

    ``delete_prefix`` also deletes every remote file under it in the same commit (a fan-out's
    staged shards: merged and cleaned up at once).

    Raises:
        UsageError: the folder is not a dataset folder.
        HubTransferError: someone else committed to the repo meanwhile (rerun to publish on
            top of their version), or the Hub kept failing.
        HubAccessError: the token may not write there.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from gradience.hub.errors import translate

    files = sorted(
        p.relative_to(folder).as_posix() for d in TABLE_DIRS for p in (folder / d).glob("*.parquet")
    )
    if not (folder / "README.md").is_file() or not files:
        raise UsageError(
            f"{folder} is not a dataset folder (README.md and adapters/*.parquet)", param="dataset"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset", files_metadata=False)
        parent = info.sha
        remote = [s.rfilename for s in info.siblings or []]
        stale = [
            f
            for f in remote
            if (f.split("/", 1)[0] in TABLE_DIRS and f.endswith(".parquet") and f not in files)
            or (delete_prefix and f.startswith(delete_prefix))
        ]
        ops: list[Any] = [
            CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in ["README.md", *files]
        ]
        ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        commit = api.create_commit(
            repo_id,
            repo_type="dataset",
            operations=ops,
            commit_message=message or "Update the ecosystem dataset",
            parent_commit=parent,
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        if status in (409, 412):
            raise HubTransferError(
                f"{repo_id} changed while publishing (another writer committed); nothing was published",
                repo_id=repo_id,
            ) from e
        raise translate(e, repo_id, "dataset") or e from e
    return {
        "repo_id": repo_id,
        "commit": commit.oid,
        "parent": parent,
        "files": len(files) + 1,
        "deleted": len(stale),
    }
