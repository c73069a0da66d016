"""Repos, commits and blobs: a tiny git-like model that keeps every revision readable.

Blobs live on disk under ``<data>/blobs/<aa>/<sha256>`` (content-addressed, written once, served
by streaming so files of hundreds of MB never sit in memory). Everything else (repos, refs, commit
snapshots, discussions, blob sizes) is one JSON index, rewritten atomically after each change, so a
server started by hand on the same ``--data`` folder finds its state again.

A commit stores the full file map of its tree, not a delta: repos here are small, and a snapshot
makes "read this file at that old sha" a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

INDEX_VERSION = 1
REPO_TYPES = ("model", "dataset", "space")
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
HEX40 = re.compile(r"[0-9a-f]{40}")
HEX_PREFIX = re.compile(r"[0-9a-f]{7,40}")

# What a new repo's first commit holds: git-lfs rules for the usual weight and archive formats.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
        "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
        "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite",
        "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip


# -- dates ------------------------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


def hub_date(value: datetime) -> str:
    """Format like the Hub (``2025-03-01T12:00:00.000Z``); the client's parser needs the ``Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_date(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- hashes -----------------------------------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as ``oid`` and ETag for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file the Hub keeps in git for a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


# -- blobs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobMeta:
    size: int
    sha1: str  # git blob sha1 of the content itself


class BlobStore:
    """Content-addressed files. Writers hash while they write, so nothing is read twice."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self._meta: dict[str, BlobMeta] = {}
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        with self._lock:
            known = sha256 in self._meta
        return known and self.path(sha256).is_file()

    def meta(self, sha256: str) -> BlobMeta:
        with self._lock:
            return self._meta[sha256]

    def put_bytes(self, data: bytes) -> str:
        with self.writer(len(data)) as w:
            w.write(data)
        return w.sha256

    def writer(self, expected_size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected_size)

    def _register(self, sha256: str, meta: BlobMeta, tmp_path: Path) -> None:
        final = self.path(sha256)
        with self._lock:
            if final.is_file():
                tmp_path.unlink(missing_ok=True)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, final)
            self._meta[sha256] = meta

    def to_json(self) -> dict[str, list[Any]]:
        with self._lock:
            return {k: [m.size, m.sha1] for k, m in self._meta.items()}

    def load_json(self, data: dict[str, list[Any]]) -> None:
        with self._lock:
            self._meta = {k: BlobMeta(int(v[0]), str(v[1])) for k, v in data.items()}


class BlobWriter:
    """Streams bytes into a temp file, hashing sha256 (and the git sha1 when the size is known)."""

    def __init__(self, store: BlobStore, expected_size: int | None) -> None:
        self._store = store
        self._expected = expected_size
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix="blob-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1(b"blob %d\0" % expected_size) if expected_size is not None else None
        self.size = 0
        self.sha256 = ""

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._sha256.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)
        self.size += len(chunk)

    def digest(self) -> str:
        """The sha256 of what was written so far (to check an upload before keeping it)."""
        return self._sha256.hexdigest()

    def finish(self) -> str:
        self._file.close()
        if self._sha1 is not None and self.size == self._expected:
            sha1 = self._sha1.hexdigest()
        else:  # size unknown up front (chunked upload): one more pass over the file
            sha1_hash = hashlib.sha1(b"blob %d\0" % self.size)
            with open(self._tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    sha1_hash.update(chunk)
            sha1 = sha1_hash.hexdigest()
        self.sha256 = self._sha256.hexdigest()
        self._store._register(self.sha256, BlobMeta(self.size, sha1), self._tmp)
        return self.sha256

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


# -- repos ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit's tree: which blob, and whether git stores it as an LFS pointer."""

    blob: str
    lfs: bool = False


