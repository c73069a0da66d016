"""Reading PyTorch ``.bin`` checkpoints without torch and without running their code.

A ``.bin`` is a zip archive holding ``data.pkl`` (a pickle that rebuilds tensors from
storages) and one raw file per storage. Unpickling is code execution by design, so the
unpickler here admits only the handful of globals that rebuild tensors and turns each into a
lazy reference; any other global (``os.system``, ``builtins.eval``, ...) is refused before
it can be called. Tensor bytes are read one tensor at a time, on demand.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradience.adapters.safetensors_io import bf16_bits_to_float32
from gradience.errors import AdapterFormatError, UnsafePickleError

__all__ = ["TorchZipFile"]

#: torch storage class name → (safetensors-style dtype name, numpy dtype of the stored bits).
_STORAGES: dict[str, tuple[str, str]] = {
    "DoubleStorage": ("F64", "f8"),
    "FloatStorage": ("F32", "f4"),
    "HalfStorage": ("F16", "f2"),
    "BFloat16Storage": ("BF16", "u2"),
    "LongStorage": ("I64", "i8"),
    "IntStorage": ("I32", "i4"),
    "ShortStorage": ("I16", "i2"),
    "CharStorage": ("I8", "i1"),
    "ByteStorage": ("U8", "u1"),
    "BoolStorage": ("BOOL", "?"),
}


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: str
    np_dtype: str


@dataclass(frozen=True, slots=True)
class _StorageRef:
    kind: _StorageType
    key: str
    numel: int


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor inside the archive, not yet read: storage, offset, shape and strides."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.kind.dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest) -> TensorRef:
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    try:
        shape = tuple(int(s) for s in size)
        strides = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as e:
        raise AdapterFormatError("tensor record in data.pkl is malformed") from e
    if len(shape) != len(strides) or offset < 0 or min(shape + strides, default=0) < 0:
        raise AdapterFormatError("tensor record in data.pkl has an invalid shape or stride")
    if (
        math.prod(shape)
        and offset + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) >= storage.numel
    ):
        raise AdapterFormatError("tensor record in data.pkl points outside its storage")
    return TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data, *_rest):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(*_STORAGES[name])
        raise UnsafePickleError(
            f"refusing to load: the pickle asks for {module}.{name}, which is not a tensor "
            "type; it may run code. Convert the adapter to safetensors in a sandbox, or get "
            "it from a source you trust"
        )

    def persistent_load(self, pid):
        if (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
            and pid[4] >= 0
        ):
            return _StorageRef(pid[1], pid[2], pid[4])
        raise UnsafePickleError(f"refusing to load: unexpected persistent id {pid!r:.80}")


class TorchZipFile:
    """A ``torch.save`` zip archive whose tensors are read lazily and safely.

    Raises:
        AdapterFormatError: not a zip archive (legacy format), no ``data.pkl``, the pickle
            is corrupt, or a storage is missing or of the wrong size.
        UnsafePickleError: the pickle references a global outside the allow-list.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as e:
            with open(self.path, "rb") as f:
                head = f.read(64)
            if head.startswith(b"version https://git-lfs"):
                raise AdapterFormatError(
                    "this is a Git LFS pointer, not the weights; run `git lfs pull` "
                    "(or download the file) and try again",
                    path=path,
                ) from e
            raise AdapterFormatError(
                "not a torch zip checkpoint (legacy pre-1.6 pickles are not read, to avoid "
                "running code); re-save it with a current torch or as safetensors",
                path=path,
            ) from e
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise AdapterFormatError("torch checkpoint has no single data.pkl; it is corrupt", path=path)
        self._root = pkl[0].rsplit("/", 1)[0]
        self._little = True
        if f"{self._root}/byteorder" in names:
            self._little = self._zip.read(f"{self._root}/byteorder").strip() != b"big"
        try:
            obj = _RestrictedUnpickler(io.BytesIO(self._zip.read(pkl[0]))).load()
        except UnsafePickleError as e:
            e.path = str(self.path)
            raise
        except AdapterFormatError:
            raise
        except Exception as e:  # any malformed pickle: one clean error, never a traceback
            raise AdapterFormatError(
                f"data.pkl cannot be read ({e.__class__.__name__}: {str(e)[:80]}); the file is corrupt",
                path=path,
            ) from e
        if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, TensorRef) for k, v in obj.items()
        ):
            raise AdapterFormatError("the checkpoint is not a flat state dict of tensors", path=path)
        self.tensors: dict[str, TensorRef] = dict(obj)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> TorchZipFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, name: str) -> np.ndarray:
        """Read one tensor as a contiguous numpy array (BF16 becomes float32)."""
        ref = self.tensors[name]
        kind = ref.storage.kind
        entry = f"{self._root}/data/{ref.storage.key}"
        itemsize = np.dtype(kind.np_dtype).itemsize
        try:
            info = self._zip.getinfo(entry)
        except KeyError as e:
            raise AdapterFormatError(
                f"storage for tensor {name!r} is missing from the archive", path=self.path
            ) from e
        if info.file_size != ref.storage.numel * itemsize:
            raise AdapterFormatError(
                f"storage for tensor {name!r} has {info.file_size} bytes, expected "
                f"{ref.storage.numel * itemsize}; the file is corrupt",
                path=self.path,
            )
        try:
            raw = self._zip.read(entry)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise AdapterFormatError(f"storage for {name!r} is unreadable: {e}", path=self.path) from e
        flat = np.frombuffer(raw, dtype=("<" if self._little else ">") + kind.np_dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        arr = np.ascontiguousarray(view).astype(flat.dtype.newbyteorder("="), copy=False)
        if kind.dtype == "BF16":
            arr = bf16_bits_to_float32(arr)
        return arr
