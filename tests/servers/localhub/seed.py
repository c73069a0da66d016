"""The repos every Hub-facing test can count on, built from the bundled examples and the corpus.

Seeding is deterministic (fixed dates, seeded random numbers), so commit shas are the same in every
session and tests may compare runs. It writes straight into the store rather than over HTTP: it
runs before the server answers anything, and it must not depend on the code under test.

What is seeded, and why:

- ``gradience-examples/<name>``: every ``examples/<name>`` adapter, at the repo root;
- ``gradience-examples/merge-pairs``: four adapters in subfolders and none at the root (a repo
  that needs ``--subfolder``);
- ``gradience-examples/tiny-llama``: the placeholder base model, a repo with no adapter;
- the corpus adapters under their real repo ids and subfolders (``../shared/corpus/README.md``);
- ``gradience-test/evolving-adapter``: several commits where the adapter changes, tags ``v1``
  and ``v2``, and a ``dev`` branch;
- ``alice/private-adapter`` (private) and ``bob/gated-adapter`` (gated, nobody granted);
- ``gradience-test/padded-adapter``: a ~61 MB safetensors file that is 99.8% one non-LoRA tensor
  placed *between* LoRA tensors, generated here and never committed to git;
- ``gradience-test/adapter-dataset``: an adapter inside a *dataset* repo.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from .accounts import Accounts
from .cards import render_card
from .storage import Change, FileEntry, Repo, Store

SEED_VERSION = 1

EXAMPLES_ORG = "gradience-examples"
TEST_ORG = "gradience-test"
DEFAULT_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def example_names(examples_dir: Path) -> tuple[str, ...]:
    """Every adapter folder under ``examples/`` (new examples are seeded without code changes)."""
    if not examples_dir.is_dir():
        return ()
    return tuple(sorted(p.name for p in examples_dir.iterdir() if (p / "adapter_config.json").is_file()))


EXAMPLE_NAMES = example_names(DEFAULT_EXAMPLES)
EXAMPLE_REPOS: dict[str, str] = {name: f"{EXAMPLES_ORG}/{name}" for name in EXAMPLE_NAMES}
BASE_REPO = f"{EXAMPLES_ORG}/tiny-llama"
MERGE_PAIRS_REPO = f"{EXAMPLES_ORG}/merge-pairs"
MERGE_PAIRS_SUBFOLDERS = ("merge-related-a", "merge-related-b", "merge-conflict-a", "merge-conflict-b")
REVISIONS_REPO = f"{TEST_ORG}/evolving-adapter"
PRIVATE_REPO = "alice/private-adapter"
GATED_REPO = "bob/gated-adapter"
PADDED_REPO = f"{TEST_ORG}/padded-adapter"
DATASET_REPO = f"{TEST_ORG}/adapter-dataset"
DATASET_SUBFOLDER = "adapters/healthy-r8"

# The padded adapter: LoRA on q/v of two layers (r=8, hidden 512) around a 30000x512 F32 lm_head.
PADDED_HIDDEN, PADDED_VOCAB, PADDED_R = 512, 30000, 8
PADDED_LM_HEAD = "base_model.model.lm_head.weight"


@dataclass(frozen=True)
class CorpusRepo:
    """Where a ``../shared/corpus/<folder>`` adapter lives on the real Hub (see its README)."""

    folder: str
    repo_id: str
    subfolder: str  # "" = repo root
    base_model: str  # the Hub id a model card would name
    pipeline_tag: str
    commit: str  # short sha of the source commit, for the card


CORPUS_REPOS: dict[str, CorpusRepo] = {
    c.folder: c
    for c in (
        CorpusRepo("distilbert_emotion", "dayanidhi04/emotion-classification-distilbert-lora", "",
                   "distilbert/distilbert-base-uncased", "text-classification", "675b21410fb7"),
        CorpusRepo("sidkris", "sidkris/Parameter-Efficient-Fine-Tuning-with-LoRA", "",
                   "distilbert/distilbert-base-uncased", "text-classification", "086337f2137f"),
        CorpusRepo("gpt2_anirudh", "anirudh-ak/peft-gpt2", "model/lora_model",
                   "openai-community/gpt2", "text-classification", "36faf9eb2a08"),
        CorpusRepo("lab08", "guilhermmeabreu/lab_08", "", "facebook/opt-125m", "text-generation", "2c0d9118ad45"),
        CorpusRepo("gemma270m_adapter", "ao-wei/gemma3-270m-svg-lora-partb", "adapter",
                   "google/gemma-3-270m-it", "text-generation", "a10b688a2a63"),
    )
}  # fmt: skip

EXAMPLE_NOTES = {
    "healthy-r8": "a 64-way mapping that needs most of its rank",
    "overprovisioned-r64": "a simple task given far more rank than it needs",
    "untrained-r8": "saved straight after get_peft_model: B = 0",
    "merge-related-a": "one of a related pair from the same start, which merges cleanly",
    "merge-related-b": "one of a related pair from the same start, which merges cleanly",
    "merge-conflict-a": "one of a pair with contradictory labels and different starts",
    "merge-conflict-b": "one of a pair with contradictory labels and different starts",
}
# Distinct download counts so sort=downloads has one right answer.
DOWNLOADS = {
    "healthy-r8": 1520, "overprovisioned-r64": 980, "untrained-r8": 15, "merge-related-a": 410,
    "merge-related-b": 395, "merge-conflict-a": 260, "merge-conflict-b": 240, MERGE_PAIRS_REPO: 730,
    BASE_REPO: 3050, REVISIONS_REPO: 333, PRIVATE_REPO: 5, GATED_REPO: 1900, PADDED_REPO: 42, DATASET_REPO: 77,
    "distilbert_emotion": 2210, "sidkris": 87, "gpt2_anirudh": 640, "lab08": 52, "gemma270m_adapter": 1180,
}  # fmt: skip

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
Files = dict[str, bytes | FileEntry]


class Seeder:
    """Builds repos with fixed dates; each new repo is one day after the previous one."""

    def __init__(self, store: Store, accounts: Accounts) -> None:
        self.store = store
        self.accounts = accounts
        self.clock = T0

    def tick(self, hours: float = 1) -> datetime:
        self.clock += timedelta(hours=hours)
        return self.clock

    def entry(self, path: str, content: bytes | FileEntry) -> FileEntry:
        if isinstance(content, FileEntry):
            return content
        return self.store.add_file_bytes(content, lfs=path.endswith(LFS_SUFFIXES))

    def repo(
        self, repo_id: str, *, author: str, repo_type: str = "model", downloads: int = 0, **kw: Any
    ) -> Repo:
        self.clock = self.clock.replace(hour=9) + timedelta(days=1)
        self.accounts.ensure_user(repo_id.split("/", 1)[0])
        repo = self.store.create_repo(repo_type, repo_id, author=author, date=self.clock)
        repo.downloads = downloads
        repo.likes = downloads // 100
        for key, value in kw.items():
            setattr(repo, key, value)
        return repo

    def commit(
        self,
        repo: Repo,
        files: Files,
        title: str,
        *,
        author: str,
        branch: str = "main",
        delete: tuple[str, ...] = (),
    ) -> str:
        changes = [Change("add", p, self.entry(p, c)) for p, c in sorted(files.items())]
        changes += [Change("delete_folder" if p.endswith("/") else "delete", p.rstrip("/")) for p in delete]
        c = self.store.commit(
            repo, repo.branches[branch], changes, title=title, author=author, date=self.tick()
        )
        repo.branches[branch] = c.oid
        return c.oid


def adapter_files(folder: Path, prefix: str = "") -> Files:
    """The files of an adapter folder, keyed by their path in the repo."""
    out: Files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != "README.md":
            out[f"{prefix}{f.name}"] = f.read_bytes()
    return out


def example_card(name: str, folder: Path) -> bytes:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    meta = {
        "base_model": BASE_REPO,
        "library_name": "peft",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["peft", "lora", "gradience-example"],
    }
    body = (
        f"# {name}\n\nA PEFT LoRA adapter (r={cfg['r']}, alpha={cfg['lora_alpha']}) on the tiny random Llama "
        f"bundled with Gradience: {EXAMPLE_NOTES.get(name, 'an example adapter')}. See `examples/README.md`."
    )
    return render_card(meta, body).encode()


def corpus_card(c: CorpusRepo) -> bytes:
    meta = {
        "base_model": c.base_model,
        "library_name": "peft",
        "pipeline_tag": c.pipeline_tag,
        "tags": ["peft", "lora"],
    }
    where = f"`{c.subfolder}/`" if c.subfolder else "the repo root"
    body = f"# {c.repo_id.split('/')[1]}\n\nA LoRA adapter (in {where}) mirrored from {c.repo_id}@{c.commit} for tests."
    return render_card(meta, body).encode()


def write_padded_safetensors(store: Store, seed: int = 20250303) -> FileEntry:
    """Stream a safetensors file: LoRA tensors, then a large lm_head, then more LoRA tensors.

    Putting the big tensor in the middle means a client that fetches "first LoRA byte to last LoRA
    byte" in one range still downloads it: only per-tensor (or well coalesced) ranges pass.
    """
    rng = np.random.default_rng(seed)
    h, r = PADDED_HIDDEN, PADDED_R
    layout: list[tuple[str, tuple[int, ...]]] = []
    for layer in (0, 1):
        if layer == 1:
            layout.append((PADDED_LM_HEAD, (PADDED_VOCAB, h)))
        for proj in ("q_proj", "v_proj"):
            stem = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            layout += [(f"{stem}.lora_A.weight", (r, h)), (f"{stem}.lora_B.weight", (h, r))]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in layout:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    total = 8 + len(raw) + offset
    with store.blobs.writer(total) as w:
        w.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in layout:
            if name == PADDED_LM_HEAD:
                rows = 2048
                for start in range(0, shape[0], rows):
                    block = (
                        rng.standard_normal((min(rows, shape[0] - start), shape[1]), dtype=np.float32) * 0.02
                    )
                    w.write(block.astype("<f4").tobytes())
            else:
                w.write((rng.standard_normal(shape, dtype=np.float32) * 0.05).astype("<f4").tobytes())
    return FileEntry(w.sha256, lfs=True)


PADDED_CONFIG = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": "gradience-test/padded-base",
    "r": PADDED_R,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": ["lm_head"],
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "use_rslora": False,
    "use_dora": False,
}


def card(metadata: dict[str, Any], body: str) -> bytes:
    return render_card(metadata, body).encode()


def adapter_card_meta(base_model: str, *tags: str) -> dict[str, Any]:
    return {"base_model": base_model, "library_name": "peft", "tags": ["peft", "lora", *tags]}


def seed_examples(s: Seeder, examples: Path) -> None:
    """The placeholder base, every example adapter, and the merge pairs in subfolders."""
    base = s.repo(BASE_REPO, author="alice", downloads=DOWNLOADS[BASE_REPO])
    base_meta = {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["llama", "tiny", "random"],
    }
    base_body = (
        "# tiny-llama\n\nThe random 2-layer Llama the Gradience examples were trained on (config only)."
    )
    files: Files = {
        "config.json": (examples / "base" / "config.json").read_bytes(),
        "README.md": card(base_meta, base_body),
    }
    s.commit(base, files, "Add config and card", author="alice")

    for name in example_names(examples):
        repo = s.repo(f"{EXAMPLES_ORG}/{name}", author="alice", downloads=DOWNLOADS.get(name, 100))
        files = {**adapter_files(examples / name), "README.md": example_card(name, examples / name)}
        s.commit(repo, files, f"Upload {name}", author="alice")

    pairs = s.repo(MERGE_PAIRS_REPO, author="alice", downloads=DOWNLOADS[MERGE_PAIRS_REPO])
    files = {}
    for name in MERGE_PAIRS_SUBFOLDERS:
        files.update(adapter_files(examples / name, prefix=f"{name}/"))
    listing = ", ".join(f"`{n}/`" for n in MERGE_PAIRS_SUBFOLDERS)
    body = f"# merge-pairs\n\nFour adapters in subfolders (none at the root): {listing}"
    files["README.md"] = card(adapter_card_meta(BASE_REPO, "merge"), body)
    s.commit(pairs, files, "Upload the merge pairs", author="alice")


def seed_corpus(s: Seeder, corpus: Path) -> None:
    """The real adapters, under the repo ids and subfolders they have on the Hub."""
    for c in CORPUS_REPOS.values():
        folder = corpus / c.folder
        if not folder.is_dir():
            continue
        owner = c.repo_id.split("/")[0]
        repo = s.repo(c.repo_id, author=owner, downloads=DOWNLOADS[c.folder])
        prefix = f"{c.subfolder}/" if c.subfolder else ""
        s.commit(
            repo,
            {**adapter_files(folder, prefix), "README.md": corpus_card(c)},
            "Upload adapter",
            author=owner,
        )


def seed_revisions(s: Seeder, examples: Path) -> None:
    """Untrained at ``v1``, trained at ``v2``, a card-only commit on ``main``, r=64 on ``dev``."""
    evo = s.repo(REVISIONS_REPO, author="alice", downloads=DOWNLOADS[REVISIONS_REPO])
    meta = adapter_card_meta(BASE_REPO)
    v1_files = {
        **adapter_files(examples / "untrained-r8"),
        "README.md": card(meta, "# evolving-adapter\n\nStep 0."),
    }
    v1 = s.commit(evo, v1_files, "Add the untrained adapter (step 0)", author="alice")
    v2 = s.commit(evo, adapter_files(examples / "healthy-r8"), "Train for 300 steps", author="alice")
    readme = card(meta, "# evolving-adapter\n\nTrained for 300 steps.")
    s.commit(evo, {"README.md": readme}, "Update the model card", author="alice")
    evo.tags.update({"v1": v1, "v2": v2})
    evo.branches["dev"] = v2
    s.commit(evo, adapter_files(examples / "overprovisioned-r64"), "Try r=64", author="alice", branch="dev")


def seed_access(s: Seeder, examples: Path) -> None:
    """A private repo (alice's) and a gated one (bob's, nobody granted)."""
    private = s.repo(PRIVATE_REPO, author="alice", downloads=DOWNLOADS[PRIVATE_REPO], private=True)
    name = "merge-conflict-a"
    files = {**adapter_files(examples / name), "README.md": example_card(name, examples / name)}
    s.commit(private, files, "Upload private adapter", author="alice")

    gated = s.repo(GATED_REPO, author="bob", downloads=DOWNLOADS[GATED_REPO], gated="manual")
    name = "overprovisioned-r64"
    files = {**adapter_files(examples / name), "README.md": example_card(name, examples / name)}
    s.commit(gated, files, "Upload gated adapter", author="bob")


def seed_padded(s: Seeder) -> None:
    padded = s.repo(PADDED_REPO, author="alice", downloads=DOWNLOADS[PADDED_REPO])
    body = (
        "# padded-adapter\n\nSmall LoRA tensors around a ~61 MB `lm_head` (modules_to_save): a remote audit "
        "must fetch only the LoRA bytes."
    )
    files: Files = {
        "adapter_config.json": json.dumps(PADDED_CONFIG, indent=2).encode(),
        "adapter_model.safetensors": write_padded_safetensors(s.store),
        "README.md": card(adapter_card_meta("gradience-test/padded-base", "padded"), body),
    }
    s.commit(padded, files, "Upload padded adapter", author="alice")


def seed_dataset(s: Seeder, examples: Path) -> None:
    ds = s.repo(DATASET_REPO, author="alice", repo_type="dataset", downloads=DOWNLOADS[DATASET_REPO])
    readme = card(
        {"license": "apache-2.0", "tags": ["peft", "lora"]}, "# adapter-dataset\n\nAn adapter folder."
    )
    files = {**adapter_files(examples / "healthy-r8", prefix=f"{DATASET_SUBFOLDER}/"), "README.md": readme}
    s.commit(ds, files, "Upload adapter", author="alice")


def seed(store: Store, accounts: Accounts, *, examples_dir: Path, corpus_dir: Path | None) -> list[str]:
    """Fill an empty store; returns the repo ids created (nothing if it was seeded before)."""
    with store.lock:
        if store.meta.get("seeded"):
            return []
        before = set(store.repos)
        s = Seeder(store, accounts)
        seed_examples(s, examples_dir)
        if corpus_dir is not None and corpus_dir.is_dir():
            seed_corpus(s, corpus_dir)
        seed_revisions(s, examples_dir)
        seed_access(s, examples_dir)
        seed_padded(s)
        seed_dataset(s, examples_dir)
        store.meta["seeded"] = SEED_VERSION
        store.save()
        return [store.repos[k].id for k in store.repos if k not in before]
