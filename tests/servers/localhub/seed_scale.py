"""Seeding at scale: thousands of small synthetic adapters with planted spectra and edge cases.

The crawler is tested against a Hub the size of a real listing, so seeding must take seconds,
not minutes: adapters are tiny (hidden size 64), built from a few shared weight files (blobs are
content-addressed, so identical bytes are stored once) and the index is saved once per call.

Every adapter's utilisation is *planted*: each layer's update is ``U diag(s) Vᵀ`` with orthonormal
``U`` and ``V`` and ``s`` = k ones then zeros, so its stable rank is exactly k and its utilisation
k/r. The answer of ``POST /_admin/seed-scale`` is the manifest a test compares a crawl against:
for each adapter folder the status a correct crawler must report and the planted utilisation.

Edge cases (one repo each, under ``<namespace>-edge``): gated, Git LFS pointer committed as a
regular file, truncated safetensors, ``.bin``, config without weights, a ``peft``-tagged repo with
no adapter, IA3, untrained (B = 0), two checkpoints in subfolders, a large non-LoRA tensor between
LoRA tensors, F16 and BF16 weights, a private repo, and an adapter with no model card (its ``peft``
tag comes from ``adapter_config.json`` alone). Every tenth regular repo is a plain base model that
a ``peft`` listing must not return.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import struct
import zipfile
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from .cards import render_card
from .storage import Change, FileEntry, Repo, Store, hub_date, lfs_pointer, parse_date
from .web import HubError, Request, Response, Route, json_response

if TYPE_CHECKING:
    from .app import HubApp

HIDDEN = 64
LAYERS = 2
RANKS = (4, 8, 16, 32)
FAMILIES = (
    ("meta-llama/Llama-3.1-8B", "text-generation"),
    ("mistralai/Mistral-7B-v0.1", "text-generation"),
    ("Qwen/Qwen2.5-7B", "text-generation"),
    ("google/gemma-2-9b", "text-generation"),
    ("microsoft/phi-2", "text-generation"),
    ("openai-community/gpt2", "text-generation"),
    ("facebook/opt-125m", "text-generation"),
    ("distilbert/distilbert-base-uncased", "text-classification"),
)
T_SCALE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


class _Builder:
    """Adds repos straight into the store with increasing dates; caches blobs by content."""

    def __init__(self, app: HubApp) -> None:
        self.store: Store = app.store
        self.accounts = app.accounts
        self._blobs: dict[tuple[bytes, bool], FileEntry] = {}
        # Dates only move forward across calls (retrains included), so "newest first" listings
        # and a crawler's last-modified high-water mark see every later change.
        last = self.store.meta.get("scale_clock")
        self.clock = parse_date(last) if last else T_SCALE

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        self.store.meta["scale_clock"] = hub_date(self.clock)
        return self.clock

    def entry(self, data: bytes, lfs: bool) -> FileEntry:
        key = (hashlib.sha256(data).digest(), lfs)
        if key not in self._blobs:
            self._blobs[key] = self.store.add_file_bytes(data, lfs=lfs)
        return self._blobs[key]

    def repo(self, repo_id: str, files: dict[str, bytes | FileEntry], **attrs: Any) -> Repo:
        if self.store.get("model", repo_id) is not None:
            raise HubError(409, f"{repo_id} already exists")
        owner = repo_id.split("/", 1)[0]
        self.accounts.ensure_user(owner)
        repo = self.store.create_repo("model", repo_id, author=owner, date=self.tick())
        for key, value in attrs.items():
            setattr(repo, key, value)
        self.commit(repo, files, "Upload adapter")
        return repo

    def commit(self, repo: Repo, files: dict[str, bytes | FileEntry], title: str) -> str:
        changes = []
        for path, content in sorted(files.items()):
            entry = (
                content
                if isinstance(content, FileEntry)
                else self.entry(content, lfs=path.endswith((".safetensors", ".bin")))
            )
            changes.append(Change("add", path, entry))
        c = self.store.commit(
            repo, repo.branches["main"], changes, title=title, author=repo.namespace, date=self.tick()
        )
        repo.branches["main"] = c.oid
        return c.oid


# -- weights ------------------------------------------------------------------------------------------


def _planted(rng: np.random.Generator, r: int, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with BA = U diag(s) Vᵀ, s = k ones then zeros: stable rank k exactly."""
    u, _ = np.linalg.qr(rng.standard_normal((d, r)))
    v, _ = np.linalg.qr(rng.standard_normal((d, r)))
    s = np.zeros(r)
    s[:k] = 0.05
    return v.T.astype(np.float32), (u * s).astype(np.float32)


