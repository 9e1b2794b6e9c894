"""The start-up check of a shard directory: every shard's largest token id, and that the shards belong to it.

``scan_directory`` reads each ``*_train_*.bin`` / ``*_val_*.bin`` once per start: one pass computes its SHA-256
and, unless the directory's ``manifest.json`` already records the largest id for exactly that content (``token_scan``,
keyed by file name and content digest), the largest token id (numpy max in 16 MiB chunks). Size and mtime are not
trusted: a shard rewritten in place with the same size and mtime has another digest, so its ids are scanned again.
The cost is reading the files (about the speed of the disk or page cache) on every start; the loader also checks
every batch's ids where it reads them (data/loader.py), so a shard changed after this scan stops the run with one
line naming it instead of an IndexError.

A directory written by ``python -m data.fineweb`` (or the embedded corpus) has a manifest naming its
tokenizer and a ``progress.json`` listing its shards: shards it does not list (another prefix, another
tool, another tokenizer) and a manifest of another tokenizer are refused. Directories made by other tools,
with no manifest at all, are accepted as before, with one note.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from data import shards
from data.tokenizer import ENCODING_NAME, RANKS_SHA256

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
_CHUNK = 1 << 23


@dataclass
class ScanResult:
    max_token: dict[str, int] = field(default_factory=dict)  # shard name -> largest id (-1 if empty)
    problems: list[str] = field(default_factory=list)  # one line each; any problem = the directory is refused
    notes: list[str] = field(default_factory=list)


def max_token_id(path: Path) -> int:
    tokens = shards.open_shard(path, check_tokens=False)
    return max((int(tokens[i:i + _CHUNK].max()) for i in range(0, len(tokens), _CHUNK)), default=-1)


def digest_and_max(path: Path, want_max: bool) -> tuple[str, int | None]:
    """One read of the shard: the SHA-256 of its bytes (the key of its cached scan) and, with ``want_max``, its
    largest token id (-1 if empty). The header is validated first, so a malformed file is named before hashing."""
    tokens = shards.open_shard(path, check_tokens=False)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        sha.update(f.read(shards.HEADER_BYTES))
    largest = -1
    for i in range(0, len(tokens), _CHUNK):
        chunk = tokens[i:i + _CHUNK]
        sha.update(chunk)  # a contiguous slice of the file's token bytes
        if want_max:
            largest = max(largest, int(chunk.max()))
    return sha.hexdigest(), (largest if want_max else None)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _membership(directory: Path, names: list[str], manifest: dict | None, result: ScanResult) -> None:
    if manifest is None:
        result.notes.append(f"{directory} has no {MANIFEST} (shards from another tool): their tokenizer and "
                            f"membership are not checked")
        return
    tokenizer = manifest.get("tokenizer") or {}
    if tokenizer.get("name") != ENCODING_NAME or tokenizer.get("ranks_sha256") != RANKS_SHA256:
        result.problems.append(f"{directory}/{MANIFEST} says its shards were made with tokenizer "
                               f"{tokenizer.get('name')!r} (ranks sha256 {str(tokenizer.get('ranks_sha256'))[:12]}), "
                               f"not the {ENCODING_NAME!r} this trainer uses")
    progress = _read_json(directory / PROGRESS) or {}
    listed = {s.get("name") for s in progress.get("shards", []) if isinstance(s, dict)}
    unlisted = [n for n in names if n not in listed]
    if unlisted:
        prefix = (manifest.get("prepare") or {}).get("prefix")
        result.problems.append(f"{directory} holds shards its {MANIFEST}/{PROGRESS} do not list (prefix "
                               f"{prefix!r} is this directory's): {', '.join(unlisted[:5])}"
                               f"{' ...' if len(unlisted) > 5 else ''}; they may come from another tool or "
                               f"tokenizer: move them to their own directory")


def scan_directory(directory: str | Path, vocab_size: int | None, scan_tokens: bool = True,
                   write_cache: bool = True, vocab_key: str = "model.vocab_size") -> ScanResult:
    """Check every shard of ``directory``: membership, tokenizer and (``scan_tokens``) its largest token id,
    which must be < ``vocab_size`` when one is given (``vocab_key``: the setting it comes from, for messages)."""
    directory = Path(directory)
    paths = [p for split in shards.SPLITS for p in shards.list_shards(directory, split)]
    manifest = _read_json(directory / MANIFEST)
    result = ScanResult()
    _membership(directory, [p.name for p in paths], manifest, result)
    cache = dict((manifest or {}).get("token_scan", {}))
    changed = False
    for path in paths if scan_tokens else []:
        entry = cache.get(path.name)
        try:
            known = entry.get("sha256") if entry else None
            digest, largest = digest_and_max(path, want_max=known is None)
            if digest != known:  # size and mtime do not tell content
                if largest is None:  # the cached digest is stale: this content's ids were not read yet
                    largest = max_token_id(path)
                entry, changed = {"sha256": digest, "max_token": largest}, True
                cache[path.name] = entry
        except (shards.ShardError, OSError) as err:
            result.problems.append(str(err) if isinstance(err, shards.ShardError) else f"{path}: {err}")
            continue
        result.max_token[path.name] = entry["max_token"]
        if vocab_size is not None and entry["max_token"] >= vocab_size:
            result.problems.append(f"{path}: token id {entry['max_token']} >= {vocab_key} {vocab_size} "
                                   f"(data.check_tokens)")
    if changed and manifest is not None and write_cache:
        _write_cache(directory, manifest, {k: v for k, v in cache.items() if (directory / k).exists()})
    return result


def _write_cache(directory: Path, manifest: dict, cache: dict) -> None:
    """Best effort: a read-only directory is scanned again next time, nothing more."""
    path = directory / MANIFEST
    tmp = directory / f".{MANIFEST}.scan.tmp"
    try:
        tmp.write_text(json.dumps({**manifest, "token_scan": cache}, indent=2, sort_keys=True) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def check_directory(directory: str | Path, vocab_size: int, scan_tokens: bool,
                    vocab_key: str = "model.vocab_size") -> list[str]:
    """Scan for the trainer: raise ``ValueError`` listing every problem; return the notes to print."""
    result = scan_directory(directory, vocab_size, scan_tokens=scan_tokens, vocab_key=vocab_key)
    if result.problems:
        raise ValueError(f"data.dir {str(directory)!r} is not usable:\n" + "\n".join(f"  {p}" for p in result.problems))
    return result.notes
