"""``.bin`` checkpoints: read without torch, and never execute what the pickle asks for."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradience.adapters.pickle_io import TorchZipFile
from gradience.errors import AdapterFormatError, UnsafePickleError


@pytest.fixture
def torch():
    """Only the tests that write checkpoints with torch need it; the refusal and fuzz tests
    must run (and catch regressions) on a machine without torch."""
    return pytest.importorskip("torch")


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"a": _Exploit(str(marker))}, protocol=2)
    _zip_with_pickle(tmp_path / "adapter_model.bin", payload)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        TorchZipFile(tmp_path / "adapter_model.bin")
    assert not marker.exists()


def test_malicious_bin_through_the_cli_is_a_clean_exit_2(tmp_path):
    marker = tmp_path / "pwned"
    _zip_with_pickle(tmp_path / "adapter_model.bin", pickle.dumps(_Exploit(str(marker)), protocol=2))
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    p = subprocess.run(
        [sys.executable, "-m", "gradience", "audit", str(tmp_path)], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert "refusing to load" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_legacy_plain_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "adapter_model.bin").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(AdapterFormatError, match="legacy"):
        TorchZipFile(tmp_path / "adapter_model.bin")
    assert not marker.exists()


def test_reads_torch_saved_tensors_exactly(torch, tmp_path):
    base = torch.randn(6, 5)
    sd = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(4, 2).to(torch.bfloat16),
        "f16": torch.randn(2, 2).half(),
        "view": base[:, 1:4],  # non-contiguous view sharing a storage
        "param": torch.nn.Parameter(torch.randn(2, 3)),
    }
    torch.save(sd, tmp_path / "m.bin")
    with TorchZipFile(tmp_path / "m.bin") as f:
        for k, v in sd.items():
            np.testing.assert_array_equal(
                f.read(k), v.detach().float().numpy() if k == "bf16" else v.detach().numpy()
            )


def test_corpus_bin_matches_torch_weights_only_load(torch, corpus_dir):
    path = corpus_dir / "sidkris" / "adapter_model.bin"
    want = torch.load(path, weights_only=True, map_location="cpu")
    with TorchZipFile(path) as f:
        assert set(f.tensors) == set(want)
        for k, v in want.items():
            np.testing.assert_array_equal(f.read(k), v.float().numpy())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_pickles_only_raise_format_errors(blob):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + blob)
    path = f"/tmp/gradience-fuzz-{os.getpid()}.bin"
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
    try:
        TorchZipFile(path).close()
    except AdapterFormatError:
        pass
    finally:
        os.unlink(path)


def test_tensor_pointing_outside_its_storage_is_rejected(torch, tmp_path):
    torch.save({"t": torch.randn(4, 4)}, tmp_path / "m.bin")
    with zipfile.ZipFile(tmp_path / "m.bin") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    # shrink the storage's declared numel (16 → 3) so the (4, 4) view would read past it
    assert entries[pkl].count(b"K\x10t") == 1
    entries[pkl] = entries[pkl].replace(b"K\x10t", b"K\x03t")
    with zipfile.ZipFile(tmp_path / "bad.bin", "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(AdapterFormatError):
        TorchZipFile(tmp_path / "bad.bin").read("t")
