"""Past one machine: N HF Jobs each crawl a shard, then one merge-and-publish commit.

Each job runs ``gradience crawl --shard i/N --upload-shard REPO --run-id RUN`` (through
``run_uv_job``, so the job's image only needs uv) and commits its two parquet files under
``staging/<run>/`` in the dataset repo. The coordinator waits for every job (labelled with the
run and the shard, with a timeout), downloads the staged shards, merges them into the dataset
folder (rows sorted as a single crawl's), and publishes card + tables in one commit that also
deletes the staging files. If any job fails, nothing is published and the previous version
stays; the staged files of that run are left for inspection.

A job's working folder is ephemeral, so each fan-out run is a full crawl of every shard; the
incremental crawl (state kept between runs) is the single-machine ``gradience crawl``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gradience.errors import HubTransferError, UsageError

STAGING = "staging"
JOB_LABEL = "gradience-ecosystem-crawl"


def upload_shard(
    folder: Path, repo_id: str, run_id: str, shard: tuple[int, int], *, token: Any = None
) -> str:
    """Commit a shard's parquet files to ``staging/<run>/`` of the dataset repo; returns the commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    i, n = shard
    ops = []
    for table in ("adapters", "layers"):
        files = sorted((folder / table).glob("*.parquet"))
        if len(files) != 1:
            raise UsageError(f"{folder / table} should hold one parquet file, not {len(files)}")
        dest = f"{STAGING}/{run_id}/{table}/train-{i:05d}-of-{n:05d}.parquet"
        ops.append(CommitOperationAdd(path_in_repo=dest, path_or_fileobj=str(files[0])))
    info = HfApi(token=token).create_commit(
        repo_id, repo_type="dataset", operations=ops, commit_message=f"Stage shard {i}/{n} of crawl {run_id}"
    )
    return info.oid


def fan_out(
    n: int,
    repo_id: str,
    out: Path,
    *,
    token: Any = None,
    crawl_args: list[str] | None = None,
    image: str | None = None,
    flavor: str | None = None,
    timeout_s: int = 6 * 3600,
    poll_interval: float = 5.0,
) -> dict[str, Any]:
    """Launch ``n`` shard jobs, wait for them, merge their tables into ``out``, publish once."""
    from huggingface_hub import HfApi

    from gradience.ecosystem.publish import publish

    if n < 1:
        raise UsageError("a fan-out needs at least one job", param="fan_out")
    from huggingface_hub import get_token

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    secret = token if isinstance(token, str) else get_token()  # the jobs upload with it
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.monotonic_ns() % 10**6:06d}"
    jobs = []
    for i in range(n):
        args = ["crawl", "--out", "shard", "--shard", f"{i}/{n}", "--quiet", "--upload-shard", repo_id]
        args += ["--run-id", run_id, *(crawl_args or [])]
        kwargs: dict[str, Any] = {
            "script_args": args,
            "dependencies": ["gradience[bot]"],
            "labels": {"app": JOB_LABEL, "run": run_id, "shard": f"{i}-of-{n}"},
            "timeout": timeout_s,
            "secrets": {"HF_TOKEN": secret} if secret else None,
        }
        if image:
            kwargs["image"] = image
        if flavor:
            kwargs["flavor"] = flavor
        jobs.append(api.run_uv_job("gradience", **kwargs))
    infos = api.wait_for_job([j.id for j in jobs], timeout=timeout_s + 600, poll_interval=poll_interval)
    failed = [(j.id, j.status.stage, j.status.message) for j in infos if j.status.stage != "COMPLETED"]
    if failed:
        detail = "; ".join(f"{jid} {stage}" + (f" ({msg})" if msg else "") for jid, stage, msg in failed)
        raise HubTransferError(
            f"{len(failed)} of {n} crawl jobs did not complete: {detail}; nothing was published"
        )
    merged = merge_staged(repo_id, run_id, out, token=token)
    published = publish(out, repo_id, token=token, delete_prefix=f"{STAGING}/{run_id}/",
                        message=f"Update the ecosystem dataset (crawl {run_id}, {n} shards)")  # fmt: skip
    return {"run_id": run_id, "jobs": [j.id for j in jobs], "rows": merged, "published": published}


def merge_staged(repo_id: str, run_id: str, out: Path, *, token: Any = None) -> int:
    """Download the staged shards of one run and write the merged dataset folder to ``out``."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import snapshot_download

    from gradience.ecosystem.card import render_card
    from gradience.ecosystem.dataset import ADAPTERS_FILE, LAYERS_FILE, publish_folder
    from gradience.ecosystem.schema import arrow_schema

    local = Path(
        snapshot_download(repo_id, repo_type="dataset", allow_patterns=[f"{STAGING}/{run_id}/*"], token=token)
    )
    staging = out / ".crawl" / "merge"
    shutil.rmtree(staging, ignore_errors=True)
    rows = 0
    for table, rel in (("adapters", ADAPTERS_FILE), ("layers", LAYERS_FILE)):
        files = sorted((local / STAGING / run_id / table).glob("*.parquet"))
        if not files:
            raise UsageError(f"no staged {table} files for crawl {run_id} in {repo_id}")
        merged = pa.concat_tables([pq.read_table(f, schema=arrow_schema(table)) for f in files])
        # A stable sort: layer rows keep their audit order within each adapter, as in one crawl.
        merged = merged.sort_by([("repo_id", "ascending"), ("subfolder", "ascending")])
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(merged, staging / rel, compression="zstd")
        if table == "adapters":
            rows = merged.num_rows
    (staging / "README.md").write_text(render_card(staging, repo_id=repo_id), encoding="utf-8")
    publish_folder(staging, out)
    shutil.rmtree(staging, ignore_errors=True)
    return rows
