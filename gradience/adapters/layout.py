"""Which tensors of a state dict form a LoRA layer, and what each layer is called.

Pure bookkeeping on names and shapes — no tensor bytes are read here. Module names are
PEFT's (the ``base_model.model.`` prefix removed), so anything keyed by them drops into
``LoraConfig(rank_pattern=...)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gradience.adapters.config import AdapterConfig
from gradience.errors import AdapterFormatError, UnsupportedAdapterError

__all__ = ["LoraLayer", "classify_module", "group_layers"]

_PREFIX = "base_model.model."
_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_E|"
    r"lora_magnitude_vector)(?:\.(?P<adapter>[^.]+))?$"
)
_OTHER_TUNERS = re.compile(r"\.(hada_w|lokr_w|vera_lambda|oft_r|ia3_l|lora_down|lora_up)")

_ATTN = {
    "q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "q", "k", "v", "o", "query", "key",
    "value", "q_lin", "k_lin", "v_lin", "out_lin", "c_attn", "qkv_proj", "query_key_value",
    "wqkv", "qkv", "to_q", "to_k", "to_v", "to_out",
}  # fmt: skip
_MLP = {
    "gate_proj", "up_proj", "down_proj", "gate", "up", "down", "fc1", "fc2", "c_fc", "w1",
    "w2", "w3", "wi", "wi_0", "wi_1", "wo", "lin1", "lin2", "dense_h_to_4h", "dense_4h_to_h",
    "gate_up_proj", "ffn", "mlp",
}  # fmt: skip


def classify_module(name: str) -> str:
    """``attn``, ``mlp`` or ``other``, from the leaf name and then the path around it."""
    parts = name.lower().split(".")
    leaf = parts[-1]
    if leaf in _ATTN:
        return "attn"
    if leaf in _MLP:
        return "mlp"
    path = ".".join(parts[:-1])
    if "attn" in path or "attention" in path:
        return "attn"
    if "mlp" in path or "ffn" in path or "feed_forward" in path or leaf in {"dense", "c_proj"}:
        return "mlp"
    return "other"


@dataclass(frozen=True, slots=True)
class LoraLayer:
    """One LoRA update ΔW = scale · B · A (AdaLoRA: scale · B · diag(E) · A).

    Attributes:
        name: PEFT module name, e.g. ``model.layers.0.self_attn.q_proj``.
        kind: ``linear``, ``embedding`` or ``conv``.
        a_key / b_key / e_key / magnitude_key: tensor names in the weights file.
        a_shape / b_shape: shapes as stored.
        r: rank, read from the tensor shapes.
        alpha / scale: α for this module after ``alpha_pattern``, and the update's scale.
        config_r: what the config says the rank is (a mismatch is warned about).
        module_type: ``attn``, ``mlp`` or ``other``.
        dtype: stored dtype of A.
    """

    name: str
    kind: str
    a_key: str
    b_key: str
    e_key: str | None
    magnitude_key: str | None
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    r: int
    alpha: float
    scale: float
    config_r: int
    module_type: str
    dtype: str

    @property
    def in_features(self) -> int:
        return math.prod(self.a_shape[1:])

    @property
    def out_features(self) -> int:
        return self.b_shape[0]

    @property
    def attainable_rank(self) -> int:
        """The most directions this update can have: min(r, out, in). A rank above the
        layer's width (a classifier head under ``all-linear``) adds none."""
        return min(self.r, self.out_features, self.in_features)

    @property
    def params(self) -> int:
        return math.prod(self.a_shape) + math.prod(self.b_shape)