def _encode(x: np.ndarray, dtype: str) -> bytes:
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return (x.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return x.astype("<f4").tobytes()


def safetensors_bytes(tensors: list[tuple[str, np.ndarray]], dtype: str = "F32") -> bytes:
    width = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, x in tensors:
        raw = _encode(x, dtype)
        assert len(raw) == x.size * width
        header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _pickle_str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def torch_bin_bytes(tensors: list[tuple[str, np.ndarray]]) -> bytes:
    """A ``torch.save`` zip archive of F32 tensors, written opcode by opcode (no torch needed)."""
    pkl = [b"\x80\x02", b"ccollections\nOrderedDict\n)R("]
    for i, (name, x) in enumerate(tensors):
        pkl.append(_pickle_str(name))
        pkl.append(b"ctorch._utils\n_rebuild_tensor_v2\n(")
        pkl.append(b"(" + _pickle_str("storage") + b"ctorch\nFloatStorage\n")
        pkl.append(_pickle_str(str(i)) + _pickle_str("cpu") + _pickle_int(x.size) + b"tQ")
        pkl.append(_pickle_int(0))
        pkl.append(b"(" + b"".join(_pickle_int(n) for n in x.shape) + b"t")
        strides = [int(np.prod(x.shape[j + 1 :])) for j in range(x.ndim)]
        pkl.append(b"(" + b"".join(_pickle_int(n) for n in strides) + b"t")
        pkl.append(b"\x89ccollections\nOrderedDict\n)Rt" + b"R")
    pkl.append(b"u.")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"".join(pkl))
        z.writestr("archive/byteorder", b"little")
        for i, (_, x) in enumerate(tensors):
            z.writestr(f"archive/data/{i}", x.astype("<f4").tobytes())
        z.writestr("archive/version", b"3\n")
    return out.getvalue()


def lora_tensors(
    r: int, k: int, *, seed: int, d: int = HIDDEN, mlp: bool = True, untrained: bool = False
) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    modules = ["self_attn.q_proj", "self_attn.v_proj", *(["mlp.down_proj"] if mlp else [])]
    for layer in range(LAYERS):
        for mod in modules:
            a, b = _planted(rng, r, k, d)
            if untrained:
                b = np.zeros_like(b)
            stem = f"base_model.model.model.layers.{layer}.{mod}"
            out += [(f"{stem}.lora_A.weight", a), (f"{stem}.lora_B.weight", b)]
    return out


