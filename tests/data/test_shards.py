"""The .bin shard format, checked against an independent reading with struct / np.fromfile."""

import struct

import numpy as np
import pytest

from data import shards
from data.shards import ShardError


def _independent_read(path):
    """Read a shard the way llm.c's and modded-nanogpt's loaders do."""
    raw = path.read_bytes()
    header = struct.unpack("<256i", raw[:1024])
    tokens = np.frombuffer(raw[1024:], dtype="<u2")
    return header, tokens


def test_write_shard_bytes_match_independent_reading(tmp_path):
    tokens = np.array([50256, 15496, 995, 0, 65535, 7], dtype=np.int64)
    path = shards.write_shard(tmp_path / "x_val_000000.bin", tokens)
    header, read_back = _independent_read(path)
    assert header[:3] == (20240520, 1, len(tokens))
    assert all(v == 0 for v in header[3:])
    assert read_back.tolist() == tokens.tolist()
    assert path.stat().st_size == 1024 + 2 * len(tokens)


def test_open_shard_roundtrip_and_memmap(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    path = shards.write_shard(tmp_path / "a_train_000001.bin", tokens)
    view = shards.open_shard(path, vocab_size=50257)
    assert isinstance(view, np.memmap) and view.dtype == np.uint16
    np.testing.assert_array_equal(view, tokens)
    assert shards.read_header(path) == shards.ShardHeader(shards.MAGIC, shards.VERSION, 1000)


def test_write_shard_leaves_no_temporary_files(tmp_path):
    shards.write_shard(tmp_path / "a_val_000000.bin", [1, 2, 3])
    assert [p.name for p in tmp_path.iterdir()] == ["a_val_000000.bin"]


def test_write_shard_refuses_ids_outside_uint16(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        shards.write_shard(tmp_path / "a_val_000000.bin", [1, 65536])
    with pytest.raises(ValueError, match="uint16"):
        shards.write_shard(tmp_path / "a_val_000000.bin", [-1, 3])
    assert not any(tmp_path.iterdir())


def test_empty_shard(tmp_path):
    path = shards.write_shard(tmp_path / "a_val_000000.bin", np.zeros(0, dtype=np.int32))
    assert shards.read_header(path).num_tokens == 0
    assert len(shards.open_shard(path, vocab_size=10)) == 0


def _raw_shard(path, header_values, n_tokens_written, token_value=1):
    header = np.zeros(256, dtype="<i4")
    header[: len(header_values)] = header_values
    path.write_bytes(header.tobytes() + np.full(n_tokens_written, token_value, dtype="<u2").tobytes())
    return path


@pytest.mark.parametrize(
    "header_values, n_written, message",
    [
        ((12345, 1, 4), 4, "bad magic number 12345"),
        ((20240520, 7, 4), 4, "unsupported shard version 7"),
        ((20240520, 1, 10), 4, "truncated file"),
        ((20240520, 1, 2), 4, "longer than its header says"),
    ],
)
def test_bad_shards_name_file_and_fault(tmp_path, header_values, n_written, message):
    path = _raw_shard(tmp_path / "bad_train_000001.bin", header_values, n_written)
    with pytest.raises(ShardError, match=message) as info:
        shards.open_shard(path)
    assert str(path) in str(info.value)


def test_header_shorter_than_1024_bytes(tmp_path):
    path = tmp_path / "short_val_000000.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ShardError, match="truncated file") as info:
        shards.read_header(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_shard_error(tmp_path):
    with pytest.raises(ShardError, match="cannot read"):
        shards.read_header(tmp_path / "nope_val_000000.bin")


def test_token_id_above_vocab_found_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "_CHECK_CHUNK_TOKENS", 7)
    tokens = np.full(50, 3, dtype=np.uint16)
    tokens[33] = 60000
    path = shards.write_shard(tmp_path / "v_train_000001.bin", tokens)
    with pytest.raises(ShardError, match=r"token id 60000 at position 33 is >= vocab_size 50257") as info:
        shards.open_shard(path, vocab_size=50257)
    assert str(path) in str(info.value)
    assert len(shards.open_shard(path, vocab_size=50257, check_tokens=False)) == 50
    assert len(shards.open_shard(path, vocab_size=None)) == 50


def test_list_shards_sorted_by_split(tmp_path):
    for name in ["fw_train_000002.bin", "fw_val_000000.bin", "fw_train_000001.bin", "notes.txt",
                 "fw_train_000003.bin.tmp", "fw_test_000004.bin"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in shards.list_shards(tmp_path, "train")] == [
        "fw_train_000001.bin", "fw_train_000002.bin"]
    assert [p.name for p in shards.list_shards(tmp_path, "val")] == ["fw_val_000000.bin"]
    with pytest.raises(ValueError, match="split"):
        shards.list_shards(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shards.list_shards(tmp_path / "missing", "train")


def test_shard_filename_matches_reference_naming():
    assert shards.shard_filename("fineweb", "val", 0) == "fineweb_val_000000.bin"
    assert shards.shard_filename("fineweb", "train", 12) == "fineweb_train_000012.bin"
    assert shards.parse_shard_name("fineweb_train_000012.bin") == ("fineweb", "train", 12)
    assert shards.parse_shard_name("fineweb_train_12.bin") is None
