"""What an output directory holds: ``manifest.json`` (format, tokenizer, options) and
``progress.json`` (finished shards and the exact source position after each).

Both are written atomically. A resumed run trusts a finished shard only after checking its
header and size against the recorded token count.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from data import shards
from data.tokenizer import ENCODING_NAME, EOT, RANKS_SHA256, VOCAB_SIZE

from .sources import PrepareError

MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = "progress.json"
FORMAT = {
    "format": "llm.c-bin",
    "magic": shards.MAGIC,
    "version": shards.VERSION,
    "header_ints": shards.HEADER_INTS,
    "dtype": "uint16",
    "documents": "<|endoftext|> before each document",
}
TOKENIZER = {"name": ENCODING_NAME, "ranks_sha256": RANKS_SHA256, "eot": EOT, "vocab_size": VOCAB_SIZE}


class OptionsMismatch(PrepareError):
    """The output directory was prepared with other options."""


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temporary file, fsync, then rename over ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, shards._default_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise PrepareError(f"cannot read {path}: {exc}") from exc


def make_manifest(options: dict) -> dict:
    """The manifest of a directory prepared with ``options`` (those that change the output)."""
    return {**FORMAT, "tokenizer": dict(TOKENIZER), "prepare": dict(options)}


def check_manifest(out_dir: Path, wanted: dict) -> bool:
    """Check the directory's manifest against ``wanted``; return whether one exists.

    Raises ``PrepareError`` when the directory holds shards of another format or tokenizer,
    shards without a manifest, or shards prepared with different options.
    """
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        strays = sorted(p.name for p in out_dir.glob("*.bin"))
        if strays:
            raise PrepareError(
                f"{out_dir} already holds shards ({strays[0]}, ...) without a {MANIFEST_NAME}: they may come "
                "from another tool or tokenizer; choose an empty --out directory"
            )
        return False
    found = read_json(path)
    for key, value in FORMAT.items():
        if found.get(key) != value:
            raise PrepareError(
                f"{out_dir} holds shards of another format ({key}={found.get(key)!r}, this tool writes {value!r}); "
                "choose another --out directory"
            )
    if found.get("tokenizer") != wanted["tokenizer"]:
        raise PrepareError(
            f"{out_dir} holds shards of another tokenizer ({found.get('tokenizer')}); this tool writes "
            f"{wanted['tokenizer']['name']}; choose another --out directory"
        )
    old, new = found.get("prepare", {}), wanted["prepare"]
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differing:
        details = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in differing)
        raise OptionsMismatch(
            f"{out_dir} was prepared with other options ({details}); rerun with the same options to resume, "
            "choose another --out directory, or pass --overwrite to delete its shards and prepare them anew"
        )
    return True


@dataclass
class Position:
    """The next token to write: token ``offset`` (0 = its EOT) of document ``document``."""

    document: int = 0
    offset: int = 0


@dataclass
class ShardRecord:
    name: str
    split: str
    tokens: int
    start: Position  # source position of the shard's first token


@dataclass
class Progress:
    """Finished shards, the position after the last one, and whether the source is exhausted."""

    shards: list[ShardRecord] = field(default_factory=list)
    position: Position = field(default_factory=Position)
    documents_done: int = 0  # documents whose last token is in a finished shard
    finished: bool = False

    @property
    def next_index(self) -> int:
        return len(self.shards)

    def tokens(self, split: str) -> int:
        return sum(s.tokens for s in self.shards if s.split == split)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> "Progress":
        records = [
            ShardRecord(s["name"], s["split"], int(s["tokens"]), Position(**s["start"])) for s in payload["shards"]
        ]
        return cls(
            shards=records,
            position=Position(**payload["position"]),
            documents_done=int(payload.get("documents_done", 0)),
            finished=bool(payload["finished"]),
        )


def save_progress(out_dir: Path, progress: Progress) -> None:
    write_json_atomic(out_dir / PROGRESS_NAME, progress.to_json())


def load_verified_progress(out_dir: Path) -> tuple[Progress, Optional[str]]:
    """The saved progress, cut back to before the first shard that fails its header/size check.

    Returns the progress and a warning when shards had to be dropped.
    """
    path = out_dir / PROGRESS_NAME
    if not path.exists():
        return Progress(), None
    try:
        progress = Progress.from_json(read_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise PrepareError(f"{path} is not a valid progress file ({exc}); choose another --out directory") from exc
    for index, record in enumerate(progress.shards):
        fault = _shard_fault(out_dir / record.name, record.tokens)
        if fault:
            kept = progress.shards[:index]
            restart = Progress(
                shards=kept,
                position=record.start,
                documents_done=record.start.document,
                finished=False,
            )
            return restart, f"{record.name}: {fault}; rewriting from this shard on"
    return progress, None


def _shard_fault(path: Path, expected_tokens: int) -> Optional[str]:
    try:
        header = shards.read_header(path)
    except shards.ShardError as exc:
        return str(exc)
    if header.num_tokens != expected_tokens:
        return f"holds {header.num_tokens} tokens, progress says {expected_tokens}"
    return None


def remove_prepared_files(out_dir: Path) -> None:
    """Delete what a preparation wrote to ``out_dir``: the shards its manifest names, and the
    manifest and progress files."""
    prefix = read_json(out_dir / MANIFEST_NAME).get("prepare", {}).get("prefix")
    for entry in out_dir.iterdir():
        parsed = shards.parse_shard_name(entry)
        if parsed is not None and parsed[0] == prefix:
            entry.unlink()
    for name in (PROGRESS_NAME, MANIFEST_NAME):
        (out_dir / name).unlink(missing_ok=True)


def remove_unrecorded_files(out_dir: Path, prefix: str, progress: Progress) -> None:
    """Delete temporary files and shards of ``prefix`` that the progress does not record."""
    recorded = {s.name for s in progress.shards}
    for entry in out_dir.iterdir():
        parsed = shards.parse_shard_name(entry)
        stale_shard = parsed is not None and parsed[0] == prefix and entry.name not in recorded
        temporary = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if stale_shard or temporary:
            entry.unlink()