def adapter_config(base: str, r: int, *, mlp: bool = True, peft_type: str = "LORA") -> bytes:
    cfg: dict[str, Any] = {
        "peft_type": peft_type,
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "inference_mode": True,
    }
    if peft_type == "LORA":
        cfg.update(
            {
                "r": r,
                "lora_alpha": 2 * r,
                "lora_dropout": 0.05,
                "target_modules": ["q_proj", "v_proj", *(["down_proj"] if mlp else [])],
                "bias": "none",
                "use_rslora": False,
                "use_dora": False,
            }
        )
    else:
        cfg.update(
            {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
        )
    return json.dumps(cfg, indent=2).encode()


@functools.lru_cache(maxsize=1024)
def _weights(r: int, k: int, mlp: bool, dtype: str, as_bin: bool) -> bytes:
    """Weight files are shared by every repo with the same (r, k, layout, dtype): built once."""
    tensors = lora_tensors(r, k, seed=r * 1000 + k * 10 + mlp, mlp=mlp)
    return torch_bin_bytes(tensors) if as_bin else safetensors_bytes(tensors, dtype)


@functools.lru_cache(maxsize=256)
def card(base: str, task: str, name: str) -> bytes:
    meta = {"base_model": base, "library_name": "peft", "pipeline_tag": task, "tags": ["lora"]}
    return render_card(meta, f"# {name}\n\nA synthetic adapter seeded for crawl tests.").encode()


# -- what to seed ----------------------------------------------------------------------------------------


def _expect(repo_id: str, subfolder: str, status: str, **kw: Any) -> dict[str, Any]:
    return {"repo_id": repo_id, "subfolder": subfolder, "expect": status, **kw}


def _regular(b: _Builder, repo_id: str, i: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, i])
    base, task = FAMILIES[int(rng.integers(len(FAMILIES)))]
    r = int(RANKS[int(rng.integers(len(RANKS)))])
    k = int(rng.integers(1, r + 1))
    mlp = bool(rng.integers(2))
    roll = float(rng.random())
    dtype = "F16" if roll < 0.1 else "BF16" if roll < 0.2 else "F32"
    as_bin = roll > 0.95
    dtype = "F32" if as_bin else dtype
    files: dict[str, bytes | FileEntry] = {"adapter_config.json": adapter_config(base, r, mlp=mlp)}
    name = "adapter_model.bin" if as_bin else "adapter_model.safetensors"
    files[name] = _weights(r, k, mlp, dtype, as_bin)
    if rng.random() > 0.1:  # a tenth have no card: the peft tag must come from adapter_config.json
        files["README.md"] = card(base, task, "a synthetic adapter")
    downloads = int(rng.integers(0, 5000))
    b.repo(repo_id, files, downloads=downloads, likes=downloads // 100)
    pairs = LAYERS * (3 if mlp else 2)
    lora_bytes = pairs * 2 * HIDDEN * r * (2 if dtype in ("F16", "BF16") else 4)
    return _expect(
        repo_id, "", "ok", r=r, k=k, utilization=k / r, base_model=base, dtype=dtype,
        weights="bin" if as_bin else "safetensors", lora_bytes=lora_bytes, untrained=False,
        has_card="README.md" in files,
    )  # fmt: skip


def _edge_cases(b: _Builder, ns: str) -> list[dict[str, Any]]:
    base, task = FAMILIES[0]
    out: list[dict[str, Any]] = []

    def ok_files(r: int, k: int, dtype: str = "F32", **kw: Any) -> dict[str, bytes | FileEntry]:
        return {
            "adapter_config.json": adapter_config(base, r),
            "adapter_model.safetensors": safetensors_bytes(lora_tensors(r, k, seed=7 + r + k, **kw), dtype),
            "README.md": card(base, task, "edge"),
        }

    rid = f"{ns}/gated"
    b.repo(rid, ok_files(8, 2), gated="auto", downloads=900)
    out.append(_expect(rid, "", "gated", r=8, k=2))

    rid = f"{ns}/lfs-pointer"
    files = ok_files(8, 2)
    real = files["adapter_model.safetensors"]
    assert isinstance(real, bytes)
    pointer = lfs_pointer(hashlib.sha256(real).hexdigest(), len(real))
    files["adapter_model.safetensors"] = b.entry(pointer, lfs=False)
    b.repo(rid, files, downloads=12)
    out.append(_expect(rid, "", "lfs_pointer"))

    rid = f"{ns}/truncated"
    files = ok_files(8, 2)
    real = files["adapter_model.safetensors"]
    assert isinstance(real, bytes)
    files["adapter_model.safetensors"] = real[: len(real) // 2]
    b.repo(rid, files, downloads=3)
    out.append(_expect(rid, "", "corrupt"))

    rid = f"{ns}/no-weights"
    b.repo(rid, {"adapter_config.json": adapter_config(base, 8), "README.md": card(base, task, rid)})
    out.append(_expect(rid, "", "no_weights"))

    rid = f"{ns}/not-lora"
    b.repo(rid, {"config.json": b'{"model_type": "llama"}', "README.md": card(base, task, rid)})
    out.append(_expect(rid, "", "not_lora"))

    rid = f"{ns}/ia3"
    ia3 = []
    for layer in range(LAYERS):
        for mod in ("self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"):
            ia3.append(
                (f"base_model.model.model.layers.{layer}.{mod}.ia3_l", np.ones((HIDDEN, 1), np.float32))
            )
    b.repo(
        rid,
        {
            "adapter_config.json": adapter_config(base, 0, peft_type="IA3"),
            "adapter_model.safetensors": safetensors_bytes(ia3),
            "README.md": card(base, task, rid),
        },
    )
    out.append(_expect(rid, "", "unsupported_type"))

    rid = f"{ns}/untrained"
    b.repo(rid, ok_files(16, 16, untrained=True), downloads=40)
    out.append(_expect(rid, "", "ok", r=16, k=0, utilization=0.0, untrained=True))

    rid = f"{ns}/checkpoints"
    files = {"README.md": card(base, task, rid)}
    for step, k in ((100, 3), (200, 6)):
        sub = ok_files(8, k)
        files.update({f"checkpoint-{step}/{p}": v for p, v in sub.items() if p != "README.md"})
        out.append(_expect(rid, f"checkpoint-{step}", "ok", r=8, k=k, utilization=k / 8, untrained=False))
    b.repo(rid, files, downloads=77)

    rid = f"{ns}/padded"
    tensors = lora_tensors(8, 5, seed=99, mlp=False)
    embed = np.random.default_rng(5).standard_normal((4096, HIDDEN)).astype(np.float32)
    tensors.insert(len(tensors) // 2, ("base_model.model.model.embed_tokens.weight", embed))
    cfg = json.loads(adapter_config(base, 8, mlp=False))
    cfg["modules_to_save"] = ["embed_tokens"]
    b.repo(
        rid,
        {
            "adapter_config.json": json.dumps(cfg).encode(),
            "adapter_model.safetensors": safetensors_bytes(tensors),
            "README.md": card(base, task, rid),
        },
        downloads=31,
    )
    out.append(
        _expect(rid, "", "ok", r=8, k=5, utilization=5 / 8, untrained=False, non_lora_bytes=embed.nbytes)
    )

    for dtype in ("F16", "BF16"):
        rid = f"{ns}/{dtype.lower()}"
        b.repo(rid, ok_files(16, 4, dtype), downloads=8)
        out.append(_expect(rid, "", "ok", r=16, k=4, utilization=0.25, untrained=False, dtype=dtype))

    rid = f"{ns}/bin"
    b.repo(
        rid,
        {
            "adapter_config.json": adapter_config(base, 8),
            "adapter_model.bin": torch_bin_bytes(lora_tensors(8, 3, seed=11)),
        },
    )
    out.append(_expect(rid, "", "ok", r=8, k=3, utilization=3 / 8, untrained=False, weights="bin"))

    rid = "alice/scale-private"
    if b.store.get("model", rid) is None:
        b.repo(rid, ok_files(8, 4), private=True)
    out.append(_expect(rid, "", "hidden", note="private: not listed to other callers"))
    return out


def seed_scale(app: HubApp, *, count: int, namespace: str, seed: int, edge_cases: bool) -> dict[str, Any]:
    """Add ``count`` repos (nine in ten adapters) and, optionally, the edge cases; one save."""
    adapters: list[dict[str, Any]] = []
    others: list[str] = []
    with app.store.lock:
        b = _Builder(app)
        start = int(app.store.meta.get(f"scale_next:{namespace}", 0))
        for i in range(start, start + count):
            rid = f"{namespace}/repo-{i:05d}"
            if i % 10 == 9:
                b.repo(rid, {"config.json": b'{"model_type": "llama"}', "README.md": b"# a base model\n"})
                others.append(rid)
            else:
                adapters.append(_regular(b, rid, i, seed))
        if edge_cases:
            adapters += _edge_cases(b, f"{namespace}-edge")
        app.store.meta[f"scale_next:{namespace}"] = start + count
        app.store.save()
    return {"adapters": adapters, "others": others}


def retrain(app: HubApp, repo_id: str, subfolder: str, k: int) -> dict[str, Any]:
    """A new commit replacing an adapter's weights with ones of planted stable rank ``k``."""
    with app.store.lock:
        repo = app.store.get("model", repo_id)
        if repo is None:
            raise HubError(404, f"{repo_id} not found", code="RepoNotFound")
        prefix = f"{subfolder}/" if subfolder else ""
        head = repo.head()
        raw = app.store.blobs.path(head.files[prefix + "adapter_config.json"].blob).read_bytes()
        cfg = json.loads(raw)
        r = int(cfg["r"])
        mlp = "down_proj" in cfg.get("target_modules", [])
        if not 1 <= k <= r:
            raise HubError(400, f"k must be in 1..{r}")
        b = _Builder(app)
        weights = safetensors_bytes(lora_tensors(r, k, seed=r * 1000 + k * 10 + mlp + 5, mlp=mlp))
        files: dict[str, bytes | FileEntry] = {prefix + "adapter_model.safetensors": weights}
        changes = [Change("delete", p) for p in head.files if p == prefix + "adapter_model.bin"]
        oid = b.commit(repo, files, f"Retrain to k={k}")
        if changes:  # a .bin adapter becomes a safetensors one
            c = app.store.commit(
                repo, oid, changes, title="Drop the .bin", author=repo.namespace, date=b.tick()
            )
            repo.branches["main"] = oid = c.oid
        app.store.save()
        return {
            "repo_id": repo_id,
            "subfolder": subfolder,
            "commit": oid,
            "r": r,
            "k": k,
            "utilization": k / r,
        }


def seed_scale_route(app: HubApp, req: Request) -> Response:
    data = req.json() or {}
    try:
        count = int(data.get("count", 100))
        seed = int(data.get("seed", 0))
    except (TypeError, ValueError) as e:
        raise HubError(400, f"count and seed must be integers: {e}") from e
    namespace = str(data.get("namespace") or "scale")
    if count < 0 or count > 200_000 or "/" in namespace:
        raise HubError(400, "count must be in 0..200000 and namespace a single name")
    return json_response(
        seed_scale(
            app, count=count, namespace=namespace, seed=seed, edge_cases=bool(data.get("edge_cases", True))
        )
    )


def retrain_route(app: HubApp, req: Request) -> Response:
    data = req.json() or {}
    return json_response(
        retrain(app, str(data.get("repo_id")), str(data.get("subfolder") or ""), int(data["k"]))
    )


ROUTES = [
    Route(("POST",), r"/_admin/seed-scale", seed_scale_route, "admin", auth="admin"),
    Route(("POST",), r"/_admin/retrain", retrain_route, "admin", auth="admin"),
]
