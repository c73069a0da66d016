"""Open an adapter that lives on the Hub without downloading it.

Resolve the revision to a commit, read ``adapter_config.json``, read the safetensors header
with range requests, then fetch only the LoRA tensors' byte ranges, coalesced into few
requests. Non-LoRA bytes (embeddings, ``modules_to_save`` heads) are never transferred
unless a caller reads them. Everything is cached by (repo, commit, file, byte range), so
auditing an unchanged revision again transfers no tensor bytes; for a gated or private repo the
cache is used only after one authenticated request shows this caller may read it.

Every request of one open shares a :class:`~gradience.hub.transfer.HubSession`: the timeouts and
the deadline from :class:`~gradience.open.OpenOptions`, and one byte budget (``max_bytes``) that
the config, the safetensors header, the tensors and any on-demand read all count toward.
"""

from __future__ import annotations

import bisect
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradience.adapters.config import AdapterConfig
from gradience.adapters.layout import group_layers
from gradience.adapters.load import CONFIG_NAME, WEIGHT_NAMES, Adapter
from gradience.adapters.pickle_io import TorchZipFile
from gradience.adapters.safetensors_io import (
    LFS_POINTER_PREFIX,
    MAX_HEADER_BYTES,
    SafetensorsFile,
    TensorInfo,
    parse_header,
)
from gradience.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    HubTimeoutError,
    HubTransferError,
    NotLoraError,
    NoWeightsError,
    TooLargeError,
    UsageError,
)
from gradience.hub.errors import translate
from gradience.hub.oidc import ensure_oidc_login
from gradience.hub.refs import HubRef
from gradience.hub.transfer import ByteBudget, Deadline, HubSession, Transfer
from gradience.open import DEFAULT_MAX_BIN_BYTES, DEFAULT_MAX_BYTES, OpenOptions

__all__ = ["DEFAULT_MAX_BIN_BYTES", "DEFAULT_MAX_BYTES", "cache_root", "open_remote_adapter"]

#: Adjacent LoRA tensors separated by at most this many bytes are fetched in one request.
MAX_GAP = 4096
#: An adapter_config.json is a few kB; one above this is not a config worth reading.
MAX_CONFIG_BYTES = 1024 * 1024
_LORA_PARTS = (
    ".lora_A",
    ".lora_B",
    ".lora_embedding_A",
    ".lora_embedding_B",
    ".lora_E",
    ".lora_magnitude_vector",
)


def _size(n: int) -> str:
    """A byte count for a message, in a unit that keeps small caps from reading as 0 MB."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def cache_root(options: OpenOptions | None = None) -> Path:
    """``options.cache_dir``, else ``$GRADIENCE_CACHE``, else ``~/.cache/gradience``."""
    if options is not None and options.cache_dir is not None:
        return Path(options.cache_dir)
    return Path(os.environ.get("GRADIENCE_CACHE") or Path.home() / ".cache" / "gradience")


class RangeCachedSafetensors(SafetensorsFile):
    """A remote safetensors file: the header in memory, tensor bytes from cached ranges,
    anything not cached yet fetched on demand (and cached)."""

    def __init__(self, transfer: Transfer, size: int, header: bytes, folder: Path, name: str) -> None:
        self.path = Path(name)
        self._fd = -1
        self.size = size
        self.tensors, self.metadata = parse_header(header, size, path=name)
        self._transfer = transfer
        self._folder = folder
        self._chunks: list[tuple[int, int, Path]] = []
        for p in folder.glob("*.bin"):
            start, end = (int(x) for x in p.stem.split("-"))
            self._chunks.append((start, end, p))
        self._chunks.sort()

    def close(self) -> None:
        pass

    def runs(self, infos: list[TensorInfo]) -> list[tuple[int, int]]:
        """The byte ranges still to fetch for these tensors, neighbours coalesced."""
        missing = sorted(
            (i for i in infos if i.nbytes and not self._find(i.start, i.end)), key=lambda i: i.start
        )
        runs: list[list[int]] = []
        for i in missing:
            if runs and i.start - runs[-1][1] <= MAX_GAP:
                runs[-1][1] = max(runs[-1][1], i.end)
            else:
                runs.append([i.start, i.end])
        return [(a, b) for a, b in runs]

    def ensure(self, infos: list[TensorInfo]) -> None:
        """Make sure these tensors' bytes are cached, fetching missing ones in coalesced runs."""
        for start, end in self.runs(infos):
            self._fetch(start, end)

    def _fetch(self, start: int, end: int) -> None:
        dest = self._folder / f"{start}-{end}.bin"
        self._transfer.fetch_to(start, end, dest)
        bisect.insort(self._chunks, (start, end, dest))

    def _find(self, start: int, end: int) -> tuple[int, int, Path] | None:
        i = bisect.bisect_right(self._chunks, (start, float("inf"), Path())) - 1
        if i >= 0 and self._chunks[i][0] <= start and end <= self._chunks[i][1]:
            return self._chunks[i]
        return None

    def _pread(self, nbytes: int, offset: int) -> bytes:
        chunk = self._find(offset, offset + nbytes)
        if chunk is None:
            self._fetch(offset, offset + nbytes)
            chunk = self._find(offset, offset + nbytes)
        start, _, path = chunk
        with open(path, "rb") as f:
            f.seek(offset - start)
            return f.read(nbytes)


