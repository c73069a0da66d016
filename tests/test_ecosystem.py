"""The ecosystem dataset without a crawl: statuses from error types, the state's retry rules, the
tables' schema (Arrow, JSON Schema, docs), and publishing to the local Hub in one commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("duckdb")

import gradience
from gradience import errors as E
from gradience.ecosystem import schema as SC
from gradience.ecosystem.dataset import read_table, write_dataset
from gradience.ecosystem.discovery import Candidate, adapter_folders, family_of
from gradience.ecosystem.state import MAX_ATTEMPTS, CrawlState
from gradience.ecosystem.statuses import STATUSES, status_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("healthy-r8", "overprovisioned-r64", "untrained-r8", "merge-related-a", "merge-conflict-b")


@pytest.mark.parametrize(
    "exc, status",
    [
        (E.NotLoraError("x"), "not_lora"),
        (E.NoWeightsError("x"), "no_weights"),
        (E.LfsPointerError("x"), "lfs_pointer"),
        (E.AdapterFormatError("x"), "corrupt"),
        (E.UnsafePickleError("x"), "corrupt"),
        (E.ConfigError("x"), "corrupt"),
        (E.UnsupportedAdapterError("x"), "unsupported_type"),
        (E.GatedRepoError("x"), "gated"),
        (E.PrivateRepoError("x"), "private"),
        (E.HubAccessError("x"), "private"),
        (E.AdapterNotFoundError("x", repo_id="u/r"), "not_found"),
        (E.RevisionNotFoundError("x"), "not_found"),
        (E.TooLargeError("x", needed=2, limit=1), "too_large"),
        (E.HubTransferError("x"), "transient_error"),
        (E.RateLimitedError("x", retry_after=30.0), "transient_error"),
        (E.HubTimeoutError("x"), "transient_error"),
        (RuntimeError("a crawler bug"), "transient_error"),
    ],
)
def test_statuses_come_from_error_types_not_messages(exc, status):
    got, detail = status_of(exc)
    assert got == status and got in STATUSES
    code = exc.code if isinstance(exc, E.GradienceError) else status
    assert detail.startswith(f"{code if isinstance(exc, E.GradienceError) else 'internal'}: ")


def test_adapter_folders_and_families():
    files = ["README.md", "adapter_config.json", "ckpt/checkpoint-1/adapter_config.json", "ckpt/x.bin", "a/b"]
    assert adapter_folders(files) == ["", "ckpt/checkpoint-1"]
    assert family_of("meta-llama/Llama-3.1-8B") == "llama" and family_of("Qwen/Qwen2.5-7B") == "qwen"
    assert family_of("someone/unknown-thing") == "other" and family_of(None) is None


def _cand(repo: str, sha: str, sub: str = "") -> Candidate:
    return Candidate(repo, sub, sha, "2026-01-01T00:00:00+00:00", downloads=5, discovered_by={"all"})


def test_state_retries_transient_failures_a_bounded_number_of_times(tmp_path):
    state = CrawlState(tmp_path / "s.sqlite")
    state.upsert([_cand("u/a", "s1"), _cand("u/b", "s1")], full_listing=True)
    assert [r["repo_id"] for r in state.due()] == ["u/a", "u/b"]
    state.record(("u/a", ""), "s1", "ok", None, {"r": 8}, [])
    for attempt in range(MAX_ATTEMPTS):
        assert [r["repo_id"] for r in state.due()] == ["u/b"], attempt
        state.record(("u/b", ""), "s1", "transient_error", "transient_error: 503", None, None)
    assert state.due() == []  # given up for this commit...
    state.upsert([_cand("u/a", "s1"), _cand("u/b", "s2")], full_listing=True)
    assert [r["repo_id"] for r in state.due()] == ["u/b"]  # ...until the repo changes
    state.upsert([_cand("u/b", "s2")], full_listing=True)  # u/a no longer listed
    assert state.counts()["not_found"] == 1
    state.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A dataset folder from real audits of the bundled examples (no Hub needed)."""
    out = tmp_path_factory.mktemp("eco") / "eco"
    state = CrawlState(out / ".crawl" / "state.sqlite")
    cands = [_cand(f"gradience-examples/{n}", f"{i:040d}") for i, n in enumerate(EXAMPLES)]
    cands.append(_cand("someone/not-an-adapter", "f" * 40))
    state.upsert(cands, full_listing=True)
    for c in cands[:-1]:
        audit = gradience.audit(ROOT / "examples" / c.repo_id.split("/")[1])
        row, layers = SC.audit_rows(audit)
        row["commit"] = c.sha
        state.record(c.key, c.sha, "ok", None, row, layers)
    state.record(cands[-1].key, cands[-1].sha, "not_lora", "not_lora: no adapter_config.json", None, None)
    write_dataset(state, out)
    state.close()
    return out