@dataclass
class Commit:
    oid: str
    parents: list[str]
    files: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "oid": self.oid,
            "parents": self.parents,
            "files": {p: [e.blob, e.lfs] for p, e in self.files.items()},
            "title": self.title,
            "message": self.message,
            "author": self.author,
            "date": hub_date(self.date),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Commit:
        return cls(
            oid=d["oid"],
            parents=list(d["parents"]),
            files={p: FileEntry(v[0], bool(v[1])) for p, v in d["files"].items()},
            title=d["title"],
            message=d["message"],
            author=d["author"],
            date=parse_date(d["date"]),
        )


@dataclass
class Discussion:
    """A discussion or pull request. Events keep the Hub's wire shape, author as a plain name."""

    num: int
    title: str
    author: str
    is_pr: bool
    status: str  # open | closed | merged | draft
    created_at: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    base_ref: str | None = None  # "refs/heads/main" for pull requests
    base_commit: str | None = None
    merge_commit: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["created_at"] = hub_date(self.created_at)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Discussion:
        d = dict(d)
        d["created_at"] = parse_date(d["created_at"])
        return cls(**d)


GatedMode = Literal[False, "auto", "manual"]


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    gated: GatedMode = False
    gated_access: list[str] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    created_at: datetime = field(default_factory=utc_now)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[str, str] = field(default_factory=dict)  # "N" -> head commit of refs/pr/N
    commits: dict[str, Commit] = field(default_factory=dict)
    discussions: list[Discussion] = field(default_factory=list)

    @property
    def key(self) -> str:
        return repo_key(self.type, self.id)

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def url_path(self) -> str:
        """``ns/name`` for models, ``datasets/ns/name`` for datasets: the web and resolve prefix."""
        return URL_PREFIXES[self.type] + self.id

    def head(self, branch: str = "main") -> Commit:
        return self.commits[self.branches[branch]]

    def discussion(self, num: int) -> Discussion | None:
        return next((d for d in self.discussions if d.num == num), None)

    def next_discussion_num(self) -> int:
        return max((d.num for d in self.discussions), default=0) + 1

    def resolve(self, revision: str) -> str | None:
        """Map a branch, tag, ``refs/...`` name or (abbreviated) commit sha to a commit oid."""
        rev = revision
        if rev.startswith("refs/heads/"):
            return self.branches.get(rev[len("refs/heads/") :])
        if rev.startswith("refs/tags/"):
            return self.tags.get(rev[len("refs/tags/") :])
        if m := re.fullmatch(r"refs/pr/(\d+)", rev):
            return self.prs.get(m.group(1))
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        if HEX40.fullmatch(rev):
            return rev if rev in self.commits else None
        if HEX_PREFIX.fullmatch(rev):
            found = [oid for oid in self.commits if oid.startswith(rev)]
            return found[0] if len(found) == 1 else None
        return None

    def history(self, oid: str) -> Iterator[Commit]:
        """First-parent history from ``oid`` back to the root commit."""
        current: str | None = oid
        while current is not None:
            commit = self.commits[current]
            yield commit
            current = commit.parents[0] if commit.parents else None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "private": self.private,
            "gated": self.gated,
            "gated_access": self.gated_access,
            "downloads": self.downloads,
            "likes": self.likes,
            "created_at": hub_date(self.created_at),
            "branches": self.branches,
            "tags": self.tags,
            "prs": self.prs,
            "commits": [c.to_json() for c in self.commits.values()],
            "discussions": [d.to_json() for d in self.discussions],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Repo:
        return cls(
            type=d["type"],
            id=d["id"],
            private=d["private"],
            gated=d["gated"],
            gated_access=list(d["gated_access"]),
            downloads=d["downloads"],
            likes=d["likes"],
            created_at=parse_date(d["created_at"]),
            branches=dict(d["branches"]),
            tags=dict(d["tags"]),
            prs=dict(d["prs"]),
            commits={c["oid"]: Commit.from_json(c) for c in d["commits"]},
            discussions=[Discussion.from_json(x) for x in d["discussions"]],
        )


def repo_key(repo_type: str, repo_id: str) -> str:
    return f"{repo_type}/{repo_id}"


# -- changes and commits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One operation of a commit: ``add`` (with an entry), ``delete`` a file or ``delete_folder``."""

    op: Literal["add", "delete", "delete_folder"]
    path: str
    entry: FileEntry | None = None


