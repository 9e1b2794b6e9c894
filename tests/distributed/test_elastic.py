"""Failures under torchrun: a killed worker comes back (--max-restarts) and finishes exactly like an
uninterrupted run; a stalled peer ends the run after train.dist_timeout_s instead of hanging it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.helpers import REPO_ROOT, env, hold_run_dir_lock, losses, metrics, run_train, train_cmd

pytestmark = pytest.mark.slow

COMMON = ("--train.steps=8", "--train.checkpoint_every=2", "--train.batch_size=16", "--train.micro_batch_size=8",
          "--train.dist_timeout_s=120")


def _worker_pid(torchrun_pid: int, local_rank: int) -> int:
    for child in open(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read().split():
        with open(f"/proc/{child}/environ", "rb") as f:
            if f"LOCAL_RANK={local_rank}".encode() in f.read().split(b"\0"):
                return int(child)
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank} under torchrun {torchrun_pid}")


def test_killed_worker_restarts_and_matches_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    run_train(f"--train.out_dir={straight}", *COMMON, "--train.consistency_check_every=1", nproc=2)  # ranks agree

    out = tmp_path / "elastic"
    cmd = train_cmd(f"--train.out_dir={out}", *COMMON, nproc=2, extra_torchrun=("--standalone", "--max-restarts=1"))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = out / "checkpoints" / "step_0000002.pt"
        deadline = time.time() + 300
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(_worker_pid(proc.pid, 1), signal.SIGKILL)
        killed_at = len(metrics(out))
        output, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert killed_at < 8, "the run finished before the worker was killed"
    assert proc.returncode == 0, output[-4000:]
    assert "resumed from" in output and "step_0000002.pt" in output
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))
    assert losses(out) == losses(straight)


def test_stalled_peer_times_out_instead_of_hanging(tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(f"--train.out_dir={out}", "--train.steps=200", "--train.batch_size=16",
                    "--train.micro_batch_size=8", "--train.dist_timeout_s=5", nproc=2, extra_torchrun=("--standalone",))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while (not (out / "metrics.jsonl").exists() or len(metrics(out)) < 2) and time.time() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        os.kill(_worker_pid(proc.pid, 1), signal.SIGSTOP)  # alive but silent: a hung GPU or a frozen node
        stopped = time.time()
        output, _ = proc.communicate(timeout=200)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert time.time() - stopped < 120, "the run hung far beyond train.dist_timeout_s"
    assert "rank 0: error: lost contact with another rank" in output and "dist_timeout_s=5 s" in output, output[-3000:]
    assert "Traceback" not in output.split("rank 0: error")[0], output[-3000:]


def test_busy_run_directory_stops_every_rank_at_once(tmp_path):
    """Rank 0 alone tries the lock; its refusal reaches every rank, so none waits in a collective."""
    holder = hold_run_dir_lock(tmp_path)
    try:
        proc = run_train(f"--train.out_dir={tmp_path}", *COMMON, nproc=2, check=False, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    busy = f"error: train.out_dir '{tmp_path}' is in use by another run (pid {holder.pid}"
    # every rank stops (the run ended within the timeout); the refusal, the same on every rank, is printed once
    assert f"rank 0: {busy}" in proc.stderr and f"rank 1: {busy}" not in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_killed_torchrun_parent_stops_its_workers_and_the_same_command_resumes(tmp_path):
    """kill -9 of the torchrun launcher: its workers notice within seconds and exit (rank 0 releasing the run lock),
    so re-running the same command resumes from the newest checkpoint instead of being refused."""
    cmd = train_cmd(f"--train.out_dir={tmp_path}", *COMMON, nproc=2, extra_torchrun=("--standalone",))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = tmp_path / "checkpoints" / "step_0000002.pt"
        deadline = time.time() + 300
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        workers = [_worker_pid(proc.pid, r) for r in (0, 1)]
        os.kill(proc.pid, signal.SIGKILL)
        killed_at, proc_out = time.time(), proc.communicate(timeout=60)[0]
        while any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"
                  for w in workers) and time.time() < killed_at + 30:
            time.sleep(0.1)
        gone_after = time.time() - killed_at
    finally:
        proc.kill()
    assert gone_after < 15, f"workers still running {gone_after:.0f} s after their torchrun was killed"
    assert "the torchrun launcher" in proc_out and "died; stopping" in proc_out, proc_out[-2000:]
    assert len(metrics(tmp_path)) < 8, "the run finished before torchrun was killed"
    again = run_train(f"--train.out_dir={tmp_path}", *COMMON, nproc=2)
    assert "resumed from" in again.stdout
    assert [m["step"] for m in metrics(tmp_path)] == list(range(1, 9))
