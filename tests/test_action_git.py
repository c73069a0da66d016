"""Reading an adapter at a commit: git objects, not the working tree, except where Git LFS left
a pointer in git and the checkout holds the real file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from gradience.action.adapters import ChangedFile, GitRepo, glob_folders, touched_folders
from gradience.action.compare import compare
from gradience.diff import Rules

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 69032\n"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()  # fmt: skip


def test_lfs_pointers_are_read_from_the_checkout_when_it_has_the_file(tmp_path):
    repo = tmp_path / "repo"
    (repo / "lora").mkdir(parents=True)
    _git(repo, "init", "-q")
    shutil.copyfile(EXAMPLES / "untrained-r8" / "adapter_config.json", repo / "lora" / "adapter_config.json")
    (repo / "lora" / "adapter_model.safetensors").write_bytes(POINTER)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "weights in LFS")
    sha = _git(repo, "rev-parse", "HEAD")
    git = GitRepo(repo)
    only_git = git.export(sha, "lora", tmp_path / "a")
    assert (only_git / "adapter_model.safetensors").read_bytes() == POINTER
    # `lfs: true` in the checkout: the working tree holds the real weights
    shutil.copyfile(
        EXAMPLES / "healthy-r8" / "adapter_model.safetensors", repo / "lora" / "adapter_model.safetensors"
    )
    smudged = git.export(sha, "lora", tmp_path / "b", workspace=repo)
    assert (smudged / "adapter_model.safetensors").read_bytes()[:8] != POINTER[:8]
    r = compare("lora", kind="git", base=only_git, head=smudged, base_label="lora@base", head_label="lora@head",
                policy="energy@0.9", rules=Rules())  # fmt: skip
    assert r.status == "changed" and r.error["side"] == "base" and r.error["code"] == "lfs_pointer"
    assert "lora@base" in r.error["message"] and str(tmp_path) not in r.error["message"]


def test_touched_folders_and_globs():
    files = [
        ChangedFile("a/adapter_model.safetensors", "modified"),
        ChangedFile("docs/readme.md", "modified"),
        ChangedFile("new/adapter_config.json", "renamed", previous_filename="old/adapter_config.json"),
        ChangedFile("adapter_model.bin", "added"),
        ChangedFile("a/adapter_config.json", "modified"),
    ]
    assert touched_folders(files) == ["a", "old", "new", "."]
    configs = ["models/x/adapter_config.json", "models/y/adapter_config.json", "other/adapter_config.json"]
    assert glob_folders(configs, ["models/*"]) == ["models/x", "models/y"]
    assert glob_folders(configs, ["*/adapter_config.json"]) == ["other"]  # `*` stays in one folder
    assert glob_folders(configs, ["**/adapter_config.json"]) == ["models/x", "models/y", "other"]
    assert glob_folders(configs, ["models/?", "nothing/**"]) == ["models/x", "models/y"]