class MissingPathError(KeyError):
    """A delete named a file or folder that the parent tree does not have."""


def apply_changes(files: dict[str, FileEntry], changes: list[Change]) -> dict[str, FileEntry]:
    out = dict(files)
    for change in changes:
        if change.op == "add":
            assert change.entry is not None
            out[change.path] = change.entry
        elif change.op == "delete":
            if change.path not in out:
                raise MissingPathError(change.path)
            del out[change.path]
        else:
            prefix = change.path.rstrip("/") + "/"
            doomed = [p for p in out if p.startswith(prefix)]
            if not doomed:
                raise MissingPathError(change.path)
            for p in doomed:
                del out[p]
    return out


def commit_oid(
    parents: list[str], files: dict[str, FileEntry], title: str, message: str, author: str, date: datetime
) -> str:
    """Deterministic: the same seed gives the same shas in every session."""
    payload = json.dumps(
        {
            "parents": parents,
            "files": sorted((p, e.blob, e.lfs) for p, e in files.items()),
            "title": title,
            "message": message,
            "author": author,
            "date": hub_date(date),
        },
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


# -- tree listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeItem:
    type: Literal["file", "directory"]
    path: str
    oid: str
    entry: FileEntry | None = None


class Tree:
    """Directory view of a commit's flat file map, with git-like oids for folders."""

    def __init__(self, files: dict[str, FileEntry], blobs: BlobStore) -> None:
        self.files = files
        self.blobs = blobs
        self._dirs: dict[str, set[str]] = {"": set()}
        for path in files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                parent, child = "/".join(parts[: i - 1]), "/".join(parts[:i])
                self._dirs.setdefault(child, set())
                self._dirs.setdefault(parent, set()).add(child)
            self._dirs.setdefault("/".join(parts[:-1]), set()).add(path)
        self._oids: dict[str, str] = {}

    def is_dir(self, path: str) -> bool:
        return path.strip("/") in self._dirs

    def file_oid(self, path: str) -> str:
        entry = self.files[path]
        meta = self.blobs.meta(entry.blob)
        return git_blob_sha1(lfs_pointer(entry.blob, meta.size)) if entry.lfs else meta.sha1

    def dir_oid(self, path: str) -> str:
        if path not in self._oids:
            h = hashlib.sha1(b"tree\0")
            for child in sorted(self._dirs[path]):
                oid = self.dir_oid(child) if child in self._dirs else self.file_oid(child)
                h.update(f"{child.rsplit('/', 1)[-1]}\0{oid}\n".encode())
            self._oids[path] = h.hexdigest()
        return self._oids[path]

    def item(self, path: str) -> TreeItem | None:
        path = path.strip("/")
        if path in self.files:
            return TreeItem("file", path, self.file_oid(path), self.files[path])
        if path in self._dirs and path:
            return TreeItem("directory", path, self.dir_oid(path))
        return None

    def list(self, path: str, *, recursive: bool) -> list[TreeItem] | None:
        """Children of ``path`` (folders first, then files, each sorted), or None if not a folder."""
        path = path.strip("/")
        if path not in self._dirs:
            return None
        out: list[TreeItem] = []
        children = self._dirs[path]
        dirs = sorted(c for c in children if c in self._dirs)
        files = sorted(c for c in children if c not in self._dirs)
        for d in dirs:
            out.append(TreeItem("directory", d, self.dir_oid(d)))
            if recursive:
                out.extend(self.list(d, recursive=True) or [])
        out.extend(TreeItem("file", f, self.file_oid(f), self.files[f]) for f in files)
        return out


def last_commit_touching(repo: Repo, oid: str, path: str, *, is_dir: bool) -> Commit:
    """The newest first-parent commit that changed ``path`` (or anything under it, for a folder)."""

    def state(commit: Commit) -> object:
        if not is_dir:
            return commit.files.get(path)
        prefix = path + "/"
        return sorted((p, e) for p, e in commit.files.items() if p.startswith(prefix))

    history = list(repo.history(oid))
    for commit, parent in zip(history, [*history[1:], None], strict=True):
        if parent is None or state(commit) != state(parent):
            return commit
    return history[-1]


# -- events -----------------------------------------------------------------------------------------


@dataclass
class HubEvent:
    """A change a webhook may hear about, in the Hub's terms (``event.scope`` and ``event.action``).

    Routes announce it with ``Store.emit`` while they still hold the store lock, so listeners see
    the state right after the change; a listener must be quick (queue work, don't do it).
    """

    scope: str  # repo | repo.content | repo.config | discussion | discussion.comment
    action: str  # create | update | delete | move
    repo: Repo
    base_url: str
    discussion: Discussion | None = None
    comment: dict[str, Any] | None = None  # the discussion event of type "comment"
    updated_refs: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # ref, old, new
    updated_config: dict[str, Any] | None = None


# -- the store --------------------------------------------------------------------------------------


class Store:
    """All repos plus blobs, behind one re-entrant lock; ``save()`` after every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(root)
        self.repos: dict[str, Repo] = {}
        self.meta: dict[str, Any] = {}
        self.lock = threading.RLock()
        self.listeners: list[Callable[[HubEvent], None]] = []  # e.g. webhook delivery
        self._index = root / "index.json"
        if self._index.is_file():
            self._load()

    def _load(self) -> None:
        data = json.loads(self._index.read_text())
        if data.get("version") != INDEX_VERSION:
            raise RuntimeError(
                f"{self._index}: index version {data.get('version')}, expected {INDEX_VERSION}"
            )
        self.blobs.load_json(data["blobs"])
        self.repos = {r.key: r for r in (Repo.from_json(x) for x in data["repos"])}
        self.meta = dict(data.get("meta", {}))

    def save(self) -> None:
        with self.lock:
            data = {
                "version": INDEX_VERSION,
                "meta": self.meta,
                "blobs": self.blobs.to_json(),
                "repos": [r.to_json() for r in self.repos.values()],
            }
            tmp = self._index.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._index)

    def emit(self, event: HubEvent) -> None:
        """Tell every listener about a change; a failing listener never fails the request."""
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as e:
                print(f"[localhub] event listener failed on {event.scope}: {e!r}", file=sys.stderr)

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get(repo_key(repo_type, repo_id))

    def add(self, repo: Repo) -> None:
        self.repos[repo.key] = repo

    def remove(self, repo: Repo) -> None:
        self.repos.pop(repo.key, None)

    def commit(
        self,
        repo: Repo,
        parent: str | None,
        changes: list[Change],
        *,
        title: str,
        message: str = "",
        author: str,
        date: datetime | None = None,
    ) -> Commit:
        """Record a commit on top of ``parent`` (no ref moves: the caller decides which ref)."""
        base = repo.commits[parent].files if parent else {}
        files = apply_changes(base, changes)
        when = date or utc_now()
        parents = [parent] if parent else []
        oid = commit_oid(parents, files, title, message, author, when)
        commit = Commit(oid, parents, files, title, message, author, when)
        repo.commits[oid] = commit
        return commit

    def create_repo(
        self,
        repo_type: str,
        repo_id: str,
        *,
        author: str,
        private: bool = False,
        date: datetime | None = None,
    ) -> Repo:
        """A new repo whose ``main`` holds one commit with ``.gitattributes``, like on the Hub."""
        when = date or utc_now()
        repo = Repo(type=repo_type, id=repo_id, private=private, created_at=when)
        entry = self.add_file_bytes(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
        first = self.commit(
            repo,
            None,
            [Change("add", ".gitattributes", entry)],
            title="initial commit",
            author=author,
            date=when,
        )
        repo.branches["main"] = first.oid
        self.add(repo)
        return repo

    def tree(self, commit: Commit) -> Tree:
        return Tree(commit.files, self.blobs)

    def add_file_bytes(self, data: bytes, *, lfs: bool) -> FileEntry:
        return FileEntry(self.blobs.put_bytes(data), lfs)
