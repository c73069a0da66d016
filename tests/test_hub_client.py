"""The Hub client against a Hub that behaves like the real one: a CDN origin that refuses the
token, stalls, 429s with only a ``RateLimit`` header, servers that ignore or misreport ``Range``,
short answers, and a cache shared by tokens with different rights.

Every fault test checks that the fault fired (the server's hit count) and, where the audit
succeeds, that the client's byte count equals the bytes the server sent.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from servers import hub as H

import gradience
from gradience.errors import (
    GatedRepoError,
    HubTimeoutError,
    HubTransferError,
    RateLimitedError,
    TooLargeError,
)
from gradience.open import OpenOptions

ROOT = Path(__file__).resolve().parents[1]
CDN_WEIGHTS = r"^/cdn/.*adapter_model\.safetensors"
HEALTHY = H.EXAMPLE_REPOS["healthy-r8"]


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENCE_CACHE", str(tmp_path / "cache"))


def _without_source(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "source"}


def _local(name: str) -> dict:
    return _without_source(gradience.audit(ROOT / "examples" / name).to_dict(layers=True))


def _audit_matches(hub, name: str, **options) -> gradience.AdapterAudit:
    """Audit an example from the Hub; it must equal the local audit and the server's byte count."""
    repo = H.EXAMPLE_REPOS[name]
    got = gradience.audit(repo, options=OpenOptions(**options))
    assert _without_source(got.to_dict(layers=True)) == _local(name)
    assert got.source["bytes_transferred"] == hub.bytes_served(repo)
    return got


def test_lfs_bytes_come_from_a_cdn_that_never_sees_the_token(hub):
    _audit_matches(hub, "healthy-r8", token=H.ALICE_TOKEN)
    stats = hub.stats()["requests"]
    assert stats["cdn"]["methods"].get("GET", 0) >= 2  # header and tensors, from the CDN origin
    assert hub.cdn_url and hub.cdn_url != hub.url
    # The CDN refuses a request that carries the token, in XML, as a storage CDN does.
    import httpx2

    with httpx2.Client(follow_redirects=False) as client:
        redirect = client.get(
            f"{hub.url}/{HEALTHY}/resolve/main/adapter_model.safetensors",
            headers={"Authorization": f"Bearer {H.ALICE_TOKEN}"},
        )
        assert redirect.status_code == 302 and redirect.headers["Location"].startswith(hub.cdn_url)
        size = (ROOT / "examples" / "healthy-r8" / "adapter_model.safetensors").stat().st_size
        assert redirect.headers["X-Linked-Size"] == str(size) and len(redirect.headers["X-Repo-Commit"]) == 40
        refused = client.get(
            redirect.headers["Location"], headers={"Authorization": f"Bearer {H.ALICE_TOKEN}"}
        )
        assert refused.status_code == 400 and refused.text.lstrip().startswith("<?xml")
        assert client.get(redirect.headers["Location"]).status_code == 200


def test_a_cdn_403_is_answered_by_resolving_again(hub):
    fault = hub.fault(CDN_WEIGHTS, status=403, times=1)
    hub.reset_stats()
    _audit_matches(hub, "healthy-r8")
    assert hub.fault_hits(fault) == 1
    # one redirect per read of the weights, plus one more after the refusal
    assert hub.request_count("resolve") >= 3


def test_a_stall_ends_within_the_deadline_with_a_clear_error(hub):
    fault = hub.fault(CDN_WEIGHTS, stall_after=4, stall_seconds=30)
    with pytest.raises(HubTimeoutError) as e:
        gradience.audit(HEALTHY, options=OpenOptions(read_timeout=0.5, deadline=2.0))
    assert e.value.code == "timeout" and e.value.repo_id == HEALTHY
    assert "--" not in e.value.message
    (state,) = [f for f in hub.faults() if f["id"] == fault]
    # The client hung up on the stalled answers: it did not wait out the server's 30 s stall.
    assert state["hits"] >= 1 and state["abandoned"] >= 1


def test_a_single_stall_is_retried_and_counted(hub):
    fault = hub.fault(CDN_WEIGHTS, stall_after=4, stall_seconds=30, times=1, method="GET")
    _audit_matches(hub, "healthy-r8", read_timeout=0.5)
    assert hub.fault_hits(fault) == 1


def test_a_stalled_metadata_call_is_retried(hub):
    fault = hub.fault(r"^/api/models/", latency=1.5, times=1)
    _audit_matches(hub, "healthy-r8", read_timeout=0.5)
    assert hub.fault_hits(fault) == 1


def test_a_429_with_only_a_ratelimit_header_is_waited_out(hub):
    fault = hub.fault(CDN_WEIGHTS, rate_limit=1, times=1)
    meta = hub.fault(r"^/api/models/", rate_limit=1, times=1)
    _audit_matches(hub, "healthy-r8")
    assert hub.fault_hits(fault) == 1 and hub.fault_hits(meta) == 1


