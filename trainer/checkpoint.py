"""Checksummed, atomic checkpoints: ``<out_dir>/checkpoints/step_0000100.pt`` beside ``step_0000100.pt.sha256``.

A checkpoint carries its own integrity record: the file is torch.save's bytes followed by an 81-byte trailer
``\nclipgpt-sha256:<64 hex>\n``, the SHA-256 of the bytes before it (``torch.load`` ignores trailing bytes, so the
file still loads anywhere). The ``.sha256`` side file (``sha256sum`` format over the whole file, so
``sha256sum -c step_0000100.pt.sha256`` checks it by hand) is a second record; a copy that drops it loses nothing.

Writing: the state goes to a temporary name through a writer that hashes every byte as it is written (no second
read), gets its trailer, is fsynced and renamed; the side file is written first, so a final-named checkpoint always
has both. A full disk removes the partial file and raises :class:`CheckpointWriteError` saying so, naming the intact
previous checkpoint.

Reading: :func:`scan` verifies the newest checkpoint, loads it, and falls back to older ones, recording why each newer
one was unreadable. A checkpoint with neither record (written before the trailer existed and its side file lost)
cannot be verified and counts as unreadable unless the caller allows it (``train.allow_unverified_checkpoints``,
``sample.py --allow-unverified``). The trainer refuses to start from nothing when checkpoints exist but none loads
(see ``trainer/resume.py``), and moves unreadable files aside as ``*.corrupt`` (:func:`quarantine`) so the rotation
never keeps them in place of good checkpoints.

Rotation (:func:`save`) only deletes checkpoints with a lower step than the one just written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d+)\.pt$")
_COMPLETE = "checkpoint_complete"
_CHUNK = 16 << 20
_TRAILER = b"\nclipgpt-sha256:"  # + 64 hex digits + b"\n": the SHA-256 of every byte before it
_TRAILER_SIZE = len(_TRAILER) + 64 + 1


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (e.g. no space left); the partial file is removed."""


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, oldest first."""
    directory = checkpoint_dir(out_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


class _HashingWriter:
    """A write-only file object that hashes what passes through and remembers an OS error (torch hides it)."""

    def __init__(self, handle):
        self.handle, self.sha = handle, hashlib.sha256()
        self.written, self.error = 0, None

    def write(self, data) -> int:
        try:
            n = self.handle.write(data)
        except OSError as err:
            self.error = err
            raise
        self.sha.update(data)
        self.written += len(data)
        return n

    def flush(self) -> None:
        self.handle.flush()


def _tensor_bytes(obj) -> int:
    """Bytes of tensor data in a nested state (the bulk of a checkpoint's size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_failed(err: BaseException, writer: _HashingWriter | None, final: Path, state: dict,
                  out_dir: str | Path) -> CheckpointWriteError:
    cause = writer.error if writer is not None and writer.error is not None else err
    previous = [p for _, p in list_checkpoints(out_dir) if p != final]
    kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "there is no previous checkpoint"
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        need = _tensor_bytes(state) / 1e9
        free = shutil.disk_usage(final.parent).free / 1e9
        return CheckpointWriteError(
            f"no space left on device writing checkpoint {final} (needs ~{need:.2f} GB, {free:.2f} GB free); "
            f"{kept}. The partial file was removed; free space and re-run the same command to resume")
    return CheckpointWriteError(f"could not write checkpoint {final}: {type(cause).__name__}: {cause}; {kept}. "
                                f"The partial file was removed")


