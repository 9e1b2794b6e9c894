"""Tokenizer workers end when their parent is killed with SIGKILL (no orphans burning CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT, env

pytestmark = pytest.mark.slow

_DRIVER = """
import itertools, sys
from data.prepare.tokenize import tokenize_batches
batches = (["the model reads tokens from shards " * 50] * 8 for _ in itertools.count())
for i, _ in enumerate(tokenize_batches(batches, workers=2)):
    if i == 20:
        print("running", flush=True)
"""


def _workers(pid: int) -> list[int]:
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    return [int(c) for c in children if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_after_kill_9_of_the_parent():
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert driver.stdout.readline().strip() == "running"
        workers = _workers(driver.pid)
        assert len(workers) == 2
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    deadline = time.time() + 20
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    leftover = [w for w in workers if _alive(w)]
    for w in leftover:
        os.kill(w, signal.SIGKILL)
    assert not leftover, "tokenizer workers outlived their killed parent"
