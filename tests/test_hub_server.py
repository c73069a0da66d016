"""The local Hub, driven by the real huggingface_hub client.

These tests are the contract the rest of the suite relies on: if the unmodified client can read,
range-read, upload (regular and LFS), open and merge PRs, discuss, list and fail the way it does
on the real Hub, then Gradience's Hub code tested against this server is tested for real.
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    ModelCard,
    RepoFolder,
    constants,
    hf_hub_download,
    metadata_update,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from servers.hub import (
    ALICE_READ_TOKEN,
    CORPUS_REPOS,
    DATASET_REPO,
    DATASET_SUBFOLDER,
    EXAMPLE_REPOS,
    GATED_REPO,
    MERGE_PAIRS_REPO,
    MERGE_PAIRS_SUBFOLDERS,
    PADDED_LM_HEAD,
    PADDED_REPO,
    PRIVATE_REPO,
    REVISIONS_REPO,
    LocalHub,
    free_port,
    start_local_hub,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GPT2 = CORPUS_REPOS["gpt2_anirudh"]
WEIGHTS = "adapter_model.safetensors"


def api(hub: LocalHub, user: str | None = "alice") -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.tokens[user] if user else False)


def status_of(err: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    assert err.value.response is not None
    return err.value.response.status_code


# -- seeding --------------------------------------------------------------------------------------


def test_corpus_repo_ids_follow_the_corpus_readme(corpus_dir: Path) -> None:
    rows = {}
    for line in (corpus_dir / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3 and (m := re.fullmatch(r"(\S+) @ \w+", cells[1])):
            rows[cells[0]] = (m.group(1), "" if cells[2] == "." else cells[2])
    assert rows == {k: (c.repo_id, c.subfolder) for k, c in CORPUS_REPOS.items()}


def test_seeded_repos_serve_the_bundled_files(hub: LocalHub, tmp_path: Path, corpus_dir: Path) -> None:
    a = api(hub)
    for repo_id in EXAMPLE_REPOS.values():
        info = a.model_info(repo_id)
        assert {"adapter_config.json", WEIGHTS, "README.md"} <= {s.rfilename for s in info.siblings}
        assert info.card_data.library_name == "peft"
    got = hf_hub_download(GPT2.repo_id, f"{GPT2.subfolder}/{WEIGHTS}", cache_dir=tmp_path, token=False)
    assert Path(got).read_bytes() == (corpus_dir / "gpt2_anirudh" / WEIGHTS).read_bytes()
    pairs = {f for f in a.list_repo_files(MERGE_PAIRS_REPO) if f.endswith(WEIGHTS)}
    assert pairs == {f"{s}/{WEIGHTS}" for s in MERGE_PAIRS_SUBFOLDERS}
    ds = a.dataset_info(DATASET_REPO, files_metadata=True)
    assert f"{DATASET_SUBFOLDER}/{WEIGHTS}" in {s.rfilename for s in ds.siblings}


# -- reading --------------------------------------------------------------------------------------


def test_whoami_and_invalid_token(hub: LocalHub) -> None:
    me = api(hub).whoami()
    assert me["name"] == "alice" and me["type"] == "user" and me["avatarUrl"]
    assert {o["name"] for o in me["orgs"]} == {"gradience-examples", "gradience-test"}
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_not_a_real_token").model_info(MERGE_PAIRS_REPO)
    assert status_of(err) == 401 and not isinstance(err.value, RepositoryNotFoundError)


def test_model_info_card_siblings_and_expand(hub: LocalHub, corpus_dir: Path) -> None:
    a = api(hub)
    info = a.model_info(GPT2.repo_id, files_metadata=True, securityStatus=True)
    assert info.card_data.base_model == "openai-community/gpt2"
    assert {"peft", "lora", "base_model:adapter:openai-community/gpt2", "region:us"} <= set(info.tags)
    assert info.downloads == 640 and info.private is False and info.gated is False
    weights = next(s for s in info.siblings if s.rfilename.endswith(WEIGHTS))
    assert weights.size == 1201208 and weights.lfs is not None and len(weights.lfs.sha256) == 64
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha) and info.last_modified.tzinfo is not None

    slim = a.model_info(GPT2.repo_id, expand=["sha", "downloads", "baseModels"])
    assert slim.sha == info.sha and slim.downloads == 640 and slim.siblings is None
    assert slim.base_models == {"relation": "adapter", "models": [{"id": "openai-community/gpt2"}]}

    refs = a.list_repo_refs(REVISIONS_REPO)
    tags = {t.name: t.target_commit for t in refs.tags}
    assert a.model_info(REVISIONS_REPO, revision="v1").sha == tags["v1"]
    assert a.model_info(REVISIONS_REPO, revision=tags["v1"][:10]).sha == tags["v1"]
    with pytest.raises(RevisionNotFoundError):
        a.model_info(REVISIONS_REPO, revision="no-such-branch")


def test_list_models_filters_sorts_and_pages(hub: LocalHub, corpus_dir: Path) -> None:
    a = api(hub, "carol")
    peft = list(a.list_models(filter="peft", sort="downloads"))
    downloads = [m.downloads for m in peft]
    assert downloads == sorted(downloads, reverse=True) and len(peft) > 5
    assert hub.request_count("list-repos") == -(-len(peft) // 5)  # followed Link across pages of 5
    assert PRIVATE_REPO not in {m.id for m in peft} and GATED_REPO in {m.id for m in peft}
    assert "gradience-examples/tiny-llama" not in {m.id for m in peft}

    assert [m.id for m in a.list_models(filter="peft", sort="downloads", limit=3)] == [m.id for m in peft[:3]]
    recent = [m.last_modified for m in a.list_models(sort="last_modified", expand=["lastModified"])]
    assert recent == sorted(recent, reverse=True)
    assert {m.id for m in a.list_models(search="merge")} == {
        MERGE_PAIRS_REPO,
        *(EXAMPLE_REPOS[n] for n in EXAMPLE_REPOS if n.startswith("merge")),
    }
    assert {m.id for m in a.list_models(author="gradience-examples")} == {
        *EXAMPLE_REPOS.values(),
        MERGE_PAIRS_REPO,
        "gradience-examples/tiny-llama",
    }
    both = {m.id for m in a.list_models(filter=["peft", "base_model:adapter:openai-community/gpt2"])}
    assert both == {GPT2.repo_id}
    expanded = next(iter(a.list_models(search="peft-gpt2", expand=["cardData", "lastModified"])))
    assert expanded.card_data.base_model == "openai-community/gpt2" and expanded.downloads is None
    assert PRIVATE_REPO in {m.id for m in api(hub, "alice").list_models(author="alice")}
    assert PRIVATE_REPO not in {m.id for m in a.list_models(author="alice")}


def test_tree_and_paths_info(hub: LocalHub, corpus_dir: Path) -> None:
    a = api(hub)
    entries = list(a.list_repo_tree(MERGE_PAIRS_REPO, recursive=True))
    assert hub.request_count("tree") > 1  # 14 entries, pages of 4
    dirs = {e.path for e in entries if isinstance(e, RepoFolder)}
    assert dirs == set(MERGE_PAIRS_SUBFOLDERS)
    sub = list(a.list_repo_tree(MERGE_PAIRS_REPO, path_in_repo="merge-related-a", expand=True))
    assert {e.path for e in sub} == {"merge-related-a/adapter_config.json", f"merge-related-a/{WEIGHTS}"}
    assert all(e.last_commit is not None and e.last_commit.title == "Upload the merge pairs" for e in sub)
    infos = a.get_paths_info(GPT2.repo_id, [f"{GPT2.subfolder}/{WEIGHTS}", "model", "missing.txt"])
    assert [i.path for i in infos] == [f"{GPT2.subfolder}/{WEIGHTS}", "model"]
    assert infos[0].lfs is not None and infos[0].size == 1201208
    with pytest.raises(EntryNotFoundError):
        list(a.list_repo_tree(MERGE_PAIRS_REPO, path_in_repo="nope"))


def test_downloads_revisions_and_stats(hub: LocalHub, tmp_path: Path) -> None:
    refs = {t.name: t.target_commit for t in api(hub).list_repo_refs(REVISIONS_REPO).tags}
    old = hf_hub_download(REVISIONS_REPO, WEIGHTS, revision="v1", cache_dir=tmp_path)
    new = hf_hub_download(REVISIONS_REPO, WEIGHTS, revision="main", cache_dir=tmp_path)
    assert Path(old).read_bytes() == (EXAMPLES / "untrained-r8" / WEIGHTS).read_bytes()
    assert Path(new).read_bytes() == (EXAMPLES / "healthy-r8" / WEIGHTS).read_bytes()
    by_sha = hf_hub_download(REVISIONS_REPO, WEIGHTS, revision=refs["v1"], cache_dir=tmp_path / "b")
    assert Path(by_sha).read_bytes() == Path(old).read_bytes()
    dev = hf_hub_download(REVISIONS_REPO, WEIGHTS, revision="dev", cache_dir=tmp_path)
    assert Path(dev).read_bytes() == (EXAMPLES / "overprovisioned-r64" / WEIGHTS).read_bytes()
    sizes = sum(
        (EXAMPLES / n / WEIGHTS).stat().st_size for n in ("untrained-r8", "healthy-r8", "overprovisioned-r64")
    )
    sizes += (EXAMPLES / "untrained-r8" / WEIGHTS).stat().st_size
    assert hub.bytes_served(REVISIONS_REPO, WEIGHTS) == sizes

    hub.reset_stats()
    hf_hub_download(REVISIONS_REPO, WEIGHTS, revision="main", cache_dir=tmp_path)  # warm cache
    assert hub.bytes_served(REVISIONS_REPO) == 0
    assert hub.request_count("resolve", "HEAD") == 1 and hub.request_count("resolve", "GET") == 0
    commits = api(hub).list_repo_commits(REVISIONS_REPO)
    assert [c.title for c in commits][-2:] == ["Add the untrained adapter (step 0)", "initial commit"]


def test_range_reads_are_exact(hub: LocalHub) -> None:
    meta = api(hub).parse_safetensors_file_metadata(PADDED_REPO, WEIGHTS)
    assert meta.tensors[PADDED_LM_HEAD].shape == [30000, 512] and len(meta.tensors) == 9
    file = hub.stats()["files"][0]
    assert file["path"] == WEIGHTS and file["ranges"][0][:2] == [0, 100001]
    assert hub.bytes_served(PADDED_REPO) <= 100001

    # HfFileSystem reads whole 5 MB blocks by default; cache_type="none" asks for exact bounds.
    fs = HfFileSystem(endpoint=hub.url, token=hub.tokens["alice"], skip_instance_cache=True)
    target = f"{PADDED_REPO}/{WEIGHTS}"
    hub.reset_stats()
    assert len(fs.cat_file(target, start=0, end=8)) == 8
    assert hub.bytes_served(PADDED_REPO) == 5 * 2**20 + 8
    hub.reset_stats()
    lora = meta.tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    (header_len,) = struct.unpack("<Q", fs.cat_file(target, start=0, end=8, cache_type="none"))
    start, end = (8 + header_len + o for o in lora.data_offsets)
    data = fs.cat_file(target, start=start, end=end, cache_type="none")
    assert len(data) == end - start == 512 * 8 * 4
    ranges = [r[:2] for f in hub.stats()["files"] for r in f["ranges"]]
    assert ranges == [[0, 8], [start, end]]
    assert hub.bytes_served(PADDED_REPO) == 8 + end - start

    # Suffix and multi-range requests, straight over HTTP.
    url = f"{hub.url}/{PADDED_REPO}/resolve/main/{WEIGHTS}"
    total = fs.info(target)["size"]
    with httpx2.Client(follow_redirects=True) as client:
        tail = client.get(url, headers={"Range": "bytes=-16"})
        assert (
            tail.status_code == 206
            and tail.headers["Content-Range"] == f"bytes {total - 16}-{total - 1}/{total}"
        )
        multi = client.get(url, headers={"Range": "bytes=0-7,16-23"})
        assert multi.status_code == 206 and multi.headers["Content-Type"].startswith("multipart/byteranges")
        assert client.get(url, headers={"Range": f"bytes={total}-"}).status_code == 416


# -- writing --------------------------------------------------------------------------------------


def test_create_repo_and_upload_regular(hub: LocalHub, tmp_path: Path) -> None:
    a = api(hub)
    url = a.create_repo("alice/upload-regular", private=True)
    assert url.repo_id == "alice/upload-regular"
    assert a.create_repo("alice/upload-regular", exist_ok=True).repo_id == "alice/upload-regular"
    with pytest.raises(HfHubHTTPError) as err:
        a.create_repo("alice/upload-regular")
    assert status_of(err) == 409
    info = a.upload_folder(
        folder_path=EXAMPLES / "healthy-r8", repo_id="alice/upload-regular", path_in_repo="adapter"
    )
    assert hub.request_count("lfs-batch") == 0 and hub.request_count("preupload") == 1
    got = hf_hub_download(
        "alice/upload-regular",
        f"adapter/{WEIGHTS}",
        revision=info.oid,
        cache_dir=tmp_path,
        token=hub.tokens["alice"],
    )
    assert Path(got).read_bytes() == (EXAMPLES / "healthy-r8" / WEIGHTS).read_bytes()
    # Unchanged files are recognised by the preupload oid and not committed again.
    again = a.upload_folder(
        folder_path=EXAMPLES / "healthy-r8", repo_id="alice/upload-regular", path_in_repo="adapter"
    )
    assert again.oid == info.oid and hub.request_count("commit") == 1
    a.delete_file(f"adapter/{WEIGHTS}", "alice/upload-regular")
    assert f"adapter/{WEIGHTS}" not in a.list_repo_files("alice/upload-regular")
    with pytest.raises(RepositoryNotFoundError):
        api(hub, "carol").list_repo_files("alice/upload-regular")


# huggingface_hub's single-part LFS PUT passes a file object as `data=`, which httpx2 deprecates.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
def test_upload_through_git_lfs(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = api(hub)
    a.create_repo("gradience-test/upload-lfs")
    weights = EXAMPLES / "overprovisioned-r64" / WEIGHTS
    with hub.configured(upload_mode="lfs"):
        # A client with Xet enabled fails fast (hf_xet reports the 501 of xet-write-token).
        with pytest.raises(ConnectionError, match="501 Not Implemented"):
            a.upload_file(path_or_fileobj=weights, path_in_repo=WEIGHTS, repo_id="gradience-test/upload-lfs")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        a.upload_file(path_or_fileobj=weights, path_in_repo=WEIGHTS, repo_id="gradience-test/upload-lfs")
        assert hub.request_count("lfs-batch") == 1 and hub.request_count("lfs-upload", "PUT") == 1
        assert hub.request_count("lfs-verify") == 1
        with hub.configured(lfs_multipart_chunk=100_000):
            big = EXAMPLES / "healthy-r8" / WEIGHTS
            a.upload_file(
                path_or_fileobj=big, path_in_repo="multi/" + WEIGHTS, repo_id="gradience-test/upload-lfs"
            )
        assert hub.request_count("lfs-upload", "PUT") == 1 + -(-big.stat().st_size // 100_000)
        # Content already stored: the batch answers without actions and nothing is uploaded.
        before = hub.request_count("lfs-upload")
        a.upload_file(
            path_or_fileobj=weights, path_in_repo="copy/" + WEIGHTS, repo_id="gradience-test/upload-lfs"
        )
        assert hub.request_count("lfs-upload") == before
    info = a.model_info("gradience-test/upload-lfs", files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs[WEIGHTS] is not None and lfs["multi/" + WEIGHTS] is not None
    got = hf_hub_download("gradience-test/upload-lfs", "multi/" + WEIGHTS, cache_dir=tmp_path)
    assert Path(got).read_bytes() == big.read_bytes()


def test_pull_requests_from_outsiders(hub: LocalHub) -> None:
    alice, carol, bob = api(hub), api(hub, "carol"), api(hub, "bob")
    repo = EXAMPLE_REPOS["untrained-r8"]
    main_before = alice.model_info(repo).sha
    with pytest.raises(HfHubHTTPError) as err:
        carol.upload_file(path_or_fileobj=b"nope", path_in_repo="x.txt", repo_id=repo)
    assert status_of(err) == 403
    pr = carol.create_commit(
        repo,
        [CommitOperationAdd("NOTES.md", b"# notes\n")],
        commit_message="Add notes",
        commit_description="Why: tests",
        create_pr=True,
    )
    assert pr.pr_revision == f"refs/pr/{pr.pr_num}" and pr.pr_url.endswith(f"/discussions/{pr.pr_num}")
    assert "NOTES.md" in carol.list_repo_files(repo, revision=pr.pr_revision)
    assert alice.model_info(repo).sha == main_before
    carol.create_commit(
        repo,
        [CommitOperationAdd("NOTES.md", b"# notes v2\n")],
        commit_message="Update notes",
        revision=pr.pr_revision,
    )
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_commit(
            repo, [CommitOperationDelete("NOTES.md")], commit_message="x", revision=pr.pr_revision
        )
    assert status_of(err) == 403
    refs = alice.list_repo_refs(repo, include_pull_requests=True)
    assert pr.pr_revision in {r.ref for r in refs.pull_requests}
    details = alice.get_discussion_details(repo, pr.pr_num)
    assert details.is_pull_request and details.status == "open" and details.target_branch == "refs/heads/main"
    assert [e.type for e in details.events] == ["comment", "commit", "commit"] and "notes v2" in details.diff
    with pytest.raises(HfHubHTTPError):
        carol.merge_pull_request(repo, pr.pr_num)
    alice.merge_pull_request(repo, pr.pr_num)
    merged = alice.get_discussion_details(repo, pr.pr_num)
    assert merged.status == "merged" and merged.merge_commit_oid == alice.model_info(repo).sha
    assert "NOTES.md" in alice.list_repo_files(repo)


def test_parent_commit_conflicts_and_card_updates(hub: LocalHub) -> None:
    a = api(hub)
    a.create_repo("gradience-test/concurrency")
    first = a.model_info("gradience-test/concurrency").sha
    a.upload_file(
        path_or_fileobj=b"1", path_in_repo="a.txt", repo_id="gradience-test/concurrency", parent_commit=first
    )
    with pytest.raises(HfHubHTTPError) as err:
        a.upload_file(
            path_or_fileobj=b"2",
            path_in_repo="b.txt",
            repo_id="gradience-test/concurrency",
            parent_commit=first,
        )
    assert status_of(err) == 412
    # metadata_update goes through the module-level client (HF_ENDPOINT) and validate-yaml.
    card = ModelCard("---\nlibrary_name: peft\ntags: [lora]\n---\n# concurrency\n")
    card.push_to_hub("gradience-test/concurrency", token=hub.tokens["alice"])
    pr = metadata_update(
        "gradience-test/concurrency",
        {"tags": ["lora", "lora-audit"]},
        overwrite=True,
        create_pr=True,
        token=hub.tokens["carol"],
    )
    assert ModelCard.load("gradience-test/concurrency").data.tags == ["lora"]
    assert a.model_info("gradience-test/concurrency", revision=pr.pr_revision).card_data.tags == [
        "lora",
        "lora-audit",
    ]
    with httpx2.Client(follow_redirects=True) as client:
        bad = client.post(
            f"{hub.url}/api/validate-yaml", json={"content": "---\ntags: [x\n---\n", "repoType": "model"}
        )
    assert bad.status_code == 400 and bad.json()["errors"][0]["message"].startswith("Invalid YAML")


def test_discussions_lifecycle_and_paging(hub: LocalHub) -> None:
    alice, carol = api(hub), api(hub, "carol")
    repo = EXAMPLE_REPOS["merge-conflict-b"]
    hub.configure(discussions_page_size=2)
    made = [carol.create_discussion(repo, f"Question {i}", description=f"body {i}") for i in range(3)]
    draft = carol.create_pull_request(repo, "Draft PR", description="wip")
    assert draft.status == "draft" and draft.is_pull_request
    listed = list(alice.get_repo_discussions(repo))
    assert [d.num for d in listed] == sorted((d.num for d in [*made, draft]), reverse=True)
    assert [d.num for d in alice.get_repo_discussions(repo, discussion_type="pull_request")] == [draft.num]

    comment = alice.comment_discussion(repo, made[0].num, "First answer")
    edited = alice.edit_discussion_comment(repo, made[0].num, comment.id, "First answer, edited")
    assert edited.edited and edited.content == "First answer, edited"
    with pytest.raises(HfHubHTTPError) as err:
        carol.edit_discussion_comment(repo, made[0].num, comment.id, "hijack")
    assert status_of(err) == 403
    closed = carol.change_discussion_status(repo, made[0].num, "closed", comment="Thanks")
    assert closed.new_status == "closed"
    assert made[0].num not in {d.num for d in alice.get_repo_discussions(repo, discussion_status="open")}
    events = alice.get_discussion_details(repo, made[0].num).events
    assert [e.type for e in events] == ["comment", "comment", "status-change", "comment"]
    with pytest.raises(HfHubHTTPError):
        api(hub, "bob").change_discussion_status(repo, made[1].num, "closed")
    assert [d.author for d in alice.get_repo_discussions(repo, author="carol")].count("carol") == 4


# -- access ---------------------------------------------------------------------------------------


def test_private_and_gated_repos(hub: LocalHub, tmp_path: Path) -> None:
    alice, bob, carol = api(hub), api(hub, "bob"), api(hub, "carol")
    assert alice.model_info(PRIVATE_REPO).private is True
    for client in (carol, api(hub, None)):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info(PRIVATE_REPO)
        with pytest.raises(RepositoryNotFoundError):
            client.list_repo_files(PRIVATE_REPO)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(PRIVATE_REPO, WEIGHTS, token=hub.tokens["carol"], cache_dir=tmp_path)

    assert carol.model_info(GATED_REPO).gated == "manual"  # metadata stays public
    for token in (hub.tokens["carol"], False):
        with pytest.raises(GatedRepoError):
            hf_hub_download(GATED_REPO, WEIGHTS, token=token, cache_dir=tmp_path)
    assert (
        Path(hf_hub_download(GATED_REPO, WEIGHTS, token=hub.tokens["bob"], cache_dir=tmp_path)).stat().st_size
    )
    hub.grant_access(GATED_REPO, "carol")
    try:
        assert hf_hub_download(
            GATED_REPO, "adapter_config.json", token=hub.tokens["carol"], cache_dir=tmp_path
        )
    finally:
        hub.revoke_access(GATED_REPO, "carol")

    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo("gradience-examples/not-yours")
    assert status_of(err) == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=ALICE_READ_TOKEN).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=EXAMPLE_REPOS["healthy-r8"]
        )
    assert status_of(err) == 403
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(MERGE_PAIRS_REPO, "missing.bin", cache_dir=tmp_path)


# -- faults and statistics ------------------------------------------------------------------------


def test_faults_rate_limit_server_error_latency(hub: LocalHub, tmp_path: Path) -> None:
    a = api(hub)
    repo = EXAMPLE_REPOS["healthy-r8"]
    hub.fault(r"/resolve/.*/adapter_config\.json$", status=429, retry_after=1, times=1, method="GET")
    t0 = time.monotonic()
    got = hf_hub_download(repo, "adapter_config.json", cache_dir=tmp_path)
    assert Path(got).read_bytes() == (EXAMPLES / "healthy-r8" / "adapter_config.json").read_bytes()
    assert time.monotonic() - t0 >= 1.0  # Retry-After honoured
    assert hub.stats()["requests"]["resolve"]["faulted"] == 1 and hub.faults()[0]["times"] == 0

    fault_id = hub.fault(rf"^/api/models/{repo}$", status=503, times=2)
    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as err:
            a.model_info(repo)
        assert status_of(err) == 503 and fault_id in str(err.value)
    assert a.model_info(repo).id == repo

    hub.clear_faults()
    slow = hub.fault(r"/api/whoami-v2", latency=0.4)
    t0 = time.monotonic()
    a.whoami()
    assert time.monotonic() - t0 >= 0.4
    assert hub.fault_hits(slow) == 1


def test_lfs_files_redirect_to_a_cdn_that_never_sees_the_token(hub: LocalHub, tmp_path: Path) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo = EXAMPLE_REPOS["healthy-r8"]
    local = (EXAMPLES / "healthy-r8" / WEIGHTS).read_bytes()
    meta = get_hf_file_metadata(hf_hub_url(repo, WEIGHTS), token=hub.tokens["alice"])
    # read off the redirect itself: size and sha256 of the LFS file, the commit
    assert meta.size == len(local) and meta.etag == hashlib.sha256(local).hexdigest()
    assert meta.location.startswith(f"{hub.cdn_url}/cdn/") and len(meta.commit_hash or "") == 40
    got = hf_hub_download(repo, WEIGHTS, cache_dir=tmp_path, token=hub.tokens["alice"])
    assert Path(got).read_bytes() == local  # the CDN answers 400 to a request carrying the token
    stats = hub.stats()["requests"]
    assert stats["cdn"]["methods"]["GET"] == 1 and stats["resolve"]["methods"]["HEAD"] >= 1
    assert hub.bytes_served(repo, WEIGHTS) == len(local)
    # small regular files are answered by the Hub itself
    with httpx2.Client(follow_redirects=False) as client:
        config = client.get(f"{hub.url}/{repo}/resolve/main/adapter_config.json")
    assert config.status_code == 200 and "Location" not in config.headers


def test_truncated_body_is_resumed_with_a_range(hub: LocalHub, tmp_path: Path) -> None:
    # The client reads 10 MB chunks and resumes from the last whole chunk with a Range request.
    size = api(hub).model_info(PADDED_REPO, files_metadata=True).siblings
    weights = next(s for s in size if s.rfilename == WEIGHTS)
    # LFS bytes come from the CDN origin the Hub redirects to: the fault is there.
    cdn_path = re.escape(f"/cdn/models/{PADDED_REPO}/") + ".*" + re.escape(WEIGHTS)
    fault = hub.fault(cdn_path, truncate=12_000_000, times=1, method="GET")
    got = hf_hub_download(PADDED_REPO, WEIGHTS, cache_dir=tmp_path)
    assert hub.fault_hits(fault) == 1
    assert hashlib.sha256(Path(got).read_bytes()).hexdigest() == weights.lfs.sha256
    (file,) = hub.stats()["files"]
    resumed_at = 10 * 2**20
    assert file["ranges"] == [
        [0, weights.size, 12_000_000, 200],
        [resumed_at, weights.size, weights.size - resumed_at, 206],
    ]
    assert file["bytes"] == 12_000_000 + weights.size - resumed_at


# -- running by hand ------------------------------------------------------------------------------


def test_standalone_server_keeps_its_data(tmp_path: Path) -> None:
    port = free_port()
    first = start_local_hub(port, tmp_path, seed_repos=False)
    try:
        a = HfApi(endpoint=first.url, token=first.tokens["carol"])
        a.create_repo("carol/persisted")
        a.upload_file(path_or_fileobj=b"kept", path_in_repo="kept.txt", repo_id="carol/persisted")
    finally:
        first.stop()
    second = start_local_hub(port, tmp_path, seed_repos=False)
    try:
        files = HfApi(endpoint=second.url, token=second.tokens["carol"]).list_repo_files("carol/persisted")
        assert "kept.txt" in files
    finally:
        second.stop()
