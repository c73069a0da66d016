"""Safetensors reading: exact decoding, and clean errors for corrupt or hostile headers."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradience.adapters.safetensors_io import (
    SafetensorsFile,
    bf16_bits_to_float32,
    float32_to_bf16_bits,
    parse_header,
    write_safetensors,
)
from gradience.errors import AdapterFormatError

torch = pytest.importorskip("torch")


def _file(tmp_path, header: dict, data: bytes = b"", *, raw_len: int | None = None):
    blob = json.dumps(header).encode()
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(blob) if raw_len is None else raw_len) + blob + data)
    return p


def test_bf16_and_f16_decode_bit_exact_against_torch(tmp_path):
    from safetensors.torch import save_file

    t = torch.randn(37, 19) * 1e3
    save_file({"b": t.to(torch.bfloat16), "h": t.to(torch.float16), "f": t}, str(tmp_path / "t.safetensors"))
    with SafetensorsFile(tmp_path / "t.safetensors") as f:
        np.testing.assert_array_equal(f.read("b"), t.to(torch.bfloat16).float().numpy())
        np.testing.assert_array_equal(f.read("h"), t.to(torch.float16).numpy())
        np.testing.assert_array_equal(f.read("f"), t.numpy())


def test_bf16_encoding_rounds_like_torch():
    x = (torch.randn(10000) * 10).numpy()
    x[:3] = [np.inf, -np.inf, 0.0]
    ours = bf16_bits_to_float32(float32_to_bf16_bits(x))
    np.testing.assert_array_equal(ours, torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def test_writer_round_trips_through_the_reference_reader(tmp_path):
    from safetensors.numpy import load_file

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float16)}
    write_safetensors(tmp_path / "w.safetensors", arrays, metadata={"format": "pt"})
    back = load_file(str(tmp_path / "w.safetensors"))
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize(
    ("header", "data", "raw_len", "needle"),
    [
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside"),
        ({"t": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12"),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, None, "invalid shape"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            None,
            "overlap",
        ),
        ({"t": "nope"}, b"", None, "not an object"),
        ({}, b"", 10**12, "claims"),
        ({}, b"", 5000, "past the end"),
    ],
)
def test_corrupt_headers_give_clean_errors(tmp_path, header, data, raw_len, needle):
    with pytest.raises(AdapterFormatError, match=needle):
        SafetensorsFile(_file(tmp_path, header, data, raw_len=raw_len))


def test_lfs_pointer_is_named(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(AdapterFormatError, match="Git LFS pointer"):
        SafetensorsFile(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x10\x00")
    with pytest.raises(AdapterFormatError, match="too short"):
        SafetensorsFile(p)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 300))
def test_fuzzed_headers_only_raise_format_errors(blob, n):
    prefix = struct.pack("<Q", n) + blob
    with contextlib.suppress(AdapterFormatError):
        parse_header(prefix, len(prefix))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=5),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "BF16", "F16", "I8", "X"]),
                "shape": st.lists(st.integers(-2, 5), max_size=3),
                "data_offsets": st.lists(st.integers(-5, 80), min_size=0, max_size=3),
            }
        ),
        max_size=4,
    )
)
def test_fuzzed_structured_headers_only_raise_format_errors(header):
    blob = json.dumps(header).encode()
    prefix = struct.pack("<Q", len(blob)) + blob + b"\0" * 64
    try:
        infos, _ = parse_header(prefix, len(prefix))
    except AdapterFormatError:
        return
    for info in infos.values():  # whatever passed validation lies inside the file
        assert 8 + len(blob) <= info.start <= info.end <= len(prefix)


def test_any_byte_source_reads_like_the_file(tmp_path):
    """The reader only asks ``read(offset, n)``: memory, a file or a Hub cache read alike."""
    from gradience.adapters.safetensors_io import ByteSource, BytesSource, FileSource, SafetensorsFile

    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7)}
    path = tmp_path / "m.safetensors"
    from safetensors.numpy import save_file

    save_file(arrays, str(path))
    data = path.read_bytes()
    with SafetensorsFile(path) as f, SafetensorsFile(BytesSource(data, "mem")) as m:
        assert isinstance(f.source, FileSource) and isinstance(m.source, ByteSource)
        for name in arrays:
            np.testing.assert_array_equal(f.read(name), m.read(name))
            np.testing.assert_array_equal(m.read(name), arrays[name])

    class Dropping(BytesSource):  # a source whose reads come back short (a dropped connection)
        def read(self, offset: int, n: int) -> bytes:
            return super().read(offset, n if offset == 0 else n - 1)

    with pytest.raises(AdapterFormatError, match="cut short"):
        SafetensorsFile(Dropping(data, "dropping")).read("b")