def save(out_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` (checksummed, atomic), then rotate older ones.

    Rotation keeps the newest ``keep`` checkpoints at or below ``step`` and never touches a file with
    a higher step (the caller moved unreadable ones aside before training).
    """
    directory = checkpoint_dir(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_file(out_dir, step)
    tmp = directory / f".step_{step:07d}.pt.tmp"
    writer = None
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save({**state, _COMPLETE: True}, writer)
            whole = writer.sha.copy()  # the side file's digest covers the trailer too (sha256sum -c)
            trailer = _TRAILER + writer.sha.hexdigest().encode() + b"\n"
            whole.update(trailer)
            writer.write(trailer)
            f.flush()
            os.fsync(f.fileno())
        sums = checksum_path(final)
        sums_tmp = directory / f".{sums.name}.tmp"
        with open(sums_tmp, "w") as f:
            f.write(f"{whole.hexdigest()}  {final.name}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(sums_tmp, sums)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except (OSError, RuntimeError) as err:
        for leftover in (tmp, directory / f".{checksum_path(final).name}.tmp"):
            leftover.unlink(missing_ok=True)
        raise _write_failed(err, writer, final, state, out_dir) from err
    older = [p for s, p in list_checkpoints(out_dir) if s < step]
    for old in older[:max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
        shutil.rmtree(tensor_dir(old), ignore_errors=True)  # a sharded checkpoint's tensors
    return final


def checkpoint_file(out_dir: str | Path, step: int) -> Path:
    """The path :func:`save` writes the checkpoint of ``step`` to."""
    return checkpoint_dir(out_dir) / f"step_{step:07d}.pt"


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _embedded_digest(path: Path) -> str | None:
    """The digest in the file's trailer, or None if it has none (an older checkpoint, or a damaged trailer)."""
    size = path.stat().st_size
    if size < _TRAILER_SIZE:
        return None
    with open(path, "rb") as f:
        f.seek(size - _TRAILER_SIZE)
        tail = f.read(_TRAILER_SIZE)
    digest = tail[len(_TRAILER):-1]
    if not tail.startswith(_TRAILER) or not tail.endswith(b"\n") or not re.fullmatch(rb"[0-9a-f]{64}", digest):
        return None
    return digest.decode("ascii")


def _digests(path: Path, payload_size: int | None) -> tuple[str | None, str]:
    """(SHA-256 of the first ``payload_size`` bytes or None, SHA-256 of the whole file) in one read."""
    payload, whole, done = hashlib.sha256(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            whole.update(chunk)
            if payload_size is not None and done < payload_size:
                payload.update(chunk[:payload_size - done])
            done += len(chunk)
    return (payload.hexdigest() if payload_size is not None else None), whole.hexdigest()


UNVERIFIED_HINT = ("it carries no integrity record (no digest inside the file, no .sha256 beside it: a checkpoint of "
                   "an older version whose side file was lost, or a damaged trailer), so it cannot be verified; to load it "
                   "anyway pass --train.allow_unverified_checkpoints=true (sample.py, evals: --allow-unverified)")


def verify_file(path: Path, allow_unverified: bool = False) -> None:
    """Check the file against its embedded digest and its side file (each that exists); raise ``ValueError`` naming
    the mismatch. A file with neither record raises too, unless ``allow_unverified``."""
    sums = checksum_path(path)
    recorded = None
    if sums.exists():
        try:
            recorded = sums.read_text().split()[0]
        except (OSError, IndexError) as err:
            raise ValueError(f"its checksum file {sums.name} is unreadable ({err or 'empty'})") from None
    embedded = _embedded_digest(path)
    if embedded is None and recorded is None:
        if allow_unverified:
            return
        raise ValueError(UNVERIFIED_HINT)
    payload, whole = _digests(path, path.stat().st_size - _TRAILER_SIZE if embedded is not None else None)
    if embedded is not None and payload != embedded:
        raise ValueError(f"checksum mismatch (sha256 {payload[:16]}..., the digest inside the file says "
                         f"{embedded[:16]}...): the file changed after it was written")
    if recorded is not None and whole != recorded:
        raise ValueError(f"checksum mismatch (sha256 {whole[:16]}..., {sums.name} says {recorded[:16]}...): "
                         f"the file changed after it was written")


def load(path: Path, step: int | None = None, verify: bool = True, allow_unverified: bool = False) -> dict:
    """Load one checkpoint after checking its integrity records; raise ``ValueError`` saying what is wrong with it.

    ``verify=False`` skips the checks (a file this process or rank 0 has just verified); ``allow_unverified``
    loads a checkpoint that has no record at all instead of refusing it."""
    if verify:
        verify_file(path, allow_unverified)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is treated the same way
        raise ValueError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(state, dict) or not state.get(_COMPLETE):
        raise ValueError("incomplete (no completion marker)")
    if step is not None and state.get("step") != step:
        raise ValueError(f"holds step {state.get('step')}, its name says {step}")
    if verify and "sharded" in state:  # the tensors of an fsdp/hsdp run live in a directory beside it
        verify_tensor_dir(path, state)
    return state


def tensor_dir(checkpoint_file: Path) -> Path:
    """The directory beside a checkpoint file that holds a sharded run's tensors (``step_0000100.pt`` ->
    ``step_0000100.dcp``; its layout is trainer/sharded_checkpoint.py's)."""
    return checkpoint_file.with_suffix(".dcp")


def verify_tensor_dir(checkpoint_file: Path, state: dict) -> None:
    """Raise ValueError naming what is wrong when the tensor directory of a sharded checkpoint is missing or any of
    its files' SHA-256 differs from the one the checkpoint file records (``state["sharded"]["files"]``)."""
    directory = checkpoint_file.with_name(state["sharded"]["dir"])
    if not directory.is_dir():
        raise ValueError(f"its tensor directory {directory.name} is missing")
    for name, digest in state["sharded"]["files"].items():
        file = directory / name
        if not file.is_file():
            raise ValueError(f"{directory.name}/{name} is missing")
        if file_sha256(file) != digest:
            raise ValueError(f"checksum mismatch in {directory.name}/{name}: the file changed after it was written")


@dataclass
class Scan:
    """The newest loadable checkpoint (``state``, ``path``; None if none) and the newer ones that failed."""

    state: dict | None = None
    path: Path | None = None
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def any_found(self) -> bool:
        return self.path is not None or bool(self.unreadable)


def scan(out_dir: str | Path, allow_unverified: bool = False) -> Scan:
    """Try the checkpoints newest first; stop at the first that verifies and loads."""
    result = Scan()
    for step, path in reversed(list_checkpoints(out_dir)):
        try:
            result.state, result.path = load(path, step, allow_unverified=allow_unverified), path
            return result
        except (OSError, ValueError) as err:
            result.unreadable.append((path, str(err)))
    return result


def quarantine(path: Path) -> Path:
    """Move an unreadable checkpoint (and its checksum file) aside as ``*.corrupt``; never delete it."""
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt{n}"), n + 1
    os.replace(path, target)
    if tensor_dir(path).is_dir():
        os.replace(tensor_dir(path), target.with_name(target.name + ".dcp"))
    sums = checksum_path(path)
    if sums.exists():
        os.replace(sums, target.with_name(target.name + ".sha256"))
    return target


def latest(out_dir: str | Path, allow_unverified: bool = False) -> tuple[dict, Path] | None:
    """The newest checkpoint that verifies and loads completely, or None."""
    found = scan(out_dir, allow_unverified)
    return (found.state, found.path) if found.path is not None else None