def group_layers(
    shapes: Mapping[str, tuple[tuple[int, ...], str]],
    config: AdapterConfig,
    *,
    path: str | None = None,
) -> tuple[list[LoraLayer], list[str], list[str]]:
    """Pair up A/B (and E, magnitude) tensors into layers.

    Args:
        shapes: tensor name → (shape, dtype) for every tensor in the weights file.

    Returns:
        ``(layers, ignored, warnings)`` — ignored are the non-LoRA tensor names
        (``modules_to_save`` heads, embeddings, ...), listed rather than silently dropped.

    Raises:
        AdapterFormatError: a missing partner tensor, A/B shapes that do not fit, two
            adapter names in one file, or no LoRA tensors at all.
        UnsupportedAdapterError: tensors of another tuner type (LoHa, LoKr, ...).
    """
    parts: dict[str, dict[str, str]] = {}
    adapters: set[str] = set()
    ignored: list[str] = []
    duplicates: list[str] = []
    for key in shapes:
        stripped = key[: -len(".weight")] if key.endswith(".weight") else key
        m = _KEY.match(stripped)
        if not m:
            if _OTHER_TUNERS.search(key):
                raise UnsupportedAdapterError(
                    f"tensor {key!r} belongs to an unsupported adapter type (LoHa, LoKr, VeRA, "
                    "OFT, IA3 or a non-PEFT LoRA layout); Gradience reads PEFT LoRA/DoRA/AdaLoRA",
                    path=path,
                )
            ignored.append(key)
            continue
        if stripped == key and m["adapter"] == "bias" and m["part"] in ("lora_A", "lora_B"):
            # lora_bias=True saves a bias vector next to B: part of the layer's output, not of
            # ΔW = B·A, so it is listed with the other tensors the audit leaves out.
            ignored.append(key)
            continue
        module = m["module"]
        module = module[len(_PREFIX) :] if module.startswith(_PREFIX) else module
        if m["adapter"]:
            adapters.add(m["adapter"])
        slot = parts.setdefault(module, {})
        part = m["part"].replace("embedding_", "")
        if part in slot:
            duplicates.append(f"module {module!r} has two {m['part']} tensors ({slot[part]!r} and {key!r})")
            continue
        slot[part] = key
        if "embedding" in m["part"]:
            slot["embedding"] = key
    if len(adapters) > 1:
        raise AdapterFormatError(
            f"the file holds several adapters ({', '.join(sorted(adapters))}); save each one "
            "separately with PEFT's save_pretrained(selected_adapters=[...])",
            path=path,
        )
    if duplicates:
        raise AdapterFormatError(f"{duplicates[0]}: which one PEFT would load is ambiguous", path=path)
    if not parts:
        raise AdapterFormatError(
            "no LoRA tensors (lora_A / lora_B) found in the weights file; is this a PEFT LoRA adapter?",
            path=path,
        )
    layers: list[LoraLayer] = []
    warnings: list[str] = []
    for module, slot in parts.items():
        if "lora_A" not in slot or "lora_B" not in slot:
            have, missing = ("lora_A", "lora_B") if "lora_A" in slot else ("lora_B", "lora_A")
            if have not in slot:
                raise AdapterFormatError(
                    f"module {module!r} has {', '.join(sorted(slot))} but neither lora_A nor "
                    "lora_B; the file is incomplete",
                    path=path,
                )
            raise AdapterFormatError(
                f"module {module!r} has {have} but its partner {missing} is missing; the file is incomplete",
                path=path,
            )
        layers.append(_layer(module, slot, shapes, config, path, warnings))
    layers.sort(key=lambda layer: _natural_key(layer.name))
    return layers, ignored, warnings


def _layer(module, slot, shapes, config: AdapterConfig, path, warnings: list[str]) -> LoraLayer:
    a_shape, dtype = shapes[slot["lora_A"]]
    b_shape, _ = shapes[slot["lora_B"]]
    kind = "embedding" if "embedding" in slot else "conv" if len(a_shape) == 4 else "linear"
    ok = len(a_shape) in (2, 4) and len(b_shape) == len(a_shape) and a_shape[0] == b_shape[1]
    if kind == "conv":
        ok = ok and b_shape[2:] == (1, 1)
    if not ok or 0 in a_shape or 0 in b_shape:
        raise AdapterFormatError(
            f"module {module!r}: lora_A shape {list(a_shape)} and lora_B shape {list(b_shape)} "
            "do not form a low-rank product (need A [r, in], B [out, r]); the file is corrupt",
            path=path,
        )
    r = a_shape[0]
    e_key = slot.get("lora_E")
    if e_key is not None and tuple(shapes[e_key][0]) not in ((r, 1), (r,)):
        raise AdapterFormatError(
            f"module {module!r}: lora_E shape {list(shapes[e_key][0])} does not match rank {r}",
            path=path,
        )
    if config.peft_type == "ADALORA" and e_key is None:
        raise AdapterFormatError(
            f"AdaLoRA module {module!r} has no lora_E tensor; the file is incomplete", path=path
        )
    config_r = config.rank_for(module)
    if config_r != r and config.peft_type == "LORA":
        warnings.append(f"{module}: config says r={config_r} but the tensors have rank {r}")
    alpha = config.alpha_for(module)
    return LoraLayer(
        name=module,
        kind=kind,
        a_key=slot["lora_A"],
        b_key=slot["lora_B"],
        e_key=e_key,
        magnitude_key=slot.get("lora_magnitude_vector"),
        a_shape=tuple(a_shape),
        b_shape=tuple(b_shape),
        r=r,
        alpha=alpha,
        scale=config.scale(alpha, r),
        config_r=config_r,
        module_type=classify_module(module),
        dtype=dtype,
    )


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
