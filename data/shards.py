"""The token-shard format shared with llm.c and modded-nanogpt.

A shard is a little-endian file made of

* a header of ``HEADER_INTS`` (256) int32 values: ``[MAGIC, VERSION, num_tokens, 0, ...]``;
* ``num_tokens`` token ids as uint16, nothing after them.

Shards are named ``<prefix>_<split>_<index:06d>.bin`` (``fineweb_val_000000.bin``,
``fineweb_train_000001.bin``), as the reference tools write them, so shards made by either
tool can be read by the other.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_TOKEN_ID = int(np.iinfo(np.uint16).max)
MAX_SHARD_TOKENS = int(np.iinfo(np.int32).max)
SPLITS = ("train", "val")

# Number of tokens checked per vectorized pass of the vocab check (16 MiB of uint16).
_CHECK_CHUNK_TOKENS = 1 << 23
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)_(?P<split>train|val)_(?P<index>\d{6,})\.bin$")

PathLike = Union[str, os.PathLike]


class ShardError(ValueError):
    """A shard file that does not follow the format; the message names the file and the fault."""


@dataclass(frozen=True)
class ShardHeader:
    """The three meaningful header fields of a shard."""

    magic: int
    version: int
    num_tokens: int

    @property
    def file_size(self) -> int:
        """Size in bytes a shard with this header must have."""
        return HEADER_BYTES + self.num_tokens * TOKEN_DTYPE.itemsize


def shard_filename(prefix: str, split: str, index: int) -> str:
    """``<prefix>_<split>_<index:06d>.bin``, the reference tools' naming."""
    if split not in SPLITS:
        raise ValueError(f"shard split must be one of {SPLITS}, got {split!r}")
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"{prefix}_{split}_{index:06d}.bin"


def encode_header(num_tokens: int) -> bytes:
    """The 1024-byte header for a shard of ``num_tokens`` tokens."""
    if not 0 <= num_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"a shard holds 0..{MAX_SHARD_TOKENS} tokens, got {num_tokens}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, num_tokens
    return header.tobytes()


def _as_uint16_tokens(tokens, where: str) -> np.ndarray:
    """``tokens`` as a contiguous little-endian uint16 array, refusing ids that do not fit."""
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"{where}: tokens must be 1-D, got shape {array.shape}")
    if array.dtype == TOKEN_DTYPE:
        return np.ascontiguousarray(array)
    if array.size == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: token ids must be integers, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > MAX_TOKEN_ID:
        raise ValueError(
            f"{where}: token ids must fit uint16 (0..{MAX_TOKEN_ID}), got range {low}..{high}"
        )
    return array.astype(TOKEN_DTYPE)


def write_shard(path: PathLike, tokens) -> Path:
    """Write ``tokens`` as a shard at ``path`` atomically.

    The bytes go to a temporary file in the same directory, which is flushed, fsynced and then
    renamed over ``path``: a reader never sees a partial shard under its final name.
    """
    path = Path(path)
    array = _as_uint16_tokens(tokens, str(path))
    header = encode_header(int(array.size))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(header)
            handle.write(array.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file (mkstemp's is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort; not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: PathLike) -> ShardHeader:
    """Read and validate a shard's header and size; raise ``ShardError`` naming the fault."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_BYTES)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror or exc})") from exc
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: truncated file: {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, num_tokens = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    if magic != MAGIC:
        raise ShardError(f"{path}: bad magic number {magic}, expected {MAGIC} (not a token shard)")
    if version != VERSION:
        raise ShardError(f"{path}: unsupported shard version {version}, expected {VERSION}")
    if num_tokens < 0:
        raise ShardError(f"{path}: negative token count {num_tokens} in header")
    header = ShardHeader(magic=magic, version=version, num_tokens=num_tokens)
    if size != header.file_size:
        actual_tokens = (size - HEADER_BYTES) / TOKEN_DTYPE.itemsize
        fault = "truncated file" if size < header.file_size else "file longer than its header says"
        raise ShardError(
            f"{path}: {fault}: header says {num_tokens} tokens ({header.file_size} bytes), "
            f"file has {size} bytes ({actual_tokens:g} tokens)"
        )
    return header


def check_token_ids(path: PathLike, tokens: np.ndarray, vocab_size: int) -> None:
    """Raise ``ShardError`` if any id in ``tokens`` is >= ``vocab_size``.

    Vectorized, in chunks, so a memory-mapped shard of hundreds of MB is never copied whole.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be > 0, got {vocab_size}")
    if vocab_size > MAX_TOKEN_ID:
        return  # every uint16 fits
    for start in range(0, len(tokens), _CHECK_CHUNK_TOKENS):
        chunk = tokens[start : start + _CHECK_CHUNK_TOKENS]
        if chunk.size and int(chunk.max()) >= vocab_size:
            offset = int(np.argmax(chunk >= vocab_size))
            raise ShardError(
                f"{path}: token id {int(chunk[offset])} at position {start + offset} "
                f"is >= vocab_size {vocab_size}"
            )


def open_shard(path: PathLike, vocab_size: int | None = None, check_tokens: bool = True) -> np.ndarray:
    """Validate a shard and return its tokens as a read-only uint16 memory map.

    With ``vocab_size`` and ``check_tokens``, every id is checked to be < ``vocab_size``.
    """
    path = Path(path)
    header = read_header(path)
    if header.num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header.num_tokens,))
    if check_tokens and vocab_size is not None:
        check_token_ids(path, tokens, vocab_size)
    return tokens


def parse_shard_name(path: PathLike) -> tuple[str, str, int] | None:
    """``(prefix, split, index)`` of a shard file name, or None if it is not one."""
    match = _SHARD_NAME.match(Path(path).name)
    if match is None:
        return None
    return match["prefix"], match["split"], int(match["index"])


def list_shards(directory: PathLike, split: str) -> list[Path]:
    """The ``*_<split>_NNNNNN.bin`` shards of ``directory``, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"shard split must be one of {SPLITS}, got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"shard directory {directory} does not exist")
    found = []
    for entry in directory.iterdir():
        parsed = parse_shard_name(entry)
        if parsed is not None and parsed[1] == split and entry.is_file():
            found.append(entry)
    return sorted(found)
