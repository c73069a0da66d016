"""Auditing adapters straight from a Hub repo, against the local Hub and the real client.

The remote result must equal the local-folder result except for ``source``; only LoRA
bytes cross the wire; an unchanged revision is served from the cache; faults end in the
right answer or a clear error, never a wrong result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import hub as H

import gradience
from gradience.adapters.safetensors_io import parse_header
from gradience.errors import AdapterNotFoundError, GradienceError, TooLargeError
from gradience.hub.errors import HubAccessError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENCE_CACHE", str(tmp_path / "cache"))


def _without_source(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "source"}


def _cli(*args: str, cache: Path, token: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRADIENCE_CACHE=str(cache))
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "gradience", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_remote_audit_equals_local_audit_except_source(hub, tmp_path):
    p = _cli("audit", H.EXAMPLE_REPOS["healthy-r8"], "--json", "--layers", cache=tmp_path / "c")
    assert p.returncode == 0, p.stderr
    remote = json.loads(p.stdout)
    local = gradience.audit(ROOT / "examples" / "healthy-r8").to_dict(layers=True)
    assert _without_source(remote) == json.loads(json.dumps(_without_source(local)))
    src = remote["source"]
    assert src["repo"] == H.EXAMPLE_REPOS["healthy-r8"] and len(src["commit"]) == 40
    assert src["bytes_transferred"] > 0 and src["revision"] == "main"


@pytest.mark.parametrize(
    "spec",
    [
        ("anirudh-ak/peft-gpt2",),  # the only adapter folder is picked
        ("anirudh-ak/peft-gpt2", "--subfolder", "model/lora_model"),
        ("hf://anirudh-ak/peft-gpt2/model/lora_model",),
        ("https://huggingface.co/anirudh-ak/peft-gpt2/tree/main/model/lora_model",),
    ],
)
def test_subfolders_and_reference_forms(hub, corpus_dir, spec):
    remote = gradience.audit(spec[0], subfolder=spec[2] if len(spec) > 2 else None).to_dict(layers=True)
    local = gradience.audit(corpus_dir / "gpt2_anirudh").to_dict(layers=True)
    assert _without_source(remote) == _without_source(local)
    assert remote["source"]["subfolder"] == "model/lora_model"


def test_every_corpus_adapter_matches_its_local_audit(hub, corpus_dir):
    for folder, repo in H.CORPUS_REPOS.items():
        remote = gradience.audit(repo.repo_id, subfolder=repo.subfolder).to_dict(layers=True)
        local = gradience.audit(corpus_dir / folder).to_dict(layers=True)
        assert _without_source(remote) == _without_source(local), folder


def test_only_lora_bytes_cross_the_wire_and_the_cache_serves_reruns(hub, tmp_path):
    first = gradience.audit(H.PADDED_REPO)
    served = hub.bytes_served(H.PADDED_REPO, "adapter_model.safetensors")
    header_path = next(Path(os.environ["GRADIENCE_CACHE"]).rglob("adapter_model.safetensors.header"))
    header = header_path.read_bytes()
    infos, _ = parse_header(header, 10**12)
    lora = sum(i.nbytes for n, i in infos.items() if "lora_" in n)
    other = sum(i.nbytes for n, i in infos.items() if "lora_" not in n)
    assert other >= 9 * lora  # the fixture really is ≥ 90% non-LoRA bytes
    assert served <= lora + len(header) + 0.05 * lora, (served, lora, len(header))
    assert first.source["bytes_transferred"] >= served - 1  # honest accounting
    hub.reset_stats()
    again = gradience.audit(H.PADDED_REPO)
    assert hub.bytes_served(H.PADDED_REPO) == 0  # one metadata request, no file bytes
    assert again.to_dict() | {"source": None} == first.to_dict() | {"source": None}


def test_revisions_resolve_to_commits(hub):
    v1 = gradience.audit(f"{H.REVISIONS_REPO}@v1").summary()
    v2 = gradience.audit(H.REVISIONS_REPO, revision="v2").summary()
    dev = gradience.audit(H.REVISIONS_REPO, revision="dev")
    assert v1["flags"] == ["untrained"] and "untrained" not in v2["flags"]
    assert dev.adapter["r"] == 64 and dev.source["revision"] == "dev"


def test_dataset_repo(hub):
    result = gradience.audit(H.DATASET_REPO, repo_type="dataset", subfolder=H.DATASET_SUBFOLDER)
    assert result.source["repo_type"] == "dataset" and len(result.layers) == 14


def test_bin_adapter_from_the_hub_and_its_cap(hub, corpus_dir):
    repo = H.CORPUS_REPOS["sidkris"]
    remote = gradience.audit(repo.repo_id, subfolder=repo.subfolder).to_dict(layers=True)
    assert _without_source(remote) == _without_source(
        gradience.audit(corpus_dir / "sidkris").to_dict(layers=True)
    )
    with pytest.raises(TooLargeError) as e:
        gradience.audit(repo.repo_id, subfolder=repo.subfolder, max_bin_bytes=1000)
    assert (e.value.code, e.value.param, e.value.limit) == ("too_large", "max_bin_bytes", 1000)
    assert e.value.needed > 1000 and "--" not in e.value.message


def test_byte_cap_is_checked_before_any_tensor_is_fetched(hub):
    with pytest.raises(TooLargeError) as e:
        gradience.audit(H.PADDED_REPO, max_bytes=1000)
    assert (e.value.param, e.value.limit, e.value.repo_id) == ("max_bytes", 1000, H.PADDED_REPO)
    ranges = [r for f in hub.stats()["files"] for r in f["ranges"] if f["repo_id"] == H.PADDED_REPO]
    assert ranges and all(start < 70_000 for start, *_ in ranges)  # header reads only


def test_several_adapters_need_a_subfolder(hub, tmp_path):
    p = _cli("audit", H.MERGE_PAIRS_REPO, cache=tmp_path / "c")
    assert p.returncode == 2 and "--subfolder" in p.stderr
    for sub in H.MERGE_PAIRS_SUBFOLDERS:
        assert sub in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("repo", "token", "error", "needle"),
    [
        (H.PRIVATE_REPO, None, AdapterNotFoundError, "not found"),
        (H.PRIVATE_REPO, H.CAROL_TOKEN, AdapterNotFoundError, "not found"),
        (H.GATED_REPO, H.CAROL_TOKEN, HubAccessError, "gated"),
        ("nobody/nothing-here", None, AdapterNotFoundError, "not found"),
        (f"{H.EXAMPLE_REPOS['healthy-r8']}@no-such-branch", None, AdapterNotFoundError, "revision"),
        (H.BASE_REPO, None, AdapterNotFoundError, "not a PEFT adapter"),
    ],
)
def test_access_and_missing_things_give_clean_errors(hub, repo, token, error, needle):
    with pytest.raises(error, match=needle):
        gradience.audit(repo, token=token)


def test_private_repo_with_the_owners_token(hub, tmp_path):
    p = _cli("audit", H.PRIVATE_REPO, "--json", cache=tmp_path / "c", token=H.ALICE_TOKEN)
    assert p.returncode == 0, p.stderr
    p = _cli("audit", H.PRIVATE_REPO, cache=tmp_path / "c2")
    assert p.returncode == 2 and "HF_TOKEN" in p.stderr and "Traceback" not in p.stderr


#: Where LFS file bytes come from: the CDN origin /resolve redirects to.
CDN_WEIGHTS = r"^/cdn/.*adapter_model\.safetensors"


def _served(hub, repo_id: str) -> int:
    return hub.bytes_served(repo_id)


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "retry_after": 1, "times": 2},
        {"status": 503, "times": 2},
        {"truncate": 100, "times": 2},
        {"latency": 0.5, "times": 3},
    ],
)
def test_faults_on_tensor_reads_end_in_the_right_answer(hub, fault):
    want = gradience.audit(ROOT / "examples" / "overprovisioned-r64").to_dict(layers=True)
    fault_id = hub.fault(CDN_WEIGHTS, **fault)
    got = gradience.audit(H.EXAMPLE_REPOS["overprovisioned-r64"])
    assert hub.fault_hits(fault_id) == fault["times"]
    assert _without_source(got.to_dict(layers=True)) == _without_source(want)
    # What the client counted is what the server sent, failed answers included.
    assert got.source["bytes_transferred"] == _served(hub, H.EXAMPLE_REPOS["overprovisioned-r64"])


def test_faults_on_metadata_are_retried(hub):
    first = hub.fault(r"/api/models/", status=429, retry_after=1, times=1)
    second = hub.fault(r"/api/models/", status=502, times=1)
    assert len(gradience.audit(H.EXAMPLE_REPOS["healthy-r8"]).layers) == 14
    assert hub.fault_hits(first) == 1 and hub.fault_hits(second) == 1


def test_a_hub_that_keeps_failing_gives_a_clear_error(hub, tmp_path):
    fault = hub.fault(r"/api/models/", status=500)
    p = _cli("audit", H.EXAMPLE_REPOS["healthy-r8"], cache=tmp_path / "c")
    assert p.returncode == 2 and "HTTP 500" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert hub.fault_hits(fault) >= 2  # retried before giving up


def test_truncation_that_never_stops_is_an_error_not_a_wrong_result(hub):
    fault = hub.fault(CDN_WEIGHTS, truncate=50)
    with pytest.raises(GradienceError, match=r"could not download|try again"):
        gradience.audit(H.EXAMPLE_REPOS["healthy-r8"])
    assert hub.fault_hits(fault) >= 2


def test_merge_audit_takes_hub_repos(hub):
    subs = H.MERGE_PAIRS_SUBFOLDERS[:2]  # the related pair: SAFE by construction
    remote = gradience_merge_audit([f"hf://{H.MERGE_PAIRS_REPO}/{sub}" for sub in subs])
    local = gradience_merge_audit([ROOT / "examples" / sub for sub in subs])
    assert remote["aggregate"]["overall_verdict"] == "SAFE"
    assert {k: v for k, v in remote.items() if k != "adapters"} == {
        k: v for k, v in local.items() if k != "adapters"
    }


def gradience_merge_audit(sources):
    from gradience.merge.pairwise import merge_audit

    return json.loads(json.dumps(merge_audit(sources).to_dict()))


def test_adapter_in_a_space_repo(hub, tmp_path):
    """``--repo-type space`` (and ``spaces/`` references) read a Space's files like a model's."""
    from huggingface_hub import HfApi

    api = HfApi(token=H.ALICE_TOKEN)
    repo = api.create_repo("alice/adapter-demo-space", repo_type="space", space_sdk="gradio", exist_ok=True)
    api.upload_folder(folder_path=ROOT / "examples" / "healthy-r8", path_in_repo="lora", repo_id=repo.repo_id,
                      repo_type="space")  # fmt: skip
    p = _cli(
        "audit", repo.repo_id, "--repo-type", "space", "--subfolder", "lora", "--json", cache=tmp_path / "c"
    )
    assert p.returncode == 0, p.stderr
    remote = json.loads(p.stdout)
    assert remote["source"]["repo_type"] == "space"
    assert _without_source(remote) == _without_source(
        gradience.audit(ROOT / "examples" / "healthy-r8").to_dict()
    )
    same = gradience.audit(f"spaces/{repo.repo_id}", subfolder="lora")
    assert same.source["repo_type"] == "space"
