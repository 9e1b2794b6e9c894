"""Atomic checkpoints: ``<out_dir>/checkpoints/step_0000100.pt``, newest valid one found on restart.

A checkpoint is written to a temporary name, fsynced, then renamed, so a crash never leaves a
partial file under a final name; ``latest()`` still skips (with a warning) any file that fails to
load or lacks the completion marker, and falls back to the previous one.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d+)\.pt$")
_COMPLETE = "checkpoint_complete"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, oldest first."""
    directory = checkpoint_dir(out_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save(out_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then keep only the newest ``keep``."""
    directory = checkpoint_dir(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:07d}.pt"
    tmp = directory / f".step_{step:07d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save({**state, _COMPLETE: True}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for _, old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def latest(out_dir: str | Path) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads completely, or None; broken newer ones are skipped with a warning."""
    for step, path in reversed(list_checkpoints(out_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable file is treated the same way
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(err).__name__}: {err}")
            continue
        if not isinstance(state, dict) or not state.get(_COMPLETE) or state.get("step") != step:
            warnings.warn(f"skipping incomplete checkpoint {path}")
            continue
        return state, path
    return None
