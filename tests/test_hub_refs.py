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
    ],
)
def test_references(text, want):
    assert looks_like_hub_ref(text)
    assert parse_hub_ref(text) == want


def test_explicit_options_win():
    ref = parse_hub_ref("alice/adapter@v1", revision="v2", subfolder="/x/", repo_type="dataset")
    assert ref == HubRef("alice/adapter", "dataset", "v2", "x")


@pytest.mark.parametrize("text", ["just-a-name", "a/b/c", "https://huggingface.co/alice", "hf://alice"])
def test_non_references(text):
    with pytest.raises(UsageError):
        parse_hub_ref(text)


def test_bad_repo_type():
    with pytest.raises(UsageError, match="repo type must be model or dataset") as e:
        parse_hub_ref("a/b", repo_type="space")
    assert e.value.param == "repo_type"
