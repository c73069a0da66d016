"""The ecosystem crawler against a local Hub seeded with a few hundred adapters and edge cases.

The Hub is this module's own (its listings must hold only the seeded repos); the crawler runs
as the real CLI in a subprocess pointed at it. Every adapter's utilisation is planted (stable
rank k of r by construction), so the dataset is checked against known values, not against
another run of the same code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("duckdb")

from gradience.ecosystem.dataset import read_table

CAP = 70_000  # --max-bytes: r=32 F32 adapters with MLP layers (98 KB of LoRA) are too large
SEEDED = 90  # repos; every tenth is a base model, plus the edge cases


@pytest.fixture(scope="module")
def scale_hub(tmp_path_factory):
    from servers.hub import free_port, start_local_hub

    hub = start_local_hub(
        free_port(),
        tmp_path_factory.mktemp("scalehub"),
        seed_repos=False,
        corpus_dir=None,
        settings={"page_size": 50},
    )
    try:
        manifest = hub.seed_scale(SEEDED, namespace="scale", seed=3)
        yield hub, manifest
    finally:
        hub.stop()


def _env(hub) -> dict[str, str]:
    env = dict(os.environ, HF_ENDPOINT=hub.url)
    env.pop("HF_TOKEN", None)
    return env


def _crawl_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gradience",
        "crawl",
        "--out",
        str(out),
        "--json",
        "--quiet",
        "--max-bytes",
        str(CAP),
        *extra,
    ]


def _crawl(hub, out: Path, *extra: str) -> dict:
    p = subprocess.run(_crawl_cmd(out, *extra), capture_output=True, text=True, env=_env(hub), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def _expected_status(a: dict) -> str:
    if a["expect"] == "ok" and a.get("weights") == "safetensors" and a.get("lora_bytes", 0) > CAP:
        return "too_large"
    return a["expect"]


def _without(rows: list[dict], *cols: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in cols} for r in rows]


@pytest.fixture(scope="module")
def clean(scale_hub, tmp_path_factory):
    hub, _ = scale_hub
    out = tmp_path_factory.mktemp("clean") / "eco"
    summary = _crawl(hub, out)
    return out, summary


def test_every_adapter_gets_its_planted_status_and_utilisation(scale_hub, clean):
    _, manifest = scale_hub
    out, summary = clean
    rows = {(r["repo_id"], r["subfolder"]): r for r in read_table(out, "adapters")}
    expected = {(a["repo_id"], a["subfolder"]): a for a in manifest["adapters"] if a["expect"] != "hidden"}
    # Coverage: every adapter folder is there (checkpoints each get a row), nothing else is.
    assert set(rows) == set(expected)
    assert not any(r in {(o, "") for o in manifest["others"]} for r in rows)  # base models: not PEFT
    assert ("alice/scale-private", "") not in rows  # not listed to an anonymous crawler
    wrong = {
        k: (rows[k]["status"], _expected_status(a))
        for k, a in expected.items()
        if rows[k]["status"] != _expected_status(a)
    }
    assert wrong == {}
    assert {r["status"] for r in rows.values()} >= {
        "ok", "gated", "lfs_pointer", "corrupt", "no_weights", "not_lora", "unsupported_type", "too_large",
    }  # fmt: skip
    for key, a in expected.items():
        row = rows[key]
        if row["status"] == "ok":
            assert row["status_detail"] is None
        else:
            assert row["status_detail"].startswith(row["status"] + ": ")
        if row["status"] != "ok":
            assert row["utilization_mean"] is None
            continue
        assert row["untrained"] is a["untrained"]
        assert row["r"] == a["r"] and row["commit"] and row["discovered_by"] == ["all"]
        tol = 0.02 if a.get("dtype") in ("F16", "BF16") else 1e-4
        assert row["utilization_mean"] == pytest.approx(a["utilization"], abs=tol), key
        if not a["untrained"]:
            assert 1 <= row["recommended_r"] <= a["r"]
    ok = [k for k, a in expected.items() if _expected_status(a) == "ok"]
    assert sum(rows[k]["status"] == "ok" for k in ok) / len(ok) >= 0.98
    # One layer row per LoRA layer of every ok adapter, none for failures.
    layers = read_table(out, "layers")
    per = {}
    for lr in layers:
        per[(lr["repo_id"], lr["subfolder"])] = per.get((lr["repo_id"], lr["subfolder"]), 0) + 1
    assert per == {k: r["n_layers"] for k, r in rows.items() if r["status"] == "ok"}
    assert all(len(lr["top_singular_values"]) == min(4, lr["r"]) for lr in layers)
    # Few requests per adapter: repo info, config, header, coalesced tensors (each LFS read is a
    # redirect plus a CDN request).
    assert summary["requests_per_adapter"] <= 8
    assert summary["audited"] == len(rows)


def _audited_rows(state: Path) -> int:
    if not state.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT count(*) FROM candidates WHERE status IS NOT NULL").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_crawl_then_rerun_equals_a_clean_crawl(scale_hub, clean, tmp_path):
    hub, _ = scale_hub
    out = tmp_path / "eco"
    total = len(read_table(clean[0], "adapters"))
    proc = subprocess.Popen(
        _crawl_cmd(out, "--concurrency", "4"),
        env=_env(hub),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        state = out / ".crawl" / "state.sqlite"
        deadline = time.monotonic() + 300
        while _audited_rows(state) < 25 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed_at = _audited_rows(out / ".crawl" / "state.sqlite")
    assert proc.returncode == -signal.SIGKILL and 0 < killed_at < total  # killed mid-crawl
    summary = _crawl(hub, out)
    assert summary["audited"] == total - killed_at  # only what the killed run had not recorded
    resumed = read_table(out, "adapters")
    assert len({(r["repo_id"], r["subfolder"]) for r in resumed}) == len(resumed) == total
    assert _without(resumed, "audited_at") == _without(read_table(clean[0], "adapters"), "audited_at")
    assert read_table(out, "layers") == read_table(clean[0], "layers")
    status = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "status", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    runs = json.loads(status.stdout)["runs"]
    assert [r["finished_at"] is None for r in runs] == [False, True]  # the killed run never finished


def test_stats_json_equals_an_independent_computation_from_the_parquet(clean):
    out, _ = clean
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "ecosystem", "stats", "--dataset", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout)
    adapters = read_table(out, "adapters")
    pop = [r for r in adapters if r["status"] == "ok" and not r["untrained"]]
    u = np.array([r["utilization_mean"] for r in pop])
    expect = {
        "n": len(u), "mean": u.mean(), "median": np.median(u), "std": u.std(ddof=1), "min": u.min(), "max": u.max(),
        "p25": np.percentile(u, 25), "p75": np.percentile(u, 75), "p90": np.percentile(u, 90),
    }  # fmt: skip
    assert stats["utilization"] == pytest.approx(expect, rel=1e-9)
    ranks = sorted({r["r"] for r in pop})
    assert [(b["r"], b["n"]) for b in stats["by_rank"]] == [(r, sum(x["r"] == r for x in pop)) for r in ranks]
    for b in stats["by_rank"]:
        vals = [x["utilization_mean"] for x in pop if x["r"] == b["r"]]
        assert b["median"] == pytest.approx(float(np.median(vals))) and b["floor"] == pytest.approx(
            1 / b["r"]
        )
    keys = {(r["repo_id"], r["subfolder"], r["commit"]) for r in pop}
    layers = [
        lr for lr in read_table(out, "layers") if (lr["repo_id"], lr["subfolder"], lr["commit"]) in keys
    ]
    for t in stats["by_module_type"]:
        vals = [lr["utilization"] for lr in layers if lr["module_type"] == t["module_type"]]
        assert t["n_layers"] == len(vals) and t["mean"] == pytest.approx(float(np.mean(vals)))
    rs = np.array([r["r"] for r in pop], float)
    assert stats["correlation"]["pearson_r_utilization"] == pytest.approx(float(np.corrcoef(rs, u)[0, 1]))
    counts = {}
    for r in adapters:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert {s["status"]: s["n"] for s in stats["statuses"]} == counts
    # The card shows the same numbers (rounded), and names both tables in its configs.
    card = (out / "README.md").read_text()
    assert f"| {len(u)} | {u.mean():.3f} | {np.median(u):.3f} | {u.std(ddof=1):.3f} |" in card
    assert "config_name: adapters" in card and "path: layers/*.parquet" in card


def test_percentile_places_an_adapter_among_all_same_r_and_family(clean, examples_dir):
    out, _ = clean
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "ecosystem", "percentile", str(examples_dir / "healthy-r8"),
         "--dataset", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    pop = [r for r in read_table(out, "adapters") if r["status"] == "ok" and not r["untrained"]]
    u = res["utilization_mean"]
    same_r = [r for r in pop if r["r"] == res["r"]]
    assert res["r"] == 8 and res["family"] == "llama"
    assert res["among"]["all"] == {
        "n": len(pop), "below": sum(r["utilization_mean"] < u for r in pop),
        "percentile": 100 * sum(r["utilization_mean"] < u for r in pop) / len(pop),
    }  # fmt: skip
    assert res["among"]["same_r"]["below"] == sum(r["utilization_mean"] < u for r in same_r)
    assert res["among"]["same_family"]["n"] == sum(r["family"] == "llama" for r in pop)


def test_a_second_crawl_reaudits_only_the_repos_that_changed(scale_hub, clean, tmp_path):
    hub, manifest = scale_hub
    out = tmp_path / "eco"
    shutil.copytree(clean[0], out)
    before = {(r["repo_id"], r["subfolder"]): r for r in read_table(out, "adapters")}
    regular = [a for a in manifest["adapters"] if a["repo_id"].startswith("scale/") and a["expect"] == "ok"]
    safetensors = next(a for a in regular if a["weights"] == "safetensors" and a["r"] >= 8)
    as_bin = next(a for a in regular if a["weights"] == "bin")
    changes = [
        hub.retrain(safetensors["repo_id"], 1),
        hub.retrain(as_bin["repo_id"], as_bin["r"]),
        hub.retrain("scale-edge/checkpoints", 8, subfolder="checkpoint-200"),
    ]
    changed_repos = {c["repo_id"] for c in changes}
    hub.reset_stats()
    summary = _crawl(hub, out)
    # Both checkpoints of the changed repo are re-audited (its commit moved), nothing else: no
    # other repo's files are read, and the unchanged rows are identical.
    assert summary["audited"] == len([k for k in before if k[0] in changed_repos]) == 4
    assert {f["repo_id"] for f in hub.stats()["files"]} == changed_repos
    after = {(r["repo_id"], r["subfolder"]): r for r in read_table(out, "adapters")}
    for c in changes:
        row = after[(c["repo_id"], c["subfolder"])]
        assert row["commit"] == c["commit"] and row["utilization_mean"] == pytest.approx(
            c["utilization"], abs=1e-4
        )
    unchanged = [k for k in before if k[0] not in changed_repos]
    assert all(after[k] == before[k] for k in unchanged)


def test_the_recent_pass_lists_only_repos_modified_since_the_last_crawl(scale_hub, clean, tmp_path):
    hub, manifest = scale_hub
    out = tmp_path / "eco"
    shutil.copytree(clean[0], out)
    _crawl(hub, out, "--passes", "recent")  # catch up with anything earlier tests changed
    target = next(a for a in manifest["adapters"] if a["repo_id"].startswith("scale/") and a["r"] == 16)
    change = hub.retrain(target["repo_id"], 3)
    summary = _crawl(hub, out, "--passes", "recent")
    # Newest first, stopping at the previous crawl's high-water mark: one repo listed, one audited.
    assert summary["discovered"] == 1 and summary["audited"] == 1
    row = next(r for r in read_table(out, "adapters") if r["repo_id"] == target["repo_id"])
    assert row["commit"] == change["commit"] and row["discovered_by"] == ["all", "recent"]
    assert row["utilization_mean"] == pytest.approx(3 / 16, abs=1e-4)


def test_a_shard_crawls_exactly_its_part_of_the_repos(scale_hub, clean, tmp_path):
    from gradience.ecosystem.crawl import in_shard

    hub, _ = scale_hub
    out = tmp_path / "shard"
    _crawl(hub, out, "--shard", "1/3")
    keys = {(r["repo_id"], r["subfolder"]) for r in read_table(out, "adapters")}
    everything = {(r["repo_id"], r["subfolder"]) for r in read_table(clean[0], "adapters")}
    assert keys == {k for k in everything if in_shard(k[0], (1, 3))}
    assert 0 < len(keys) < len(everything) / 2


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "shard"),
    (["--passes", "everything"], "unknown discovery pass"),
    (["--shard", "0/2", "--publish", "me/x"], "publish after merging"),
    (["--fan-out", "2", "--publish", "me/x"], "--on hf-jobs"),
])  # fmt: skip
def test_bad_crawl_arguments_are_one_line_errors(tmp_path, args, message):
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "crawl", "--out", str(tmp_path / "o"), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr


@pytest.mark.parametrize("dataset", ["/no/such/folder", "not a repo id"])
def test_a_dataset_that_is_neither_folder_nor_repo_is_a_one_line_error(dataset):
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "ecosystem", "stats", "--dataset", dataset],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "neither a dataset folder" in p.stderr


# -- the local Hub at scale ---------------------------------------------------------------------------


@pytest.mark.parametrize("sort", [None, "last_modified"])
def test_listing_cursors_survive_repos_added_mid_listing(scale_hub, sort):
    from huggingface_hub import HfApi

    hub, manifest = scale_hub
    api = HfApi(endpoint=hub.url, token=False)
    expand = ["sha", "lastModified", "tags", "library_name"]
    with hub.configured(page_size=20):
        listing = api.list_models(filter="peft", sort=sort, expand=expand)
        seen = [next(listing).id for _ in range(30)]  # two pages in: the client holds a cursor now
        ns = f"late{sort or 'none'}".replace("_", "")
        added = hub.seed_scale(30, namespace=ns, seed=9, edge_cases=False)
        rest = list(listing)
    ids = seen + [m.id for m in rest]
    assert len(ids) == len(set(ids))  # nothing repeated
    before = {a["repo_id"] for a in manifest["adapters"] if a["expect"] != "hidden"}
    assert before <= set(ids)  # nothing skipped
    if sort is None:  # creation order: the new repos come last
        assert {a["repo_id"] for a in added["adapters"]} <= set(ids)
    # Card-less adapters are tagged peft from adapter_config.json alone, as on the Hub.
    cardless = {a["repo_id"] for a in manifest["adapters"] if a.get("has_card") is False}
    assert cardless and cardless <= set(ids)
    assert all("peft" in m.tags and m.library_name == "peft" for m in rest if m.id in cardless)