def test_the_tables_follow_the_published_schema(dataset):
    import jsonschema
    import pyarrow.parquet as pq

    for table in ("adapters", "layers"):
        shipped = json.loads(SC.schema_path(table).read_text())
        assert shipped == SC.json_schema(table)  # regenerate with write_json_schemas() after a change
        for f in (dataset / table).glob("*.parquet"):
            assert pq.read_schema(f).remove_metadata() == SC.arrow_schema(table)
        validator = jsonschema.Draft202012Validator(shipped)
        for row in read_table(dataset, table):
            row = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            validator.validate(row)
    docs = (ROOT / "docs" / "ecosystem.md").read_text()
    for name, *_ in SC.ADAPTER_COLUMNS + SC.LAYER_COLUMNS:
        assert f"`{name}`" in docs, name
    for status in STATUSES:
        assert f"`{status}`" in docs, status


def test_rows_carry_the_audits_own_numbers(dataset):
    rows = {r["repo_id"].split("/")[1]: r for r in read_table(dataset, "adapters")}
    for name in EXAMPLES:
        audit = gradience.audit(ROOT / "examples" / name)
        s = audit.summary()
        row = rows[name]
        assert row["utilization_mean"] == s["utilization_mean"]
        assert row["recommended_r"] == audit.recommendation.rank
        assert row["untrained"] is ("untrained" in audit.flags)
        assert row["family"] == "llama" and row["status"] == "ok" and row["status_detail"] is None
    assert rows["not-an-adapter"]["status"] == "not_lora" and rows["not-an-adapter"]["r"] is None


# -- publishing -------------------------------------------------------------------------------------------


def _head(repo_id: str) -> tuple[str, list[str]]:
    from huggingface_hub import HfApi

    info = HfApi(token=False).dataset_info(repo_id)
    return info.sha, sorted(s.rfilename for s in info.siblings or [])


def _version(dataset: Path, tmp_path: Path, n: int) -> Path:
    """A copy of the dataset folder whose card differs (a new crawl's version)."""
    out = tmp_path / f"v{n}"
    shutil.copytree(dataset, out, ignore=shutil.ignore_patterns(".crawl"))
    with open(out / "README.md", "a") as f:
        f.write(f"\nVersion {n}.\n")
    return out