def _with_retries(
    call: Callable[[float], Any], repo_id: str, what: str, session: HubSession, revision: str | None = None
) -> Any:
    """Metadata calls: 429s waited out as the Hub asks, 5xx and timeouts retried, all within the
    session's deadline; ``call`` receives the per-request timeout."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(5):
        session.deadline.check()
        try:
            return call(session.deadline.clip(max(session.connect_timeout, session.read_timeout)))
        except HfHubHTTPError as e:
            status = e.response.status_code if getattr(e, "response", None) is not None else 0
            if status == 429:
                session.wait_for_rate_limit(e.response.headers, repo_id, attempt)
                continue
            if status >= 500 and attempt < 4:
                session.deadline.sleep(min(0.5 * 2.0**attempt, 8.0), f"HTTP {status}")
                continue
            raise translate(e, repo_id, what, revision) or e from e
        except Exception as e:
            translated = translate(e, repo_id, what, revision)
            if translated is not None:
                raise translated from e
            if isinstance(e, OSError) or type(e).__module__.startswith(("httpx", "httpcore")):
                if "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower():
                    if attempt < 4:
                        session.deadline.sleep(min(0.5 * 2.0**attempt, 8.0), "timeout")
                        continue
                    raise HubTimeoutError(
                        f"the Hub did not answer in time for {repo_id} ({type(e).__name__})",
                        repo_id=repo_id,
                        deadline=session.deadline.seconds,
                    ) from e
                from huggingface_hub import constants

                raise HubTransferError(
                    f"could not reach the Hub at {constants.ENDPOINT} for {repo_id} ({type(e).__name__}); "
                    "if you meant a local folder, it does not exist",
                    repo_id=repo_id,
                ) from e
            raise
    raise HubTransferError(f"the Hub kept failing for {repo_id}; try again later", repo_id=repo_id)


def _adapter_folders(files: list[str]) -> list[str]:
    return sorted(
        {f.rsplit("/", 1)[0] if "/" in f else "" for f in files if f.rsplit("/", 1)[-1] == CONFIG_NAME}
    )


def open_remote_adapter(ref: HubRef, *, options: OpenOptions | None = None) -> Adapter:
    """An :class:`Adapter` backed by a Hub repo; only LoRA tensor bytes are fetched.

    Raises:
        AdapterNotFoundError: missing repo, revision, adapter folder or weights.
        HubAccessError: gated or private without access; HubOIDCError when ``HF_OIDC_RESOURCE``
            is set (and no token given) and the keyless login fails.
        UsageError: several adapters and no subfolder chosen; a transfer above the byte cap.
        HubTransferError: the Hub kept failing after bounded retries.
    """
    from huggingface_hub import HfApi

    opts = options or OpenOptions()
    token, max_bytes, max_bin_bytes, progress = opts.token, opts.max_bytes, opts.max_bin_bytes, opts.progress
    if token is None:
        ensure_oidc_login()  # a failed keyless login is one clear error, before any request
    t0 = time.perf_counter()
    session = HubSession(
        token=token,
        connect_timeout=opts.connect_timeout,
        read_timeout=opts.read_timeout,
        deadline=Deadline(opts.deadline, repo_id=ref.repo_id),
        budget=ByteBudget(max_bytes, repo_id=ref.repo_id),
    )
    api = HfApi(token=token)
    info = _with_retries(
        lambda timeout: api.repo_info(
            ref.repo_id, repo_type=ref.repo_type, revision=ref.revision, files_metadata=True, timeout=timeout
        ),
        ref.repo_id,
        "repo",
        session,
        ref.revision,
    )
    commit = info.sha
    sizes = {s.rfilename: s.size for s in (info.siblings or [])}
    folders = _adapter_folders(list(sizes))
    if ref.subfolder is not None:
        if ref.subfolder not in folders:
            raise NotLoraError(
                f"no {CONFIG_NAME} in {ref.repo_id}/{ref.subfolder}"
                + (f"; adapter folders here: {', '.join(f or '.' for f in folders)}" if folders else ""),
                repo_id=ref.repo_id,
                revision=ref.revision,
            )
        folder = ref.subfolder
    elif "" in folders:
        folder = ""
    elif len(folders) == 1:
        folder = folders[0]
    elif folders:
        raise UsageError(
            f"{ref.repo_id} holds several adapters; choose one subfolder: {', '.join(folders)}",
            repo_id=ref.repo_id,
            revision=ref.revision,
            param="subfolder",
            choices=folders,
        )
    else:
        raise NotLoraError(
            f"{ref.repo_id} has no {CONFIG_NAME}: it is not a PEFT adapter repo",
            repo_id=ref.repo_id,
            revision=ref.revision,
        )
    prefix = f"{folder}/" if folder else ""
    weights = next((prefix + n for n in WEIGHT_NAMES if prefix + n in sizes), None)
    if weights is None:
        raise NoWeightsError(
            f"no adapter_model.safetensors or adapter_model.bin in {ref.repo_id}/{folder}",
            repo_id=ref.repo_id,
            revision=ref.revision,
        )
    cache = cache_root(opts) / "hub" / f"{ref.repo_type}s--{ref.repo_id.replace('/', '--')}" / commit
    t_resolve = time.perf_counter() - t0

    transfers: list[Transfer] = []

    def transfer(filename: str) -> Transfer:
        t = Transfer(ref.repo_id, ref.repo_type, commit, filename, session=session, size=sizes.get(filename))
        transfers.append(t)
        return t

    config_path = cache / (prefix + CONFIG_NAME)
    if config_path.exists() and (info.gated or info.private):
        # The cache is shared by every token on this machine; reading this repo is not.
        transfer(prefix + CONFIG_NAME).check_access()
    if not config_path.exists():
        size = sizes.get(prefix + CONFIG_NAME) or 0
        if size > MAX_CONFIG_BYTES:
            raise TooLargeError(
                f"{prefix + CONFIG_NAME} is {size} bytes; an adapter config is at most {MAX_CONFIG_BYTES}",
                repo_id=ref.repo_id,
                revision=commit,
                needed=size,
                limit=MAX_CONFIG_BYTES,
            )
        config_path.parent.mkdir(parents=True, exist_ok=True)
        data = transfer(prefix + CONFIG_NAME).fetch(0, size)
        tmp = config_path.with_name(config_path.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, config_path)
    config = AdapterConfig.from_file(config_path)
    size = sizes.get(weights)
    if size is None:
        raise AdapterNotFoundError(f"the Hub did not report the size of {weights}", repo_id=ref.repo_id)
    t1 = time.perf_counter()
    if weights.endswith(".bin"):
        if size > max_bin_bytes:
            raise TooLargeError(
                f"{weights} is {_size(size)}; a .bin must be downloaded whole and the cap is "
                f"{_size(max_bin_bytes)}",
                repo_id=ref.repo_id,
                revision=commit,
                param="max_bin_bytes",
                needed=size,
                limit=max_bin_bytes,
            )
        dest = cache / weights
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            _with_progress(transfer(weights), progress, size).fetch_to(0, size, dest)
        file: SafetensorsFile | TorchZipFile = TorchZipFile(dest)
        t_header = time.perf_counter() - t1
    else:
        chunk_dir = cache / (weights + ".ranges")
        chunk_dir.mkdir(parents=True, exist_ok=True)
        # One Transfer for header and tensors: a server that sent the whole file once is not
        # asked again.
        weights_transfer = transfer(weights)
        header = _header(weights_transfer, size, cache / (weights + ".header"))
        t_header = time.perf_counter() - t1
        file = RangeCachedSafetensors(
            _with_progress(weights_transfer, progress, 0), size, header, chunk_dir, weights
        )
    shapes = {name: (tuple(t.shape), t.dtype) for name, t in file.tensors.items()}
    layers, ignored, warnings = group_layers(shapes, config, path=f"{ref.repo_id}/{weights}")
    if isinstance(file, RangeCachedSafetensors):
        lora = [t for n, t in file.tensors.items() if any(p in n for p in _LORA_PARTS)]
        total = sum(t.nbytes for t in lora)
        to_fetch = sum(b - a for a, b in file.runs(lora))
        if total > max_bytes or session.budget.used + to_fetch > max_bytes:  # type: ignore[union-attr]
            needed = max(total, session.budget.used + to_fetch)  # type: ignore[union-attr]
            raise TooLargeError(
                f"auditing {ref.repo_id} needs {_size(needed)} (LoRA tensors, config and "
                f"header), above the {_size(max_bytes)} cap",
                repo_id=ref.repo_id,
                revision=commit,
                param="max_bytes",
                needed=needed,
                limit=max_bytes,
            )
        if file._transfer.progress is not None:
            file._transfer.progress = _progress_adapter(progress, total)
        file.ensure(lora)
    t_tensors = time.perf_counter() - t1 - t_header
    # Reads on demand after the open (non-LoRA tensors) get a deadline of their own.
    session.deadline = Deadline(opts.deadline, repo_id=ref.repo_id)
    source = {
        "repo": ref.repo_id,
        "repo_type": ref.repo_type,
        "revision": ref.revision or "main",
        "commit": commit,
        "subfolder": folder or None,
        "weights_file": weights,
        "bytes_transferred": sum(t.bytes_transferred for t in transfers),
        "requests": 1 + sum(t.requests for t in transfers),
        "timings": {"resolve_s": t_resolve, "header_s": t_header, "tensors_s": t_tensors},
    }
    path = Path(str(HubRef(ref.repo_id, ref.repo_type, commit, folder or None)))
    return Adapter(path, config, Path(weights), layers, ignored, warnings, file, source=source)


def _header(t: Transfer, size: int, dest: Path) -> bytes:
    if dest.exists():
        return dest.read_bytes()
    if size < 8:
        raise AdapterFormatError(f"{t.filename} is too short to be safetensors ({size} bytes)")
    # Two exact reads (length, then header) rather than one generous probe: bytes past the
    # header may belong to a huge non-LoRA tensor, and those must never be transferred.
    probe = t.fetch(0, 8)
    if LFS_POINTER_PREFIX.startswith(probe):  # a pointer committed as the file: read enough to say so
        parse_header(t.fetch(0, min(size, len(LFS_POINTER_PREFIX))), size, path=t.filename)
    (n,) = struct.unpack("<Q", probe)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        parse_header(probe, size, path=t.filename)  # raises the precise error
    probe += t.fetch(8, 8 + n)
    header = probe[: 8 + n]
    parse_header(header, size, path=t.filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.write_bytes(header)
    os.replace(tmp, dest)
    return header


def _with_progress(t: Transfer, progress: Callable[[int, int], None] | None, total: int) -> Transfer:
    if progress is not None:
        t.progress = _progress_adapter(progress, total)
    return t


def _progress_adapter(
    progress: Callable[[int, int], None] | None, total: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return step
