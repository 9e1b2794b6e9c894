"""One writer per run directory: an exclusive ``flock`` on ``<out_dir>/.lock`` held by rank 0 for the whole run.

The kernel drops the lock when the holding process ends in any way (including ``kill -9`` or a node
reboot), so a resume is never blocked by a stale lock file. The file holds the holder's pid, host and
start time, so a second run that finds the directory locked names the run that owns it. Only rank 0
takes the lock (it is the only writer of the run directory); its verdict is broadcast so every rank
stops the same way. On NFS, Linux implements ``flock`` with POSIX byte-range locks, which the server
arbitrates across machines; some parallel filesystems need a mount option for it (Lustre: ``flock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from trainer.distributed import broadcast_object

LOCK_NAME = ".lock"


class RunDirError(RuntimeError):
    """The run directory cannot be used: held by another run, not a directory, or not writable."""


def _prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"train.out_dir {str(out_dir)!r} is a file, not a directory; choose another train.out_dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"train.out_dir {str(out_dir)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"train.out_dir {str(out_dir)!r} is not writable (permission denied or a read-only "
                          f"filesystem); choose another train.out_dir")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["started"]))
        return f"pid {info['pid']} on host {info['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid is not recorded yet)"


class RunDirLock:
    """An exclusive, non-blocking lock on ``<out_dir>/.lock``; :meth:`release` or process exit frees it."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunDirLock":
        _prepare_dir(self.out_dir)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot open the lock file {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"train.out_dir {str(self.out_dir)!r} is in use by another run "
                                  f"({_holder(self.path)}); wait for it to end or choose another "
                                  f"train.out_dir") from None
            raise RunDirError(f"cannot lock {self.path}: {err.strerror or err} (does this filesystem support "
                              f"flock?)") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # the file stays (deleting it would race with a new holder)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def hold_run_dir(out_dir: str | Path, is_main: bool):
    """Rank 0 holds the run directory's lock for the block; every rank raises the same RunDirError if it cannot."""
    lock, error = None, None
    if is_main:
        try:
            lock = RunDirLock(out_dir).acquire()
        except RunDirError as err:
            error = str(err)
    error = broadcast_object(error)
    if error is not None:
        raise RunDirError(error)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
