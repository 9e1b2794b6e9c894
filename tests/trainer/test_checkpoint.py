"""Checkpoint files: checksum written with each and verified on load, bit flips and truncation detected,
rotation that never deletes newer or unreadable files, a full disk leaving no partial file."""

from __future__ import annotations

import errno
import hashlib

import pytest
import torch

from trainer import checkpoint


def _state(step: int, numel: int = 4096) -> dict:
    return {"step": step, "model": {"w": torch.arange(numel, dtype=torch.float32) + step}}


def _save(out, *steps, keep=10):
    return [checkpoint.save(out, s, _state(s), keep=keep) for s in steps]


def test_checksum_file_matches_the_bytes_written(tmp_path):
    path, = _save(tmp_path, 5)
    line = checkpoint.checksum_path(path).read_text()  # over the whole file, trailer included
    assert line == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"  # `sha256sum -c` format
    assert checkpoint.load(path, 5)["model"]["w"][1].item() == 6.0


def test_flipped_bit_in_tensor_data_is_detected(tmp_path):
    path, = _save(tmp_path, 5)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # the 16 KiB of tensor data fill most of the file
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=False)  # torch itself does not notice
    with pytest.raises(ValueError, match="checksum mismatch"):
        checkpoint.load(path, 5)


def test_scan_falls_back_and_reports_each_unreadable(tmp_path):
    first, second, third = _save(tmp_path, 2, 4, 6)
    third.write_bytes(third.read_bytes()[:1000])
    checkpoint.checksum_path(second).unlink()
    second.write_bytes(b"garbage")  # neither record left: unverifiable
    found = checkpoint.scan(tmp_path)
    assert found.path == first and found.state["step"] == 2
    assert [p for p, _ in found.unreadable] == [third, second]
    assert "checksum mismatch" in found.unreadable[0][1] and "no integrity record" in found.unreadable[1][1]
    found = checkpoint.scan(tmp_path, allow_unverified=True)  # the override reaches torch.load, which fails
    assert "UnpicklingError" in found.unreadable[1][1] and found.path == first


def test_the_digest_inside_the_file_catches_a_flip_without_the_side_file(tmp_path):
    """Issue 20: a copy that drops step_N.pt.sha256 must not disable verification."""
    path, = _save(tmp_path, 5)
    checkpoint.checksum_path(path).unlink()
    assert checkpoint.load(path, 5)["step"] == 5  # the trailer alone verifies it
    assert torch.load(path, weights_only=False)["step"] == 5  # and torch.load ignores the trailer
    data = bytearray(path.read_bytes())
    for i in range(4):
        data[len(data) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch .* the digest inside the file"):
        checkpoint.load(path, 5)


def test_a_checkpoint_without_any_integrity_record_is_refused_unless_allowed(tmp_path):
    """An older version's checkpoint (no trailer) loads while its side file is there; without it, it is refused
    (scan sets it aside for the previous one) unless the caller allows unverified files."""
    older, = _save(tmp_path, 2)
    legacy = checkpoint.checkpoint_file(tmp_path, 4)
    torch.save({**_state(4), "checkpoint_complete": True}, legacy)  # as the previous version wrote it
    checkpoint.checksum_path(legacy).write_text(f"{hashlib.sha256(legacy.read_bytes()).hexdigest()}  {legacy.name}\n")
    assert checkpoint.scan(tmp_path).path == legacy
    checkpoint.checksum_path(legacy).unlink()
    found = checkpoint.scan(tmp_path)
    assert found.path == older and found.unreadable[0][0] == legacy
    assert "no integrity record" in found.unreadable[0][1] and "allow_unverified_checkpoints" in found.unreadable[0][1]
    assert checkpoint.scan(tmp_path, allow_unverified=True).path == legacy
    trailer = checkpoint.save(tmp_path, 6, _state(6), keep=10)
    with open(trailer, "r+b") as f:  # a damaged trailer is no record; the side file still verifies the whole file
        f.seek(-81, 2)  # the trailer's first bytes: its marker
        f.write(b"#")
    with pytest.raises(ValueError, match="checksum mismatch .*sha256 says"):
        checkpoint.load(trailer, 6)


def test_quarantine_moves_aside_and_never_deletes(tmp_path):
    path, = _save(tmp_path, 3)
    moved = checkpoint.quarantine(path)
    assert moved.name == "step_0000003.pt.corrupt" and not path.exists()
    assert checkpoint.list_checkpoints(tmp_path) == []
    _save(tmp_path, 3)
    assert checkpoint.quarantine(path).name == "step_0000003.pt.corrupt1"


def test_rotation_keeps_newest_and_never_deletes_higher_steps(tmp_path):
    _save(tmp_path, 10, 20)  # e.g. left over; a run restarted below them must not lose them
    _save(tmp_path, 1, 2, 3, keep=2)
    steps = [s for s, _ in checkpoint.list_checkpoints(tmp_path)]
    assert steps == [2, 3, 10, 20]
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).glob("*.sha256")) == [
        f"step_{s:07d}.pt.sha256" for s in steps]


def test_disk_full_removes_the_partial_file_and_names_the_intact_one(tmp_path, monkeypatch):
    good, = _save(tmp_path, 1)

    class FullDisk(checkpoint._HashingWriter):
        def write(self, data):
            if self.written > 2000:
                self.error = OSError(errno.ENOSPC, "No space left on device")
                raise self.error
            return super().write(data)

    monkeypatch.setattr(checkpoint, "_HashingWriter", FullDisk)
    with pytest.raises(checkpoint.CheckpointWriteError) as caught:
        checkpoint.save(tmp_path, 2, _state(2, numel=1 << 20), keep=2)
    message = str(caught.value)
    assert "no space left on device writing checkpoint" in message and "step_0000002.pt" in message
    assert "needs ~0.00 GB" in message and f"the previous checkpoint {good} is intact" in message
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == [
        "step_0000001.pt", "step_0000001.pt.sha256"]


def test_save_hashes_while_writing_without_reading_back(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "file_sha256", lambda p: pytest.fail(f"save() read {p} back"))
    path = checkpoint.save(tmp_path, 1, {"step": 1, "model": {"w": torch.randn(1 << 20)}}, keep=1)
    assert checkpoint.load(path, 1, verify=False)["step"] == 1 and path.stat().st_size > 4 << 20
