"""Which adapters a pull request touches, and each one's files at a given commit.

Both sides are read from git objects (``git show <sha>:<path>``), never from the working tree
alone: on ``pull_request`` events the checkout is a merge commit, which is neither the base nor
the head. File names in a pull request are untrusted input, so git is always called with an
argument list (no shell), and exported files keep only their base name.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gradience.errors import AdapterNotFoundError

CONFIG = "adapter_config.json"
#: Files whose change means the adapter changed (weights in either format, and the config).
ADAPTER_FILES = (CONFIG, "adapter_model.safetensors", "adapter_model.bin")
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


@dataclass(frozen=True)
class ChangedFile:
    """One entry of a pull request's file list."""

    filename: str
    status: str  # added | modified | removed | renamed | copied | changed | unchanged
    previous_filename: str | None = None


def _is_adapter_file(path: str) -> bool:
    return posixpath.basename(path) in ADAPTER_FILES


def _folder(path: str) -> str:
    return posixpath.dirname(path) or "."


def config_path(folder: str) -> str:
    """The ``adapter_config.json`` an annotation points at (``adapter_config.json`` at the root)."""
    return posixpath.normpath(posixpath.join(folder, CONFIG))


def touched_folders(files: Iterable[ChangedFile]) -> list[str]:
    """Folders whose adapter files the pull request adds, changes, renames or deletes, in the
    order they first appear (a rename touches both its old and its new folder)."""
    seen: dict[str, None] = {}
    for f in files:
        for path in (f.previous_filename, f.filename):
            if path and _is_adapter_file(path):
                seen.setdefault(_folder(path), None)
    return list(seen)


def _glob(pattern: str) -> re.Pattern[str]:
    """A path glob as GitHub's ``paths`` filters read one: ``*`` and ``?`` stay inside one
    folder name, ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def glob_folders(configs: Iterable[str], globs: Iterable[str]) -> list[str]:
    """Adapter folders (those holding an ``adapter_config.json``) that match a glob, given as
    the folder (``adapters/*``) or a file in it (``adapters/*/adapter_config.json``)."""
    pats = [_glob(g.strip().strip("/")) for g in globs if g.strip()]
    out: dict[str, None] = {}
    for cfg in configs:
        folder = _folder(cfg)
        if any(p.fullmatch(folder) or p.fullmatch(cfg) for p in pats):
            out.setdefault(folder, None)
    return list(out)


class GitRepo:
    """Read-only access to the checkout's object database."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "-C", str(self.root), "-c", "core.quotepath=off", *args],
            capture_output=True,
            check=check,
            timeout=300,
        )

    def has_commit(self, sha: str) -> bool:
        return self._git("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

    def ensure_commit(self, sha: str, *, pr_ref: int | None = None) -> bool:
        """True when ``sha`` is readable, fetching it once from ``origin`` (by id, then as the
        pull request's head ref) when a shallow checkout lacks it."""
        if self.has_commit(sha):
            return True
        self._git("fetch", "--quiet", "--no-tags", "--depth=1", "origin", sha, check=False)
        if not self.has_commit(sha) and pr_ref is not None:
            self._git("fetch", "--quiet", "--no-tags", "origin", f"refs/pull/{pr_ref}/head", check=False)
        return self.has_commit(sha)

    def merge_base(self, base: str, head: str) -> str | None:
        """Where the pull request's branch left the base branch (None in a too-shallow clone)."""
        p = self._git("merge-base", base, head, check=False)
        out = p.stdout.decode().strip()
        return out if p.returncode == 0 and out else None

    def changed_files(self, base: str, head: str) -> list[ChangedFile]:
        """The pull request's files from git itself (used when no token can ask GitHub)."""
        p = self._git("diff", "--name-status", "-z", "-M", f"{base}...{head}")
        fields = p.stdout.decode("utf-8", errors="replace").split("\0")
        out, i = [], 0
        status_of = {
            "A": "added",
            "M": "modified",
            "D": "removed",
            "R": "renamed",
            "C": "copied",
            "T": "changed",
        }
        while i < len(fields) and fields[i]:
            code = fields[i]
            if code[0] in "RC":
                out.append(ChangedFile(fields[i + 2], status_of[code[0]], fields[i + 1]))
                i += 3
            else:
                out.append(ChangedFile(fields[i + 1], status_of.get(code[0], "modified")))
                i += 2
        return out

    def configs(self, sha: str) -> list[str]:
        """Every ``adapter_config.json`` in the tree of ``sha``."""
        p = self._git("ls-tree", "-r", "-z", "--name-only", sha)
        names = [n for n in p.stdout.decode("utf-8", errors="replace").split("\0") if n]
        return [n for n in names if posixpath.basename(n) == CONFIG]

    def export(self, sha: str, folder: str, dest: Path, *, workspace: Path | None = None) -> Path | None:
        """Write the files directly inside ``folder`` at ``sha`` into ``dest``; None when the
        folder holds no adapter file there (the adapter is absent on that side).

        A Git LFS pointer is replaced by the working tree's file of the same path when that
        file is real content (a checkout with ``lfs: true``), since only the head is checked out.
        """
        prefix = "" if folder == "." else folder.rstrip("/") + "/"
        p = self._git("ls-tree", "-z", "--full-tree", sha, "--", prefix or ".", check=False)
        if p.returncode != 0:
            raise AdapterNotFoundError(
                f"cannot list {folder} at {sha[:12]}: {p.stderr.decode(errors='replace')}"
            )
        entries = []
        for rec in p.stdout.decode("utf-8", errors="replace").split("\0"):
            meta, _, name = rec.partition("\t")
            if name and meta.split()[1:2] == ["blob"]:
                entries.append(name)
        if not any(posixpath.basename(n) in ADAPTER_FILES for n in entries):
            return None
        dest.mkdir(parents=True, exist_ok=True)
        for name in entries:
            out = dest / posixpath.basename(name)
            with out.open("wb") as f:  # streamed: weights can be gigabytes
                subprocess.run(["git", "-C", str(self.root), "cat-file", "blob", f"{sha}:{name}"],
                               stdout=f, stderr=subprocess.DEVNULL, check=True, timeout=600)  # fmt: skip
            if workspace is not None and _head_bytes(out).startswith(_LFS_POINTER):
                local = workspace / name
                if local.is_file() and not _head_bytes(local).startswith(_LFS_POINTER):
                    shutil.copyfile(local, out)
        return dest


def _head_bytes(path: Path, n: int = 64) -> bytes:
    with path.open("rb") as f:
        return f.read(n)