def test_publish_is_one_commit_the_hub_lists_and_stats_read_back(hub, dataset, tmp_path):
    from huggingface_hub import HfApi

    from gradience.ecosystem.publish import publish

    repo = "alice/ecosystem-publish"
    first = publish(_version(dataset, tmp_path, 1), repo, token=hub.tokens["alice"])
    second = publish(_version(dataset, tmp_path, 2), repo, token=hub.tokens["alice"])
    assert second["parent"] == first["commit"]
    commits = HfApi(token=False).list_repo_commits(repo, repo_type="dataset")
    assert [c.commit_id for c in commits[:2]] == [second["commit"], first["commit"]]
    sha, files = _head(repo)
    assert sha == second["commit"]
    assert files == sorted(
        [
            ".gitattributes",
            "README.md",
            *(p.relative_to(dataset).as_posix() for p in dataset.glob("*/*.parquet")),
        ]
    )
    # The Hub's parquet listing finds both configs from the card (pinned to the commit).
    import httpx

    listing = httpx.get(f"{hub.url}/api/datasets/{repo}/parquet").json()
    assert set(listing) == {"adapters", "layers"}
    url = listing["adapters"]["train"][0]
    assert sha in url and httpx.get(url).content == (dataset / "adapters" / Path(url).name).read_bytes()
    # `ecosystem stats --dataset REPO_ID` reads the published files: same tables as the folder.
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    runs = [
        subprocess.run(
            [sys.executable, "-m", "gradience", "ecosystem", "stats", "--dataset", d, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        for d in (str(dataset), repo)
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)


def test_an_interrupted_publish_leaves_the_previous_version(hub, dataset, tmp_path):
    from gradience.ecosystem.publish import publish

    repo = "alice/ecosystem-interrupted"
    publish(_version(dataset, tmp_path, 1), repo, token=hub.tokens["alice"])
    before = _head(repo)
    fid = hub.fault(r"/api/datasets/alice/ecosystem-interrupted/commit/", status=500)
    with pytest.raises(E.HubError):
        publish(_version(dataset, tmp_path, 2), repo, token=hub.tokens["alice"])
    assert hub.fault_hits(fid) >= 1
    assert _head(repo) == before


def test_concurrent_publishers_cannot_overwrite_each_other(hub, dataset, tmp_path):
    from gradience.ecosystem.publish import publish

    repo = "alice/ecosystem-race"
    publish(_version(dataset, tmp_path, 0), repo, token=hub.tokens["alice"])
    base = _head(repo)[0]
    # Both read the same parent, then both commits wait on the wire; only one may land.
    fid = hub.fault(r"/api/datasets/alice/ecosystem-race/commit/", latency=3.0, times=2)
    results: list[object] = []

    def one(folder: Path) -> None:
        try:
            results.append(publish(folder, repo, token=hub.tokens["alice"]))
        except E.GradienceError as e:
            results.append(e)

    threads = [threading.Thread(target=one, args=(_version(dataset, tmp_path, n),)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert hub.fault_hits(fid) == 2
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, E.HubTransferError)]
    assert len(won) == 1 and len(lost) == 1 and won[0]["parent"] == base
    assert _head(repo)[0] == won[0]["commit"]


def test_fan_out_on_jobs_equals_one_crawl_and_publishes_once(hub, tmp_path):
    """N labelled jobs each crawl a shard and stage it; one merge-and-publish commit follows."""
    from huggingface_hub import HfApi

    env = dict(os.environ, HF_TOKEN=hub.tokens["alice"])
    repo = "alice/ecosystem-fanout"
    single = tmp_path / "single"
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "--out", str(single), "--quiet", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    fanned = tmp_path / "fanned"
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "--out", str(fanned), "--fan-out", "2", "--on", "hf-jobs",
         "--publish", repo, "--job-timeout", "600", "--json"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    api = HfApi(token=hub.tokens["alice"])
    jobs = [api.inspect_job(job_id=j) for j in result["jobs"]]
    assert sorted(j.labels["shard"] for j in jobs) == ["0-of-2", "1-of-2"]
    assert all(j.status.stage == "COMPLETED" and j.labels["run"] == result["run_id"] for j in jobs)
    # Merged rows equal the single-machine crawl's (audit times aside), layer order included.
    assert _without_time(read_table(fanned, "adapters")) == _without_time(read_table(single, "adapters"))
    assert read_table(fanned, "layers") == read_table(single, "layers")
    # Published once, staging cleaned up in the same commit.
    sha, files = _head(repo)
    assert sha == result["published"]["commit"]
    assert (
        not any(f.startswith("staging/") for f in files) and "adapters/train-00000-of-00001.parquet" in files
    )
    titles = [c.title for c in api.list_repo_commits(repo, repo_type="dataset")]
    assert (
        titles[0].startswith("Update the ecosystem dataset")
        and sum(t.startswith("Stage shard") for t in titles) == 2
    )


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "audited_at"} for r in rows]


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise():
    import io

    from gradience.ecosystem.crawl import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Terminal()
    for stream in (plain, tty):
        bar = Progress(3, stream=stream, every=0.0)
        for _ in range(3):
            bar.step()
        bar.close()
    lines = plain.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [f"crawl: {i}/3 audited" for i in (1, 2, 3)]
    assert all("/min, eta " in ln for ln in lines)
    assert "3/3" in tty.getvalue() and "/min" in tty.getvalue() and "audited (" not in tty.getvalue()


def test_the_card_is_valid_markdown_with_every_table(dataset):
    import yaml
    from markdown_it import MarkdownIt

    from gradience.ecosystem.card import front_matter

    text = (dataset / "README.md").read_text()
    _, meta, body = text.split("---\n", 2)
    assert yaml.safe_load(meta) == front_matter()
    html = MarkdownIt("commonmark").enable("table").render(body)
    # status, utilisation, stable rank, by rank, module type, family, energy ranks, compression,
    # over-provisioned layers: each a real table, not pipes in a paragraph.
    assert html.count("<table>") == 9
    assert "hf://datasets/" in body and "load_dataset(" in body and "read_parquet(" in body
