"""What a visitor asked to audit, turned into something the core can open — safely.

Only three kinds of input exist: a bundled example (by name), a Hub reference (always passed
on as ``hf://``, so it can never be taken for a path on this server) and uploaded files. A
visitor can therefore never make the Space read its own files, and whichever of them is used
is recorded in :class:`Source` so the page can say which adapter it shows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from notices import err

from gradience.errors import GradienceError
from gradience.hub.refs import looks_like_hub_ref, parse_hub_ref

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path(os.environ.get("GRADIENCE_EXAMPLES_DIR", ROOT / "examples"))
MAX_UPLOAD_BYTES = int(os.environ.get("GRADIENCE_SPACE_MAX_UPLOAD_BYTES", str(1024**3)))


@dataclass(frozen=True)
class Source:
    """One adapter to open.

    Attributes:
        target: what the core opens (a bundled folder, an upload folder, or ``hf://...``).
        name: how the page and the API name it (never a server path).
        kind: ``example``, ``hub`` or ``upload``.
        repo_id: the Hub repo for ``hub`` sources (what a badge may be made for), else None.
    """

    target: str
    name: str
    kind: str
    repo_id: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.kind == "hub"


def bundled(text: str) -> Path | None:
    """A bundled example adapter named ``examples/<name>`` (or ``<name>``), else None."""
    name = text.strip().removeprefix("examples/").strip("/")
    if not name or "/" in name or name.startswith("."):
        return None
    folder = EXAMPLES_DIR / name
    return folder if (folder / "adapter_config.json").is_file() else None


def hub_source(text: str, revision: str = "", subfolder: str = "") -> Source:
    """A Hub reference as typed (id, id@revision or URL), with optional revision/subfolder."""
    text = text.strip()
    if not looks_like_hub_ref(text):
        raise err(
            f"“{text}” is not a Hub repo id: expected user/repo, user/repo@revision or a Hub URL",
            title="Not a repo id",
        )
    try:
        ref = parse_hub_ref(text, revision=revision.strip() or None, subfolder=subfolder.strip() or None)
    except GradienceError as e:
        raise err(str(e), title="Not a repo id") from None
    name = (
        ref.repo_id
        + (f"@{ref.revision}" if ref.revision else "")
        + (f" / {ref.subfolder}" if ref.subfolder else "")
    )
    return Source(str(ref), name, "hub", ref.repo_id)


def typed_source(text: str, revision: str = "", subfolder: str = "") -> Source:
    """A bundled example by name, else a Hub reference."""
    example = bundled(text)
    if example is not None and not (revision.strip() or subfolder.strip()):
        return Source(str(example), f"examples/{example.name}", "example")
    return hub_source(text, revision, subfolder)


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unzip refusing absolute paths, ``..`` and archives that expand past the upload cap."""
    with zipfile.ZipFile(archive) as z:
        total = 0
        for info in z.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise err(
                    f"{archive.name}: refusing a path outside the archive ({info.filename})",
                    title="Bad archive",
                )
            total += info.file_size
            if total > MAX_UPLOAD_BYTES:
                raise err(
                    f"{archive.name} expands past the {MAX_UPLOAD_BYTES / 1e9:.1f} GB upload cap",
                    title="Too large",
                )
        z.extractall(dest)


def _adapter_folder(root: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("adapter_config.json"))
    if not found:
        raise err(
            "no adapter_config.json among the uploaded files: upload adapter_config.json and "
            "adapter_model.safetensors (or .bin), or a .zip of the adapter folder",
            title="Not a LoRA adapter",
        )
    return found[0]


def upload_source(files: list[str]) -> Source:
    """Uploaded loose files, or one .zip, as an adapter folder on disk."""
    paths = [Path(f) for f in files]
    try:
        zipped = [p for p in paths if zipfile.is_zipfile(p)] if len(paths) == 1 else []
        if sum(p.stat().st_size for p in paths) > MAX_UPLOAD_BYTES:
            raise err(f"uploads are capped at {MAX_UPLOAD_BYTES / 1e9:.1f} GB", title="Too large")
        work = Path(tempfile.mkdtemp(prefix="gradience-upload-"))
        for p in paths:
            if p in zipped:
                _safe_extract(p, work / p.stem)
            else:
                shutil.copy(p, work / p.name)
    except (OSError, zipfile.BadZipFile) as e:
        raise err(f"could not read the upload: {e.__class__.__name__}", title="Bad upload") from None
    folder = _adapter_folder(work)
    label = zipped[0].name if zipped else ", ".join(sorted(p.name for p in paths))
    return Source(str(folder), f"upload: {label}", "upload")


def zip_sources(files: list[str] | None) -> list[Source]:
    """One adapter per uploaded .zip (the merge tab takes several adapters at once)."""
    out = []
    for f in files or []:
        p = Path(f)
        if not zipfile.is_zipfile(p):
            raise err(
                f"{p.name}: upload each adapter as a .zip of its folder to merge uploads", title="Not a .zip"
            )
        work = Path(tempfile.mkdtemp(prefix="gradience-upload-"))
        _safe_extract(p, work)
        out.append(Source(str(_adapter_folder(work)), f"upload: {p.name}", "upload"))
    return out


def audit_source(repo: str, revision: str, subfolder: str, files: list[str] | None) -> Source:
    """The one adapter the audit inputs name. Uploaded files win over a typed id (the page
    clears the other box when one is used, and always names what it audited)."""
    if files:
        return upload_source(files)
    text = (repo or "").strip()
    if not text:
        raise err(
            "enter a Hub repo id (user/repo), a Hub URL, or upload adapter files", title="Nothing to audit"
        )
    return typed_source(text, revision or "", subfolder or "")


def merge_sources(refs: str, files: list[str] | None) -> list[Source]:
    """Two or more adapters: one reference per line (or comma-separated), plus .zip uploads."""
    out = [typed_source(line) for line in (refs or "").replace(",", "\n").splitlines() if line.strip()]
    out += zip_sources(files)
    if len(out) < 2:
        raise err(
            "give two or more adapters: Hub repo ids one per line, or .zip uploads", title="Need two adapters"
        )
    return out
