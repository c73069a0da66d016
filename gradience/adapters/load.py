"""Opening a PEFT adapter folder: config, weights file, layers — tensors read on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradience.adapters.config import AdapterConfig
from gradience.adapters.layout import LoraLayer, group_layers
from gradience.adapters.pickle_io import TorchZipFile
from gradience.adapters.safetensors_io import SafetensorsFile, float32_to_bf16_bits
from gradience.errors import AdapterNotFoundError, NotLoraError, NoWeightsError

if TYPE_CHECKING:
    from gradience.open import OpenOptions

__all__ = ["Adapter", "Factors", "load_adapter", "load_local"]

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(slots=True)
class Factors:
    """A layer's factors as 2-D arrays: A [r, in], B [out, r], E [r] for AdaLoRA.

    16-bit inputs arrive as float32; float32/float64 inputs keep their dtype.
    """

    a: np.ndarray
    b: np.ndarray
    e: np.ndarray | None = None

    def effective_a(self) -> np.ndarray:
        """A with AdaLoRA's diag(E) folded in, so ΔW = scale · B · effective_a()."""
        return self.a if self.e is None else self.a * self.e[:, None]


@dataclass
class Adapter:
    """An opened adapter. Close it (or use ``with``) to release the weights file.

    Attributes:
        path: the adapter folder.
        config: the parsed ``adapter_config.json``.
        weights_path: the weights file used.
        layers: LoRA layers in natural module order.
        ignored: names of non-LoRA tensors in the file (``modules_to_save`` etc.).
        warnings: things worth telling the user that do not stop the audit.
    """

    path: Path
    config: AdapterConfig
    weights_path: Path
    layers: list[LoraLayer]
    ignored: list[str]
    warnings: list[str] = field(default_factory=list)
    _file: SafetensorsFile | TorchZipFile | None = field(default=None, repr=False)
    #: Where the adapter came from: ``{"path"}`` for a folder; repo, commit, bytes
    #: transferred and timings for a Hub repo.
    source: dict | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = {"path": str(self.path)}

    @property
    def label(self) -> str:
        """How to name the adapter to a person: its folder, or ``repo@revision/sub`` for a
        Hub repo (``path`` there is a ``Path``, which folds ``hf://`` into ``hf:/``)."""
        src = self.source or {}
        if src.get("repo"):
            sub = f"/{src['subfolder']}" if src.get("subfolder") else ""
            return f"{src['repo']}@{src.get('revision') or 'main'}{sub}"
        return str(self.path)

    @property
    def format(self) -> str:
        return "safetensors" if isinstance(self._file, SafetensorsFile) else "bin"

    def tensor_dtype(self, name: str) -> str:
        return self._file.tensors[name].dtype

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        t = self._file.tensors[name]
        return tuple(t.shape)

    def read(self, name: str) -> np.ndarray:
        """One tensor, decoded (BF16 → float32)."""
        return self._file.read(name)

    def read_stored(self, name: str) -> tuple[np.ndarray, str]:
        """A tensor in its stored encoding: ``(array, dtype)``; BF16 stays uint16 bits."""
        if isinstance(self._file, SafetensorsFile):
            return self._file.read_stored(name)
        arr = self._file.read(name)
        return arr, "F64" if arr.dtype == np.float64 else "F32" if arr.dtype.kind == "f" else "I64"

    def passthrough(self, name: str) -> tuple[str, tuple[int, ...], Callable[[], bytes]]:
        """A tensor as ``(dtype, shape, read_bytes)`` for :func:`write_safetensors`: the
        bytes are copied unchanged and read only when written."""
        t = self._file.tensors[name]
        if isinstance(self._file, SafetensorsFile):
            return (t.dtype, tuple(t.shape), lambda: self._file.read_raw(name))

        def encode() -> bytes:
            arr = self._file.read(name)
            if t.dtype == "BF16":
                return float32_to_bf16_bits(arr).tobytes()
            return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()

        return (t.dtype, tuple(t.shape), encode)

    def factors(self, layer: LoraLayer) -> Factors:
        a = self.read(layer.a_key)
        b = self.read(layer.b_key)
        e = self.read(layer.e_key).reshape(-1) if layer.e_key else None
        return Factors(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), e)

    def magnitude(self, layer: LoraLayer) -> np.ndarray | None:
        return self.read(layer.magnitude_key).reshape(-1) if layer.magnitude_key else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_adapter(path: str | Path, options: OpenOptions | None = None, **overrides: Any) -> Adapter:
    """Open a PEFT adapter — a local folder or a Hub repo — without reading tensor bytes yet.

    The same as :func:`gradience.open.open_adapter` (kept under its original name).

    Args:
        path: a folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or
            ``.bin``), the path of either file, or a Hub reference: ``user/repo``,
            ``user/repo@revision``, ``hf://user/repo/sub``, or a Hub web URL.
        options: an :class:`~gradience.open.OpenOptions`; keyword ``overrides`` (``token``,
            ``revision``, ``subfolder``, ``repo_type``, ``max_bytes``, ``max_bin_bytes``,
            ``progress``, timeouts) change single fields.

    Raises:
        AdapterNotFoundError: the folder, config, weights, repo or revision are missing.
        ConfigError, UnsupportedAdapterError, AdapterFormatError: see :mod:`gradience.errors`.

    Example:
        >>> with load_adapter("examples/healthy-r8") as adapter:  # doctest: +SKIP
        ...     print(len(adapter.layers))
    """
    from gradience.open import open_adapter

    return open_adapter(path, options, **overrides)


def load_local(p: Path, path: str | Path | None = None) -> Adapter:
    """Open a local adapter folder (or the path of its config or weights file)."""
    path = p if path is None else path
    folder = p.parent if p.is_file() else p
    if not folder.exists():
        raise AdapterNotFoundError(
            f"no such folder: {path} (give a local adapter folder or a Hub repo id like user/repo)",
            path=None,
        )
    if not folder.is_dir():
        raise AdapterNotFoundError(f"{path} is not a folder", path=None)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise NotLoraError(
            f"no {CONFIG_NAME} in {folder}; point at a PEFT adapter folder (the one save_pretrained wrote)",
            path=None,
        )
    config = AdapterConfig.from_file(config_path)
    weights = (
        p if p.is_file() and p.name != CONFIG_NAME else
        next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    )  # fmt: skip
    if weights is None:
        raise NoWeightsError(
            f"no adapter_model.safetensors or adapter_model.bin in {folder}; the weights are "
            "missing (incomplete download?)",
            path=None,
        )
    file: SafetensorsFile | TorchZipFile = (
        TorchZipFile(weights) if weights.suffix == ".bin" else SafetensorsFile(weights)
    )
    try:
        shapes = {name: (tuple(t.shape), t.dtype) for name, t in file.tensors.items()}
        layers, ignored, warnings = group_layers(shapes, config, path=str(weights))
    except BaseException:
        file.close()
        raise
    if config.use_dora and not any(layer.magnitude_key for layer in layers):
        warnings.append("config says use_dora but the file has no DoRA magnitude vectors")
    return Adapter(folder, config, weights, layers, ignored, warnings, file)
