"""Every way users name an adapter on the Hub normalises to the same reference."""

from __future__ import annotations

import pytest

from gradience.errors import UsageError
from gradience.hub.refs import HubRef, looks_like_hub_ref, parse_hub_ref


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("alice/adapter", HubRef("alice/adapter")),
        ("alice/adapter@v1.0", HubRef("alice/adapter", revision="v1.0")),
        ("alice/adapter@refs/pr/3", HubRef("alice/adapter", revision="refs/pr/3")),
        ("datasets/alice/bundle", HubRef("alice/bundle", "dataset")),
        (
            "hf://alice/adapter@main/model/lora",
            HubRef("alice/adapter", revision="main", subfolder="model/lora"),
        ),
        ("hf://datasets/alice/bundle/a1", HubRef("alice/bundle", "dataset", subfolder="a1")),
        ("https://huggingface.co/alice/adapter", HubRef("alice/adapter")),
        (
            "https://huggingface.co/anirudh-ak/peft-gpt2/tree/main/model/lora_model",
            HubRef("anirudh-ak/peft-gpt2", revision="main", subfolder="model/lora_model"),
        ),
        (
            "https://huggingface.co/alice/adapter/blob/abc123/sub/adapter_config.json",
            HubRef("alice/adapter", revision="abc123", subfolder="sub"),
        ),
        ("http://127.0.0.1:8765/datasets/alice/bundle/tree/dev", HubRef("alice/bundle", "dataset", "dev")),
        # revisions with slashes stay whole; percent-encoded ones are decoded once
        ("hf://alice/adapter@refs/pr/3/sub", HubRef("alice/adapter", revision="refs/pr/3", subfolder="sub")),
        ("hf://alice/adapter@refs/pr/3", HubRef("alice/adapter", revision="refs/pr/3")),
        (
            "hf://alice/adapter@refs%2Fpr%2F3/sub",
            HubRef("alice/adapter", revision="refs/pr/3", subfolder="sub"),
        ),
        ("alice/adapter@refs%2Fpr%2F3", HubRef("alice/adapter", revision="refs/pr/3")),
        ("alice/adapter@v%25201", HubRef("alice/adapter", revision="v%201")),  # once, not twice
        (
            "https://huggingface.co/alice/adapter/tree/refs%2Fpr%2F3/sub",
            HubRef("alice/adapter", revision="refs/pr/3", subfolder="sub"),
        ),
        (
            "https://huggingface.co/alice/adapter/tree/refs/pr/3/sub",
            HubRef("alice/adapter", revision="refs/pr/3", subfolder="sub"),
        ),
        (
            "hf://datasets/alice/bundle@refs/convert/parquet/a1",
            HubRef("alice/bundle", "dataset", "refs/convert/parquet", "a1"),
        ),
        # repo types survive every form
        ("hf.co/spaces/alice/demo", HubRef("alice/demo", "space")),
        (
            "https://huggingface.co/spaces/alice/demo/tree/main/lora",
            HubRef("alice/demo", "space", "main", "lora"),
        ),
        ("hf://spaces/alice/demo/lora", HubRef("alice/demo", "space", subfolder="lora")),
        ("huggingface.co/datasets/alice/bundle", HubRef("alice/bundle", "dataset")),
        (
            "https://hf.co/datasets/alice/bundle/blob/dev/a1/adapter_config.json",
            HubRef("alice/bundle", "dataset", "dev", "a1"),
        ),
    ],
)
def test_references(text, want):
    assert looks_like_hub_ref(text)
    assert parse_hub_ref(text, endpoint="http://127.0.0.1:8765") == want
    assert parse_hub_ref(str(want), endpoint="http://127.0.0.1:8765") == want  # str() round-trips


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("https://example.com/alice/adapter", "https://huggingface.co"),
        ("http://127.0.0.1:9999/alice/adapter", "http://127.0.0.1:8765"),  # same host, other port
        ("https://hub.internal/alice/adapter", None),  # HF_ENDPOINT unset: the public Hub
    ],
)
def test_a_url_for_another_hub_is_refused(text, endpoint, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with pytest.raises(UsageError, match="names the host") as e:
        parse_hub_ref(text, endpoint=endpoint)
    assert e.value.param == "endpoint"


def test_the_configured_endpoint_is_accepted(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.internal")
    assert parse_hub_ref("https://hub.internal/alice/adapter") == HubRef("alice/adapter")


def test_explicit_options_win():
    ref = parse_hub_ref("alice/adapter@v1", revision="v2", subfolder="/x/", repo_type="dataset")
    assert ref == HubRef("alice/adapter", "dataset", "v2", "x")


@pytest.mark.parametrize("text", ["just-a-name", "a/b/c", "https://huggingface.co/alice", "hf://alice"])
def test_non_references(text):
    with pytest.raises(UsageError):
        parse_hub_ref(text)


def test_bad_repo_type():
    with pytest.raises(UsageError, match="repo type must be model, dataset or space") as e:
        parse_hub_ref("a/b", repo_type="bucket")
    assert e.value.param == "repo_type"
