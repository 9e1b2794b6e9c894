"""The run directory and its environment: one writer (a second is refused naming the first; kill -9 frees it),
an out_dir that is a file, CUDA asked for without CUDA, a full disk: one line each, nothing partial left."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.helpers import hold_run_dir_lock
from trainer.lock import RunDirError, RunDirLock, hold_run_dir

def test_second_writer_is_refused_naming_thehold_run_dir_lock(tmp_path):
    proc = hold_run_dir_lock(tmp_path)
    try:
        started = time.perf_counter()
        with pytest.raises(RunDirError) as caught:
            RunDirLock(tmp_path).acquire()
        assert time.perf_counter() - started < 1.0  # refused at once, no waiting
        message = str(caught.value)
        assert "is in use by another run" in message
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_releases_the_lock(tmp_path):
    proc = hold_run_dir_lock(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = RunDirLock(tmp_path).acquire()  # the stale .lock file does not block
    lock.release()


def test_lock_is_released_after_the_block_and_reacquired(tmp_path):
    with hold_run_dir(tmp_path, is_main=True) as lock:
        assert lock is not None
        with pytest.raises(RunDirError):
            RunDirLock(tmp_path).acquire()  # another open file description: refused even in this process
    RunDirLock(tmp_path).acquire().release()


def test_out_dir_that_is_a_file_or_read_only_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        RunDirLock(target).acquire()
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RunDirError, match="not writable"):
            RunDirLock(ro).acquire()
    finally:
        ro.chmod(0o700)



def test_trainer_errors_about_the_environment_are_one_line(tmp_path, capsys):
    import torch

    import train_gpt
    from tests.helpers import FAST, TINY
    target = tmp_path / "file"
    target.write_text("x")
    assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={target}"]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path / 'r'}",
                               "--train.device=cuda"]) == 1
        err = capsys.readouterr().err
        assert "CUDA is not available" in err and "Traceback" not in err


def test_disk_full_stops_the_run_with_one_line_and_no_partial_file(tmp_path, capsys, monkeypatch):
    import errno

    import torch

    import train_gpt
    from tests.helpers import FAST, TINY
    from trainer import checkpoint

    torch.set_num_threads(1)
    args = ["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.checkpoint_every=2"]
    assert train_gpt.main([*args, "--train.steps=2"]) == 0

    class FullDisk(checkpoint._HashingWriter):
        def write(self, data):
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error

    monkeypatch.setattr(checkpoint, "_HashingWriter", FullDisk)
    capsys.readouterr()
    assert train_gpt.main([*args, "--train.steps=4"]) == 1
    err = capsys.readouterr().err
    assert "error: no space left on device writing checkpoint" in err and "step_0000004.pt" in err
    assert "step_0000002.pt is intact" in err and "Traceback" not in err
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == [
        "step_0000002.pt", "step_0000002.pt.sha256"]

    def no_space(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr("trainer.metrics.MetricsWriter.write", no_space)
    assert train_gpt.main([*args, "--train.steps=4"]) == 1
    err = capsys.readouterr().err
    assert f"no space left on device writing {tmp_path / 'metrics.jsonl'}" in err and "Traceback" not in err


def test_consistency_check_needs_replicated_parameters():
    from configs.base import ConfigError
    from configs.schema import load_config
    from tests.helpers import TINY
    with pytest.raises(ConfigError, match="train.consistency_check_every .* train.parallel='fsdp'"):
        load_config(["--config", TINY, "--train.consistency_check_every=10", "--train.parallel=fsdp"])
    assert load_config(["--config", TINY, "--train.consistency_check_every=10"]).train.consistency_check_every == 10
