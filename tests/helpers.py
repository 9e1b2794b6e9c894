"""Shared helpers of the end-to-end tests: run the trainer as a user would, read its metrics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = str(REPO_ROOT / "configs" / "tiny.toml")

# Small, quick settings on top of configs/tiny.toml for tests.
FAST = ["--train.eval_every=0", "--train.eval_tokens=2048", "--train.log_every=1", "--train.warmup_steps=0",
        "--train.warmdown_frac=0"]


def env(threads: int = 1) -> dict:
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return out


def train_cmd(*args: str, nproc: int = 0, extra_torchrun: tuple[str, ...] = ()) -> list[str]:
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *extra_torchrun]
    else:
        launcher = [sys.executable]
    return [*launcher, str(REPO_ROOT / "train_gpt.py"), "--config", TINY, *FAST, *args]


def run_train(*args: str, nproc: int = 0, extra_torchrun: tuple[str, ...] = (), timeout: int = 300,
              check: bool = True) -> subprocess.CompletedProcess:
    if nproc and "--standalone" not in extra_torchrun and not any("rdzv" in a for a in extra_torchrun):
        extra_torchrun = ("--standalone", *extra_torchrun)
    proc = subprocess.run(train_cmd(*args, nproc=nproc, extra_torchrun=extra_torchrun), cwd=REPO_ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def main_in_process(out_dir, *flags: str) -> int:
    """train_gpt.main on the tiny preset with FAST settings in this process (one thread); its exit status."""
    import torch

    import train_gpt
    torch.set_num_threads(1)
    return train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={out_dir}", *flags])


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines() if line]


def losses(out_dir: Path) -> list[float]:
    return [m["train_loss"] for m in metrics(out_dir)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HOLD_LOCK = ("from trainer.lock import RunDirLock; import sys, time; RunDirLock(sys.argv[1]).acquire(); "
              "print('held', flush=True); time.sleep(600)")


def hold_run_dir_lock(out_dir: Path) -> subprocess.Popen:
    """Another process holding ``out_dir``'s run lock (kill it to release)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out_dir)], cwd=REPO_ROOT, env=env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def require(package: str):
    """Import an optional package, skipping the test when it is not installed; an installed package that fails to
    import (e.g. a name clash) fails the test instead of hiding behind a skip."""
    import importlib
    import importlib.util

    import pytest

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[eval]')")
    return importlib.import_module(package)


def run_two_nodes(out_dir: Path, *args: str, timeout: int = 300) -> list[str]:
    """Two ``torchrun --nnodes=2 --nproc_per_node=1`` launches meeting on 127.0.0.1, as on two machines; returns each
    node's output after both exited 0, else fails with both outputs.

    Each node writes to its own file (a pipe that nobody reads while the test waits on the other node fills up
    at 64 KiB and blocks that node's ranks, which stalls the collectives of the other one), the rendezvous id
    is unique to the call (a stray agent of another test that lands on the same port never joins it), and on
    timeout both process groups are killed so nothing is left running (``communicate(timeout=...)`` alone leaves
    them to load the machine and hold the run's lock)."""
    import uuid

    rdzv = ("--nnodes=2", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}",
            f"--rdzv_id=clipgpt-{uuid.uuid4().hex[:12]}")
    # a collective stuck for 120 s names itself (lost contact ...) well before the test's timeout
    cmd = train_cmd(f"--train.out_dir={out_dir}", "--train.dist_timeout_s=120", *args, nproc=1, extra_torchrun=rdzv)
    logs = [Path(out_dir).parent / f"{Path(out_dir).name}.node{i}.log" for i in range(2)]
    nodes = []
    for log in logs:
        with open(log, "w") as sink:
            nodes.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=sink, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    try:
        for node in nodes:
            node.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    codes = [node.returncode for node in nodes]
    assert codes == [0, 0], f"exit codes {codes}\n" + "\n".join(f"--- node {i}:\n{o[-3000:]}"
                                                                  for i, o in enumerate(outputs))
    return outputs