def test_a_long_rate_limit_is_a_clear_error_not_a_long_wait(hub):
    fault = hub.fault(r"^/api/models/", rate_limit=55)
    with pytest.raises(RateLimitedError) as e:
        gradience.audit(HEALTHY, options=OpenOptions(deadline=10.0))
    assert e.value.retry_after == 55 and "wait 55 s" in e.value.message
    assert hub.fault_hits(fault) == 1  # no retry could succeed before the deadline: none was sent


def test_a_server_that_ignores_range_on_a_small_file_is_accepted(hub):
    fault = hub.fault(CDN_WEIGHTS, ignore_range=True)
    got = _audit_matches(hub, "healthy-r8")
    assert hub.fault_hits(fault) == 1  # the whole file came once; later reads used it
    size = (ROOT / "examples" / "healthy-r8" / "adapter_model.safetensors").stat().st_size
    assert got.source["bytes_transferred"] >= size


def test_a_server_that_ignores_range_on_a_large_file_is_refused(hub):
    fault = hub.fault(CDN_WEIGHTS, ignore_range=True)
    with pytest.raises(TooLargeError) as e:
        gradience.audit(H.PADDED_REPO, options=OpenOptions(max_bytes=2_000_000))
    assert (e.value.param, e.value.limit) == ("max_bytes", 2_000_000)
    assert e.value.needed > 60_000_000  # the whole file, not the LoRA tensors
    assert hub.fault_hits(fault) == 1


def test_a_content_range_for_other_bytes_is_never_used(hub):
    once = hub.fault(CDN_WEIGHTS, bad_content_range=True, times=1)
    _audit_matches(hub, "healthy-r8")
    assert hub.fault_hits(once) == 1
    hub.clear_faults()
    always = hub.fault(CDN_WEIGHTS, bad_content_range=True)
    with pytest.raises(HubTransferError, match="asked for bytes"):
        gradience.audit(H.EXAMPLE_REPOS["overprovisioned-r64"])
    assert hub.fault_hits(always) >= 2


def test_a_short_answer_on_a_kept_connection_is_resumed(hub):
    # Well-formed answers with fewer bytes than asked (Content-Length and Content-Range agree),
    # the connection left open: only a client that checks the length notices.
    fault = hub.fault(CDN_WEIGHTS, short=1000, times=2)
    _audit_matches(hub, "overprovisioned-r64")
    assert hub.fault_hits(fault) == 2
    (weights,) = [f for f in hub.stats()["files"] if f["path"] == "adapter_model.safetensors"]
    starts = [r[0] for r in weights["ranges"]]
    assert any(start + 1000 in starts for start in starts)  # a request resumed 1000 bytes in


def test_a_gated_repo_cached_by_one_token_is_not_served_to_another(hub):
    owner = gradience.audit(H.GATED_REPO, options=OpenOptions(token=H.BOB_TOKEN))
    assert owner.source["bytes_transferred"] > 0
    hub.reset_stats()
    with pytest.raises(GatedRepoError):
        gradience.audit(H.GATED_REPO, options=OpenOptions(token=H.CAROL_TOKEN))
    assert hub.request_count("resolve", "HEAD") == 1  # the access check, refused
    hub.reset_stats()
    again = gradience.audit(H.GATED_REPO, options=OpenOptions(token=H.BOB_TOKEN))
    assert hub.bytes_served(H.GATED_REPO) == 0  # the owner is still served from the cache
    assert _without_source(again.to_dict()) == _without_source(owner.to_dict())


def test_zero_length_reads_send_no_request_and_caps_cover_header_and_config(hub, tmp_path):
    from gradience.hub.transfer import ByteBudget, HubSession, Transfer

    info = gradience.audit(HEALTHY).source
    session = HubSession(budget=ByteBudget(100, repo_id=HEALTHY))
    t = Transfer(HEALTHY, "model", info["commit"], "adapter_model.safetensors", session=session)
    hub.reset_stats()
    assert t.fetch(10, 10) == b"" and t.requests == 0
    with pytest.raises(TooLargeError) as e:
        t.fetch(0, 101)
    assert e.value.limit == 100 and t.requests == 0
    assert hub.request_count("cdn") == 0 and hub.request_count("resolve") == 0
    # A cap above the LoRA tensors alone but below config + header + tensors is refused.
    raw = (ROOT / "examples" / "healthy-r8" / "adapter_model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    lora = len(raw) - 8 - header_len  # every tensor of this example is a LoRA factor
    with pytest.raises(TooLargeError) as e:
        gradience.audit(HEALTHY, options=OpenOptions(max_bytes=lora + 100, cache_dir=tmp_path / "fresh"))
    assert e.value.needed > lora + 100 and e.value.param == "max_bytes"


def test_reads_on_demand_count_toward_the_same_cap(hub):
    from gradience.open import open_adapter

    # Enough for config, header and LoRA tensors, not for the 61 MB non-LoRA head.
    with open_adapter(H.PADDED_REPO, OpenOptions(max_bytes=1_000_000)) as adapter:
        hub.reset_stats()
        with pytest.raises(TooLargeError) as e:
            adapter.read(H.PADDED_LM_HEAD)
        assert e.value.param == "max_bytes" and e.value.needed > 60_000_000
    assert hub.bytes_served(H.PADDED_REPO) == 0  # refused before a byte moved
