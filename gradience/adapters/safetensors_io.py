"""Reading and writing safetensors without mapping the file and without torch.

Reads go through ``os.pread`` into fresh buffers, one tensor (or one run of adjacent
tensors) at a time, so resident memory follows the largest tensor, not the file. The
header is validated before any tensor byte is trusted: a hostile header must produce a
clean error, never a huge allocation or an out-of-bounds read.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from gradience.errors import AdapterFormatError, LfsPointerError

__all__ = [
    "DTYPES",
    "MAX_HEADER_BYTES",
    "ByteSource",
    "BytesSource",
    "FileSource",
    "SafetensorsFile",
    "SafetensorsWriter",
    "TensorInfo",
    "bf16_bits_to_float32",
    "decode",
    "float32_to_bf16_bits",
    "parse_header",
    "write_safetensors",
]

#: Safetensors dtype name → (numpy dtype of the stored bits, item size).
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
#: The same cap the reference implementation uses; anything larger is hostile or broken.
MAX_HEADER_BYTES = 100 * 1024 * 1024
LFS_POINTER_PREFIX = b"version https://git-lfs"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one tensor's bytes live. Offsets are absolute positions in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def parse_header(
    prefix: bytes, file_size: int, *, path: str | Path = "<bytes>"
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a safetensors header and return its tensors and ``__metadata__``.

    Args:
        prefix: the first ``8 + header_len`` bytes of the file (more is fine).
        file_size: total size of the file, to check that every tensor lies inside it.
        path: only used in error messages.

    Raises:
        AdapterFormatError: truncated file, oversized or invalid header, unknown dtype,
            offsets outside the data region, overlapping tensors, size/shape mismatch.
    """
    if prefix.startswith(LFS_POINTER_PREFIX):
        raise LfsPointerError(
            "this is a Git LFS pointer, not the weights; fetch the real file (git lfs pull) and try again",
            path=path,
        )
    if len(prefix) < 8 or file_size < 8:
        raise AdapterFormatError("file is too short to be safetensors (truncated download?)", path=path)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        raise AdapterFormatError(
            f"safetensors header claims {n} bytes (limit {MAX_HEADER_BYTES}); the file is "
            "corrupt or not safetensors",
            path=path,
        )
    if 8 + n > file_size or 8 + n > len(prefix):
        raise AdapterFormatError(
            "safetensors header runs past the end of the file (truncated download?)", path=path
        )
    try:
        header = json.loads(prefix[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterFormatError(
            f"safetensors header is not valid JSON ({e.__class__.__name__}); the file is corrupt",
            path=path,
        ) from e
    if not isinstance(header, dict):
        raise AdapterFormatError("safetensors header is not a JSON object", path=path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise AdapterFormatError("safetensors __metadata__ is not an object", path=path)
    data_start = 8 + n
    data_len = file_size - data_start
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        infos[name] = _tensor_info(name, entry, data_start, data_len, path)
    spans = sorted((i.start, i.end, i.name) for i in infos.values() if i.nbytes)
    for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise AdapterFormatError(
                f"tensors {name_a!r} and {name_b!r} overlap in the file; it is corrupt", path=path
            )
    return infos, {str(k): str(v) for k, v in metadata.items()}


def _tensor_info(name: str, entry: object, data_start: int, data_len: int, path) -> TensorInfo:
    if not isinstance(entry, dict):
        raise AdapterFormatError(f"header entry for {name!r} is not an object", path=path)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if dtype not in DTYPES:
        raise AdapterFormatError(
            f"tensor {name!r} has unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}",
            path=path,
        )
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)) or isinstance(
        shape, bool
    ):
        raise AdapterFormatError(f"tensor {name!r} has an invalid shape {shape!r}", path=path)
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise AdapterFormatError(
            f"tensor {name!r} has data offsets {offsets!r} outside the file's data region "
            "(truncated or corrupt file)",
            path=path,
        )
    expected = math.prod(shape) * DTYPES[dtype][1]
    if offsets[1] - offsets[0] != expected:
        raise AdapterFormatError(
            f"tensor {name!r}: {offsets[1] - offsets[0]} bytes stored but shape {shape} of "
            f"{dtype} needs {expected}; the file is corrupt",
            path=path,
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """BF16 is the top half of a float32: widen the raw uint16 bits exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest BF16 (ties to even), returned as uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    rounded[nan] = np.uint16(0x7FC0)
    return rounded


def decode(raw: bytes | bytearray | memoryview, info: TensorInfo) -> np.ndarray:
    """Turn a tensor's raw bytes into a numpy array (BF16 becomes float32)."""
    arr = np.frombuffer(raw, dtype=DTYPES[info.dtype][0])
    if info.dtype == "BF16":
        arr = bf16_bits_to_float32(arr)
    return arr.reshape(info.shape)


@runtime_checkable
class ByteSource(Protocol):
    """Where a weights file's bytes come from: a local file, a Hub range cache, memory.

    The readers above it (safetensors parsing, tensor decoding, the audit) only ever ask for
    ``read(offset, n)``, so they never learn where bytes live — which is what keeps the local
    reader and the Hub reader from importing each other.
    """

    name: str
    size: int

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def close(self) -> None: ...


class FileSource:
    """A local file as a :class:`ByteSource` (``pread``: no shared file position)."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise AdapterFormatError(f"cannot open weights: {e.strerror}", path=path) from e
        self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset) if n > 0 else b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BytesSource:
    """Bytes in memory as a :class:`ByteSource` (uploads, tests)."""

    def __init__(self, data: bytes, name: str = "<memory>") -> None:
        self.name, self._data, self.size = name, memoryview(data), len(data)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self._data[offset : offset + max(n, 0)])

    def close(self) -> None:
        pass


class SafetensorsFile:
    """A validated safetensors file whose tensors are read one at a time, on demand.

    ``source`` is a path or any :class:`ByteSource`; only the header is read up front.
    """

    def __init__(self, source: str | Path | ByteSource) -> None:
        self.source: ByteSource = source if isinstance(source, ByteSource) else FileSource(source)
        self.path = Path(self.source.name)
        self._fd = 0  # kept for subclasses that predate ByteSource (they set -1)
        try:
            self.size = self.source.size
            head = self.source.read(0, 8)
            if head.startswith(LFS_POINTER_PREFIX[:8]):
                head = self.source.read(0, 64)
            n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
            prefix = head if n > MAX_HEADER_BYTES else self.source.read(0, 8 + n)
            self.tensors, self.metadata = parse_header(prefix, self.size, path=self.path)
        except BaseException:
            self.source.close()
            raise

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pread(self, nbytes: int, offset: int) -> bytes:
        """The bytes at ``offset``, from the source."""
        return self.source.read(offset, nbytes)

    def read_raw(self, name: str) -> bytes:
        """One tensor's bytes, exactly as stored."""
        info = self.tensors[name]
        raw = self._pread(info.nbytes, info.start)
        if len(raw) != info.nbytes:
            raise AdapterFormatError(f"tensor {name!r} is cut short (file truncated?)", path=self.path)
        return raw

    def read(self, name: str) -> np.ndarray:
        """Read and decode one tensor; memory use is that tensor's size."""
        return decode(self.read_raw(name), self.tensors[name])

    def read_stored(self, name: str) -> tuple[np.ndarray, str]:
        """A tensor as stored (BF16 as raw uint16 bits), for callers that decode in
        cache-sized pieces; returns ``(array, dtype name)``."""
        info = self.tensors[name]
        return np.frombuffer(self.read_raw(name), dtype=DTYPES[info.dtype][0]).reshape(info.shape), info.dtype


def _raw_entry(
    value: np.ndarray | tuple[str, tuple[int, ...], bytes | Callable[[], bytes]],
) -> tuple[str, tuple[int, ...], bytes | memoryview | Callable[[], bytes]]:
    """``(dtype, shape, raw)`` of a value; arrays give a view of their bytes, not a copy."""
    if isinstance(value, tuple):
        dtype, shape, raw = value
    else:
        arr = np.ascontiguousarray(value)
        dtype = _numpy_to_st(arr.dtype)
        arr = np.ascontiguousarray(arr.astype(DTYPES[dtype][0], copy=False))
        shape, raw = tuple(arr.shape), memoryview(arr.reshape(-1)).cast("B")
    return dtype, tuple(int(d) for d in shape), raw


def _header_blob(
    entries: list[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str] | None
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    spans: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, dtype, shape in entries:
        size = math.prod(shape) * DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        spans[name] = (offset, offset + size)
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, spans


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, np.ndarray | tuple[str, tuple[int, ...], bytes | Callable[[], bytes]]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file, atomically (a crash never leaves a half-written file).

    Values are numpy arrays (float64/32/16 and integer types) or ``(dtype, shape, raw)``
    tuples, which is how BF16 and pass-through tensors are written without re-encoding;
    ``raw`` may be a callable returning the bytes, so large pass-through tensors are read
    only while they are written. Arrays are written from their own memory (no byte copy).
    To write tensors as they are produced, without holding them all, use
    :class:`SafetensorsWriter`.
    """
    entries = [(name, *_raw_entry(value)) for name, value in tensors.items()]
    head, spans = _header_blob([(n, d, s) for n, d, s, _ in entries], metadata)
    tmp = Path(path).with_name(Path(path).name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for name, _, _, raw in entries:
                data = raw() if callable(raw) else raw
                start, end = spans[name]
                if len(data) != end - start:
                    raise ValueError(f"tensor {name!r}: {len(data)} bytes, expected {end - start}")
                f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, holding none of them.

    Each :meth:`add` appends the tensor's bytes to a temporary data file next to ``path``
    (``<name>.data.partial``) and records its offsets; :meth:`finish` writes the header and
    then copies the data over into ``<name>.partial``, which replaces ``path`` atomically.
    Until then ``path`` is untouched; :meth:`abort` (or leaving a ``with`` block by an
    exception) removes the temporary files. Memory: one tensor plus a copy buffer.
    """

    COPY_CHUNK = 8 << 20

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.metadata = dict(metadata) if metadata else None
        self._data_path = self.path.with_name(self.path.name + ".data.partial")
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._entries: list[tuple[str, str, tuple[int, ...]]] = []
        self._names: set[str] = set()
        self._data = open(self._data_path, "wb")  # noqa: SIM115 - closed by finish/abort

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._data.closed:
            self.finish()

    def add(
        self, name: str, value: np.ndarray | tuple[str, tuple[int, ...], bytes | Callable[[], bytes]]
    ) -> None:
        """Append one tensor (an array or a ``(dtype, shape, raw)`` tuple, as for
        :func:`write_safetensors`)."""
        if name in self._names:
            raise ValueError(f"tensor {name!r} was already written")
        dtype, shape, raw = _raw_entry(value)
        data = raw() if callable(raw) else raw
        expected = math.prod(shape) * DTYPES[dtype][1]
        if len(data) != expected:
            raise ValueError(f"tensor {name!r}: {len(data)} bytes, expected {expected}")
        self._data.write(data)
        self._entries.append((name, dtype, shape))
        self._names.add(name)

    def finish(self) -> None:
        """Write header + data to ``path``, atomically, and remove the temporary files."""
        try:
            self._data.close()
            head, _ = _header_blob(self._entries, self.metadata)
            with open(self._tmp, "wb") as f, open(self._data_path, "rb") as src:
                f.write(head)
                shutil.copyfileobj(src, f, self.COPY_CHUNK)
            os.replace(self._tmp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        self._data.close()
        self._tmp.unlink(missing_ok=True)
        self._data_path.unlink(missing_ok=True)


def _numpy_to_st(dtype: np.dtype) -> str:
    for name, (np_name, _) in DTYPES.items():
        if name != "BF16" and np.dtype(np_name) == dtype.newbyteorder("<"):
            return name
    raise ValueError(f"cannot store numpy dtype {dtype} in safetensors")
