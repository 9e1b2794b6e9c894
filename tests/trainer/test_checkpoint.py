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
    line = checkpoint.checksum_path(path).read_text()
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
    checkpoint.checksum_path(second).unlink()  # a checkpoint without its checksum still loads (older runs)
    second.write_bytes(b"garbage")
    found = checkpoint.scan(tmp_path)
    assert found.path == first and found.state["step"] == 2
    assert [p for p, _ in found.unreadable] == [third, second]
    assert "checksum mismatch" in found.unreadable[0][1] and "UnpicklingError" in found.unreadable[1][1]


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
